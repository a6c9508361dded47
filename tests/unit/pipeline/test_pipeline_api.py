"""The library API alone drives every offline stage, a tensorrt spec included (FAKE tensorrt, and fallback)."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

import deployer
from deployer import Pipeline
from deployer.errors import MissingDependency, SpecError, UserError

MODELS = Path(__file__).resolve().parents[2] / "data" / "specs" / "models"
FAKES = Path(__file__).resolve().parents[2] / "fakes"

TRT_SPEC = """\
target: {triton: "24.08"}
models:
  - name: relu
    source: relu.onnx
    max_batch_size: 8
  - name: fast
    source: relu.onnx
    backend: tensorrt
    max_batch_size: 8
    instance_group: [{kind: GPU, count: 1}]
    shapes: {x: {min: [1, 4], opt: [4, 4], max: [8, 4]}}
"""


def fake_tensorrt(version: str = "10.3.0.26") -> ModuleType:
    """The FAKE tensorrt module of tests/fakes (named as such; it only exposes what the stubs declare)."""
    name = "fake_tensorrt"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, FAKES / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    trt: ModuleType = sys.modules[name].make_fake_tensorrt(version)
    return trt


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DEPLOYER_CACHE_DIR", str(tmp_path / "cache"))
    shutil.copyfile(MODELS / "relu.onnx", tmp_path / "relu.onnx")
    (tmp_path / "plain.yaml").write_text("models:\n  - {name: relu, source: relu.onnx, max_batch_size: 8}\n")
    (tmp_path / "trt.yaml").write_text(TRT_SPEC)
    return tmp_path


def test_every_offline_stage_through_the_library(project: Path) -> None:
    p = Pipeline.load(project / "plain.yaml")
    assert [m.name for m in p.deployment.models] == ["relu"]
    rendered = p.render()
    assert 'name: "relu"' in rendered["relu"]
    written = p.write_rendered(project / "out")
    assert written == [project / "out" / "relu" / "config.pbtxt"]
    planned = p.plan()
    assert planned.unbuilt == () and planned.plan.changed and not (project / "model_repository").exists()
    assert p.build().engines == {}  # no tensorrt model: nothing to build
    first = p.publish()
    assert [(m.name, m.version, m.status) for m in first.models] == [("relu", 1, "new")]
    assert not p.plan().plan.changed
    import onnx

    m = onnx.load(str(project / "relu.onnx"))
    m.doc_string = "retrained"
    onnx.save(m, str(project / "relu.onnx"))
    p = Pipeline.load(project / "plain.yaml")
    assert [m.version for m in deployer.publish(p.deployment).models] == [2]
    outcome = p.rollback("relu")
    assert (outcome.result.version, outcome.result.kept, outcome.reloaded) == (1, (2,), False)
    status = p.repository_status()
    state = status.served["relu"]
    assert state is not None and state.served == (1,) and state.newer_kept == (2,)
    assert [v.number for v in status.versions["relu"]] == [1, 2] and status.problems == ()
    (project / "model_repository" / "relu" / "config.pbtxt").write_text("edited by hand\n")
    assert any("config.pbtxt" in p for p in Pipeline.load(project / "plain.yaml").repository_status().problems)
    assert p.status().running is False and p.down() is None
    assert "services:" in p.compose_file()


def test_plan_of_a_tensorrt_spec_before_any_build_lists_the_unbuilt_model(project: Path) -> None:
    result = Pipeline.load(project / "trt.yaml").plan()
    assert result.unbuilt == ("fast",)
    assert [m.artifact.name for m in result.plan.models] == ["relu"]


def test_publish_of_a_tensorrt_spec_builds_the_engine_itself(project: Path) -> None:
    dep = deployer.load_deployment(project / "trt.yaml")
    published = Pipeline(dep, trt_module=fake_tensorrt()).publish()
    assert {m.name: m.status for m in published.models} == {"relu": "new", "fast": "new"}
    plan_file = project / "model_repository" / "fast" / "1" / "model.plan"
    assert plan_file.is_file()
    # after a build, the plain function finds the engine by itself (no builder given, no TensorRT needed)
    again = deployer.publish(deployer.load_deployment(project / "trt.yaml"))
    assert {m.name: m.status for m in again.models} == {"relu": "unchanged", "fast": "unchanged"}
    assert deployer.plan(dep).unbuilt == ()
    built = Pipeline(dep, trt_module=fake_tensorrt()).build()
    assert set(built.engines) == {"fast"} and built.infos["fast"]["cache_hit"] is True


def test_a_tensorrt_spec_without_tensorrt_names_the_options(project: Path) -> None:
    if importlib.util.find_spec("tensorrt") is not None and hasattr(__import__("tensorrt"), "Builder"):
        pytest.skip("a real TensorRT is installed")
    with pytest.raises(MissingDependency) as exc:
        Pipeline.load(project / "trt.yaml").publish()
    assert "--fallback onnxruntime" in exc.value.render()
    assert not (project / "model_repository" / "relu").exists()  # nothing published before the build


def test_the_fallback_path_publishes_the_onnx_model(project: Path) -> None:
    p = Pipeline.load(project / "trt.yaml", fallback="onnxruntime")
    assert [m.backend for m in p.deployment.models] == ["onnxruntime", "onnxruntime"]
    assert p.plan().unbuilt == ()
    p.publish()
    assert (project / "model_repository" / "fast" / "1" / "model.onnx").is_file()


def test_load_rejects_bad_options_and_specs(project: Path) -> None:
    with pytest.raises(UserError, match="fallback"):
        Pipeline.load(project / "plain.yaml", fallback="tensorrt")
    with pytest.raises(UserError, match="runtime"):
        Pipeline.load(project / "plain.yaml", runtime="k8s")
    (project / "bad.yaml").write_text("models: [{name: relu, source: missing.onnx}]\n")
    with pytest.raises(SpecError, match=r"bad\.yaml:1:"):
        Pipeline.load(project / "bad.yaml")


def test_the_fallback_path_publishes_the_precision_the_engine_is_built_with(project: Path) -> None:
    """A `precision: fp16` tensorrt model served through onnxruntime publishes the fp16 ONNX, not fp32."""
    pytest.importorskip("onnxconverter_common")
    import onnx

    shutil.copyfile(MODELS.parents[3] / "examples" / "quickstart" / "classifier.onnx", project / "clf.onnx")
    (project / "fp16.yaml").write_text(
        "fallback: onnxruntime\nmodels:\n  - name: clf\n    source: clf.onnx\n    backend: tensorrt\n"
        "    precision: fp16\n    max_batch_size: 8\n    instance_group: [{kind: GPU, count: 1}]\n"
    )
    Pipeline.load(project / "fp16.yaml").publish()
    published = onnx.load(str(project / "model_repository" / "clf" / "1" / "model.onnx"))
    assert published.SerializeToString() != (project / "clf.onnx").read_bytes()
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in published.graph.initializer)
