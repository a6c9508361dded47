"""Spec -> TensorRT build requests, and the `build` step of `deploy` (pure mapping + one call).

Engines are built into `.deployer/<spec>/engines/<model>/model.plan` and copied into the repository
by publish; the engine, timing and calibration caches live in `~/.cache/deployer/tensorrt` (override
with DEPLOYER_CACHE_DIR).
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from deployer.errors import UserError
from deployer.spec import Deployment, ResolvedModel


def cache_dir() -> Path:
    """Root of the engine/timing/calibration caches."""
    root = os.environ.get("DEPLOYER_CACHE_DIR")
    return Path(root) if root else Path.home() / ".cache" / "deployer" / "tensorrt"


def target_trt_version(dep: Deployment) -> str | None:
    """TensorRT version the engines must match: the spec's, else the target Triton release's."""
    from deployer.engines.versions import trt_version_for_triton

    if dep.spec.target.tensorrt:
        return dep.spec.target.tensorrt
    try:
        return trt_version_for_triton(dep.spec.target.triton).trt
    except UserError:
        return None  # unknown release: the build is not checked against a version


def build_request(dep: Deployment, m: ResolvedModel) -> Any:
    """The BuildRequest of one tensorrt model (pure)."""
    from deployer.engines.request import BuilderFlags, BuildRequest, CalibrationSettings, InputShapes, Profile
    assert m.source is not None
    engine = m.spec.engine
    calib = None
    if m.spec.calibration is not None:
        c = m.spec.calibration
        calib = CalibrationSettings(
            data_files=tuple(dep.resolve_path(p) for p in c.data), batch_size=c.batch_size, max_batches=c.max_batches
        )
    profiles = tuple(
        Profile(tuple(InputShapes(name, r.min, r.opt, r.max) for name, r in profile.items()))
        for profile in m.profiles
    )
    return BuildRequest(
        model_name=m.name,
        onnx_path=m.source,
        profiles=profiles,
        max_batch_size=m.max_batch_size,
        output_path=engine_path(dep, m),
        cache_dir=cache_dir(),
        precision=m.precision,  # type: ignore[arg-type]
        calibration=calib,
        workspace_bytes=engine.workspace_mb * 1024 * 1024 if engine and engine.workspace_mb else None,
        builder_flags=BuilderFlags(
            version_compatible=engine.version_compatible if engine else False,
            hardware_compatibility=engine.hardware_compatibility if engine else "none",
            refit=engine.refit if engine else False,
        ),
        target_trt_version=target_trt_version(dep),
    )


def build_engines_for(
    dep: Deployment, *, builder: str | None = None, only: Collection[str] | None = None,
    trt_module: ModuleType | None = None,
) -> tuple[Mapping[str, Path], Mapping[str, Mapping[str, Any]]]:
    """Build (or take from the cache) every engine the spec needs; returns engine paths and manifests.

    `builder` overrides each model's `engine.builder`: "local" builds in-process with the installed
    TensorRT; "container" builds inside the NGC TensorRT image of the target Triton release (GPU, docker
    SDK), so the engine's TensorRT version matches the server's by construction, and leaves
    `model.plan.reproduce.sh` with the exact command. `only` limits the build to those models. Raises
    MissingDependency (exit 3) on machines without TensorRT/GPU/Docker, naming the options (including
    `--fallback onnxruntime`). `trt_module` replaces `import tensorrt` (tests pass the fake).
    """
    from deployer.engines.builder import build_engines
    from deployer.engines.manifest import build_info_to_dict

    local: list[Any] = []
    container: list[Any] = []
    for m in dep.models:
        if needs_engine(m) and (only is None or m.name in only):
            choice = builder or (m.spec.engine.builder if m.spec.engine else "local")
            (container if choice == "container" else local).append(build_request(dep, m))
    engines: dict[str, Path] = {}
    infos: dict[str, Mapping[str, Any]] = {}
    for r in build_engines(local, trt_module=trt_module):
        engines[r.request.model_name] = r.info.engine_path
        infos[r.request.model_name] = {**build_info_to_dict(r.info), "cache_hit": r.cache_hit}
    for req in container:
        info = _container_build(dep, req)
        engines[req.model_name] = req.output_path
        infos[req.model_name] = {**build_info_to_dict(info), "cache_hit": False}
    return engines, infos


def _container_build(dep: Deployment, request: Any) -> Any:
    from deployer.engines.builder import onnx_facts_for
    from deployer.engines.container import default_image, plan_container_build, run_container_build

    version = request.target_trt_version or "10"
    facts = onnx_facts_for(request, version)
    gpus = dep.spec.server.gpus
    plan = plan_container_build(request, facts, image=default_image(dep.spec.target.triton),
                                gpus="all" if gpus in ("all", "none") else ",".join(str(g) for g in gpus))
    return run_container_build(plan)


def needs_engine(m: ResolvedModel) -> bool:
    """A tensorrt model built from ONNX (not a prebuilt plan, not served through the fallback)."""
    return m.backend == "tensorrt" and m.source is not None and m.source.suffix == ".onnx"


def engine_path(dep: Deployment, m: ResolvedModel) -> Path:
    """Where `build` leaves a model's engine: `.deployer/<spec>/engines/<model>/model.plan`."""
    from deployer.paths import state_dir

    return state_dir(dep) / "engines" / m.name / "model.plan"


def built_engines(dep: Deployment) -> tuple[dict[str, Path], dict[str, Mapping[str, Any]], tuple[str, ...]]:
    """Engines that a build left for this spec, checked against the target TensorRT version.

    Returns the engines found, their build manifests, and the tensorrt models that have none yet.
    Raises BuildError when an engine was built with another TensorRT version than the target's
    (Triton could not deserialize it).
    """
    from deployer.engines.manifest import build_info_to_dict, read_manifest
    from deployer.engines.versions import check_engine_matches_target

    engines: dict[str, Path] = {}
    infos: dict[str, Mapping[str, Any]] = {}
    missing: list[str] = []
    target = target_trt_version(dep)
    for m in dep.models:
        if not needs_engine(m):
            continue
        path = engine_path(dep, m)
        if not path.is_file():
            missing.append(m.name)
            continue
        info = read_manifest(path)
        if target:
            check_engine_matches_target(info, target)
        engines[m.name] = path
        infos[m.name] = build_info_to_dict(info)
    return engines, infos, tuple(missing)
