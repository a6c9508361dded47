"""Replica settings planning and nginx.conf rendering, validated by the real nginx (`nginx -t`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from deployer.errors import UserError
from deployer.fleet.nginx import check_conf, render_nginx_conf, write_conf
from deployer.fleet.plan import Ports, plan_fleet
from deployer.server.base import ServerSettings


def _base(tmp_path: Path) -> ServerSettings:
    return ServerSettings(runtime="local", repository=tmp_path / "repo", models=("a", "b"),
                          state_dir=tmp_path / "state", http_port=18000, grpc_port=18001, metrics_port=18002)


PORTS = [Ports(20000 + 3 * i, 20001 + 3 * i, 20002 + 3 * i) for i in range(3)]


def test_replicas_get_own_ports_state_dirs_and_share_the_repository(tmp_path: Path) -> None:
    plan = plan_fleet(_base(tmp_path), 3, PORTS)
    assert [s.http_port for s in plan.replicas] == [20000, 20003, 20006]
    assert [s.metrics_port for s in plan.replicas] == [20002, 20005, 20008]
    assert len({s.state_dir for s in plan.replicas}) == 3
    assert all(s.state_dir.parent == tmp_path / "state" / "replicas" for s in plan.replicas)
    assert {s.repository for s in plan.replicas} == {tmp_path / "repo"}
    assert [dict(s.env)["DEPLOYER_REPLICA"] for s in plan.replicas] == ["0", "1", "2"]
    assert (plan.balancer.http_port, plan.balancer.grpc_port) == (18000, 18001)
    assert plan.names == ("r0", "r1", "r2")


def test_port_clash_with_the_balancer_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="18000"):
        plan_fleet(_base(tmp_path), 1, [Ports(18000, 20001, 20002)])
    with pytest.raises(UserError, match="3 replicas need 3"):
        plan_fleet(_base(tmp_path), 3, PORTS[:2])


def test_conf_retries_stateless_and_pins_sequence_models(tmp_path: Path) -> None:
    conf = render_nginx_conf(plan_fleet(_base(tmp_path), 3, PORTS).balancer)
    assert "proxy_next_upstream error timeout http_502 http_503 non_idempotent;" in conf
    assert "grpc_pass grpc://triton_grpc;" in conf
    assert "grpc_next_upstream error timeout http_502 http_503 non_idempotent;" in conf
    for p in PORTS:  # every replica in both upstreams, left out for a while after one failure
        assert f"server 127.0.0.1:{p.http} max_fails=1 fail_timeout=2s;" in conf
        assert f"server 127.0.0.1:{p.grpc} max_fails=1 fail_timeout=2s;" in conf
        assert str(p.metrics) not in conf
    assert "listen 127.0.0.1:18000;" in conf and "listen 127.0.0.1:18001 http2;" in conf
    assert "hash" not in conf
    pinned = render_nginx_conf(plan_fleet(_base(tmp_path), 3, PORTS, pinned_models=("seq",)).balancer)
    assert "location ^~ /v2/models/seq/ {" in pinned
    assert pinned.count("hash $binary_remote_addr consistent;") == 2  # pinned http upstream and grpc
    assert "grpc_next_upstream off;" in pinned


def test_unsafe_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"nginx\.conf"):
        render_nginx_conf(plan_fleet(_base(tmp_path), 1, PORTS[:1], pinned_models=("a;b {",)).balancer)


# the main tier installs nginx (scripts/test); the other-Python unit containers have none
NEEDS_NGINX = pytest.mark.skipif(shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists(),
                                 reason="nginx not installed (apt-get install -y nginx-light)")


@NEEDS_NGINX
@pytest.mark.parametrize("pinned", [(), ("seq",)])
def test_rendered_conf_passes_nginx_t(tmp_path: Path, pinned: tuple[str, ...]) -> None:
    from deployer.fleet.nginx import find_nginx

    plan = plan_fleet(_base(tmp_path), 3, PORTS, pinned_models=pinned)
    check_conf(find_nginx(), write_conf(plan.balancer))


@NEEDS_NGINX
def test_nginx_t_refuses_a_broken_conf(tmp_path: Path) -> None:
    from deployer.errors import ServerError
    from deployer.fleet.nginx import find_nginx

    plan = plan_fleet(_base(tmp_path), 1, PORTS[:1])
    conf = write_conf(plan.balancer)
    conf.write_text(conf.read_text().replace("grpc_pass", "grpc_passs"))
    with pytest.raises(ServerError, match="grpc_passs"):
        check_conf(find_nginx(), conf)


def test_replica_ports_never_take_the_balancers() -> None:
    from deployer.fleet.run import free_ports

    # nine in ten kernel-assigned ports are "the balancer's": the picker must skip every one of them
    low, high = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    avoid = frozenset(p for p in range(low, high + 1) if p % 10)
    got = [port for t in free_ports(10, "127.0.0.1", avoid) for port in (t.http, t.grpc, t.metrics)]
    assert len(set(got)) == 30 and not set(got) & avoid
