"""A fleet as one compose project (pure planning): N Triton services + the nginx balancer service."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from deployer.fleet.compose_plan import BALANCER_CONF, BALANCER_SERVICE, CONF_ENV, plan_compose_fleet
from deployer.fleet.plan import Ports, plan_fleet
from deployer.server.base import ServerSettings
from deployer.server.docker.plan import BALANCER_IMAGE, CPU_IMAGE, LABEL_MANAGED, LABEL_PROJECT

COMPOSE = ("docker-compose",)
PORTS = [Ports(20000 + 3 * i, 20001 + 3 * i, 20002 + 3 * i) for i in range(3)]


def _fleet(tmp_path: Path, replicas: int = 3, pinned: tuple[str, ...] = ()) -> Any:
    base = ServerSettings(runtime="compose", repository=tmp_path / "repo", models=("a", "b"), image=CPU_IMAGE,
                          state_dir=tmp_path / "state", http_port=18000, grpc_port=18001, metrics_port=18002)
    return plan_compose_fleet(plan_fleet(base, replicas, PORTS[:replicas], pinned_models=pinned), COMPOSE)


def _doc(text: str) -> dict[str, Any]:
    from ruamel.yaml import YAML

    loaded: dict[str, Any] = YAML(typ="safe", pure=True).load(io.StringIO(text))
    return loaded


def test_n_triton_services_and_the_balancer_with_ports_only_on_loopback(tmp_path: Path) -> None:
    plan = _fleet(tmp_path)
    doc = _doc(plan.compose.content)
    services = doc["services"]
    assert list(services) == ["triton-r0", "triton-r1", "triton-r2", BALANCER_SERVICE]
    assert plan.services == ("triton-r0", "triton-r1", "triton-r2")
    published = [p for s in services.values() for p in s["ports"]]
    assert published and all(p.startswith("127.0.0.1:") for p in published), published
    assert len({p.split(":")[1] for p in published}) == len(published)  # no host port twice
    assert services[BALANCER_SERVICE]["ports"] == ["127.0.0.1:18000:8000", "127.0.0.1:18001:8001"]
    for i, p in enumerate(PORTS):
        r = services[f"triton-r{i}"]
        assert r["image"] == CPU_IMAGE
        assert r["ports"] == [f"127.0.0.1:{p.http}:8000", f"127.0.0.1:{p.grpc}:8001", f"127.0.0.1:{p.metrics}:8002"]
        assert r["environment"]["DEPLOYER_REPLICA"] == str(i)
    assert services[BALANCER_SERVICE]["image"] == BALANCER_IMAGE
    assert services[BALANCER_SERVICE]["depends_on"] == list(plan.services)
    assert plan.compose.file == tmp_path / "state" / "compose.yaml"


def test_repository_is_mounted_read_only_and_the_conf_travels_in_the_file(tmp_path: Path) -> None:
    plan = _fleet(tmp_path)
    services = _doc(plan.compose.content)["services"]
    mounts = [v for s in services.values() for v in s.get("volumes", [])]
    assert len(mounts) == 3 and all(v["read_only"] is True and v["type"] == "bind" for v in mounts)
    assert {(v["source"], v["target"]) for v in mounts} == {(str(tmp_path / "repo"), "/models")}
    balancer = services[BALANCER_SERVICE]
    # compose turns `$$` into `$`: what nginx reads is exactly the rendered conf
    assert balancer["environment"][CONF_ENV].replace("$$", "$") == plan.conf
    assert balancer["command"][:2] == ["sh", "-c"] and f"> {BALANCER_CONF} && exec nginx" in balancer["command"][2]


def test_every_service_and_the_network_are_labelled_as_the_project(tmp_path: Path) -> None:
    plan = _fleet(tmp_path)
    doc = _doc(plan.compose.content)
    for labels in [s["labels"] for s in doc["services"].values()] + [doc["networks"]["default"]["labels"]]:
        assert labels[LABEL_MANAGED] == "true" and labels[LABEL_PROJECT] == plan.compose.project


def test_balancer_conf_reaches_replicas_by_service_name_and_retries_stateless(tmp_path: Path) -> None:
    conf = _fleet(tmp_path).conf
    for i in range(3):
        assert f"server triton-r{i}:8000 max_fails=1" in conf and f"server triton-r{i}:8001 max_fails=1" in conf
    assert "listen 0.0.0.0:8000;" in conf and "listen 0.0.0.0:8001 http2;" in conf
    assert "proxy_next_upstream error timeout http_502 http_503 non_idempotent;" in conf
    assert "pid /var/lib/deployer-balancer/nginx.pid;" in conf  # the prefix the balancer image prepares
    assert "20000" not in conf and "hash" not in conf  # host ports are not nginx's business


def test_sequence_models_are_pinned_in_the_container_conf_too(tmp_path: Path) -> None:
    conf = _fleet(tmp_path, 2, pinned=("seq",)).conf
    assert "location ^~ /v2/models/seq/ {" in conf
    assert conf.count("hash $binary_remote_addr consistent;") == 2
    assert "grpc_next_upstream off;" in conf


def test_rendering_is_byte_stable(tmp_path: Path) -> None:
    a, b = _fleet(tmp_path), _fleet(tmp_path)
    assert (a.compose.content, a.conf) == (b.compose.content, b.conf)


def test_deployer_compose_of_a_fleet_publishes_only_the_balancer(tmp_path: Path) -> None:
    from deployer import Pipeline

    root = Path(__file__).resolve().parents[3]
    quickstart = (root / "examples" / "quickstart" / "deployer.yaml").read_text(encoding="utf-8")
    for name in ("classifier.onnx", "labels.py"):
        (tmp_path / name).write_bytes((root / "examples" / "quickstart" / name).read_bytes())
    spec = tmp_path / "deployer.yaml"
    spec.write_text(quickstart.replace("repository: ../../model_repository", "repository: repo")
                    .replace("  runtime: local", "  replicas: 3\n  runtime: local"), encoding="utf-8")
    text = Pipeline.load(spec).compose_file_at(tmp_path)
    services = _doc(text)["services"]
    assert list(services) == ["triton-r0", "triton-r1", "triton-r2", BALANCER_SERVICE]
    assert [s.get("ports") for s in services.values()] == [None, None, None,
                                                          ["127.0.0.1:8000:8000", "127.0.0.1:8001:8001"]]
    for i in range(3):
        r = services[f"triton-r{i}"]
        assert r["volumes"][0]["source"] == "./repo" and r["volumes"][0]["read_only"] is True
        assert {"--load-model=classifier", "--load-model=labels"} <= set(r["command"])
    assert "server triton-r2:8001 max_fails=1" in services[BALANCER_SERVICE]["environment"][CONF_ENV]
    assert str(tmp_path) not in text  # portable: nothing of this machine in a file meant for git


def test_docker_fleet_containers_share_the_project_labels_and_network(tmp_path: Path) -> None:
    from deployer.fleet.docker_run import plan_docker_fleet

    plan = plan_docker_fleet(_fleet(tmp_path).fleet)
    names = [c.name for c in plan.replicas]
    assert names == [f"{plan.project}-r{i}" for i in range(3)]
    for c, p in zip(plan.replicas, PORTS, strict=True):
        assert c.ports == ((8000, "127.0.0.1", p.http), (8001, "127.0.0.1", p.grpc), (8002, "127.0.0.1", p.metrics))
        assert c.repository == tmp_path / "repo" and dict(c.labels) == dict(plan.labels)
        assert c.run_kwargs()["mounts"][0]["ReadOnly"] is True
    b = plan.balancer
    assert b["ports"] == {"8000/tcp": ("127.0.0.1", 18000), "8001/tcp": ("127.0.0.1", 18001)}
    assert b["network"] == plan.project and b["labels"] == dict(plan.labels)
    assert b["environment"][CONF_ENV] == plan.conf and '"$DEPLOYER_NGINX_CONF"' in b["command"][2]  # no $$
    for name in names:  # reached by container name on the fleet's network
        assert f"server {name}:8000 max_fails=1" in plan.conf


def test_an_s3_repository_fleet_on_containers_is_refused_before_anything_starts(tmp_path: Path) -> None:
    import pytest

    from deployer.errors import ExitCode, UserError
    from deployer.fleet import from_spec as fleet
    from deployer.spec import load_deployment

    root = Path(__file__).resolve().parents[3]
    (tmp_path / "classifier.onnx").write_bytes((root / "examples" / "quickstart" / "classifier.onnx").read_bytes())
    for runtime in ("compose", "docker"):
        spec = tmp_path / f"{runtime}.yaml"
        spec.write_text(f"repository: s3://bucket/p\nserver: {{runtime: {runtime}, replicas: 2}}\n"
                        "models:\n  - name: classifier\n    source: classifier.onnx\n", encoding="utf-8")
        with pytest.raises(UserError, match="s3:// repository runs on the local runtime") as exc:
            fleet.up(load_deployment(spec, fallback="onnxruntime"))
        assert exc.value.exit_code == ExitCode.BAD_INPUT
