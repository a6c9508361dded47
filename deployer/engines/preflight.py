"""CPU preflight of an ONNX model before any GPU is involved.

onnx.checker, strict shape inference, the model's inputs (what profiles must cover), operator support
against TensorRT's ONNX operator table (`optable.py`), and what precision the ONNX itself carries
(Q/DQ nodes, fp16/bf16 tensors) for strongly typed builds.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deployer.errors import ModelFileError

from .optable import table_for
from .plan import NetworkInput
from .versions import parse_trt_version

LOGGER = logging.getLogger(__name__)

# ONNX TensorProto element type -> TensorRT DataType member name of the engine IO (TensorRT >= 10).
ONNX_TO_TRT = {
    1: "FLOAT",
    10: "HALF",
    16: "BF16",
    6: "INT32",
    7: "INT64",
    3: "INT8",
    2: "UINT8",
    9: "BOOL",
    11: "FLOAT",  # DOUBLE: TensorRT casts down to FLOAT
}
_QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})


@dataclass(frozen=True)
class PreflightReport:
    """Findings of `preflight`; `errors` make a TensorRT build pointless."""

    onnx_path: Path
    opset: int
    inputs: tuple[NetworkInput, ...]
    outputs: tuple[str, ...]
    op_counts: dict[str, int]
    has_qdq: bool
    float_types: frozenset[str]  # "FLOAT", "HALF", "BF16" seen in initializers/value infos/casts
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        """No errors."""
        return not self.errors


def _dims(value_info: Any) -> tuple[int, ...]:
    shape = value_info.type.tensor_type.shape
    return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in shape.dim)


def onnx_inputs(model: Any, trt_major: int = 10) -> tuple[NetworkInput, ...]:
    """Graph inputs that are not initializers, as TensorRT will see them (-1 = dynamic).

    TensorRT < 10 has no INT64 IO: the parser casts INT64 inputs down to INT32 (brief D.3 #6).
    """
    inits = {i.name for i in model.graph.initializer}
    out: list[NetworkInput] = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        dtype = ONNX_TO_TRT.get(vi.type.tensor_type.elem_type, f"ONNX#{vi.type.tensor_type.elem_type}")
        if dtype == "INT64" and trt_major < 10:
            dtype = "INT32"
        out.append(NetworkInput(vi.name, _dims(vi), dtype))
    return tuple(out)


def _float_types(model: Any) -> frozenset[str]:
    import onnx

    seen: set[int] = {t.data_type for t in model.graph.initializer}
    for vi in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        seen.add(vi.type.tensor_type.elem_type)
    for node in model.graph.node:
        if node.op_type == "Cast":
            for a in node.attribute:
                if a.name == "to":
                    seen.add(int(a.i))
    names = {
        int(onnx.TensorProto.FLOAT): "FLOAT",
        int(onnx.TensorProto.FLOAT16): "HALF",
        int(onnx.TensorProto.BFLOAT16): "BF16",
    }
    return frozenset(names[t] for t in seen if t in names)


def _op_findings(
    op_counts: Counter[str], domains: set[str], opset: int, trt_version: str
) -> tuple[list[str], list[str]]:
    errors: list[str] = []
    warnings: list[str] = []
    target = parse_trt_version(trt_version)
    table = table_for(target.api_major)  # TensorRT-RTX: judged by the newest table (its parser is 10.x-based)
    for domain in sorted(domains - {"", "ai.onnx"}):
        warnings.append(f"nodes in custom domain {domain!r} need a TensorRT plugin (or onnx-graphsurgeon rewrite)")
    if table is None:
        warnings.append(f"no ONNX operator table for TensorRT {target}; operator support not checked")
        return errors, warnings
    tv = ".".join(map(str, table.version))
    if opset > table.max_opset:
        warnings.append(f"model opset {opset} is above {table.max_opset}, the newest documented for TensorRT {tv}")
    if opset < table.min_opset:
        errors.append(f"model opset {opset} is below {table.min_opset}, the oldest TensorRT {tv} parses")
    for op in sorted(op_counts):
        if op in table.supported:
            continue
        if op in table.unsupported:
            msg = f"operator {op} ({op_counts[op]} node(s)) is unsupported by TensorRT's ONNX parser (table {tv})"
            # Support only grows: "unsupported" in a table documented at or after the target is final.
            if table.version >= target.api:
                errors.append(msg)
            else:
                warnings.append(msg + f"; TensorRT {target} may have added it")
        else:
            warnings.append(f"operator {op} is not in TensorRT's ONNX operator table ({tv}); it may need a plugin")
    return errors, warnings


def preflight(onnx_path: Path, trt_version: str = "10.15", *, check_ops: bool = True) -> PreflightReport:
    """Check an ONNX file on the CPU for a TensorRT `trt_version` target.

    Raises:
        ModelFileError: the file cannot be read at all (errors found by checks are in the report).
    """
    import onnx

    if not onnx_path.is_file():
        raise ModelFileError(f"ONNX file not found: {onnx_path}", hint="check the model's onnx path in the spec")
    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:
        raise ModelFileError(f"cannot parse ONNX file {onnx_path}: {exc}") from exc
    errors: list[str] = []
    warnings: list[str] = []
    try:
        onnx.checker.check_model(str(onnx_path))  # by path: works for >2 GB models with external data
    except Exception as exc:
        errors.append(f"onnx.checker: {exc}".strip())
    try:
        onnx.shape_inference.infer_shapes(model, strict_mode=True)
    except Exception as exc:
        warnings.append(f"ONNX shape inference failed (TensorRT infers shapes itself, but check): {exc}".strip())
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    op_counts: Counter[str] = Counter(n.op_type for n in model.graph.node if n.domain in ("", "ai.onnx"))
    domains = {n.domain for n in model.graph.node}
    if check_ops:
        op_errors, op_warnings = _op_findings(op_counts, domains, opset, trt_version)
        errors += op_errors
        warnings += op_warnings
    major = parse_trt_version(trt_version).api_major
    inputs = onnx_inputs(model, major)
    if major < 10 and any(vi.type.tensor_type.elem_type == onnx.TensorProto.INT64 for vi in model.graph.input):
        warnings.append("INT64 inputs become INT32 on TensorRT < 10: the Triton config and clients must use INT32")
    report = PreflightReport(
        onnx_path=onnx_path,
        opset=opset,
        inputs=inputs,
        outputs=tuple(o.name for o in model.graph.output),
        op_counts=dict(op_counts),
        has_qdq=any(op in _QDQ_OPS for op in op_counts),
        float_types=_float_types(model),
        errors=tuple(errors),
        warnings=tuple(warnings),
    )
    for w in report.warnings:
        LOGGER.warning("%s: %s", onnx_path.name, w)
    return report


@dataclass(frozen=True)
class OnnxFacts:
    """What the builder needs from the ONNX, computed on the host (the NGC image may lack `onnx`)."""

    digest: str  # onnx_digest(): model + external data
    inputs: tuple[NetworkInput, ...]
    has_qdq: bool
    float_types: frozenset[str]


def check_onnx_carries_precision(report: PreflightReport | OnnxFacts, precision: str) -> str | None:
    """For strongly typed builds: why the ONNX does not carry `precision`, or None when it does."""
    if precision in ("fp32", "tf32"):
        return None
    if precision == "fp16" and "HALF" not in report.float_types:
        return "the ONNX has no float16 tensors: a strongly typed build would be fp32 (convert with ModelOpt AutoCast)"
    if precision == "bf16" and "BF16" not in report.float_types:
        return "the ONNX has no bfloat16 tensors: convert with ModelOpt AutoCast (low_precision_type='bf16')"
    if precision in ("int8", "fp8") and not report.has_qdq:
        return f"the ONNX has no QuantizeLinear/DequantizeLinear nodes: quantize it for {precision} with ModelOpt"
    return None
