"""Per-architecture plans, version-compatible serving, and the container builder's request file, through the
library API with the FAKE tensorrt (tests/fakes); GPUs are reported by a stand-in `nvidia-smi` on PATH, so
`detect_gpus` parses its output as it would the real tool's."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from deployer import Pipeline, load_deployment
from deployer.engines.builder import build_engine
from deployer.engines.container import plan_container_build, request_from_json, request_to_json
from deployer.engines.from_spec import build_engines_for, build_requests
from deployer.engines.manifest import detect_gpus
from deployer.engines.preflight import OnnxFacts
from deployer.engines.request import (
    AccuracyBudget,
    BuilderFlags,
    BuildRequest,
    CalibrationSettings,
    GpuInfo,
    InputShapes,
    Profile,
)
from deployer.errors import UserError

MODELS = Path(__file__).resolve().parents[2] / "data" / "specs" / "models"

SPEC = """\
target: {{triton: "24.08", tensorrt: "10.13.0.35"}}
models:
  - name: fast
    source: relu.onnx
    backend: tensorrt
    max_batch_size: 8
    instance_group: [{{kind: GPU, count: 1}}]
    shapes: {{x: {{min: [1, 4], opt: [4, 4], max: [8, 4]}}}}
    engine: {engine}
"""


def _gpus_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *rows: str) -> None:
    """A `nvidia-smi` printing `rows` for --query-gpu=index,name,compute_cap (none: prints nothing)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    tool = bin_dir / "nvidia-smi"
    tool.write_text("#!/bin/sh\n" + "".join(f"echo '{r}'\n" for r in rows))
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")


@pytest.fixture
def spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], Path]:
    monkeypatch.setenv("DEPLOYER_CACHE_DIR", str(tmp_path / "cache"))
    shutil.copyfile(MODELS / "relu.onnx", tmp_path / "relu.onnx")

    def write(engine: str) -> Path:
        path = tmp_path / "spec.yaml"
        path.write_text(SPEC.format(engine=engine))
        return path

    return write


def test_each_architecture_is_published_under_the_name_the_config_gives(
    spec: Callable[[str], Path], tmp_path: Path, fake_trt: Callable[..., ModuleType]
) -> None:
    dep = load_deployment(spec('{compute_capabilities: ["8.6", "8.9"]}'))
    (m,) = dep.models
    # one machine per architecture (standard TensorRT builds only for its own GPU), into the spec's state dir
    for req, gpu in zip(build_requests(dep, m), (GpuInfo(0, "NVIDIA Fake A10", "8.6"),
                                                  GpuInfo(0, "NVIDIA Fake L4", "8.9")), strict=True):
        build_engine(req, trt_module=fake_trt("10.13.0.35"), gpu=gpu)
    p = Pipeline(dep)
    assert p.plan().unbuilt == ()
    published = p.publish()
    assert [(x.name, x.status) for x in published.models] == [("fast", "new")]
    version = tmp_path / "model_repository" / "fast" / "1"
    config = (tmp_path / "model_repository" / "fast" / "config.pbtxt").read_text()
    names = {"8.6": "model_sm86.plan", "8.9": "model_sm89.plan"}
    for cc, name in names.items():
        assert f'key: "{cc}"' in config and f'value: "{name}"' in config
    # exactly the files the config names, each the plan built for that architecture; no model.plan that
    # Triton would load on a GPU of another architecture
    assert sorted(f.name for f in version.iterdir() if f.suffix == ".plan") == sorted(names.values())
    for req in build_requests(dep, m):
        assert (version / names[req.compute_capability or ""]).read_bytes() == req.output_path.read_bytes()


def test_standard_tensorrt_refuses_an_architecture_this_gpu_is_not(
    spec: Callable[[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    fake_trt: Callable[..., ModuleType],
) -> None:
    _gpus_on_path(tmp_path, monkeypatch, "0, NVIDIA Fake A10, 8.6")
    assert detect_gpus() == (GpuInfo(0, "NVIDIA Fake A10", "8.6"),)
    dep = load_deployment(spec('{compute_capabilities: ["8.6", "8.9"]}'))
    with pytest.raises(UserError, match=r"builds only for the GPU it runs on \(sm 8\.6\), not for sm 8\.9"):
        Pipeline(dep, trt_module=fake_trt("10.13.0.35")).publish()
    assert not (tmp_path / "model_repository" / "fast").exists()


def test_the_container_builder_builds_each_architecture_on_its_gpu_or_refuses_first(
    spec: Callable[[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deployer.engines.from_spec import _container_gpu

    _gpus_on_path(tmp_path, monkeypatch, "0, NVIDIA Fake A10, 8.6", "1, NVIDIA Fake L4, 8.9")
    dep = load_deployment(spec('{builder: container, compute_capabilities: ["8.6", "8.9"]}'))
    assert [_container_gpu(r) for r in build_requests(dep, dep.models[0])] == ["0", "1"]
    dep = load_deployment(spec('{builder: container, compute_capabilities: ["8.6", "9.0"]}'))
    with pytest.raises(UserError, match=r"no GPU of that architecture .* 1: NVIDIA Fake L4 \(sm 8\.9\)"):
        build_engines_for(dep)  # before any container (no docker is needed to see it cannot work)
    _gpus_on_path(tmp_path, monkeypatch)
    with pytest.raises(UserError, match=r"GPUs here: none"):
        build_engines_for(dep)
    assert not list((tmp_path / ".deployer").rglob("*.request.json"))


def test_version_compatible_engines_start_triton_with_the_backend_config_in_every_runtime(
    spec: Callable[[str], Path],
) -> None:
    from deployer.server.argv import tritonserver_argv
    from deployer.server.docker.compose_render import compose_document
    from deployer.server.docker.plan import container_command
    from deployer.server.from_spec import server_settings

    flag = "--backend-config=tensorrt,version-compatible=true"
    for engine, expected in (("{version_compatible: true}", True), ("{}", False)):
        settings = server_settings(load_deployment(spec(engine)))
        local = tritonserver_argv(settings, binary="tritonserver", repository="/r", backend_dir="/b", cache_dir=None)
        docker = container_command(settings)
        compose = compose_document(settings)["services"]
        commands = [local, list(docker), *(s["command"] for s in compose.values())]
        assert len(commands) == 3
        assert all((flag in c) is expected for c in commands), commands


def test_the_container_request_file_parses_back_equal(tmp_path: Path) -> None:
    onnx = tmp_path / "in" / "m.onnx"
    onnx.parent.mkdir()
    shutil.copyfile(MODELS / "relu.onnx", onnx)
    data = tmp_path / "eval"
    data.mkdir()
    np.save(data / "x.npy", np.zeros((4, 4), np.float32))
    np.save(data / "labels.npy", np.zeros(4, np.int64))
    req = BuildRequest(  # every field away from its default, so a dropped one shows
        model_name="m", onnx_path=onnx, output_path=tmp_path / "out" / "model_sm89.plan",
        profiles=(Profile((InputShapes("x", (1, 4), (4, 4), (8, 4)),)),
                  Profile((InputShapes("x", (1, 4), (1, 4), (1, 4)),))),
        max_batch_size=8, cache_dir=tmp_path / "cache", precision="int8", strongly_typed=True,
        calibration=CalibrationSettings((data / "x.npy",), 2, 3, tmp_path / "cache" / "c.cache", "minmax"),
        workspace_bytes=1 << 20,
        builder_flags=BuilderFlags(version_compatible=True, exclude_lean_runtime=True,
                                   hardware_compatibility="ampere_plus", refit=True, builder_optimization_level=4),
        target_trt_version="10.13.0.35", target_trt_verified=False, compute_capability="8.9", keep_io_types=False,
        accuracy=AccuracyBudget((data / "x.npy",), data / "labels.npy", 16, 8, 0.9, 0.01, 0.5, 0.1),
    )
    assert request_from_json(json.loads(json.dumps(request_to_json(req)))) == req
    facts = OnnxFacts(digest="d", inputs=(), has_qdq=False, float_types=frozenset({"FP32"}))
    plan = plan_container_build(req, facts, image="nvcr.io/nvidia/tensorrt:24.08-py3", gpus="1")
    inside = request_from_json(json.loads(json.dumps(plan.request_json))["request"])
    assert inside.accuracy is not None and req.accuracy is not None
    assert (inside.compute_capability, inside.keep_io_types, inside.target_trt_verified) == ("8.9", False, False)
    assert inside.accuracy.max_rel_error == 0.1 and inside.accuracy.min_top1_agreement == 0.9
    mounts = {m.container: m.host for m in plan.mounts}
    # every file the build reads inside the container is under a mount of the host file's directory
    for host, seen in ((req.accuracy.data_files[0], inside.accuracy.data_files[0]),
                       (req.accuracy.labels, inside.accuracy.labels)):
        assert seen is not None and host is not None
        assert mounts[seen.parent] / seen.name == host
    assert "--gpus device=1" in " ".join(plan.docker_argv())


def test_an_unverified_table_row_warns_and_target_tensorrt_decides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    fake_trt: Callable[..., ModuleType],
) -> None:
    import logging

    from deployer.engines.versions import trt_version_for_triton
    from deployer.errors import BuildError

    _gpus_on_path(tmp_path, monkeypatch, "0, NVIDIA Fake A10, 8.6")
    monkeypatch.setenv("DEPLOYER_CACHE_DIR", str(tmp_path / "cache"))
    shutil.copyfile(MODELS / "relu.onnx", tmp_path / "relu.onnx")
    row = trt_version_for_triton("24.08")
    assert not row.verified and row.trt != "10.13.0.35"
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC.format(engine="{}").replace(', tensorrt: "10.13.0.35"', ""))
    with caplog.at_level(logging.WARNING):
        Pipeline(load_deployment(path), trt_module=fake_trt("10.13.0.35")).publish()
    assert "unverified" in caplog.text and (tmp_path / "model_repository" / "fast" / "1" / "model.plan").is_file()
    path.write_text(SPEC.format(engine="{}").replace("10.13.0.35", row.trt))  # the user's word: a hard gate
    with pytest.raises(BuildError, match=rf"built with TensorRT 10\.13\.0\.35 but the target Triton runs TensorRT "
                                         rf"{row.trt}"):
        Pipeline(load_deployment(path), trt_module=fake_trt("10.13.0.35")).publish()
