"""build_engine(s) end to end with the FAKE tensorrt; versions, manifests, container plan; no-TensorRT path."""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import onnx
import pytest
from onnx import TensorProto

from deployer.engines import (
    BuildRequest,
    GpuInfo,
    InputShapes,
    Profile,
    build_engine,
    build_engines,
    cc_model_filenames,
    check_engine_matches_target,
    default_image,
    engine_filename_for_cc,
    onnx_facts_for,
    onnxruntime_fallback_possible,
    plan_container_build,
    read_manifest,
    tensorrt_available,
    trt_version_for_triton,
)
from deployer.engines.container import request_from_json, request_to_json, write_reproduce_files
from deployer.engines.container_entry import main as container_main
from deployer.errors import BuildError, EnvironmentProblem, MissingDependency, UserError

GPU = GpuInfo(0, "NVIDIA Fake A10", "8.6")
P = Profile((InputShapes("x", (1, 4), (4, 4), (8, 4)),))


def _req(tmp_path: Path, onnx_path: Path, **kw: object) -> BuildRequest:
    base = BuildRequest("m", onnx_path, (P,), 8, tmp_path / "repo" / "m" / "1" / "model.plan", tmp_path / "cache")
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def test_build_writes_plan_manifest_and_hits_cache(
    tmp_path: Path, onnx_model: Path, fake_trt: Callable[..., ModuleType]
) -> None:
    trt = fake_trt("10.13.0.35")
    req = _req(tmp_path, onnx_model, precision="fp16", workspace_bytes=1 << 28)
    first = build_engine(req, trt_module=trt, gpu=GPU)
    assert not first.cache_hit and req.output_path.is_file()
    info = read_manifest(req.output_path)
    assert info == first.info
    assert (info.trt_version, info.gpu_name, info.compute_capability) == ("10.13.0.35", "NVIDIA Fake A10", "8.6")
    assert info.flags == ("FP16",)
    assert [(p.profile, p.name, p.max) for p in info.profiles] == [(0, "x", (8, 4))]
    assert len(info.onnx_sha256) == 64 and info.warnings == ("could not verify from the engine that fp16 took effect",)
    assert list((tmp_path / "cache" / "timing").glob("trt10.13.0.35-nvidia-fake-a10-sm86.cache"))
    other = dataclasses.replace(req, model_name="m2", output_path=tmp_path / "repo" / "m2" / "1" / "model.plan")
    results = build_engines([req, other], trt_module=trt, gpu=GPU)
    assert [r.cache_hit for r in results] == [True, True]
    assert other.output_path.read_bytes() == req.output_path.read_bytes()
    assert read_manifest(other.output_path).model_name == "m2"
    changed = build_engine(dataclasses.replace(req, precision="fp32"), trt_module=trt, gpu=GPU)
    assert not changed.cache_hit and changed.info.flags == ()


def test_trt11_fp16_converts_the_onnx_first(
    tmp_path: Path, onnx_model: Path, fake_trt: Callable[..., ModuleType], onnx_factory: Callable[..., Path]
) -> None:
    pytest.importorskip("onnxconverter_common")
    trt = fake_trt("11.1.0.106")
    res = build_engine(_req(tmp_path, onnx_model, precision="fp16"), trt_module=trt, gpu=GPU)
    info = res.info
    assert info.strongly_typed and info.flags == () and info.built_onnx and info.accuracy is not None
    assert info.accuracy["precision"] == "fp16" and info.accuracy["max_abs_error"] < 1e-2
    built = onnx.load(info.built_onnx)
    assert any(v.type.tensor_type.elem_type == TensorProto.FLOAT16 for v in built.graph.value_info)
    assert [i.type.tensor_type.elem_type for i in built.graph.input] == [TensorProto.FLOAT]  # I/O kept fp32
    again = build_engine(_req(tmp_path, onnx_model, precision="fp16"), trt_module=trt, gpu=GPU)
    assert again.cache_hit and again.info.built_onnx == info.built_onnx  # converted once, by content
    half = onnx_factory(tmp_path / "half.onnx", inputs=(("x", TensorProto.FLOAT16, ("b", 4)),))
    res = build_engine(_req(tmp_path, half, precision="fp16", strongly_typed=True), trt_module=trt, gpu=GPU)
    assert res.info.strongly_typed and res.info.built_onnx is None  # already fp16: built as it is
    with pytest.raises(UserError, match="bfloat16"):
        build_engine(_req(tmp_path, onnx_model, precision="bf16"), trt_module=trt, gpu=GPU)


class _Inspector:
    def __init__(self, text: str) -> None:
        self.text = text

    def get_engine_information(self, format: object) -> str:
        return self.text


class _Engine:
    """Stands in for ICudaEngine's inspector with the JSON TensorRT documents for DETAILED verbosity."""

    def __init__(self, text: str) -> None:
        self.text = text

    def create_engine_inspector(self) -> _Inspector:
        return _Inspector(self.text)


def test_verify_precision_reads_layer_formats(fake_trt: Callable[..., ModuleType]) -> None:
    from deployer.engines import verify_precision
    from deployer.engines.adapters import TrtAdapter

    adapter = TrtAdapter(fake_trt("10.13.0.35"))  # only for LayerInformationFormat.JSON
    layer = '{{"Layers": [{{"Name": "conv", "Outputs": [{{"Format/Datatype": "Row major linear {}"}}]}}]}}'
    assert verify_precision(_Engine(layer.format("FP32")), adapter, "fp16") is False  # rf-detr#1453's silent fp32
    assert verify_precision(_Engine(layer.format("Half")), adapter, "fp16") is True
    assert verify_precision(_Engine(layer.format("Int8")), adapter, "int8") is True
    assert verify_precision(_Engine('{"Layers": ["conv"]}'), adapter, "fp16") is None  # LAYER_NAMES_ONLY
    assert verify_precision(_Engine("not json"), adapter, "fp16") is None
    assert verify_precision(_Engine(layer.format("FP32")), adapter, "fp32") is None


def test_unverified_precision_is_said_not_claimed(
    tmp_path: Path, onnx_model: Path, fake_trt: Callable[..., ModuleType]
) -> None:
    info = build_engine(_req(tmp_path, onnx_model, precision="fp16"), trt_module=fake_trt("10.13.0.35"), gpu=GPU).info
    assert info.precision_verified is None and info.verified_on_device
    assert "could not verify from the engine that fp16 took effect" in info.warnings


@pytest.mark.parametrize(("version", "where"), [("10.13.0.35", "node 'relu_x' (op Relu, #0)"), ("8.6.1.6", "node #0")])
def test_parser_error_names_the_node(
    version: str, where: str, tmp_path: Path, onnx_model: Path, fake_trt: Callable[..., ModuleType]
) -> None:
    trt = fake_trt(version, unsupported_ops=("Relu",))
    with pytest.raises(BuildError) as exc:
        build_engine(_req(tmp_path, onnx_model), trt_module=trt, gpu=GPU)
    assert where in (exc.value.details or "")  # our rendering of the parser's error location


def test_profile_problems_are_found_before_the_builder(
    tmp_path: Path, onnx_model: Path, fake_trt: Callable[..., ModuleType]
) -> None:
    wrong = Profile((InputShapes("input", (1, 4), (4, 4), (8, 4)),))
    with pytest.raises(UserError) as exc:
        build_engine(_req(tmp_path, onnx_model, profiles=(wrong,)), trt_module=fake_trt("10.13"), gpu=GPU)
    assert "silently ignore" in exc.value.render() and "dynamic input 'x'" in exc.value.render()


def test_target_version_mismatch_is_an_environment_problem(
    tmp_path: Path, onnx_model: Path, fake_trt: Callable[..., ModuleType]
) -> None:
    with pytest.raises(EnvironmentProblem, match="differs from the target") as exc:
        build_engine(
            _req(tmp_path, onnx_model, target_trt_version="10.3.0"), trt_module=fake_trt("10.13.0.35"), gpu=GPU
        )
    assert exc.value.exit_code == 3
    ok = build_engine(
        _req(tmp_path, onnx_model, target_trt_version="10.13"), trt_module=fake_trt("10.13.0.35"), gpu=GPU
    )
    check_engine_matches_target(ok.info, "10.13.0.35")
    with pytest.raises(
        BuildError, match=re.escape("built with TensorRT 10.13.0.35 but the target Triton runs TensorRT 10.3.0")
    ):
        check_engine_matches_target(ok.info, "10.3.0")


def test_without_tensorrt_build_exits_3_with_options(
    tmp_path: Path, onnx_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Made absent on purpose (None in sys.modules makes the import fail), so this holds on GPU machines too.
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.delenv("DEPLOYER_TENSORRT_MODULE", raising=False)
    ok, why = tensorrt_available()
    assert not ok and ("TensorRT is not available" in why or "no NVIDIA GPU" in why)
    with pytest.raises(MissingDependency) as exc:
        build_engines([_req(tmp_path, onnx_model)])
    assert exc.value.exit_code == 3
    hint = exc.value.hint or ""
    assert "--fallback onnxruntime" in hint and "container" in hint and "tensorrt" in hint


def test_onnxruntime_fallback_check(tmp_path: Path, onnx_model: Path, onnx_factory: Callable[..., Path]) -> None:
    assert onnxruntime_fallback_possible(_req(tmp_path, onnx_model)) == (True, "onnxruntime can serve this ONNX")
    ok, why = onnxruntime_fallback_possible(_req(tmp_path, onnx_model, precision="fp16"))
    assert ok and "not the requested fp16" in why
    static = onnx_factory(tmp_path / "static.onnx", inputs=(("x", TensorProto.FLOAT, (1, 4)),))
    ok, why = onnxruntime_fallback_possible(_req(tmp_path, static))
    assert not ok and "dim 0" in why
    assert onnxruntime_fallback_possible(_req(tmp_path, static, max_batch_size=0))[0]


def test_triton_release_table() -> None:
    entry = trt_version_for_triton("24.02")
    assert (entry.trt, entry.verified) == ("8.6.3", True)
    assert trt_version_for_triton("24.10").trt == "10.5.0"
    with pytest.raises(UserError, match="not verified"):
        trt_version_for_triton("24.10", allow_unverified=False)
    with pytest.raises(UserError) as exc:
        trt_version_for_triton("30.01")
    assert "probe_trt_version" in exc.value.render()
    assert default_image("24.08") == "nvcr.io/nvidia/tensorrt:24.08-py3"
    llm = trt_version_for_triton("25.12", flavor="trtllm-python-py3", allow_unverified=False)
    assert (llm.trt, llm.verified) == ("10.13.3.9", True)


def test_cc_model_filenames(tmp_path: Path, onnx_model: Path, fake_trt: Callable[..., ModuleType]) -> None:
    infos = []
    for gpu in (GPU, GpuInfo(0, "NVIDIA L4", "8.9")):
        out = tmp_path / "repo" / "m" / "1" / engine_filename_for_cc("model.plan", gpu.compute_capability)
        infos.append(
            build_engine(_req(tmp_path, onnx_model, output_path=out), trt_module=fake_trt("10.13"), gpu=gpu).info
        )
    assert cc_model_filenames(infos) == {"8.6": "model_sm86.plan", "8.9": "model_sm89.plan"}
    with pytest.raises(UserError, match=re.escape("two engines for compute capability 8.6")):
        cc_model_filenames([infos[0], dataclasses.replace(infos[0], engine_path=tmp_path / "other.plan")])


def test_container_plan_and_reproduce_files(tmp_path: Path, onnx_model: Path) -> None:
    req = _req(tmp_path, onnx_model, precision="fp16")
    facts = onnx_facts_for(req, "10.5.0")
    plan = plan_container_build(req, facts, image=default_image("24.10"), user="1000:1000")
    argv = plan.docker_argv()
    assert argv[:5] == ["docker", "run", "--rm", "--gpus", "all"]
    assert "nvcr.io/nvidia/tensorrt:24.10-py3" in argv and argv[-1] == "/deployer/out/model.plan.request.json"
    assert f"{onnx_model.parent}:/deployer/in:ro" in argv
    assert any(a.endswith("/deployer:/deployer/src/deployer:ro") for a in argv)  # only our package is mounted
    inside = request_from_json(plan.request_json["request"])
    assert inside.onnx_path == Path("/deployer/in/model.onnx") and inside.cache_dir == Path("/deployer/cache")
    assert (
        dataclasses.replace(inside, onnx_path=req.onnx_path, output_path=req.output_path, cache_dir=req.cache_dir)
        == req
    )
    assert request_from_json(request_to_json(req)) == req
    write_reproduce_files(plan)
    script = plan.reproduce_file.read_text()
    assert "docker run --rm --gpus all" in script and plan.reproduce_file.stat().st_mode & 0o111
    assert json.loads(plan.request_file.read_text())["facts"]["digest"] == facts.digest


def test_container_entry_without_tensorrt_exits_3(tmp_path: Path, onnx_model: Path) -> None:
    req = _req(tmp_path, onnx_model)
    plan = plan_container_build(req, onnx_facts_for(req, "10.13"), image="img")
    doc = dict(plan.request_json)
    doc["request"] = request_to_json(req)  # host paths: run the entry here, where TensorRT is missing
    path = tmp_path / "req.json"
    path.write_text(json.dumps(doc))
    assert container_main([str(path)]) == 3


def test_a_profile_input_is_the_spec_shape_range_named() -> None:
    """One min/opt/max type from spec to engines: a profile entry is a `ShapeRange` with the input's name."""
    from deployer.tensors import ShapeRange

    spec_range = ShapeRange([1, 4], [4, 4], [8, 4])
    item = InputShapes.of("x", spec_range)
    assert isinstance(item, ShapeRange)
    assert item == InputShapes("x", (1, 4), (4, 4), (8, 4)) != InputShapes("y", (1, 4), (4, 4), (8, 4))
    assert (item.min, item.opt, item.max, item.at("opt")) == ((1, 4), (4, 4), (8, 4), (4, 4))
    assert item.ordered and not InputShapes("x", (8, 4), (4, 4), (1, 4)).ordered
    assert P.get("x") == item
