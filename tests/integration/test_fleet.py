"""`server.replicas: 3` on real parts: three local tritonservers on one shared repository, real nginx
in front (HTTP and gRPC), smoke through the balancer and per replica, load spread over all three
(Triton's statistics extension), and a replica SIGKILLed under load with 0 failed requests."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from deployer import Pipeline
from deployer.fleet import from_spec as fleet
from deployer.fleet.run import FleetStatus
from tests.fleet_load import Load, classifier_fleet_spec, infer_count

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "examples" / "quickstart"

pytestmark = [pytest.mark.triton, pytest.mark.slow,
              pytest.mark.skipif(shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists(),
                                 reason="nginx missing (apt-get install -y nginx-light)")]


def _spec(tmp_path: Path, ports: list[int]) -> Path:
    return classifier_fleet_spec(tmp_path, ports)


def _input(p: Pipeline) -> tuple[str, tuple[str, list[int]]]:
    m = p.deployment.models[0]
    i = m.config["input"][0]
    return m.name, (str(i["name"]), [1, *[int(d) for d in i["dims"]]])


def test_three_replicas_behind_nginx_spread_load_and_survive_a_sigkill(
    tmp_path: Path, find_free_ports: Callable[..., list[int]], processes_mentioning: Callable[[str], list[int]]
) -> None:
    p = Pipeline.load(_spec(tmp_path, find_free_ports(3)))
    result = p.deploy(keep=True)
    try:
        assert result.report.passed, [(s.model, c) for s in result.report.suites for c in s.checks
                                      if c.status == "fail"]
        suites = {s.model for s in result.report.suites}
        assert {"r0:classifier", "r1:classifier", "r2:classifier"} <= suites  # smoked per replica too
        st = fleet.current(p.deployment)
        assert len(st.replicas) == 3
        model, inp = _input(p)
        before = [infer_count(r.http_url, model) for r in st.replicas]
        with Load(st.balancer.http_url, model, inp, 16) as load:
            load.wait_ok(300, 120.0)
            after = [infer_count(r.http_url, model) for r in st.replicas]
            spread = [a - b for a, b in zip(after, before, strict=True)]
            assert all(d > 0 for d in spread), f"per-replica inference counts {spread}: not spread over all 3"
            victim = st.replicas[1]
            assert victim.pid is not None
            os.kill(victim.pid, signal.SIGKILL)
            load.wait_ok(300, 120.0)  # served by the two left, retried where the kill caught a request
        assert load.failed == [], load.failed[:5]
        status = p.status()
        assert isinstance(status, FleetStatus) and status.balancer_running
        rows = dict(status.replicas)
        assert not rows["r1"].running and rows["r0"].ready and rows["r2"].ready
        assert not status.ready
    finally:
        p.down()
    assert processes_mentioning(str(tmp_path)) == []  # nginx and every tritonserver gone: no orphans


# -- rollout ----------------------------------------------------------------------------------------

_ECHO = '''import os

import numpy as np
import triton_python_backend_utils as pb_utils

FACTOR = {factor}
FAIL_ON = {fail_on!r}  # a file holding the pid of the tritonserver this version refuses to load on


class TritonPythonModel:
    def initialize(self, args):
        if FAIL_ON and os.path.exists(FAIL_ON) and open(FAIL_ON).read().strip() == str(os.getppid()):
            raise RuntimeError("this version refuses to load on this replica")

    def execute(self, requests):
        out = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "x").as_numpy()
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("y", (x * FACTOR).astype(np.float32))]))
        return out
'''


def _echo_spec(tmp_path: Path, ports: list[int], *, factor: float, fail_on: str = "") -> Path:
    (tmp_path / "echo.py").write_text(_ECHO.format(factor=factor, fail_on=fail_on))
    http, grpc, metrics = ports
    spec = tmp_path / "deployer.yaml"
    spec.write_text(
        f"""repository: repo
server: {{runtime: local, replicas: 3, http_port: {http}, grpc_port: {grpc}, metrics_port: {metrics},
         startup_timeout: 120}}
smoke: {{concurrency: 2, duration: 0.3, batching_requests: 8}}
models:
  - name: echo
    source: echo.py
    backend: python
    max_batch_size: 8
    dynamic_batching: {{max_queue_delay_microseconds: 500}}  # the smoke's batching proof is on: a
    instance_group: [{{kind: CPU, count: 1}}]                 # replica smoked under traffic must not fail it
    inputs: [{{name: x, dtype: FP32, dims: [4]}}]
    outputs: [{{name: y, dtype: FP32, dims: [4]}}]
"""
    )
    return spec


def _served(state: Any, model: str) -> list[str]:
    import tritonclient.http as httpclient

    c = httpclient.InferenceServerClient(state.http_url)
    try:
        return sorted(str(v) for v in c.get_model_metadata(model)["versions"])
    finally:
        c.close()


def test_rollout_v1_to_v2_under_load_fails_no_request(
    tmp_path: Path, find_free_ports: Callable[..., list[int]], processes_mentioning: Callable[[str], list[int]]
) -> None:
    ports = find_free_ports(3)
    p = Pipeline.load(_echo_spec(tmp_path, ports, factor=1.0))
    p.publish()
    p.up()
    try:
        st = fleet.current(p.deployment)
        assert [_served(r, "echo") for r in st.replicas] == [["1"]] * 3
        with Load(st.balancer.http_url, "echo", ("x", [1, 4]), 16) as load:
            load.wait_ok(100, 120.0)
            p2 = Pipeline.load(_echo_spec(tmp_path, ports, factor=2.0))
            result = p2.rollout()
            load.wait_ok(100, 120.0)
        assert load.failed == [], load.failed[:5]
        assert result.changed == {"echo": (1, 2)}
        assert [_served(r, "echo") for r in st.replicas] == [["2"]] * 3
    finally:
        p.down()
    assert processes_mentioning(str(tmp_path)) == []


def test_rollout_whose_v2_fails_to_load_on_replica_2_returns_all_to_v1(
    tmp_path: Path, find_free_ports: Callable[..., list[int]], processes_mentioning: Callable[[str], list[int]]
) -> None:
    from deployer.errors import CheckFailed

    ports = find_free_ports(3)
    p = Pipeline.load(_echo_spec(tmp_path, ports, factor=1.0))
    p.publish()
    p.up()
    try:
        st = fleet.current(p.deployment)
        marker = tmp_path / "fail-on"
        marker.write_text(str(st.replicas[1].pid))
        with Load(st.balancer.http_url, "echo", ("x", [1, 4]), 16) as load:
            load.wait_ok(100, 120.0)
            p2 = Pipeline.load(_echo_spec(tmp_path, ports, factor=2.0, fail_on=str(marker)))
            with pytest.raises(CheckFailed, match=r"replica r1 .*check 'load' failed") as err:
                p2.rollout()
            load.wait_ok(100, 120.0)
        assert err.value.exit_code == 1
        assert load.failed == [], load.failed[:5]
        assert [_served(r, "echo") for r in st.replicas] == [["1"]] * 3
        from deployer.repository import serving_state

        assert serving_state(p.deployment.repository / "echo").served == (1,)  # a restart serves v1 too
    finally:
        p.down()
    assert processes_mentioning(str(tmp_path)) == []
