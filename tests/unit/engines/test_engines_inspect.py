"""Engine inspection -> Triton config fields, with engines built by the FAKE tensorrt."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from onnx import TensorProto

from deployer.engines import (
    BuildRequest,
    EngineInfo,
    EngineTensor,
    GpuInfo,
    InputShapes,
    Profile,
    TritonTensor,
    build_engine,
    check_triton_config,
    derive_triton_fields,
    inspect_engine,
)
from deployer.errors import BuildError, UserError

GPU = GpuInfo(0, "NVIDIA Fake A10", "8.6")


def _build(tmp_path: Path, onnx_path: Path, trt: ModuleType, profiles: tuple[Profile, ...], mbs: int) -> bytes:
    req = BuildRequest("m", onnx_path, profiles, mbs, tmp_path / "out" / "model.plan", tmp_path / "cache")
    return build_engine(req, trt_module=trt, gpu=GPU).info.engine_path.read_bytes()


@pytest.mark.parametrize(("version", "ids_type"), [("10.13.0.35", "TYPE_INT64"), ("8.6.1.6", "TYPE_INT32")])
def test_fields_from_engine(
    version: str, ids_type: str, tmp_path: Path, onnx_factory: Callable[..., Path], fake_trt: Callable[..., ModuleType]
) -> None:
    onnx_path = onnx_factory(
        tmp_path / "two.onnx",
        inputs=(("x", TensorProto.FLOAT, ("b", 3, 8)), ("ids", TensorProto.INT64, ("b", 5))),
        op="Identity",
    )
    p0 = Profile((InputShapes("x", (1, 3, 8), (4, 3, 8), (16, 3, 8)), InputShapes("ids", (1, 5), (4, 5), (8, 5))))
    p1 = Profile((InputShapes("x", (1, 3, 8), (32, 3, 8), (32, 3, 8)), InputShapes("ids", (1, 5), (32, 5), (32, 5))))
    plan = _build(tmp_path, onnx_path, fake_trt(version), (p0, p1), 8)
    info = inspect_engine(plan, fake_trt(version))
    assert info.num_profiles == 2
    assert [(t.name, t.is_input) for t in info.tensors] == [
        ("x", True),
        ("ids", True),
        ("x_out", False),
        ("ids_out", False),
    ]
    fields = derive_triton_fields(info)  # Triton: min over inputs of profile-0 max batch = min(16, 8)
    assert (fields.max_batch_size, fields.engine_max_batch) == (8, 8)
    assert fields.inputs == (TritonTensor("x", "TYPE_FP32", (3, 8)), TritonTensor("ids", ids_type, (5,)))
    assert derive_triton_fields(info, profiles=(0, 1)).engine_max_batch == 32
    with pytest.raises(UserError, match="exceeds the engine's max batch 8"):
        derive_triton_fields(info, max_batch_size=16)
    unbatched = derive_triton_fields(info, max_batch_size=0)
    assert unbatched.inputs[0].dims == (-1, 3, 8)
    assert check_triton_config(info, 8, fields.inputs, fields.outputs) == []


def test_engine_from_other_version_does_not_deserialize(
    tmp_path: Path, onnx_model: Path, fake_trt: Callable[..., ModuleType]
) -> None:
    plan = _build(
        tmp_path, onnx_model, fake_trt("10.13.0.35"), (Profile((InputShapes("x", (1, 4), (2, 4), (4, 4)),)),), 4
    )
    with pytest.raises(BuildError, match="could not deserialize the engine") as exc:
        inspect_engine(plan, fake_trt("10.3.0.26"))
    assert "TensorRT version and GPU architecture" in (exc.value.hint or "")  # ours, not the fake's text


def _info(min_batch: int = 1) -> EngineInfo:
    x = EngineTensor("x", True, "FLOAT", (-1, 3, -1), profiles=(((min_batch, 3, 16), (4, 3, 32), (8, 3, 64)),))
    y = EngineTensor("y", False, "HALF", (-1, 10))
    return EngineInfo((x, y), 1)


def test_profile_min_batch_must_be_one() -> None:
    with pytest.raises(UserError, match="batch minimum 2"):
        derive_triton_fields(_info(min_batch=2))


def test_check_triton_config_reports_what_triton_would() -> None:
    info = _info()
    good_in, good_out = [TritonTensor("x", "TYPE_FP32", (3, 32))], [TritonTensor("y", "TYPE_FP16", (10,))]
    assert check_triton_config(info, 8, good_in, good_out) == []
    problems = check_triton_config(
        info,
        16,
        [TritonTensor("x", "TYPE_FP16", (3, 128)), TritonTensor("z", "TYPE_FP32", (1,))],
        [],
        profiles=(0, 3),
    )
    text = "\n".join(problems)
    assert "instance_group profile 3 does not exist" in text
    assert "configuration specified max-batch 16 but TensorRT engine only supports max-batch 8" in text
    assert "unexpected datatype TYPE_FP16 for input 'x', expecting TYPE_FP32" in text
    assert "outside profile 0 range [16, 64]" in text
    assert "unexpected inference input 'z'" in text
    assert "expected configuration for output 'y'" in text
    rank = check_triton_config(info, 8, [TritonTensor("x", "TYPE_FP32", (1, 3, 32))], good_out)
    assert any("rank" in p for p in rank)


def test_unservable_dtype_is_refused() -> None:
    info = EngineInfo((EngineTensor("x", True, "FLOAT", (4,)), EngineTensor("y", False, "FP8", (4,))), 1)
    with pytest.raises(BuildError, match="FP8"):
        derive_triton_fields(info, max_batch_size=0)


def test_shape_tensor_profile_values_are_read(
    tmp_path: Path, fake_trt: Callable[..., ModuleType]
) -> None:
    # The binding takes get_tensor_profile_values(profile_index, name) (names swapped in its docstring, types
    # not): the old (name, profile) call raised TypeError. The fake's signature is the real one (fidelity test).
    import onnx
    from onnx import helper

    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 12]),
         helper.make_tensor_value_info("shape", TensorProto.INT64, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["a", "b", "c"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "reshape.onnx"
    onnx.save(model, str(path))
    profile = Profile((InputShapes("x", (1, 12), (4, 12), (8, 12)),
                       InputShapes("shape", (1, 3, 4), (4, 3, 4), (8, 3, 4))))
    trt = fake_trt("10.13.0.35")
    info = inspect_engine(_build(tmp_path, path, trt, (profile,), 0), trt)
    shape = next(t for t in info.inputs if t.name == "shape")
    assert shape.is_shape_tensor and shape.profiles == (((1, 3, 4), (4, 3, 4), (8, 3, 4)),)
