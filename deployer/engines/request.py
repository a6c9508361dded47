"""Inputs and outputs of the engine builder: frozen dataclasses, no TensorRT needed.

The spec author maps the YAML spec to `BuildRequest`; everything downstream (plan, cache key, builder,
container builder) reads only these objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from deployer.tensors import Shape as Shape  # re-exported: engines modules spell it from here
from deployer.tensors import ShapeRange

Precision = Literal["fp32", "tf32", "fp16", "bf16", "int8", "fp8"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "tf32", "fp16", "bf16", "int8", "fp8")


@dataclass(frozen=True, init=False)
class InputShapes(ShapeRange):
    """The spec's shape range (`deployer.tensors.ShapeRange`, the one min/opt/max type from spec to smoke)
    of one network input, named: its full shapes (batch dimension included) in one optimization profile.

    For shape tensors (`is_shape_tensor` inputs of the network) the three tuples are the *values* of the
    tensor (batch in value[0] when Triton batches), passed to `set_shape_input` instead of `set_shape`.
    """

    name: str  # exact network input name (ONNX graph input), e.g. "input:0" — no quoting

    def __init__(self, name: str, min: Shape, opt: Shape, max: Shape) -> None:
        object.__setattr__(self, "name", name)
        super().__init__(min, opt, max)

    @classmethod
    def of(cls, name: str, shapes: ShapeRange) -> InputShapes:
        """`shapes` (e.g. a spec profile's range) for the network input `name`."""
        return cls(name, shapes.min, shapes.opt, shapes.max)


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
    """INT8 calibration data: a TensorRT calibrator (TensorRT <= 10, weakly typed), or the data that ONNX
    Runtime's post-training quantization calibrates the Q/DQ ONNX on (strongly typed: 10 opt-in, 11, RTX).

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
class AccuracyBudget:
    """How the fp16/int8 ONNX is judged against the fp32 one on ONNX Runtime CPU, before any build.

    Evaluation samples come from `data_files` (.npy/.npz like calibration data); without them, int8
    holds out the last `holdout` calibration samples (never calibrated on) and fp16 uses the calibration
    data, else synthetic inputs at profile 0's opt shape. `labels` (.npy, one int class per sample) adds
    accuracy for classifiers. Every limit is optional: unset limits are measured and reported only.
    """

    data_files: tuple[Path, ...] = ()
    labels: Path | None = None
    max_samples: int = 256
    holdout: int = 64
    min_top1_agreement: float | None = None  # classifiers: fraction of samples whose argmax is unchanged
    max_accuracy_drop: float | None = None  # classifiers with labels: fp32 accuracy - converted accuracy
    max_abs_error: float | None = None  # any output: max |converted - fp32|
    max_rel_error: float | None = None  # any output: max |converted - fp32| / max |fp32|


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
        strongly_typed: build a strongly typed network (opt-in on TensorRT 9/10; always on TensorRT 11 and
            TensorRT-RTX whatever this says). The precision then comes from the ONNX: fp16 is converted
            first (onnxconverter-common, I/O types kept), int8 is quantized to Q/DQ from `calibration`
            (ONNX Runtime post-training quantization), unless the ONNX already carries it.
        calibration: INT8 calibration data: a TensorRT calibrator on weakly typed builds (TensorRT <= 10),
            the Q/DQ quantization's calibration set on strongly typed ones. int8 without it needs a Q/DQ ONNX.
        accuracy: how the converted fp16/int8 ONNX is judged against the fp32 model (ONNX Runtime CPU).
        compute_capability: the GPU architecture to build for ("8.6"): TensorRT-RTX targets it ahead of
            time; standard TensorRT builds only for the GPU it runs on and refuses another. None = the
            local GPU (TensorRT-RTX without a GPU: its default target).
        target_trt_verified: False when `target_trt_version` comes from an unverified row of the Triton
            table: a mismatch then warns instead of failing.
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
    accuracy: AccuracyBudget | None = None
    compute_capability: str | None = None
    target_trt_verified: bool = True
    keep_io_types: bool = True  # fp16 conversion: I/O stay fp32 (False: the spec declares them FP16)


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
    flavor: Literal["tensorrt", "rtx"] = "tensorrt"  # rtx = TensorRT-RTX: Triton cannot serve the plan
    # False: serialized but never deserialized on a GPU (no device here), so IO and precision are unchecked
    verified_on_device: bool = True
    built_onnx: str | None = None  # the fp16 / Q/DQ ONNX actually built (content-addressed cache path)
    built_onnx_sha256: str | None = None
    accuracy: dict[str, Any] | None = None  # deployer.engines.accuracy.AccuracyReport as a dict
    build_seconds: float | None = None


@dataclass(frozen=True)
class BuildResult:
    """Outcome of `build_engines` for one request."""

    request: BuildRequest
    info: BuildInfo
    cache_hit: bool  # True = engine copied from the engine cache, no TensorRT build ran
