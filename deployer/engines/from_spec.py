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
    return target_trt(dep)[0]


def target_trt(dep: Deployment) -> tuple[str | None, bool]:
    """(TensorRT version the engines must match, whether it is verified).

    `target.tensorrt` in the spec is the user's word (verified); a row of the Triton table is verified only
    when its source was read (versions.TRITON_TRT_TABLE): mismatches against the others only warn.
    """
    from deployer.engines.versions import trt_version_for_triton

    if dep.spec.target.tensorrt:
        return dep.spec.target.tensorrt, True
    try:
        row = trt_version_for_triton(dep.spec.target.triton)
    except UserError:
        return None, True  # unknown release: the build is not checked against a version
    return row.trt, row.verified


def _accuracy(dep: Deployment, m: ResolvedModel) -> Any:
    from deployer.engines.request import AccuracyBudget

    a = m.spec.accuracy
    if a is None:
        return None
    return AccuracyBudget(
        data_files=tuple(dep.resolve_path(f) for f in a.data), labels=dep.resolve_path(a.labels) if a.labels else None,
        max_samples=a.max_samples, holdout=a.holdout, min_top1_agreement=a.min_top1_agreement,
        max_accuracy_drop=a.max_accuracy_drop, max_abs_error=a.max_abs_error, max_rel_error=a.max_rel_error,
    )


def _keep_io_types(m: ResolvedModel) -> bool:
    """fp16 conversion keeps fp32 I/O unless the spec declares every float tensor FP16."""
    floats = [t.dtype for t in (*m.inputs, *m.outputs) if t.dtype in ("FP32", "FP16")]
    return not (floats and all(d == "FP16" for d in floats))


def build_requests(dep: Deployment, m: ResolvedModel) -> list[Any]:
    """One BuildRequest per `engine.compute_capabilities` entry (`model_sm86.plan`, ...), else one."""
    from dataclasses import replace

    from deployer.engines.manifest import engine_filename_for_cc

    base = build_request(dep, m)
    caps = m.spec.engine.compute_capabilities if m.spec.engine else []
    if len(caps) <= 1:
        return [replace(base, compute_capability=caps[0] if caps else None)]
    out = base.output_path
    return [replace(base, compute_capability=cc, output_path=out.with_name(engine_filename_for_cc(out.name, cc)))
            for cc in caps]


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
        strongly_typed=bool(engine and engine.strongly_typed),
        calibration=calib,
        workspace_bytes=engine.workspace_mb * 1024 * 1024 if engine and engine.workspace_mb else None,
        builder_flags=BuilderFlags(
            version_compatible=engine.version_compatible if engine else False,
            hardware_compatibility=engine.hardware_compatibility if engine else "none",
            refit=engine.refit if engine else False,
        ),
        target_trt_version=target_trt(dep)[0],
        target_trt_verified=target_trt(dep)[1],
        accuracy=_accuracy(dep, m),
        keep_io_types=_keep_io_types(m),
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
            (container if choice == "container" else local).extend(build_requests(dep, m))
    _check_container_gpus(container)  # before anything is built: one host GPU per requested architecture
    built = [(r.request, r.info, r.cache_hit) for r in build_engines(local, trt_module=trt_module)]
    built += [(req, _container_build(dep, req), False) for req in container]
    engines: dict[str, Path] = {}
    infos: dict[str, Mapping[str, Any]] = {}
    for req, info, cache_hit in built:
        name = req.model_name
        doc = {**build_info_to_dict(info), "cache_hit": cache_hit}
        if req.compute_capability:  # one plan per architecture: keep them all (publish names them)
            earlier = infos[name].get("cc_engines", {}) if name in infos else {}
            doc["cc_engines"] = {**earlier, req.compute_capability: str(info.engine_path)}
        engines.setdefault(name, info.engine_path)
        infos[name] = doc
    return engines, infos


def _container_gpu(request: Any) -> str | None:
    """The host GPU (index) the container builds `request` on: the one of its compute capability, if any.

    Standard TensorRT builds only for the device it runs on, so a per-architecture plan needs a host GPU
    of that architecture; None = no architecture requested (the spec's `server.gpus`).

    Raises:
        UserError: no visible host GPU has the requested compute capability.
    """
    from deployer.engines.manifest import detect_gpus

    cc = request.compute_capability
    if not cc:
        return None
    gpus = detect_gpus()
    for gpu in gpus:
        if gpu.compute_capability == cc:
            return str(gpu.index)
    here = ", ".join(f"{g.index}: {g.name} (sm {g.compute_capability})" for g in gpus) or "none"
    raise UserError(
        f"model {request.model_name!r}: engine.compute_capabilities asks for a plan for sm {cc}, but no GPU "
        f"of that architecture is visible to the container builder (GPUs here: {here})",
        hint="build on a machine with one GPU of each listed architecture, or list only the architectures "
        "present here in engine.compute_capabilities",
    )


def _check_container_gpus(requests: Collection[Any]) -> None:
    for req in requests:
        _container_gpu(req)


def _container_build(dep: Deployment, request: Any) -> Any:
    from deployer.engines.builder import onnx_facts_for
    from deployer.engines.container import default_image, plan_container_build, run_container_build

    version = request.target_trt_version or "10"
    facts = onnx_facts_for(request, version)
    gpus = dep.spec.server.gpus
    device = _container_gpu(request) or ("all" if gpus in ("all", "none") else ",".join(str(g) for g in gpus))
    plan = plan_container_build(request, facts, image=default_image(dep.spec.target.triton), gpus=device)
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

    Returns the engines found, their build manifests, and the tensorrt models that have none yet
    (a model with several `compute_capabilities` has one plan per architecture, `cc_engines` in its info).
    Raises BuildError when Triton could not load an engine: built by TensorRT-RTX, or with a TensorRT
    version the target's cannot deserialize (`check_engine_matches_target`; an unverified table row warns).
    """
    from deployer.engines.manifest import build_info_to_dict, read_manifest
    from deployer.engines.versions import check_engine_matches_target, check_triton_can_serve

    engines: dict[str, Path] = {}
    infos: dict[str, Mapping[str, Any]] = {}
    missing: list[str] = []
    target, verified = target_trt(dep)
    for m in dep.models:
        if not needs_engine(m):
            continue
        reqs = build_requests(dep, m)
        if not all(r.output_path.is_file() for r in reqs):
            missing.append(m.name)
            continue
        doc: dict[str, Any] = {}
        for r in reqs:
            info = read_manifest(r.output_path)
            check_triton_can_serve(info)
            if target:
                check_engine_matches_target(info, target, verified=verified)
            doc = {**build_info_to_dict(info), **({"cc_engines": {**doc.get("cc_engines", {}),
                                                                   r.compute_capability: str(r.output_path)}}
                                                   if r.compute_capability else {})}
        engines[m.name] = reqs[0].output_path
        infos[m.name] = doc
    return engines, infos, tuple(missing)


def serving_onnx(dep: Deployment, m: ResolvedModel) -> Path | None:
    """The fp16 / Q/DQ ONNX a `--fallback onnxruntime` deployment should publish for a tensorrt model, so
    its smoke test runs the precision the engine is built with; None when the source ONNX is it (fp32, or
    already fp16/Q/DQ). Converts/quantizes through the same content-addressed cache as the build, and checks
    the accuracy budget on ONNX Runtime. No TensorRT needed.

    Raises:
        BuildError: over the accuracy budget, or the conversion fails (exit 1).
    """
    from deployer.engines.accuracy import check_budget, measure
    from deployer.engines.cache import onnx_digest
    from deployer.engines.precision import prepare_precision_onnx
    from deployer.engines.preflight import check_onnx_carries_precision, preflight

    if m.requested_backend != "tensorrt" or m.source is None or m.source.suffix != ".onnx":
        return None
    if m.precision not in ("fp16", "int8"):
        return None
    report = preflight(m.source, "11.0", check_ops=False)
    if check_onnx_carries_precision(report, m.precision) is None:
        return None
    req = build_request(dep, m)
    holdout = 0 if (req.accuracy and req.accuracy.data_files) else (req.accuracy.holdout if req.accuracy else 64)
    prepared = prepare_precision_onnx(req, onnx_digest(m.source), holdout=holdout if m.precision == "int8" else 0)
    check_budget(m.name, measure(req, prepared).as_dict(), req.accuracy)
    return prepared.path
