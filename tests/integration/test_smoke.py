"""`run_smoke` against a real tritonserver (nvidia-pytriton wheel) serving tiny ONNX models."""

from __future__ import annotations

import json
import socket
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from deployer.errors import CheckFailed
from deployer.server.base import ServerSettings, ServerState
from deployer.server.local import LocalRuntime
from deployer.smoke import (
    Sla,
    SmokeModel,
    SmokeOptions,
    SmokeOutput,
    SmokeTensor,
    raise_for_failures,
    report_text,
    run_smoke,
    write_json,
    write_junit,
)

pytestmark = pytest.mark.triton


def _mlp_onnx(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3], rng.standard_normal((4, 3)).astype(np.float32).ravel())
    b = helper.make_tensor("b", TensorProto.FLOAT, [3], rng.standard_normal(3).astype(np.float32))
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        initializer=[w, b],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)


def _types_onnx(path: Path) -> None:
    two = helper.make_tensor("two", TensorProto.FLOAT16, [], np.array([2], dtype=np.float16).view(np.uint16))
    one = helper.make_tensor("one", TensorProto.INT64, [], [1])
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["a", "two"], ["a2"]),
            helper.make_node("Add", ["b", "one"], ["b2"]),
            helper.make_node("Not", ["c"], ["c2"]),
            helper.make_node("Identity", ["s"], ["s2"]),
        ],
        "types",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT16, [3]),
            helper.make_tensor_value_info("b", TensorProto.INT64, [2, 3]),
            helper.make_tensor_value_info("c", TensorProto.BOOL, [3]),
            helper.make_tensor_value_info("s", TensorProto.STRING, [2]),
        ],
        [
            helper.make_tensor_value_info("a2", TensorProto.FLOAT16, [3]),
            helper.make_tensor_value_info("b2", TensorProto.INT64, [2, 3]),
            helper.make_tensor_value_info("c2", TensorProto.BOOL, [3]),
            helper.make_tensor_value_info("s2", TensorProto.STRING, [2]),
        ],
        initializer=[two, one],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)


MLP_CONFIG: dict[str, Any] = {
    "name": "mlp",
    "backend": "onnxruntime",
    "max_batch_size": 8,
    "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [4]}],
    "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [3]}],
    "instance_group": [{"kind": "KIND_CPU", "count": 1}],
    "dynamic_batching": {"max_queue_delay_microseconds": 20000},
}
TYPES_CONFIG: dict[str, Any] = {
    "name": "types",
    "backend": "onnxruntime",
    "max_batch_size": 0,
    "input": [
        {"name": "a", "data_type": "TYPE_FP16", "dims": [3]},
        {"name": "b", "data_type": "TYPE_INT64", "dims": [2, 3]},
        {"name": "c", "data_type": "TYPE_BOOL", "dims": [3]},
        {"name": "s", "data_type": "TYPE_STRING", "dims": [2]},
    ],
    "output": [
        {"name": "a2", "data_type": "TYPE_FP16", "dims": [3]},
        {"name": "b2", "data_type": "TYPE_INT64", "dims": [2, 3]},
        {"name": "c2", "data_type": "TYPE_BOOL", "dims": [3]},
        {"name": "s2", "data_type": "TYPE_STRING", "dims": [2]},
    ],
    "instance_group": [{"kind": "KIND_CPU", "count": 1}],
}


# Batching-capable but served without a dynamic batcher: every request runs alone.
PLAIN_CONFIG: dict[str, Any] = {
    key: value for key, value in {**MLP_CONFIG, "name": "mlp_plain"}.items() if key != "dynamic_batching"
}


def _write_model(repo: Path, config: dict[str, Any], build: Any) -> Path:
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2

    mdir = repo / config["name"]
    (mdir / "1").mkdir(parents=True)
    onnx_path = mdir / "1" / "model.onnx"
    build(onnx_path)
    msg = json_format.ParseDict(config, model_config_pb2.ModelConfig())
    (mdir / "config.pbtxt").write_text(text_format.MessageToString(msg))
    return onnx_path


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass(frozen=True)
class Deployment:
    state: ServerState
    mlp: SmokeModel
    types: SmokeModel
    other_onnx: Path


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("smoke")
    repo = root / "repo"
    mlp_onnx = _write_model(repo, MLP_CONFIG, lambda p: _mlp_onnx(p, seed=1))
    types_onnx = _write_model(repo, TYPES_CONFIG, _types_onnx)
    _write_model(repo, PLAIN_CONFIG, lambda p: _mlp_onnx(p, seed=1))
    other = root / "other.onnx"
    _mlp_onnx(other, seed=2)
    http, grpc, metrics = _free_ports(3)
    settings = ServerSettings(
        runtime="local",
        repository=repo,
        models=("mlp", "types", "mlp_plain"),
        state_dir=root / "state",
        http_port=http,
        grpc_port=grpc,
        metrics_port=metrics,
        startup_timeout_s=120.0,
    )
    runtime = LocalRuntime()
    state = runtime.up(settings)
    try:
        mlp = SmokeModel(
            name="mlp",
            inputs=(SmokeTensor("x", "FP32", (4,), value_range=(-1.0, 1.0)),),
            outputs=(SmokeOutput("y", "FP32", (3,)),),
            max_batch_size=8,
            expected_config=MLP_CONFIG,
            onnx_path=mlp_onnx,
            preferred_batch_sizes=(4,),
            dynamic_batching=True,
        )
        types = SmokeModel(
            name="types",
            inputs=(
                SmokeTensor("a", "FP16", (3,)),
                SmokeTensor("b", "INT64", (2, 3), value_range=(-100, 100)),
                SmokeTensor("c", "BOOL", (3,)),
                SmokeTensor("s", "BYTES", (2,)),
            ),
            outputs=(
                SmokeOutput("a2", "FP16", (3,)),
                SmokeOutput("b2", "INT64", (2, 3)),
                SmokeOutput("c2", "BOOL", (3,)),
                SmokeOutput("s2", "STRING", (2,)),
            ),
            max_batch_size=0,
            expected_config=TYPES_CONFIG,
            onnx_path=types_onnx,
        )
        yield Deployment(state, mlp, types, other)
    finally:
        runtime.down(state)


FAST = SmokeOptions(duration_s=1.0, concurrency=8, batching_requests=16, warmup_requests=8)


def _by_name(report: Any, model: str) -> dict[str, Any]:
    suite = next(s for s in report.models if s.model == model)
    return {c.name: c for c in suite.checks}


def test_passing_models_all_checks_pass_with_numbers(deployment: Deployment, tmp_path: Path) -> None:
    report = run_smoke(deployment.state, [deployment.mlp, deployment.types], FAST)
    text = report_text(report)
    assert report.passed, text
    assert report.exit_code == 0
    raise_for_failures(report)  # no exception when passed

    mlp = _by_name(report, "mlp")
    # min (batch 1), opt == preferred batch 4, max (batch 8), each over both protocols
    assert {"infer[http,min]", "infer[grpc,min]", "infer[http,opt/batch4]", "infer[grpc,max]"} <= set(mlp)
    assert mlp["config"].status == "pass" and mlp["metadata"].status == "pass"
    assert mlp["infer[grpc,max]"].numbers["y.max_abs"] <= 1e-4
    batching = mlp["batching"]
    assert batching.status == "pass", batching.message
    assert batching.numbers["inference_count"] == batching.numbers["requests"]
    assert batching.numbers["execution_count"] < batching.numbers["requests"]
    assert batching.numbers["max_batch"] > 1
    perf = mlp["perf"]
    assert perf.status == "pass"
    assert perf.numbers["requests"] > 0 and perf.numbers["errors"] == 0
    assert 0 < perf.numbers["p50_ms"] <= perf.numbers["p90_ms"] <= perf.numbers["p99_ms"]

    metrics = mlp["metrics"]
    assert metrics.status == "pass", metrics.message
    # smoke waited for the counters to show every request its checks completed (they trail responses)
    assert metrics.numbers["request_success"] >= metrics.numbers["completed_requests"] >= perf.numbers["requests"]
    assert metrics.numbers["request_failure"] == 0 and metrics.numbers["avg_batch"] >= 1

    types = _by_name(report, "types")
    assert types["infer[http,min/opt/max]"].status == "pass"  # FP16, INT64, BOOL, BYTES round trip
    assert types["batching"].status == "skip"
    assert "max_batch_size is 0" in types["batching"].message

    json_path, junit_path = tmp_path / "r.json", tmp_path / "r.xml"
    write_json(report, json_path)
    write_junit(report, junit_path)
    data = json.loads(json_path.read_text())
    assert data["passed"] is True and data["counts"]["fail"] == 0
    root = ET.parse(junit_path).getroot()
    assert [s.get("name") for s in root.iter("testsuite")] == ["server", "mlp", "types"]
    assert int(root.get("tests", "0")) == sum(len(s.checks) for s in report.suites)
    assert root.get("failures") == "0" and not list(root.iter("failure"))


def test_wrong_reference_config_drift_and_sla_fail(deployment: Deployment) -> None:
    # The served model is `mlp`; the reference is a different ONNX, the expected config claims a
    # different max_batch_size, and the SLA is impossible: three failures, each explained.
    model = replace(
        deployment.mlp,
        onnx_path=deployment.other_onnx,
        expected_config={**MLP_CONFIG, "max_batch_size": 4},
        preferred_batch_sizes=(),
        sla=Sla(p99_ms=0.001),
    )
    options = replace(
        FAST, duration_s=0.5, protocols=("grpc",), perf_protocol="grpc", checks=frozenset({"config", "infer", "perf"})
    )
    report = run_smoke(deployment.state, [model], options)
    assert not report.passed and report.exit_code == 1
    checks = _by_name(report, "mlp")
    assert checks["config"].status == "fail"
    assert "max_batch_size: expected 4, served 8" in checks["config"].details
    infer = checks["infer[grpc,max]"]
    assert infer.status == "fail"
    assert infer.numbers["y.max_abs"] > 1e-3
    assert "vs reference" in infer.message and "max abs" in infer.message
    assert checks["perf"].status == "fail" and "SLA violated: p99_ms" in checks["perf"].message
    assert checks["perf"].numbers["requests"] > 0 and checks["perf"].numbers["errors"] == 0  # grpc load ran
    assert "batching" not in checks  # not selected
    with pytest.raises(CheckFailed) as exc:
        raise_for_failures(report)
    assert "mlp: config" in exc.value.render()


def test_golden_file_and_no_reference(deployment: Deployment, tmp_path: Path) -> None:
    from deployer.onnx.runtime import OrtModel

    x = np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)
    assert deployment.mlp.onnx_path is not None
    y = OrtModel(deployment.mlp.onnx_path).run({"x": x})["y"]
    good, bad = tmp_path / "good.npz", tmp_path / "bad.npz"
    np.savez(good, **{"inputs/x": x, "outputs/y": y})
    np.savez(bad, **{"inputs/x": x, "outputs/y": y + 0.5})
    options = replace(FAST, checks=frozenset({"infer", "golden"}))
    report = run_smoke(
        deployment.state,
        [replace(deployment.mlp, golden=good, onnx_path=None), replace(deployment.mlp, golden=bad)],
        options,
    )
    ok, broken = ({c.name: c for c in s.checks} for s in report.models)
    assert ok["golden[http]"].status == "pass" and ok["golden[grpc]"].status == "pass"
    assert "no numeric reference" in ok["infer[grpc,min]"].message  # shape/dtype only without ONNX
    assert broken["golden[grpc]"].status == "fail"
    assert broken["golden[grpc]"].numbers["y.max_abs"] == pytest.approx(0.5, abs=1e-5)


def test_unready_model_is_named(deployment: Deployment) -> None:
    ghost = replace(deployment.mlp, name="not_loaded")
    report = run_smoke(deployment.state, [ghost], FAST)
    checks = _by_name(report, "not_loaded")
    assert list(checks) == ["ready"]
    assert checks["ready"].status == "fail" and "not_loaded" in checks["ready"].message


def test_load_generators_bounded_and_counting_errors(deployment: Deployment) -> None:
    from deployer.smoke.load.httpload import build_http_request, run_http_load
    from deployer.smoke.load.loadgen import build_request, run_load

    state = deployment.state
    x = np.zeros((1, 4), np.float32)
    raw = build_http_request(state.host, "mlp", {"x": x}, ("y",))
    res = run_http_load(state.host, state.http_port, raw, concurrency=4, duration_s=30, max_requests=40)
    assert (res.requests, res.errors) == (40, 0)
    split = run_load(
        state.grpc_url,
        build_request("mlp", {"x": x}, ["y"]),
        concurrency=4,
        duration_s=30,
        max_requests=30,
        processes=2,
        warmup_requests=4,
    )
    assert (split.requests, split.errors) == (30, 0) and split.client_cpu_s > 0
    # a request the server rejects: counted, quoted, and the run stays bounded
    bad = build_http_request(state.host, "mlp", {"x": np.zeros((1, 5), np.float32)}, ("y",))
    res = run_http_load(
        state.host, state.http_port, bad, concurrency=2, duration_s=30, max_requests=10, warmup_requests=0
    )
    assert res.requests == 0 and res.errors == 10 and "400" in res.first_error
    gbad = build_request("nope", {"x": x}, ["y"])
    for stream in (True, False):  # an error response on the stream / a failed unary call
        gres = run_load(
            state.grpc_url, gbad, concurrency=2, duration_s=30, max_requests=10, warmup_requests=0, stream=stream
        )
        assert gres.requests == 0 and gres.errors == 10 and "nope" in gres.first_error


def test_batching_failure_is_explained(deployment: Deployment) -> None:
    # We claim dynamic batching, the served config has none: N requests run in N executions.
    model = replace(deployment.mlp, name="mlp_plain", expected_config={})
    report = run_smoke(deployment.state, [model], replace(FAST, checks=frozenset({"batching"})))
    check = _by_name(report, "mlp_plain")["batching"]
    assert check.status == "fail"
    assert check.numbers["execution_count"] == check.numbers["requests"] == check.numbers["inference_count"]
    assert check.numbers["attempts"] == 2  # retried with more requests before failing
    assert "no batch > 1 was formed" in check.message
    assert "no dynamic_batching block" in check.message
