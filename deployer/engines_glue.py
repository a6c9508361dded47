"""Spec -> TensorRT build requests, and the `build` step of `deploy` (pure mapping + one call).

Engines are built into `.deployer/<spec>/engines/<model>/model.plan` and copied into the repository
by publish; the engine, timing and calibration caches live in `~/.cache/deployer/tensorrt` (override
with DEPLOYER_CACHE_DIR).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
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
    from deployer.serve import state_dir

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
        output_path=state_dir(dep) / "engines" / m.name / "model.plan",
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


def build_engines_for(dep: Deployment) -> tuple[Mapping[str, Path], Mapping[str, Mapping[str, Any]]]:
    """Build (or take from the cache) every engine the spec needs; returns engine paths and manifests.

    Raises MissingDependency (exit 3) on machines without TensorRT or a GPU, naming the options
    (install TensorRT matching the target, build in the target container, or `--fallback onnxruntime`).
    """
    from deployer.engines.builder import build_engines
    from deployer.engines.manifest import build_info_to_dict
    from deployer.serve import needs_engine

    requests = [build_request(dep, m) for m in dep.models if needs_engine(m)]
    results = build_engines(requests)
    engines = {r.request.model_name: r.info.engine_path for r in results}
    infos = {r.request.model_name: {**build_info_to_dict(r.info), "cache_hit": r.cache_hit} for r in results}
    return engines, infos
