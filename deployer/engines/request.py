"""Inputs and outputs of the engine builder: frozen dataclasses, no TensorRT needed.

The spec author maps the YAML spec to `BuildRequest`; everything downstream (plan, cache key, builder,
container builder) reads only these objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Precision = Literal["fp32", "tf32", "fp16", "bf16", "int8", "fp8"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "tf32", "fp16", "bf16", "int8", "fp8")
Shape = tuple[int, ...]


@dataclass(frozen=True)
class InputShapes:
    """Full shapes (batch dimension included) of one network input in one optimization profile.

    For shape tensors (`is_shape_tensor` inputs of the network) the three tuples are the *values* of the
    tensor (batch in value[0] when Triton batches), passed to `set_shape_input` instead of `set_shape`.
    """

    name: str  # exact network input name (ONNX graph input), e.g. "input:0" — no quoting
    min: Shape
    opt: Shape
    max: Shape


@dataclass(frozen=True)
class Profile:
    """One TensorRT optimization profile: (min, opt, max) for every dynamic input.

    Profile index = position in `BuildRequest.profiles`; Triton uses profile 0 unless the config's
    `instance_group.profile` lists others.
    """

    inputs: tuple[InputShapes, ...]

    def get(self, name: str) -> InputShapes | None:
        """The shapes for input `name`, or None when the profile does not mention it."""
        for item in self.inputs:
            if item.name == name:
                return item
        return None


@dataclass(frozen=True)
class CalibrationSettings:
    """INT8 calibration (TensorRT <= 10 only; TensorRT 11 removed calibrators).

    Each `.npz` file may hold one array per network input (keyed by input name); a `.npy` file holds one
    array and is only valid for single-input networks. Arrays are concatenated along axis 0 and cut into
    batches of `batch_size`; a final partial batch is dropped (TensorRT needs a fixed calibration batch).
    """

    data_files: tuple[Path, ...]
    batch_size: int = 8
    max_batches: int | None = None  # None = use every full batch in the data
    cache_path: Path | None = None  # None = <cache_dir>/calibration/<model>-<data hash>.cache
    algorithm: Literal["entropy2", "minmax"] = "entropy2"


@dataclass(frozen=True)
class BuilderFlags:
    """Optional TensorRT builder switches (all default off; names mirror `trt.BuilderFlag`)."""

    version_compatible: bool = False  # BuilderFlag.VERSION_COMPATIBLE; Triton needs version-compatible=true
    exclude_lean_runtime: bool = False  # BuilderFlag.EXCLUDE_LEAN_RUNTIME (only with version_compatible)
    hardware_compatibility: Literal["none", "ampere_plus", "same_compute_capability"] = "none"
    refit: bool = False  # BuilderFlag.REFIT
    strip_plan: bool = False  # BuilderFlag.STRIP_PLAN (weight-stripped plan; needs refit before use)
    sparse_weights: bool = False  # BuilderFlag.SPARSE_WEIGHTS
    error_on_timing_cache_miss: bool = False  # BuilderFlag.ERROR_ON_TIMING_CACHE_MISS (reproducible builds)
    builder_optimization_level: int | None = None  # 0..5; None = TensorRT default (3)


@dataclass(frozen=True)
class BuildRequest:
    """Everything needed to build one TensorRT engine from one ONNX file.

    Fields:
        model_name: Triton model name; used for logs, cache file names and the manifest.
        onnx_path: the ONNX file (external-data files next to it are hashed and parsed too).
        profiles: one or more optimization profiles; must cover every dynamic input (checked before
            building, against the parsed network's real input names).
        max_batch_size: the Triton `max_batch_size` this engine must serve; 0 = no batching. When > 0,
            every profile's batch minimum must be 1 and, for profile 0, the batch maximum of every input
            must be >= max_batch_size (Triton takes the min over inputs of profile-max dim 0).
        precision: requested precision. fp32 disables TF32; tf32 keeps TensorRT's default TF32.
            fp16/bf16/int8/fp8 use builder flags on TensorRT <= 10; TensorRT 11 has no such flags, so
            there they require `strongly_typed=True` and an ONNX that already carries the precision.
        strongly_typed: the ONNX already encodes its precision (ModelOpt AutoCast fp16/bf16 model or a
            Q/DQ int8/fp8 model); build a strongly typed network and set no precision flags. Always the
            case on TensorRT 11. `precision` then names what the ONNX contains and is verified.
        calibration: INT8 calibration data (TensorRT <= 10, not strongly typed). int8 without it needs a
            Q/DQ ONNX.
        workspace_bytes: `MemoryPoolType.WORKSPACE` limit; None = TensorRT default (device memory).
        builder_flags: optional switches, see `BuilderFlags`.
        target_trt_version: TensorRT version of the Triton release that will serve the engine, e.g.
            "10.3.0"; see `versions.trt_version_for_triton`. None = whatever builds it (not checked).
        cache_dir: root of the engine, timing and calibration caches.
        output_path: where the serialized plan is written (e.g. repo/<model>/1/model.plan).
    """

    model_name: str
    onnx_path: Path
    profiles: tuple[Profile, ...]
    max_batch_size: int
    output_path: Path
    cache_dir: Path
    precision: Precision = "fp32"
    strongly_typed: bool = False
    calibration: CalibrationSettings | None = None
    workspace_bytes: int | None = None
    builder_flags: BuilderFlags = field(default_factory=BuilderFlags)
    target_trt_version: str | None = None


@dataclass(frozen=True)
class GpuInfo:
    """One visible GPU."""

    index: int
    name: str
    compute_capability: str  # "8.6"


@dataclass(frozen=True)
class ProfileRecord:
    """Shapes of one input in one profile, as recorded in the manifest."""

    profile: int
    name: str
    min: Shape
    opt: Shape
    max: Shape


@dataclass(frozen=True)
class BuildInfo:
    """What was built and with what; written next to the engine as `<plan>.build.json`."""

    model_name: str
    engine_path: Path
    engine_sha256: str
    onnx_sha256: str
    cache_key: str
    trt_version: str
    cuda_version: str | None
    gpu_name: str | None
    compute_capability: str | None
    precision: Precision
    strongly_typed: bool
    flags: tuple[str, ...]  # BuilderFlag names that were set
    profiles: tuple[ProfileRecord, ...]
    max_batch_size: int
    precision_verified: bool | None  # None = could not be checked on this TensorRT
    warnings: tuple[str, ...] = ()
    builder: Literal["in-process", "container"] = "in-process"
    image: str | None = None  # container image when builder == "container"


@dataclass(frozen=True)
class BuildResult:
    """Outcome of `build_engines` for one request."""

    request: BuildRequest
    info: BuildInfo
    cache_hit: bool  # True = engine copied from the engine cache, no TensorRT build ran
