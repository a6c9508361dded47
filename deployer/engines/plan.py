"""Pure build planning: profile validation, builder flags per TensorRT version, engine cache keys.

Nothing here imports TensorRT; the builder applies the plan (names of TensorRT enum members) to the
real API through `adapters.py`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from deployer.errors import UserError

from .request import BuildRequest, InputShapes, Profile, Shape
from .versions import TrtVersion, parse_trt_version

MODELOPT_HINT = (
    "TensorRT 11 and TensorRT-RTX have no FP16/BF16/INT8/FP8 builder flags (strong typing only): the precision "
    "must be in the ONNX. deployer does that itself for fp16 (onnxconverter-common, I/O types kept) and for "
    "int8 (ONNX Runtime post-training Q/DQ quantization calibrated on the model's `calibration` data); for "
    "bf16/fp8 convert the ONNX first — bf16: `modelopt.onnx.autocast.convert_to_mixed_precision(..., "
    "low_precision_type='bf16', keep_io_types=True)`; fp8: `modelopt.onnx.quantization.quantize(onnx_path, "
    "quantize_mode='fp8', calibration_data=..., output_path=...)` — and point `source` at that ONNX. Or build "
    "with TensorRT <= 10 weakly typed (an older Triton release, `engine.strongly_typed: false`)."
)


@dataclass(frozen=True)
class NetworkInput:
    """One network input as the parser (or the ONNX graph) sees it; -1 = dynamic dimension."""

    name: str
    shape: Shape
    dtype: str = "FLOAT"  # TensorRT DataType member name
    is_shape_tensor: bool = False

    @property
    def is_dynamic(self) -> bool:
        """True when any dimension is -1 (needs an optimization profile)."""
        return any(d < 0 for d in self.shape)


@dataclass(frozen=True)
class FlagPlan:
    """TensorRT enum member names to apply; computed per TensorRT version."""

    network_flags: tuple[str, ...]  # NetworkDefinitionCreationFlag members OR-ed into create_network
    set_flags: tuple[str, ...]  # BuilderFlag members to set
    clear_flags: tuple[str, ...]  # BuilderFlag members to clear (TF32 for strict fp32)
    hardware_compatibility: str | None  # HardwareCompatibilityLevel member, None = leave default
    use_calibrator: bool  # attach an INT8 calibrator (TensorRT <= 10, weak typing, int8 + data)
    strongly_typed: bool  # the network is strongly typed (requested, or always on TensorRT >= 11)
    warnings: tuple[str, ...] = ()


def _shape_issue(pidx: int, shapes: InputShapes, net: NetworkInput) -> list[str]:
    where = f"profile {pidx}: input {shapes.name!r}"
    issues: list[str] = []
    if net.is_shape_tensor:
        vals = (shapes.min, shapes.opt, shapes.max)
        if len({len(v) for v in vals}) != 1:
            issues.append(f"{where}: shape-tensor min/opt/max must have the same number of values, got {vals}")
        elif any(not (a <= b <= c) for a, b, c in zip(*vals, strict=True)):
            issues.append(f"{where}: values need min <= opt <= max, got {vals}")
        return issues
    rank = len(net.shape)
    for label, shp in (("min", shapes.min), ("opt", shapes.opt), ("max", shapes.max)):
        if len(shp) != rank:
            issues.append(
                f"{where}: {label} shape {shp} has rank {len(shp)}, the network input has rank {rank} {net.shape}"
            )
    if issues:
        return issues
    for axis, net_dim in enumerate(net.shape):
        lo, mid, hi = shapes.min[axis], shapes.opt[axis], shapes.max[axis]
        if net_dim >= 0 and (lo, mid, hi) != (net_dim, net_dim, net_dim):
            issues.append(
                f"{where}: axis {axis} is fixed to {net_dim} in the network but the profile gives {lo}/{mid}/{hi}"
            )
        elif lo < 0 or not (lo <= mid <= hi):
            issues.append(f"{where}: axis {axis} needs 0 <= min <= opt <= max, got {lo}/{mid}/{hi}")
    return issues


def _batch_range(shapes: InputShapes) -> tuple[int, int] | None:
    if not shapes.min:
        return None
    return shapes.min[0], shapes.max[0]


def validate_profiles(
    inputs: Sequence[NetworkInput], profiles: Sequence[Profile], max_batch_size: int
) -> tuple[str, ...]:
    """Check profiles against the network's real inputs BEFORE building.

    TensorRT silently ignores profile entries whose names are not network inputs (NVIDIA/TensorRT#2208)
    and Triton rejects engines whose profile-max batch is below `max_batch_size` only at load time, so all
    of this is checked here. Every problem is reported, not just the first.

    Returns:
        Warnings (non-fatal), e.g. inputs with different batch ranges in one profile.

    Raises:
        UserError: listing every problem with the offending value and a fix.
    """
    by_name = {i.name: i for i in inputs}
    issues: list[str] = []
    warnings: list[str] = []
    dynamic = [i for i in inputs if i.is_dynamic or i.is_shape_tensor]
    if dynamic and not profiles:
        issues.append(
            "the network has dynamic inputs "
            + ", ".join(f"{i.name!r} {i.shape}" for i in dynamic)
            + " but no optimization profile is given"
        )
    if max_batch_size < 0:
        issues.append(f"max_batch_size must be >= 0, got {max_batch_size}")
    if max_batch_size > 0:
        for net in inputs:
            if not net.is_shape_tensor and (not net.shape or net.shape[0] >= 0):
                issues.append(
                    f"input {net.name!r} has a fixed first dimension {net.shape} but max_batch_size is "
                    f"{max_batch_size}: Triton batches along dim 0, so it must be dynamic (-1); re-export the "
                    "ONNX with a dynamic batch axis or set max_batch_size: 0"
                )
    for pidx, profile in enumerate(profiles):
        names = [s.name for s in profile.inputs]
        for dup in sorted({n for n in names if names.count(n) > 1}):
            issues.append(f"profile {pidx}: input {dup!r} is listed more than once")
        for shapes in profile.inputs:
            found = by_name.get(shapes.name)
            if found is None:
                issues.append(
                    f"profile {pidx}: {shapes.name!r} is not a network input (inputs: "
                    f"{', '.join(repr(n) for n in by_name)}); TensorRT would silently ignore it"
                )
                continue
            issues.extend(_shape_issue(pidx, shapes, found))
        for net in dynamic:
            if profile.get(net.name) is None:
                issues.append(f"profile {pidx}: dynamic input {net.name!r} {net.shape} has no min/opt/max shapes")
        if max_batch_size > 0:
            ranges: dict[str, tuple[int, int]] = {}
            for shapes in profile.inputs:
                rng = _batch_range(shapes)
                if shapes.name in by_name and rng is not None:
                    ranges[shapes.name] = rng
            for name, (lo, hi) in ranges.items():
                if lo != 1:
                    issues.append(
                        f"profile {pidx}: input {name!r} batch minimum is {lo}; it must be 1 or batch-1 requests fail"
                    )
                if hi < max_batch_size:
                    issues.append(
                        f"profile {pidx}: input {name!r} batch maximum {hi} is below max_batch_size "
                        f"{max_batch_size}; Triton would refuse the engine ('engine only supports max-batch {hi}')"
                    )
            if len(set(ranges.values())) > 1:
                warnings.append(f"profile {pidx}: inputs have different batch ranges {ranges}")
    if issues:
        raise UserError(
            f"{len(issues)} problem{'s' if len(issues) != 1 else ''} with the optimization profiles",
            details="\n".join(f"- {i}" for i in issues),
            hint="take input names and ranks from the ONNX graph inputs; batch (dim 0) ranges must be "
            "min 1 and max >= max_batch_size",
        )
    return tuple(warnings)


def profile_for_batch_range(
    inputs: Sequence[NetworkInput],
    min_batch: int,
    opt_batch: int,
    max_batch: int,
    other_dims: Mapping[str, tuple[Shape, Shape, Shape]] | None = None,
) -> Profile:
    """Build one profile where dim 0 of every dynamic input spans [min_batch, opt_batch, max_batch].

    Non-batch dynamic dimensions must be given in `other_dims` as full (min, opt, max) shapes; their
    dim 0 is replaced by the batch range.

    Raises:
        UserError: a non-batch dimension is dynamic and not covered by `other_dims`.
    """
    other_dims = other_dims or {}
    items: list[InputShapes] = []
    for net in inputs:
        if net.is_shape_tensor or not net.is_dynamic:
            continue
        if net.name in other_dims:
            lo, mid, hi = (list(s) for s in other_dims[net.name])
        else:
            if any(d < 0 for d in net.shape[1:]):
                raise UserError(
                    f"input {net.name!r} {net.shape} has dynamic dimensions besides the batch",
                    hint=f"give full min/opt/max shapes for {net.name!r} in the spec's profile",
                )
            lo, mid, hi = list(net.shape), list(net.shape), list(net.shape)
        if net.shape and net.shape[0] < 0:
            lo[0], mid[0], hi[0] = min_batch, opt_batch, max_batch
        items.append(InputShapes(net.name, tuple(lo), tuple(mid), tuple(hi)))
    return Profile(tuple(items))


def _precision_flags(
    version: TrtVersion, request: BuildRequest, onnx_has_qdq: bool, strongly: bool
) -> tuple[list[str], list[str], bool]:
    """(set, clear, use_calibrator) for the precision; raises UserError when not expressible."""
    p = request.precision
    if p == "fp32":
        return [], ["TF32"], False
    if p == "tf32":
        return ["TF32"], [], False
    if strongly:
        # No precision flags: the ONNX carries the precision. The builder converts fp16 and quantizes int8
        # from the calibration data first (deployer.engines.precision); bf16/fp8 must come converted.
        if p == "int8" and request.calibration is None and not onnx_has_qdq:
            raise UserError(
                f"int8 on a strongly typed TensorRT {version} build needs calibration data to quantize the ONNX "
                "(Q/DQ nodes), or an ONNX that already has QuantizeLinear/DequantizeLinear nodes",
                hint="add `calibration: {data: [samples.npz]}` (100-500 representative inputs) to the model",
            )
        return [], [], False
    if version.api_major == 8 and p in ("bf16", "fp8"):
        raise UserError(
            f"precision {p!r} is not available on TensorRT {version} (BF16 needs >= 10, FP8 >= 10)",
            hint="use fp16/int8, or a Triton release with TensorRT 10",
        )
    if p == "fp16":
        return ["FP16"], [], False
    if p == "bf16":
        return ["BF16"], [], False
    if p == "fp8":
        if not onnx_has_qdq:
            raise UserError(
                "fp8 needs an explicitly quantized ONNX (FP8 Q/DQ nodes); this ONNX has none",
                hint="quantize with modelopt.onnx.quantization.quantize(..., quantize_mode='fp8')",
            )
        return ["FP8"], [], False
    # int8
    if request.calibration is None and not onnx_has_qdq:
        raise UserError(
            "int8 needs calibration data (calibration.data_files) or an ONNX with "
            "QuantizeLinear/DequantizeLinear nodes",
            hint="add .npy/.npz representative inputs to the spec, or quantize with ModelOpt",
        )
    return ["INT8"], [], request.calibration is not None and not onnx_has_qdq


def plan_flags(trt_version: str, request: BuildRequest, *, onnx_has_qdq: bool = False) -> FlagPlan:
    """Builder flags for `request` on TensorRT `trt_version` (8.6, 9.x, 10.x, 11.x).

    Raises:
        UserError: the precision or a flag cannot be expressed on that TensorRT version — never a
            silent downgrade (rf-detr#1453 wrote fp32 engines labelled fp16 on TensorRT 11).
    """
    v = parse_trt_version(trt_version)
    if v.api < (8, 6):
        raise UserError(f"TensorRT {v} is not supported", hint="use TensorRT 8.6 or newer, or TensorRT-RTX")
    warnings: list[str] = []
    strongly = request.strongly_typed or v.strongly_typed_only
    network: list[str] = []
    if v.api_major == 8:
        network.append("EXPLICIT_BATCH")  # ONNX needs explicit batch on 8.x; ignored in 10, removed in 11
        if request.strongly_typed:
            raise UserError(
                f"strongly typed networks need TensorRT >= 9, this is {v}", hint="set strongly_typed: false"
            )
    elif v.api_major in (9, 10) and request.strongly_typed:
        network.append("STRONGLY_TYPED")  # opt-in on 9/10; always on (and deprecated) in 11 and RTX
    set_flags, clear_flags, use_calib = _precision_flags(v, request, onnx_has_qdq, strongly)
    if use_calib and v.api_major == 10:
        warnings.append("INT8 calibrators are deprecated since TensorRT 10.1 and removed in 11; prefer a Q/DQ ONNX")
    bf = request.builder_flags
    if bf.version_compatible:
        set_flags.append("VERSION_COMPATIBLE")
    if bf.exclude_lean_runtime:
        if not bf.version_compatible:
            raise UserError(
                "exclude_lean_runtime only applies to version-compatible engines",
                hint="also set version_compatible: true",
            )
        set_flags.append("EXCLUDE_LEAN_RUNTIME")
    if bf.refit:
        set_flags.append("REFIT")
    if bf.strip_plan:
        if v.api_major < 10:
            raise UserError(f"strip_plan needs TensorRT >= 10, this is {v}", hint="remove strip_plan")
        set_flags.append("STRIP_PLAN")
    if bf.sparse_weights:
        set_flags.append("SPARSE_WEIGHTS")
    if bf.error_on_timing_cache_miss:
        set_flags.append("ERROR_ON_TIMING_CACHE_MISS")
    if bf.builder_optimization_level is not None and not 0 <= bf.builder_optimization_level <= 5:
        raise UserError(f"builder_optimization_level must be 0..5, got {bf.builder_optimization_level}")
    hw: str | None = None
    if bf.hardware_compatibility == "ampere_plus":
        hw = "AMPERE_PLUS"
    elif bf.hardware_compatibility == "same_compute_capability":
        if v.api < (10, 9):
            raise UserError(
                f"hardware_compatibility same_compute_capability needs TensorRT >= 10.9, this is {v}",
                hint="use ampere_plus or none",
            )
        hw = "SAME_COMPUTE_CAPABILITY"
    return FlagPlan(tuple(network), tuple(set_flags), tuple(clear_flags), hw, use_calib, strongly, tuple(warnings))


def _canonical_settings(request: BuildRequest, calibration_digest: str | None) -> dict[str, object]:
    """The request fields that change the engine bytes (not names or output paths)."""
    calib = request.calibration
    return {
        "profiles": [[asdict(s) for s in p.inputs] for p in request.profiles],
        "max_batch_size": request.max_batch_size,
        "precision": request.precision,
        "strongly_typed": request.strongly_typed,
        "compute_capability": request.compute_capability,
        "calibration": None
        if calib is None
        else {
            "data": calibration_digest,
            "batch_size": calib.batch_size,
            "max_batches": calib.max_batches,
            "algorithm": calib.algorithm,
        },
        "workspace_bytes": request.workspace_bytes,
        "builder_flags": asdict(request.builder_flags),
    }


def engine_cache_key(
    request: BuildRequest,
    *,
    onnx_digest: str,
    trt_version: str,
    compute_capability: str,
    calibration_digest: str | None = None,
) -> str:
    """Content address of an engine: sha256 over ONNX content, build settings, TensorRT version and GPU CC.

    Stable across processes and Python versions (canonical JSON); model name and output paths are not part
    of it, so two models with the same ONNX and settings share one cached engine.
    """
    doc = {
        "v": 1,
        "onnx": onnx_digest,
        "settings": _canonical_settings(request, calibration_digest),
        "trt": trt_version,
        "cc": compute_capability,
    }
    blob = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()
