"""In-process TensorRT engine builder: ONNX -> plan, with caches, checks and a manifest.

Entry points: `tensorrt_available`, `require_tensorrt`, `build_engine`, `build_engines`,
`onnxruntime_fallback_possible`. All accept `trt_module=` so tests can inject the fake TensorRT.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from deployer._files import atomic_write
from deployer.errors import BuildError, EnvironmentProblem, MissingDependency, ModelFileError, UserError

from .accuracy import check_budget
from .accuracy import measure as measure_accuracy
from .adapters import MISSING_TRT_HINT, TrtAdapter, load_tensorrt, shared_logger, trt_version_of
from .cache import EngineCache, TimingCacheStore, copy_plan, onnx_digest
from .calibration import (
    CalibrationBatches,
    CudaUploader,
    calibration_cache_for,
    check_batch_shapes,
    load_calibration_arrays,
    make_calibrator,
)
from .manifest import build_info_from_dict, build_info_to_dict, cuda_version, detect_gpus, write_manifest
from .plan import FlagPlan, engine_cache_key, plan_flags, validate_profiles
from .precision import PreparedOnnx, prepare_precision_onnx, unique_unknown_dims_onnx
from .preflight import OnnxFacts, check_onnx_carries_precision, preflight
from .request import AccuracyBudget, BuildInfo, BuildRequest, BuildResult, GpuInfo, Profile, ProfileRecord
from .verify import verify_on_device
from .versions import parse_trt_version, version_compatible_runs_on

if TYPE_CHECKING:
    import tensorrt as trt_stub  # type: ignore[import-untyped, unused-ignore]

LOGGER = logging.getLogger(__name__)


def tensorrt_available(trt_module: ModuleType | None = None) -> tuple[bool, str]:
    """(True, "tensorrt 10.3.0 on NVIDIA L4 (sm 8.9)") or (False, what is missing)."""
    try:
        trt = load_tensorrt(trt_module)
    except MissingDependency as exc:
        return False, exc.message
    version = trt_version_of(trt)
    if trt_module is not None:
        return True, f"tensorrt {version} (injected module)"
    if parse_trt_version(version).flavor == "rtx":
        # Ahead-of-time builds need no GPU; only the on-device verification does (and Triton cannot serve it).
        return True, f"TensorRT-RTX {version} (builds without a GPU; its plans are not servable by Triton)"
    gpus = detect_gpus()
    if not gpus:
        return False, f"tensorrt {version} is importable but no NVIDIA GPU is visible (nvidia-smi found none)"
    g = gpus[0]
    return True, f"tensorrt {version} on {g.name} (sm {g.compute_capability})"


def require_tensorrt(trt_module: ModuleType | None = None) -> None:
    """Raise MissingDependency (exit 3) with the options when TensorRT or a GPU is missing."""
    ok, why = tensorrt_available(trt_module)
    if not ok:
        raise MissingDependency(f"cannot build TensorRT engines here: {why}", hint=MISSING_TRT_HINT)


def _profile_records(request: BuildRequest) -> tuple[ProfileRecord, ...]:
    return tuple(
        ProfileRecord(i, s.name, s.min, s.opt, s.max) for i, p in enumerate(request.profiles) for s in p.inputs
    )


def _check_target(request: BuildRequest, trt_version: str) -> None:
    """The installed TensorRT must build plans the target's TensorRT loads (TensorRT-RTX: never, so not
    checked here; publishing refuses its plans). Mismatches against an unverified table row only warn."""
    if request.target_trt_version is None:
        return
    built, target = parse_trt_version(trt_version), parse_trt_version(request.target_trt_version)
    if built.flavor == "rtx" or built.matches(target):
        return
    if request.builder_flags.version_compatible and version_compatible_runs_on(built, target)[0]:
        return
    message = (
        f"model {request.model_name!r}: installed TensorRT {trt_version} differs from the target Triton's "
        f"TensorRT {request.target_trt_version}; the engine would not load there"
    )
    if not request.target_trt_verified:
        LOGGER.warning("%s (target from an unverified Triton table row: set target.tensorrt to decide)", message)
        return
    raise EnvironmentProblem(
        message, hint="build inside the target's NGC image (container builder) or install the matching tensorrt"
    )


def onnx_facts_for(request: BuildRequest, trt_version: str) -> OnnxFacts:
    """Run the CPU preflight for `trt_version` and return what the build needs.

    Raises:
        ModelFileError: the ONNX fails the preflight (exit 2), every error listed.
    """
    report = preflight(request.onnx_path, trt_version)
    if not report.ok:
        raise ModelFileError(
            f"model {request.model_name!r}: {request.onnx_path} fails the TensorRT preflight",
            details="\n".join(f"- {e}" for e in report.errors),
            hint="fix or re-export the ONNX (or use --fallback onnxruntime)",
        )
    return OnnxFacts(onnx_digest(request.onnx_path), report.inputs, report.has_qdq, report.float_types)


def _early_profile_check(request: BuildRequest, facts: OnnxFacts) -> None:
    """Validate profiles against the ONNX inputs before TensorRT is touched (fail fast, exit 2).

    The ONNX does not say which inputs TensorRT will treat as shape tensors (their profile entries are
    values, not shapes), so static 1-D integer inputs are left to the authoritative check that runs on
    the parsed network.
    """
    maybe_shape = {
        i.name for i in facts.inputs if i.dtype in ("INT32", "INT64") and len(i.shape) == 1 and not i.is_dynamic
    }
    inputs = [i for i in facts.inputs if i.name not in maybe_shape]
    profiles = [Profile(tuple(s for s in p.inputs if s.name not in maybe_shape)) for p in request.profiles]
    validate_profiles(inputs, profiles, request.max_batch_size)


def _pick_gpu(gpu: GpuInfo | None, trt_module: ModuleType | None, adapter: TrtAdapter) -> GpuInfo | None:
    if gpu is not None:
        return gpu
    gpus = detect_gpus()
    if not gpus and trt_module is None and not adapter.rtx:  # TensorRT-RTX builds ahead of time without one
        raise MissingDependency("cannot build TensorRT engines here: no NVIDIA GPU is visible", hint=MISSING_TRT_HINT)
    return gpus[0] if gpus else None


def _target_cc(request: BuildRequest, adapter: TrtAdapter, gpu: GpuInfo | None) -> str:
    """The architecture the plan is for (part of the cache key): requested, else the local GPU's."""
    cc = request.compute_capability
    if cc and not adapter.rtx and (gpu is None or gpu.compute_capability != cc):
        raise UserError(
            f"model {request.model_name!r}: standard TensorRT builds only for the GPU it runs on "
            f"({'none here' if gpu is None else 'sm ' + gpu.compute_capability}), not for sm {cc}",
            hint="build each architecture on a machine with that GPU, or drop engine.compute_capabilities",
        )
    if cc and adapter.rtx:
        adapter.check_compute_capability(cc)
    return cc or (gpu.compute_capability if gpu else "unknown")


def build_engine(
    request: BuildRequest,
    *,
    trt_module: ModuleType | None = None,
    gpu: GpuInfo | None = None,
    use_cache: bool = True,
    onnx_facts: OnnxFacts | None = None,
    calibration_uploader: Any | None = None,
) -> BuildResult:
    """Build (or fetch from the engine cache) one engine and write it to `request.output_path`.

    Writes `<output>.build.json` (the manifest) next to the plan. `onnx_facts` (from `onnx_facts_for`)
    skips the CPU preflight — the container builder computes them on the host. `calibration_uploader`
    (`upload(name, array) -> device pointer`, `free()`) replaces cuda-python for INT8 calibration.
    Strongly typed fp16/int8 builds first convert/quantize the ONNX and measure its accuracy against
    the fp32 model on ONNX Runtime (`precision.py`, `accuracy.py`), failing over `request.accuracy`.

    Raises:
        MissingDependency: no TensorRT / no GPU (exit 3), with the options.
        EnvironmentProblem: installed TensorRT differs from `target_trt_version` (exit 3).
        ModelFileError / UserError: preflight, profile or precision problems (exit 2), found before building.
        BuildError: the parser or builder failed, or the converted model is over its accuracy budget
            (exit 1), with the failing ONNX node and TensorRT's errors.
    """
    trt = load_tensorrt(trt_module)
    adapter = TrtAdapter(trt)
    version = adapter.version_text
    _check_target(request, version)
    gpu = _pick_gpu(gpu, trt_module, adapter)
    source_facts = onnx_facts or onnx_facts_for(request, version)
    flags = plan_flags(version, request, onnx_has_qdq=source_facts.has_qdq)
    build_req, facts, prepared, accuracy = _strongly_typed_onnx(request, flags, source_facts, version)
    if flags.strongly_typed and (why := check_onnx_carries_precision(facts, request.precision)):
        raise UserError(f"model {request.model_name!r}: precision {request.precision!r} requested but {why}")
    _early_profile_check(request, facts)
    calib_digest = None
    if request.calibration is not None and flags.use_calibrator:
        _, calib_digest = calibration_cache_for(
            request.calibration, request.cache_dir, request.model_name, [i.name for i in facts.inputs]
        )
    cc = _target_cc(request, adapter, gpu)
    key = engine_cache_key(
        build_req, onnx_digest=facts.digest, trt_version=version, compute_capability=cc, calibration_digest=calib_digest
    )
    cache = EngineCache(request.cache_dir)
    with cache.building(key):
        hit = cache.lookup(key) if use_cache else None
        if hit is not None:
            plan_path, doc = hit
            copy_plan(plan_path, request.output_path)
            info = replace(build_info_from_dict(doc), model_name=request.model_name, engine_path=request.output_path,
                           accuracy=accuracy)
            write_manifest(info)
            LOGGER.info("model %s: engine cache hit %s -> %s", request.model_name, key[:12], request.output_path)
            return BuildResult(request, info, cache_hit=True)
        plan_bytes, info = _build(_parseable(build_req), adapter, flags, gpu, key, calibration_uploader)
        info = replace(info, onnx_sha256=source_facts.digest, compute_capability=None if cc == "unknown" else cc,
                       built_onnx=str(prepared.path) if prepared else None,
                       built_onnx_sha256=prepared.digest if prepared else None, accuracy=accuracy)
        cache.store(key, plan_bytes, build_info_to_dict(info))
    LOGGER.info("Saving engine to %s", request.output_path)
    atomic_write(request.output_path, plan_bytes)
    write_manifest(info)
    return BuildResult(request, info, cache_hit=False)


def _strongly_typed_onnx(
    request: BuildRequest, flags: FlagPlan, facts: OnnxFacts, version: str
) -> tuple[BuildRequest, OnnxFacts, PreparedOnnx | None, dict[str, Any] | None]:
    """Strongly typed fp16/int8 from an fp32 ONNX: convert or quantize it (cached), measure its accuracy on
    ONNX Runtime against the fp32 model and check the budget, all before TensorRT builds anything."""
    if not (flags.strongly_typed and request.precision in ("fp16", "int8")):
        return request, facts, None, None
    if check_onnx_carries_precision(facts, request.precision) is None:
        return request, facts, None, None  # the ONNX already is fp16 / Q/DQ: build it as it is
    holdout = 0
    if request.precision == "int8" and not (request.accuracy and request.accuracy.data_files):
        holdout = request.accuracy.holdout if request.accuracy else AccuracyBudget().holdout
    prepared = prepare_precision_onnx(request, facts.digest, holdout=holdout)
    report = measure_accuracy(request, prepared).as_dict()
    check_budget(request.model_name, report, request.accuracy)
    build_req = replace(request, onnx_path=prepared.path)
    return build_req, onnx_facts_for(build_req, version), prepared, report


def _parseable(request: BuildRequest) -> BuildRequest:
    """The request with an ONNX TensorRT can build: unknown dims named "?" made unique (precision.py)."""
    path = unique_unknown_dims_onnx(request.onnx_path, request.cache_dir)
    return request if path == request.onnx_path else replace(request, onnx_path=path)


def _build(
    request: BuildRequest,
    adapter: TrtAdapter,
    flags: FlagPlan,
    gpu: GpuInfo | None,
    key: str,
    uploader: Any | None,
) -> tuple[bytes, BuildInfo]:
    trt = adapter.trt
    logger, captured = shared_logger(trt)
    started = time.monotonic()
    LOGGER.info("model %s: building TensorRT %s engine (%s)", request.model_name, adapter.version, request.precision)
    builder = trt.Builder(logger)
    network = builder.create_network(adapter.network_flags(flags.network_flags))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(request.onnx_path)):  # from file: resolves external data
        raise BuildError(
            f"model {request.model_name!r}: TensorRT {adapter.version} could not parse {request.onnx_path}",
            details="\n".join(adapter.parser_errors(parser)) or "\n".join(captured.errors()) or None,
            hint="the failing node is named above; replace the op, fold constants (polygraphy surgeon sanitize) "
            "or use --fallback onnxruntime",
        )
    net_inputs = adapter.network_inputs(network)
    warnings = [*flags.warnings, *validate_profiles(net_inputs, request.profiles, request.max_batch_size)]
    config = builder.create_builder_config()
    adapter.apply_config(config, flags, request)
    if request.compute_capability and adapter.rtx:
        adapter.set_compute_capability(config, request.compute_capability)
    profiles = adapter.add_profiles(builder, config, network, request.profiles)
    calibrator = None
    if flags.use_calibrator and request.calibration is not None:
        calibrator = _calibrator(request, adapter, net_inputs, config, profiles, uploader)
    # TensorRT-RTX: timing-cache operations are documented no-ops (deprecated since RTX 1.2), and loading
    # a cache without a GPU logs CUDA errors; standard TensorRT keeps one file per (version, GPU).
    timing = None if adapter.rtx else TimingCacheStore(request.cache_dir, adapter.version_text, gpu)
    before_timing = captured.mark()
    timing_cache = timing.attach(config) if timing else None  # must outlive the build
    if timing and (timing.problem or captured.errors(before_timing)):
        warnings.append(timing.problem or f"TensorRT logged errors loading the timing cache {timing.path}: "
                        + "; ".join(captured.errors(before_timing))[:500])
    mark = captured.mark()  # errors before this (e.g. a timing cache that did not load) are not the build's
    serialized: trt_stub.IHostMemory | None = builder.build_serialized_network(network, config)
    if serialized is None:  # the stubs say IHostMemory; the binding returns None on failure
        raise BuildError(
            f"model {request.model_name!r}: TensorRT {adapter.version} failed to build the engine",
            details="\n".join(captured.errors(mark)) or None,
            hint="see the TensorRT errors above; a larger workspace_bytes or fewer profiles may help",
        )
    del calibrator, timing_cache  # both had to stay alive until the build returned
    plan_bytes = bytes(memoryview(serialized))
    if timing:
        timing.save(config)
    seconds = time.monotonic() - started
    check = verify_on_device(plan_bytes, adapter, logger, captured, request, gpu, strongly_typed=flags.strongly_typed)
    warnings.extend(check.warnings)
    LOGGER.info("model %s: built in %.1f s", request.model_name, seconds)
    info = BuildInfo(
        model_name=request.model_name,
        engine_path=request.output_path,
        engine_sha256=hashlib.sha256(plan_bytes).hexdigest(),
        onnx_sha256="",  # set by build_engine: the source ONNX's digest, not the converted one's
        cache_key=key,
        trt_version=adapter.version_text,
        cuda_version=cuda_version(),
        gpu_name=gpu.name if gpu else None,
        compute_capability=gpu.compute_capability if gpu else None,
        precision=request.precision,
        strongly_typed=flags.strongly_typed,
        flags=flags.set_flags,
        profiles=_profile_records(request),
        max_batch_size=request.max_batch_size,
        precision_verified=check.precision_verified,
        warnings=tuple(warnings),
        flavor=adapter.version.flavor,
        verified_on_device=check.on_device,
        build_seconds=round(seconds, 3),
    )
    return plan_bytes, info


def _calibrator(
    request: BuildRequest,
    adapter: TrtAdapter,
    net_inputs: Sequence[Any],
    config: trt_stub.IBuilderConfig,
    profiles: Sequence[trt_stub.IOptimizationProfile],
    uploader: Any | None,
) -> trt_stub.IInt8Calibrator:
    settings = request.calibration
    assert settings is not None
    names = [n.name for n in net_inputs if not n.is_shape_tensor]
    arrays = load_calibration_arrays(settings.data_files, names, {n.name: n.dtype for n in net_inputs})
    batches = CalibrationBatches(arrays, settings.batch_size, settings.max_batches)
    if request.profiles:
        p0 = request.profiles[0]
        check_batch_shapes(batches, {s.name: s.opt for s in p0.inputs if s.name in names})
    cache, _ = calibration_cache_for(settings, request.cache_dir, request.model_name, names)
    calibrator = make_calibrator(adapter.trt, batches, cache, uploader or CudaUploader(), settings.algorithm)
    config.int8_calibrator = calibrator  # 8.6-10.x only; plan_flags never asks for it on 11
    if profiles:
        config.set_calibration_profile(profiles[0])  # dynamic shapes calibrate at profile 0's opt shapes
    return calibrator


def build_engines(
    requests: Iterable[BuildRequest],
    *,
    trt_module: ModuleType | None = None,
    gpu: GpuInfo | None = None,
    use_cache: bool = True,
) -> list[BuildResult]:
    """Build every request in order (GPU builds are serialized); engine-cache hits skip the build.

    Raises:
        UserError: two requests write the same output path.
        (plus everything `build_engine` raises; the first failure stops the run)
    """
    reqs = list(requests)
    outputs = [r.output_path.resolve() for r in reqs]
    dupes = sorted({str(p) for p in outputs if outputs.count(p) > 1})
    if dupes:
        raise UserError(f"several models write the same engine file: {', '.join(dupes)}")
    if reqs and trt_module is None:
        require_tensorrt()
    results: list[BuildResult] = []
    for req in reqs:
        results.append(build_engine(req, trt_module=trt_module, gpu=gpu, use_cache=use_cache))
    hits = sum(r.cache_hit for r in results)
    LOGGER.info("engines: %d built, %d from cache", len(results) - hits, hits)
    return results


def load_build_info(path: Path) -> BuildInfo:
    """Read a `<plan>.build.json` manifest by its own path."""
    return build_info_from_dict(json.loads(path.read_text(encoding="utf-8")))
