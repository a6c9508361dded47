"""`deploy` and every serving stage through the library API alone, against a real tritonserver."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

import deployer
from deployer import Pipeline

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "examples" / "quickstart"

pytestmark = [pytest.mark.triton, pytest.mark.slow]


def _spec(tmp_path: Path, ports: list[int], backend: str = "") -> Path:
    shutil.copy(QUICKSTART / "classifier.onnx", tmp_path / "classifier.onnx")
    http, grpc, metrics = ports
    extra = ("    backend: tensorrt\n    precision: fp16\n    instance_group: [{kind: GPU, count: 1}]\n"
             if backend == "tensorrt" else "")
    spec = tmp_path / "deployer.yaml"
    spec.write_text(
        f"""repository: repo
fallback: {"onnxruntime" if backend == "tensorrt" else "null"}
server: {{runtime: local, http_port: {http}, grpc_port: {grpc}, metrics_port: {metrics}, startup_timeout: 90}}
smoke: {{concurrency: 4, duration: 0.3, batching_requests: 16}}
models:
  - name: classifier
    source: classifier.onnx
    max_batch_size: 8
    dynamic_batching: {{max_queue_delay_microseconds: 2000}}
{extra}"""
    )
    return spec


def test_deploy_of_a_tensorrt_spec_through_the_api_alone(
    tmp_path: Path, find_free_ports: Callable[..., list[int]]
) -> None:
    """The spec asks for TensorRT and `fallback: onnxruntime`: the library deploys it with no CLI help."""
    dep = deployer.load_deployment(_spec(tmp_path, find_free_ports(3), backend="tensorrt"))
    assert dep.models[0].requested_backend == "tensorrt" and dep.models[0].backend == "onnxruntime"
    result = deployer.deploy(dep)
    assert result.report.passed, [c for s in result.report.suites for c in s.checks if c.status == "fail"]
    assert set(result.timings) == {"publish", "up", "smoke", "down"}
    assert result.published == ["classifier:1:new"]
    assert deployer.status(dep).running is False  # stopped


def test_each_serving_stage_through_the_pipeline(tmp_path: Path, find_free_ports: Callable[..., list[int]]) -> None:
    p = Pipeline.load(_spec(tmp_path, find_free_ports(3)))
    p.publish()
    state = p.up()
    try:
        st = p.status()
        assert st.running and st.ready and st.models == {"classifier": "READY"}
        report = p.smoke(state=state)
        assert report.passed
    finally:
        stopped = p.down()
    assert stopped is not None and stopped.pid == state.pid
    assert not p.status().running
