"""`server.replicas: 2` on the compose and docker runtimes, on real parts: a REAL Docker engine (and
Docker Compose), deployer's CPU Triton image for each replica and the nginx balancer image (both built
without a container registry). `deploy` smokes through the balancer and against each replica; per-replica
inference counts (statistics extension) show the load on every replica; `status` lists each replica;
`down` (and a failed `up`) leave no container, network or volume."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from deployer import Pipeline
from deployer.errors import EnvironmentProblem, ServerError
from deployer.fleet import from_spec as fleet
from deployer.fleet.run import FLEET_FILE, FleetStatus
from deployer.server.docker.balancer_image import build_balancer_image
from deployer.server.docker.client import docker_client, managed_resources
from deployer.server.docker.cpu_image import build_cpu_image
from deployer.server.docker.plan import project_name
from deployer.smoke.waiting import wait_until
from tests.docker_leftovers import EMPTY, session_leftovers
from tests.fleet_load import Load, infer_count

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "examples" / "quickstart"
REQUESTS = 40  # per protocol, through the balancer

pytestmark = [pytest.mark.docker, pytest.mark.triton, pytest.mark.slow]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Both images (reused when current, as in CI's provisioning); afterwards nothing of this session's
    tests is left (other sessions on the same engine have their own)."""
    cpu = build_cpu_image().tag
    build_balancer_image()
    yield cpu
    try:
        client = docker_client(timeout_s=10)
    except EnvironmentProblem:
        return
    assert session_leftovers(client, tmp_path_factory.getbasetemp()) == EMPTY


def _spec(tmp_path: Path, image: str, ports: list[int], runtime: str, *, broken: bool = False) -> Path:
    shutil.copy(QUICKSTART / "classifier.onnx", tmp_path / "classifier.onnx")
    labels = (QUICKSTART / "labels.py").read_text(encoding="utf-8")
    if broken:  # a model that cannot load: `up` must fail and tear the whole project down
        labels = labels.replace("class TritonPythonModel:", "raise RuntimeError('refuses to load')\n\n\n"
                                "class TritonPythonModel:", 1)
    (tmp_path / "labels.py").write_text(labels, encoding="utf-8")
    http, grpc, metrics = ports
    spec = tmp_path / "deployer.yaml"
    spec.write_text(
        f"""repository: repo
server: {{runtime: {runtime}, replicas: 2, image: {image}, http_port: {http}, grpc_port: {grpc},
         metrics_port: {metrics}, startup_timeout: 120}}
smoke: {{concurrency: 4, duration: 0.5, batching_requests: 16}}
models:
  - name: classifier
    source: classifier.onnx
    max_batch_size: 16
    dynamic_batching: {{max_queue_delay_microseconds: 2000}}
    instance_group: [{{kind: CPU, count: 1}}]
  - name: labels
    source: labels.py
    backend: python
    max_batch_size: 16
    inputs: [{{name: logits, dtype: FP32, dims: [4]}}]
    outputs: [{{name: label, dtype: STRING, dims: [1]}}]
"""
    )
    return spec


def _send(http_url: str, grpc_url: str, n: int) -> None:
    """`n` classifier requests over HTTP and `n` over gRPC, each answered."""
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    x = np.random.default_rng(0).standard_normal((1, 16)).astype(np.float32)
    for mod, url in ((httpclient, http_url), (grpcclient, grpc_url)):
        c = mod.InferenceServerClient(url)
        try:
            inp = mod.InferInput("features", [1, 16], "FP32")
            inp.set_data_from_numpy(x)
            for _ in range(n):
                assert c.infer("classifier", [inp]).as_numpy("logits").shape == (1, 4)  # 4 classes
        finally:
            c.close()


def _leftovers(tmp_path: Path) -> dict[str, list[str]]:
    return managed_resources(docker_client(timeout_s=10), project_name(tmp_path / ".deployer" / "deployer"))


@pytest.mark.parametrize("runtime", ["compose", "docker"])
def test_two_replicas_smoke_through_the_balancer_and_share_the_load(
    tmp_path: Path, images: str, find_free_ports: Callable[..., list[int]], runtime: str
) -> None:
    p = Pipeline.load(_spec(tmp_path, images, find_free_ports(3), runtime))
    result = p.deploy(keep=True)
    try:
        assert result.report.passed, [(s.model, c) for s in result.report.suites for c in s.checks
                                      if c.status == "fail"]
        suites = {s.model for s in result.report.suites}
        assert {"classifier", "r0:classifier", "r1:classifier", "r0:labels", "r1:labels"} <= suites
        st = fleet.current(p.deployment)
        assert [r.runtime for r in st.replicas] == [runtime, runtime]
        assert len({r.container_id for r in st.replicas}) == 2 and st.balancer.container_id
        before = [infer_count(r.http_url, "classifier") for r in st.replicas]
        _send(st.balancer.http_url, st.balancer.grpc_url, REQUESTS)

        def spread() -> list[int]:
            return [infer_count(r.http_url, "classifier") - b for r, b in zip(st.replicas, before, strict=True)]

        # Triton records statistics after the response went out: wait for them instead of reading once
        seen = wait_until(spread, lambda d: sum(d) >= 2 * REQUESTS, 60.0, interval_s=0.1).value
        assert sum(seen) == 2 * REQUESTS and all(d > 0 for d in seen), f"per-replica counts {seen}"
        status = p.status()
        assert isinstance(status, FleetStatus) and status.balancer_running and status.ready
        assert [name for name, _ in status.replicas] == ["r0", "r1"]
        assert all(s.models == {"classifier": "READY", "labels": "READY"} for _, s in status.replicas)
    finally:
        p.down()
    assert _leftovers(tmp_path) == EMPTY
    assert not (tmp_path / ".deployer" / "deployer" / FLEET_FILE).exists()
    status = p.status()
    assert isinstance(status, FleetStatus) and not status.ready


@pytest.mark.parametrize("runtime", ["compose", "docker"])
def test_a_replica_that_cannot_load_fails_up_and_leaves_nothing(
    tmp_path: Path, images: str, find_free_ports: Callable[..., list[int]], runtime: str
) -> None:
    p = Pipeline.load(_spec(tmp_path, images, find_free_ports(3), runtime, broken=True))
    p.publish()
    try:
        with pytest.raises(ServerError, match="labels"):
            p.up()
    finally:
        p.down()  # a no-op when `up` cleaned up, as it must
    assert _leftovers(tmp_path) == EMPTY
    assert not (tmp_path / ".deployer" / "deployer" / FLEET_FILE).exists()


def test_docker_fleet_refuses_a_foreign_container_in_its_way_and_leaves_it(
    tmp_path: Path, images: str, find_free_ports: Callable[..., list[int]]
) -> None:
    from deployer.server.docker.plan import BALANCER_IMAGE

    p = Pipeline.load(_spec(tmp_path, images, find_free_ports(3), "docker"))
    p.publish()
    client = docker_client(timeout_s=10)
    name = f"{project_name(tmp_path / '.deployer' / 'deployer')}-r1"
    squatter = client.containers.create(BALANCER_IMAGE, ["true"], name=name)
    try:
        with pytest.raises(EnvironmentProblem, match="could not create container") as exc:
            p.up()
        assert exc.value.exit_code == 3
        assert _leftovers(tmp_path) == EMPTY  # replica r0, the network: removed again
        squatter.reload()  # not ours: untouched
    finally:
        squatter.remove(force=True)


def _served(http_url: str) -> list[str]:
    import tritonclient.http as httpclient

    c = httpclient.InferenceServerClient(http_url)
    try:
        return sorted(str(v) for v in c.get_model_metadata("classifier")["versions"])
    finally:
        c.close()


def test_a_killed_replica_container_is_routed_around_with_no_failed_request(
    tmp_path: Path, images: str, find_free_ports: Callable[..., list[int]]
) -> None:
    p = Pipeline.load(_spec(tmp_path, images, find_free_ports(3), "compose"))
    p.publish()
    p.up()
    try:
        st = fleet.current(p.deployment)
        with Load(st.balancer.http_url, "classifier", ("features", [1, 16]), 4) as load:
            load.wait_ok(100, 120.0)
            docker_client(timeout_s=10).containers.get(st.replicas[1].container_id).kill()  # SIGKILL
            load.wait_ok(200, 120.0)  # by r0 alone, nginx retrying what the kill caught
        assert load.failed == [], load.failed[:5]
        status = p.status()
        assert isinstance(status, FleetStatus) and status.balancer_running and not status.ready
        rows = dict(status.replicas)
        assert not rows["r1"].running and rows["r0"].ready, rows
    finally:
        p.down()
    assert _leftovers(tmp_path) == EMPTY


def test_rollout_on_compose_under_load_moves_every_replica_to_v2(
    tmp_path: Path, images: str, find_free_ports: Callable[..., list[int]]
) -> None:
    ports = find_free_ports(3)
    spec = _spec(tmp_path, images, ports, "compose")
    p = Pipeline.load(spec)
    p.publish()
    p.up()
    try:
        st = fleet.current(p.deployment)
        assert [_served(r.http_url) for r in st.replicas] == [["1"], ["1"]]
        # v2 without dynamic batching: the per-replica smoke's batching proof counts every inference of
        # the replica, which live traffic through the balancer disturbs (a rollout finding, not compose's)
        spec.write_text(spec.read_text().replace("    dynamic_batching: {max_queue_delay_microseconds: 2000}\n", ""))
        with Load(st.balancer.http_url, "classifier", ("features", [1, 16]), 4) as load:
            load.wait_ok(50, 120.0)
            result = Pipeline.load(spec).rollout()
            load.wait_ok(50, 120.0)
        assert load.failed == [], load.failed[:5]
        assert result.changed == {"classifier": (1, 2)}
        assert [_served(r.http_url) for r in st.replicas] == [["2"], ["2"]]
    finally:
        p.down()
    assert _leftovers(tmp_path) == EMPTY
