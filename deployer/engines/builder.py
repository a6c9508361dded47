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
from .inspect import read_engine_info
from .manifest import build_info_from_dict, build_info_to_dict, cuda_version, detect_gpus, write_manifest
from .plan import FlagPlan, engine_cache_key, plan_flags, validate_profiles
from .preflight import OnnxFacts, check_onnx_carries_precision, preflight
from .request import BuildInfo, BuildRequest, BuildResult, GpuInfo, Profile, ProfileRecord
from .versions import parse_trt_version

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


def onnxruntime_fallback_possible(request: BuildRequest) -> tuple[bool, str]:
    """Whether this model can be served by the onnxruntime backend instead (CPU CI), and why (not)."""
    try:
        import onnx
    except ImportError:  # pragma: no cover - onnx is a core dependency
        return False, "the onnx package is missing"
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False, "onnxruntime is not installed"
    if not request.onnx_path.is_file():
        return False, f"ONNX file not found: {request.onnx_path}"
    try:
        model = onnx.load(str(request.onnx_path), load_external_data=False)
    except Exception as exc:
        return False, f"cannot read ONNX {request.onnx_path}: {exc}"
    inits = {i.name for i in model.graph.initializer}
    if request.max_batch_size > 0:
        for vi in [*model.graph.input, *model.graph.output]:
            if vi.name in inits:
                continue
            dim = vi.type.tensor_type.shape.dim
            if not dim or (dim[0].HasField("dim_value") and dim[0].dim_value > 0):
                return False, (
                    f"onnxruntime batches only when dim 0 of every input/output is dynamic; {vi.name!r} is not "
                    f"(max_batch_size {request.max_batch_size})"
                )
    note = ""
    if request.precision not in ("fp32", "tf32"):
        note = f"; runs at the ONNX's own precision, not the requested {request.precision}"
    return True, "onnxruntime can serve this ONNX" + note


def _profile_records(request: BuildRequest) -> tuple[ProfileRecord, ...]:
    return tuple(
        ProfileRecord(i, s.name, s.min, s.opt, s.max) for i, p in enumerate(request.profiles) for s in p.inputs
    )


def _precision_tokens(precision: str) -> tuple[str, ...]:
    return {"fp16": ("fp16", "half"), "bf16": ("bf16", "bfloat16"), "int8": ("int8",), "fp8": ("fp8",)}.get(
        precision, ()
    )


def _collect_formats(node: Any, out: list[str]) -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            if isinstance(v, str) and any(w in k.lower() for w in ("format", "datatype", "precision")):
                out.append(v.lower())
            else:
                _collect_formats(v, out)
    elif isinstance(node, list):
        for item in node:
            _collect_formats(item, out)


def verify_precision(engine: trt_stub.ICudaEngine, adapter: TrtAdapter, precision: str) -> bool | None:
    """Whether any engine layer runs at `precision` (engine inspector, detailed verbosity).

    None when not applicable (fp32/tf32) or when the inspector gives no per-layer formats.
    """
    tokens = _precision_tokens(precision)
    if not tokens:
        return None
    inspector = engine.create_engine_inspector()
    text = inspector.get_engine_information(adapter.trt.LayerInformationFormat.JSON)
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    formats: list[str] = []
    _collect_formats(doc.get("Layers", []) if isinstance(doc, dict) else doc, formats)
    if not formats:
        return None
    return any(tok in f for f in formats for tok in tokens)


def _check_target(request: BuildRequest, trt_version: str) -> None:
    if request.target_trt_version is None:
        return
    if not parse_trt_version(trt_version).matches(parse_trt_version(request.target_trt_version)):
        raise EnvironmentProblem(
            f"model {request.model_name!r}: installed TensorRT {trt_version} differs from the target Triton's "
            f"TensorRT {request.target_trt_version}; the engine would not load there",
            hint="build inside the target's NGC image (container builder) or install the matching tensorrt",
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


def _pick_gpu(gpu: GpuInfo | None, trt_module: ModuleType | None) -> GpuInfo | None:
    if gpu is not None:
        return gpu
    gpus = detect_gpus()
    if not gpus and trt_module is None:
        raise MissingDependency("cannot build TensorRT engines here: no NVIDIA GPU is visible", hint=MISSING_TRT_HINT)
    return gpus[0] if gpus else None


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

    Raises:
        MissingDependency: no TensorRT / no GPU (exit 3), with the options.
        EnvironmentProblem: installed TensorRT differs from `target_trt_version` (exit 3).
        ModelFileError / UserError: preflight, profile or precision problems (exit 2), found before building.
        BuildError: the parser or builder failed (exit 1), with the failing ONNX node and TensorRT's errors.
    """
    trt = load_tensorrt(trt_module)
    adapter = TrtAdapter(trt)
    version = adapter.version_text
    _check_target(request, version)
    gpu = _pick_gpu(gpu, trt_module)
    facts = onnx_facts or onnx_facts_for(request, version)
    flags = plan_flags(version, request, onnx_has_qdq=facts.has_qdq)
    if flags.strongly_typed and (why := check_onnx_carries_precision(facts, request.precision)):
        raise UserError(f"model {request.model_name!r}: precision {request.precision!r} requested but {why}")
    _early_profile_check(request, facts)
    calib_digest = None
    if request.calibration is not None and flags.use_calibrator:
        _, calib_digest = calibration_cache_for(
            request.calibration, request.cache_dir, request.model_name, [i.name for i in facts.inputs]
        )
    cc = gpu.compute_capability if gpu else "unknown"
    onnx_sha = facts.digest
    key = engine_cache_key(
        request, onnx_digest=onnx_sha, trt_version=version, compute_capability=cc, calibration_digest=calib_digest
    )
    cache = EngineCache(request.cache_dir)
    with cache.building(key):
        hit = cache.lookup(key) if use_cache else None
        if hit is not None:
            plan_path, doc = hit
            copy_plan(plan_path, request.output_path)
            info = replace(build_info_from_dict(doc), model_name=request.model_name, engine_path=request.output_path)
            write_manifest(info)
            LOGGER.info("model %s: engine cache hit %s -> %s", request.model_name, key[:12], request.output_path)
            return BuildResult(request, info, cache_hit=True)
        plan_bytes, info = _build(request, adapter, flags, gpu, key, onnx_sha, calibration_uploader)
        cache.store(key, plan_bytes, build_info_to_dict(info))
    LOGGER.info("Saving engine to %s", request.output_path)
    atomic_write(request.output_path, plan_bytes)
    write_manifest(info)
    return BuildResult(request, info, cache_hit=False)


def _build(
    request: BuildRequest,
    adapter: TrtAdapter,
    flags: FlagPlan,
    gpu: GpuInfo | None,
    key: str,
    onnx_sha: str,
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
    profiles = adapter.add_profiles(builder, config, network, request.profiles)
    calibrator = None
    if flags.use_calibrator and request.calibration is not None:
        calibrator = _calibrator(request, adapter, net_inputs, config, profiles, uploader)
    timing = TimingCacheStore(request.cache_dir, adapter.version_text, gpu)
    timing_cache = timing.attach(config)  # must outlive the build
    serialized: trt_stub.IHostMemory | None = builder.build_serialized_network(network, config)
    if serialized is None:  # the stubs say IHostMemory; the binding returns None on failure
        raise BuildError(
            f"model {request.model_name!r}: TensorRT {adapter.version} failed to build the engine",
            details="\n".join(captured.errors()) or None,
            hint="see the TensorRT errors above; a larger workspace_bytes or fewer profiles may help",
        )
    del calibrator, timing_cache  # both had to stay alive until the build returned
    plan_bytes = bytes(memoryview(serialized))
    timing.save(config)
    runtime = trt.Runtime(logger)
    if request.builder_flags.version_compatible:
        runtime.engine_host_code_allowed = True  # version-compatible plans embed the lean runtime (host code)
    engine = runtime.deserialize_cuda_engine(plan_bytes)
    if engine is None:
        raise BuildError(
            f"model {request.model_name!r}: the freshly built plan does not deserialize",
            details="\n".join(captured.errors()) or None,
        )
    read_engine_info(engine, adapter)  # fails loudly if the name-based IO API cannot read it
    verified = verify_precision(engine, adapter, request.precision)
    if verified is False:
        raise BuildError(
            f"model {request.model_name!r}: requested {request.precision} but no engine layer runs in "
            f"{request.precision}; refusing to publish an fp32 engine labelled {request.precision}",
            hint="request fp32/tf32 if that is acceptable; otherwise supply an ONNX that carries the precision "
            "(ModelOpt AutoCast / Q/DQ) and set strongly_typed: true",
        )
    if verified is None and request.precision not in ("fp32", "tf32"):
        warnings.append(f"could not verify from the engine that {request.precision} took effect")
    LOGGER.info("model %s: built in %.1f s", request.model_name, time.monotonic() - started)
    info = BuildInfo(
        model_name=request.model_name,
        engine_path=request.output_path,
        engine_sha256=hashlib.sha256(plan_bytes).hexdigest(),
        onnx_sha256=onnx_sha,
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
        precision_verified=verified,
        warnings=tuple(warnings),
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
