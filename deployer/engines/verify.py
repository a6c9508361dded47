"""The build's verification step: deserialize the fresh plan on the device, read its IO, check precision.

It needs a GPU the plan can run on. Without one (TensorRT-RTX builds ahead of time on CPU machines; a
plan for another architecture) the build stops after serialization and says so: the manifest records
`verified_on_device: false` and a warning, never a guess.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from deployer.errors import BuildError

from .adapters import CapturedLog, TrtAdapter
from .inspect import derive_triton_fields, read_engine_info
from .request import BuildRequest, GpuInfo

if TYPE_CHECKING:
    import tensorrt as trt_stub  # type: ignore[import-untyped, unused-ignore]

LOGGER = logging.getLogger(__name__)
# TensorRT-RTX refuses these architectures at deserialization ("does not support this compute capability").
RTX_UNSUPPORTED_CC = ("9.0", "10.0", "10.3")


@dataclass(frozen=True)
class Verification:
    """Outcome of `verify_on_device`."""

    on_device: bool
    precision_verified: bool | None
    warnings: tuple[str, ...] = ()


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


def _no_device_reason(adapter: TrtAdapter, request: BuildRequest, gpu: GpuInfo | None) -> str | None:
    if gpu is None:
        return "no GPU here"
    if request.compute_capability and request.compute_capability != gpu.compute_capability:
        return f"built for sm {request.compute_capability}, this GPU is sm {gpu.compute_capability}"
    if adapter.rtx and gpu.compute_capability in RTX_UNSUPPORTED_CC:
        return f"TensorRT-RTX does not run on {gpu.name} (sm {gpu.compute_capability})"
    return None


def verify_on_device(
    plan_bytes: bytes,
    adapter: TrtAdapter,
    logger: trt_stub.ILogger,
    captured: CapturedLog,
    request: BuildRequest,
    gpu: GpuInfo | None,
    *,
    strongly_typed: bool,
) -> Verification:
    """Deserialize `plan_bytes` where a device can run it; read IO (name-based API), derive the Triton
    fields (max batch covers `max_batch_size`) and check that the requested precision took effect.

    Raises:
        BuildError: the plan does not deserialize, or it is fp32 while labelled fp16/int8 (exit 1).
        UserError: the engine cannot serve the requested max_batch_size (exit 2).
    """
    why = _no_device_reason(adapter, request, gpu)
    if why is not None:
        LOGGER.warning("model %s: engine not verified on a device (%s)", request.model_name, why)
        return Verification(False, None, (
            f"engine not verified on a device ({why}): the plan was serialized but never deserialized, so its IO "
            "and precision were not checked by TensorRT",
        ))
    runtime = adapter.trt.Runtime(logger)
    if request.builder_flags.version_compatible:
        runtime.engine_host_code_allowed = True  # version-compatible plans embed the lean runtime (host code)
    mark = captured.mark()
    engine: trt_stub.ICudaEngine | None = runtime.deserialize_cuda_engine(plan_bytes)
    if engine is None:
        raise BuildError(
            f"model {request.model_name!r}: the freshly built plan does not deserialize",
            details="\n".join(captured.errors(mark)) or None,
        )
    info = read_engine_info(engine, adapter)  # fails loudly if the name-based IO API cannot read it
    fields = derive_triton_fields(info, max_batch_size=request.max_batch_size)
    warnings = list(fields.warnings)
    verified = verify_precision(engine, adapter, request.precision)
    if verified is False and not strongly_typed:
        raise BuildError(
            f"model {request.model_name!r}: requested {request.precision} but no engine layer runs in "
            f"{request.precision}; refusing to publish an fp32 engine labelled {request.precision}",
            hint="request fp32/tf32 if that is acceptable; otherwise build strongly typed "
            "(`engine.strongly_typed: true`): deployer then puts the precision into the ONNX first",
        )
    if verified is False:  # strongly typed: the ONNX carries the precision; TensorRT may still keep layers fp32
        warnings.append(f"no engine layer reports {request.precision} although the strongly typed ONNX carries it")
    if verified is None and request.precision not in ("fp32", "tf32"):
        warnings.append(f"could not verify from the engine that {request.precision} took effect")
    return Verification(True, verified, tuple(warnings))
