"""Build plan: profile validation, flags per TensorRT version (with the FAKE tensorrt), cache keys."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from deployer.engines.adapters import TrtAdapter, load_tensorrt
from deployer.engines.plan import (
    NetworkInput,
    engine_cache_key,
    plan_flags,
    profile_for_batch_range,
    validate_profiles,
)
from deployer.engines.request import BuilderFlags, BuildRequest, CalibrationSettings, InputShapes, Profile
from deployer.errors import BuildError, UserError

X = NetworkInput("x", (-1, 3, 8, 8))
MASK = NetworkInput("mask", (-1, 8), "INT32")


def prof(*items: tuple[str, tuple[int, ...], tuple[int, ...], tuple[int, ...]]) -> Profile:
    return Profile(tuple(InputShapes(n, lo, mid, hi) for n, lo, mid, hi in items))


GOOD = prof(("x", (1, 3, 8, 8), (4, 3, 8, 8), (16, 3, 8, 8)), ("mask", (1, 8), (4, 8), (16, 8)))


def req(tmp: Path = Path("/tmp/x"), **kw: object) -> BuildRequest:
    base = BuildRequest(
        model_name="m",
        onnx_path=tmp / "m.onnx",
        profiles=(GOOD,),
        max_batch_size=16,
        output_path=tmp / "out" / "model.plan",
        cache_dir=tmp / "cache",
    )
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


# ---- profiles -------------------------------------------------------------------------------------------


def test_valid_profiles_including_several() -> None:
    second = prof(("x", (1, 3, 8, 8), (16, 3, 8, 8), (32, 3, 8, 8)), ("mask", (1, 8), (16, 8), (32, 8)))
    assert validate_profiles([X, MASK], [GOOD, second], 16) == ()


def _issues(inputs: list[NetworkInput], profiles: list[Profile], mbs: int) -> str:
    with pytest.raises(UserError) as exc:
        validate_profiles(inputs, profiles, mbs)
    return exc.value.render()


def test_wrong_name_is_reported_because_tensorrt_ignores_it() -> None:
    bad = prof(("x", (1, 3, 8, 8), (4, 3, 8, 8), (16, 3, 8, 8)), ("input:0", (1, 8), (4, 8), (16, 8)))
    text = _issues([X, MASK], [bad], 16)
    assert "'input:0' is not a network input" in text and "silently ignore" in text
    assert "dynamic input 'mask'" in text  # and the real input is uncovered


def test_batch_rules() -> None:
    text = _issues([X], [prof(("x", (2, 3, 8, 8), (4, 3, 8, 8), (8, 3, 8, 8)))], 16)
    assert "batch minimum is 2" in text
    assert "batch maximum 8 is below max_batch_size 16" in text


def test_shape_errors_and_all_reported_at_once() -> None:
    text = _issues(
        [X],
        [prof(("x", (1, 3, 8), (4, 3, 8, 8), (16, 4, 8, 8)))],
        0,
    )
    assert "min shape (1, 3, 8) has rank 3" in text
    text = _issues([X], [prof(("x", (1, 3, 8, 8), (4, 3, 8, 8), (16, 4, 8, 8)))], 0)
    assert "axis 1 is fixed to 3" in text
    text = _issues([X], [prof(("x", (1, 3, 8, 8), (40, 3, 8, 8), (16, 3, 8, 8)))], 0)
    assert "min <= opt <= max" in text


def test_dynamic_inputs_need_a_profile_and_static_batch_cannot_batch() -> None:
    assert "no optimization profile" in _issues([X], [], 0)
    text = _issues([NetworkInput("s", (1, 4))], [], 8)
    assert "fixed first dimension" in text and "dynamic batch axis" in text
    assert validate_profiles([NetworkInput("s", (1, 4))], [], 0) == ()


def test_profile_for_batch_range() -> None:
    p = profile_for_batch_range([X, MASK, NetworkInput("static", (2, 2))], 1, 8, 32)
    assert p.get("x") == InputShapes("x", (1, 3, 8, 8), (8, 3, 8, 8), (32, 3, 8, 8))
    assert p.get("static") is None
    validate_profiles([X, MASK], [p], 32)
    seq = NetworkInput("tokens", (-1, -1))
    with pytest.raises(UserError, match="dynamic dimensions besides the batch"):
        profile_for_batch_range([seq], 1, 8, 32)
    p2 = profile_for_batch_range([seq], 1, 8, 32, {"tokens": ((0, 1), (0, 128), (0, 512))})
    assert p2.get("tokens") == InputShapes("tokens", (1, 1), (8, 128), (32, 512))


# ---- flags per TensorRT version --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "precision", "network", "set_flags", "clear"),
    [
        ("8.6.1.6", "fp32", ("EXPLICIT_BATCH",), (), ("TF32",)),
        ("8.6.1.6", "fp16", ("EXPLICIT_BATCH",), ("FP16",), ()),
        ("10.13.0.35", "tf32", (), ("TF32",), ()),
        ("10.13.0.35", "fp16", (), ("FP16",), ()),
        ("10.13.0.35", "bf16", (), ("BF16",), ()),
        ("11.1.0.106", "fp32", (), (), ("TF32",)),
    ],
)
def test_flags_per_version(
    version: str, precision: str, network: tuple[str, ...], set_flags: tuple[str, ...], clear: tuple[str, ...]
) -> None:
    plan = plan_flags(version, req(precision=precision))
    assert (plan.network_flags, plan.set_flags, plan.clear_flags) == (network, set_flags, clear)
    assert plan.strongly_typed is version.startswith("11")


@pytest.mark.parametrize("version", ["11.1.0.106", "rtx-1.7.1.116"])
def test_strongly_typed_only_versions_set_no_precision_flags(version: str) -> None:
    # TensorRT 11 and TensorRT-RTX have no FP16/INT8 flags: the precision goes into the ONNX (precision.py).
    for precision in ("fp16", "bf16", "fp8"):
        p = plan_flags(version, req(precision=precision))
        assert p.strongly_typed and p.set_flags == () and p.network_flags == () and not p.use_calibrator
    calib = CalibrationSettings((Path("a.npz"),))
    p = plan_flags(version, req(precision="int8", calibration=calib))
    assert p.set_flags == () and not p.use_calibrator  # the data calibrates the Q/DQ quantization instead
    with pytest.raises(UserError, match="needs calibration data to quantize") as exc:
        plan_flags(version, req(precision="int8"))
    assert "calibration" in (exc.value.hint or "")


def test_strongly_typed_requests() -> None:
    p11 = plan_flags("11.1", req(precision="fp16", strongly_typed=True))
    assert p11.set_flags == () and p11.network_flags == () and p11.strongly_typed
    p10 = plan_flags("10.13", req(precision="int8", strongly_typed=True), onnx_has_qdq=True)
    assert p10.network_flags == ("STRONGLY_TYPED",) and "INT8" not in p10.set_flags
    with pytest.raises(UserError, match="TensorRT >= 9"):
        plan_flags("8.6", req(precision="fp16", strongly_typed=True))
    calib = CalibrationSettings((Path("a.npz"),))
    p10q = plan_flags("10.13", req(precision="int8", strongly_typed=True, calibration=calib))
    assert p10q.network_flags == ("STRONGLY_TYPED",) and p10q.set_flags == () and not p10q.use_calibrator
    assert plan_flags("10.13", req(precision="fp16")).set_flags == ("FP16",)  # weakly typed flags stay on <= 10


def test_int8_and_fp8_need_data_or_qdq() -> None:
    with pytest.raises(UserError, match="calibration data"):
        plan_flags("10.13", req(precision="int8"))
    calib = CalibrationSettings((Path("a.npz"),))
    p = plan_flags("10.13", req(precision="int8", calibration=calib))
    assert p.set_flags == ("INT8",) and p.use_calibrator and p.warnings  # deprecated-on-10 warning
    assert not plan_flags("8.6", req(precision="int8"), onnx_has_qdq=True).use_calibrator
    with pytest.raises(UserError, match="Q/DQ"):
        plan_flags("10.13", req(precision="fp8"))
    with pytest.raises(UserError, match=re.escape("not available on TensorRT 8.6")):
        plan_flags("8.6", req(precision="bf16"))


def test_builder_flag_requirements() -> None:
    bf = BuilderFlags(
        version_compatible=True, exclude_lean_runtime=True, refit=True, hardware_compatibility="ampere_plus"
    )
    p = plan_flags("10.13", req(builder_flags=bf))
    assert {"VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME", "REFIT"} <= set(p.set_flags)
    assert p.hardware_compatibility == "AMPERE_PLUS"
    with pytest.raises(UserError, match="version-compatible"):
        plan_flags("10.13", req(builder_flags=BuilderFlags(exclude_lean_runtime=True)))
    with pytest.raises(UserError, match=re.escape("10.9")):
        plan_flags("10.8", req(builder_flags=BuilderFlags(hardware_compatibility="same_compute_capability")))
    with pytest.raises(UserError, match="strip_plan"):
        plan_flags("8.6", req(builder_flags=BuilderFlags(strip_plan=True)))
    with pytest.raises(UserError, match="not supported"):
        plan_flags("8.5.3", req())


@pytest.mark.parametrize("version", ["8.6.1.6", "10.13.0.35", "11.1.0.106"])
def test_adapter_applies_plan_to_fake_config(version: str, fake_trt: Callable[..., ModuleType]) -> None:
    trt = load_tensorrt(fake_trt(version))
    adapter = TrtAdapter(trt)
    request = req(precision="fp16", strongly_typed=version.startswith("11"), workspace_bytes=1 << 28)
    plan = (
        plan_flags(version, request, onnx_has_qdq=False)
        if not version.startswith("11")
        else plan_flags(version, dataclasses.replace(request, precision="fp32"))
    )
    config = trt.Builder(trt.Logger()).create_builder_config()
    adapter.apply_config(config, plan, request)
    assert config.get_memory_pool_limit(trt.MemoryPoolType.WORKSPACE) == 1 << 28
    mask = adapter.network_flags(plan.network_flags)
    if version.startswith("8"):
        assert config.get_flag(trt.BuilderFlag.FP16)
        assert mask == 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    elif version.startswith("10"):
        assert config.get_flag(trt.BuilderFlag.FP16) and mask == 0
    else:
        assert not config.get_flag(trt.BuilderFlag.TF32) and mask == 0
        with pytest.raises(BuildError, match=re.escape("no BuilderFlag.FP16")):
            adapter.builder_flag("FP16")
        with pytest.raises(BuildError, match="EXPLICIT_BATCH"):
            adapter.network_flags(["EXPLICIT_BATCH"])


# ---- engine cache keys ----------------------------------------------------------------------------------

KEY_ARGS = {"onnx_digest": "a" * 64, "trt_version": "10.13.0.35", "compute_capability": "8.6"}


def test_cache_key_stable_across_processes_and_ignores_names() -> None:
    k = engine_cache_key(req(), **KEY_ARGS)
    assert k == engine_cache_key(req(model_name="other", output_path=Path("/elsewhere/p.plan")), **KEY_ARGS)
    here = str(Path(__file__).parent)
    code = (
        f"import sys; sys.path.insert(0, {here!r}); from test_engines_plan import req, KEY_ARGS;"
        "from deployer.engines.plan import engine_cache_key; print(engine_cache_key(req(), **KEY_ARGS))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == k


@pytest.mark.parametrize(
    "change",
    [
        {"onnx_digest": "b" * 64},
        {"trt_version": "10.13.0.36"},
        {"compute_capability": "8.9"},
        {"calibration_digest": "c" * 64},
    ],
)
def test_cache_key_sensitive_to_environment(change: dict[str, str]) -> None:
    r = req(calibration=CalibrationSettings((Path("a.npz"),)))
    base = {**KEY_ARGS, "calibration_digest": "d" * 64}
    assert engine_cache_key(r, **base) != engine_cache_key(r, **{**base, **change})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "field",
    [
        {"profiles": (prof(("x", (1, 3, 8, 8), (8, 3, 8, 8), (16, 3, 8, 8)), ("mask", (1, 8), (4, 8), (16, 8))),)},
        {"max_batch_size": 8},
        {"precision": "fp16"},
        {"strongly_typed": True},
        {"workspace_bytes": 1 << 30},
        {"builder_flags": BuilderFlags(refit=True)},
        {"builder_flags": BuilderFlags(builder_optimization_level=5)},
        {"calibration": CalibrationSettings((Path("a.npz"),), batch_size=4)},
    ],
)
def test_cache_key_sensitive_to_each_setting(field: dict[str, object]) -> None:
    assert engine_cache_key(req(), **KEY_ARGS) != engine_cache_key(req(**field), **KEY_ARGS)  # type: ignore[arg-type]
