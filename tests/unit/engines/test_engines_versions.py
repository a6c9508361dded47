"""TensorRT flavours and versions: rtx- versions, the version-compatible rule, unverified table rows."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from deployer.engines import check_engine_matches_target, check_triton_can_serve, parse_trt_version
from deployer.engines.request import BuildInfo
from deployer.engines.versions import version_compatible_runs_on
from deployer.errors import BuildError

INFO = BuildInfo(
    model_name="m", engine_path=Path("/x/model.plan"), engine_sha256="0" * 64, onnx_sha256="0" * 64, cache_key="k",
    trt_version="10.3.0.26", cuda_version=None, gpu_name=None, compute_capability="8.6", precision="fp32",
    strongly_typed=False, flags=(), profiles=(), max_batch_size=8, precision_verified=None,
)


def test_rtx_versions_are_their_own_flavour() -> None:
    v = parse_trt_version("rtx-1.7.1.116")
    assert (v.flavor, v.major, v.minor, str(v)) == ("rtx", 1, 7, "rtx-1.7.1.116")
    assert v.api_major == 11 and v.strongly_typed_only
    assert not v.matches(parse_trt_version("1.7.1.116")) and v.matches(parse_trt_version("rtx-1.7"))
    assert not parse_trt_version("10.13").strongly_typed_only and parse_trt_version("11.1").strongly_typed_only


@pytest.mark.parametrize(
    ("built", "runtime", "ok"),
    [  # TensorRT's documented rule (pages cited in versions.py)
        ("10.3.0", "10.8.0", True),  # newer runtime of the same major
        ("10.3.0.26", "10.3", True),  # the same release, less precisely written
        ("10.8.0", "10.3.0", False),  # never older
        ("8.6.1", "10.3.0", True),  # "engines built with TensorRT 8 work with TensorRT 9 and TensorRT 10"
        ("8.6.1", "9.3", True),
        ("10.13", "11.1", True),  # "engines built with TensorRT 10 work with TensorRT 11"
        ("8.6.1", "11.1", False),  # not listed
        ("8.5.3", "8.6.1", False),  # version compatibility starts at 8.6 (builder and runtime)
        ("11.0", "10.16", False),
        ("rtx-1.7.1", "10.13", False),
    ],
)
def test_version_compatible_rule(built: str, runtime: str, ok: bool) -> None:
    got, why = version_compatible_runs_on(parse_trt_version(built), parse_trt_version(runtime))
    assert got is ok and (why is None) is ok


def test_engine_target_check_follows_version_compatibility(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(BuildError, match=r"target Triton runs TensorRT 10\.8\.0"):
        check_engine_matches_target(INFO, "10.8.0")
    vc = dataclasses.replace(INFO, flags=("VERSION_COMPATIBLE",))
    check_engine_matches_target(vc, "10.8.0")  # a version-compatible plan loads on a newer 10.x
    with pytest.raises(BuildError, match=r"version-compatible, but .*never runs on an older TensorRT"):
        check_engine_matches_target(vc, "10.1.0")
    old = dataclasses.replace(vc, trt_version="8.5.3")
    with pytest.raises(BuildError, match=r"from TensorRT 8\.6 on"):
        check_engine_matches_target(old, "8.6.1")
    with caplog.at_level(logging.WARNING):
        check_engine_matches_target(INFO, "10.8.0", verified=False)  # unverified table row: warn only
    assert "unverified table row" in caplog.text


def test_tensorrt_rtx_plans_are_never_served_by_triton() -> None:
    rtx = dataclasses.replace(INFO, trt_version="rtx-1.7.1.116", flavor="rtx")
    for check in (lambda: check_triton_can_serve(rtx), lambda: check_engine_matches_target(rtx, "rtx-1.7.1.116")):
        with pytest.raises(BuildError, match="built by TensorRT-RTX") as exc:
            check()
        assert exc.value.exit_code == 1 and "--fallback onnxruntime" in (exc.value.hint or "")
    check_triton_can_serve(INFO)


def test_fallback_publishes_the_precision_that_is_built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `deploy --fallback onnxruntime` smoke-tests the fp16 / Q/DQ ONNX, not the fp32 source.
    pytest.importorskip("onnxconverter_common")
    import json
    import shutil

    import numpy as np
    import onnx

    from deployer.engines.from_spec import serving_onnx
    from deployer.spec import load_deployment

    monkeypatch.setenv("DEPLOYER_CACHE_DIR", str(tmp_path / "cache"))
    src = tmp_path / "classifier.onnx"
    shutil.copyfile(Path(__file__).resolve().parents[3] / "examples" / "quickstart" / "classifier.onnx", src)
    np.savez(tmp_path / "calib.npz", features=np.random.default_rng(0).standard_normal((120, 16)).astype(np.float32))
    for precision, extra, op in (("fp16", {}, "Cast"),
                                 ("int8", {"calibration": {"data": ["calib.npz"], "batch_size": 4}}, "QuantizeLinear")):
        spec = tmp_path / f"{precision}.yaml"
        model = {"name": "c", "source": "classifier.onnx", "backend": "tensorrt", "precision": precision, **extra}
        spec.write_text(json.dumps({"repository": "repo", "models": [model]}))
        dep = load_deployment(spec, fallback="onnxruntime")
        path = serving_onnx(dep, dep.models[0])
        assert path is not None and op in {n.op_type for n in onnx.load(str(path)).graph.node}
    fp32 = tmp_path / "fp32.yaml"
    fp32.write_text(json.dumps({"repository": "repo", "models": [{"name": "c", "source": "classifier.onnx"}]}))
    dep = load_deployment(fp32)
    assert serving_onnx(dep, dep.models[0]) is None
