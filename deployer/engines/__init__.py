"""TensorRT engines from ONNX, matched to the target Triton release (issue 5).

TensorRT itself is imported lazily; everything except the actual build/inspection runs without it.
"""

from __future__ import annotations

from .accuracy import AccuracyReport, budget_violations
from .builder import (
    build_engine,
    build_engines,
    onnx_facts_for,
    require_tensorrt,
    tensorrt_available,
)
from .container import (
    ContainerBuildPlan,
    default_image,
    plan_container_build,
    probe_trt_version,
    run_container_build,
)
from .fallback import onnxruntime_fallback_possible
from .inspect import (
    EngineInfo,
    EngineTensor,
    TritonFields,
    TritonTensor,
    check_triton_config,
    derive_triton_fields,
    engine_max_batch,
    inspect_engine,
)
from .manifest import cc_model_filenames, detect_gpus, engine_filename_for_cc, read_manifest
from .plan import FlagPlan, NetworkInput, engine_cache_key, plan_flags, profile_for_batch_range, validate_profiles
from .precision import PreparedOnnx, fp16_onnx, int8_qdq_onnx, prepare_precision_onnx
from .preflight import OnnxFacts, PreflightReport, preflight
from .request import (
    PRECISIONS,
    AccuracyBudget,
    BuilderFlags,
    BuildInfo,
    BuildRequest,
    BuildResult,
    CalibrationSettings,
    GpuInfo,
    InputShapes,
    Precision,
    Profile,
)
from .verify import verify_precision
from .versions import (
    TRITON_TRT_TABLE,
    TRITON_TRTLLM_TRT_TABLE,
    check_engine_matches_target,
    check_triton_can_serve,
    parse_trt_version,
    trt_version_for_triton,
    version_compatible_runs_on,
)

__all__ = [
    "PRECISIONS",
    "TRITON_TRTLLM_TRT_TABLE",
    "TRITON_TRT_TABLE",
    "AccuracyBudget",
    "AccuracyReport",
    "BuildInfo",
    "BuildRequest",
    "BuildResult",
    "BuilderFlags",
    "CalibrationSettings",
    "ContainerBuildPlan",
    "EngineInfo",
    "EngineTensor",
    "FlagPlan",
    "GpuInfo",
    "InputShapes",
    "NetworkInput",
    "OnnxFacts",
    "Precision",
    "PreflightReport",
    "PreparedOnnx",
    "Profile",
    "TritonFields",
    "TritonTensor",
    "budget_violations",
    "build_engine",
    "build_engines",
    "cc_model_filenames",
    "check_engine_matches_target",
    "check_triton_can_serve",
    "check_triton_config",
    "default_image",
    "derive_triton_fields",
    "detect_gpus",
    "engine_cache_key",
    "engine_filename_for_cc",
    "engine_max_batch",
    "fp16_onnx",
    "inspect_engine",
    "int8_qdq_onnx",
    "onnx_facts_for",
    "onnxruntime_fallback_possible",
    "parse_trt_version",
    "plan_container_build",
    "plan_flags",
    "preflight",
    "prepare_precision_onnx",
    "probe_trt_version",
    "profile_for_batch_range",
    "read_manifest",
    "require_tensorrt",
    "run_container_build",
    "tensorrt_available",
    "trt_version_for_triton",
    "validate_profiles",
    "verify_precision",
    "version_compatible_runs_on",
]
