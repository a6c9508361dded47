"""`deployer init`: scaffold a commented, deployable spec from an ONNX file.

The batch decision, dtypes and names come from the graph; sizes for symbolic dims are probed with
ONNX Runtime so the recorded min/opt/max shapes are ones the model really accepts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deployer.errors import DeployerError, UserError
from deployer.onnx.info import OnnxInfo, ShapeRange, batch_dimension, read_onnx
from deployer.onnx.probe import probe_shapes

log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 8


@dataclass(frozen=True)
class InitResult:
    """What `init` decided, for the CLI to report."""

    spec_path: Path
    model_name: str
    batching: bool
    reason: str
    max_batch_size: int
    text: str


def model_name_from(path: Path) -> str:
    """A valid Triton model name from a file name (`det.v2:fp32.onnx` -> `det.v2_fp32`)."""
    stem = path.name[: -len(".onnx")] if path.name.endswith(".onnx") else path.stem
    name = re.sub(r"[^A-Za-z0-9_.\-]", "_", stem).lstrip(".") or "model"
    return name if name[0].isalnum() or name[0] == "_" else f"m{name}"


def _q(value: str) -> str:
    """`value` as a YAML double-quoted scalar that cannot end its line or its flow collection.

    JSON strings are valid YAML, and json.dumps escapes quotes, backslashes and C0 controls; every other
    character that is not printable (NEL, U+2028/9, C1 controls, BOM, unpaired surrogates) is escaped
    too, since YAML readers treat some of them as line breaks or refuse them.
    """
    return _escape_unprintable(json.dumps(value, ensure_ascii=False))


def _c(text: str) -> str:
    """Text for a `#` comment: ONNX metadata is data, so a newline in it must not start a YAML line."""
    return _escape_unprintable(json.dumps(text, ensure_ascii=False)[1:-1])


def _escape_unprintable(text: str) -> str:
    out = []
    for ch in text:
        if ch.isprintable() or ch in "\t":
            out.append(ch)
        elif ord(ch) > 0xFFFF:
            out.append(f"\\U{ord(ch):08x}")
        else:
            out.append(f"\\u{ord(ch):04x}")
    return "".join(out)


def _list(values: tuple[int, ...] | list[int]) -> str:
    return "[" + ", ".join(str(int(v)) for v in values) + "]"


def scaffold(
    info: OnnxInfo,
    *,
    name: str,
    source: str,
    backend: str,
    max_batch_size: int,
    batching: bool,
    reason: str,
    shapes: dict[str, ShapeRange],
    http_port: int = 8000,
) -> str:
    """The spec text (pure), proven by parse-back to hold exactly the intended data and nothing else.

    gRPC and metrics ports follow the HTTP port (+1, +2). Metadata from the ONNX file (producer, file
    and tensor names, symbolic dim names in the batch reason) only ever appears quoted or escaped.
    """
    if backend not in ("onnxruntime", "tensorrt"):
        raise UserError(f"init supports backend onnxruntime or tensorrt, not {backend!r}")
    mbs = max_batch_size if batching else 0
    model: dict[str, Any] = {"name": name, "source": source, "backend": backend, "version": "auto",
                             "max_batch_size": mbs}
    intended: dict[str, Any] = {
        "repository": "model_repository",
        "server": {"runtime": "local", "http_port": http_port, "grpc_port": http_port + 1,
                   "metrics_port": http_port + 2},
        "models": [model],
    }
    lines = [
        f"# deployer spec scaffolded by `deployer init` from {_c(Path(source).name)}",
        f"# (sha256 {info.sha256[:16]}…, opset {int(info.opset)}, producer {_c(info.producer) or 'unknown'}).",
        "# Every key and its default: docs/spec.md; JSON Schema for editors: `deployer schema`.",
        "repository: model_repository  # published versions go here (relative to this file)",
        "server:",
        "  runtime: local  # local (tritonserver binary) | docker | compose",
        f"  http_port: {int(http_port)}",
        f"  grpc_port: {int(http_port) + 1}",
        f"  metrics_port: {int(http_port) + 2}",
        "models:",
        f"  - name: {_q(name)}",
        f"    source: {_q(source)}",
        f"    backend: {backend}",
        "    version: auto  # each publish of changed content gets the next version",
        f"    # {'Batching' if batching else 'No Triton batching'}: {_c(reason)}.",
        f"    max_batch_size: {int(mbs)}",
    ]
    if batching:
        preferred = sorted({max(1, mbs // 2), mbs})
        model["dynamic_batching"] = {"preferred_batch_size": preferred, "max_queue_delay_microseconds": 500}
        lines += [
            "    dynamic_batching:  # Triton groups concurrent requests into batches",
            f"      preferred_batch_size: {_list(preferred)}",
            "      max_queue_delay_microseconds: 500",
        ]
    if backend == "tensorrt":
        model["precision"] = "fp32"
        model["instance_group"] = [{"kind": "GPU", "count": 1}]
        lines += [
            "    precision: fp32  # fp16/bf16/int8 need TensorRT <= 10, or a quantized/AutoCast ONNX on 11",
            "    instance_group: [{kind: GPU, count: 1}]",
        ]
    lines.append("    inputs:  # dims exclude the batch dim when max_batch_size > 0; -1 = variable")
    lines += _tensors(info, "inputs", batching, model)
    lines.append("    outputs:")
    lines += _tensors(info, "outputs", batching, model)
    recorded = {
        k: v for k, v in shapes.items()
        if backend == "tensorrt" or any(isinstance(d, str) for d in info.input(k).shape[(1 if batching else 0):])
    }
    if recorded:
        model["shapes"] = {k: {"min": list(r.min), "opt": list(r.opt), "max": list(r.max)} for k, r in recorded.items()}
        lines.append("    shapes:  # min/opt/max full shapes, probed: ONNX Runtime ran the model at each")
        for k, r in recorded.items():
            lines.append(f"      {_q(k)}: {{min: {_list(r.min)}, opt: {_list(r.opt)}, max: {_list(r.max)}}}")
    text = "\n".join(lines) + "\n"
    _prove(text, intended)
    return text


def _prove(text: str, intended: dict[str, Any]) -> None:
    """Parse the text back with a safe YAML loader; anything but the intended data is a bug, not a spec."""
    from ruamel.yaml import YAML

    parsed = YAML(typ="safe", pure=True).load(text)
    if parsed != intended:
        raise DeployerError(
            "internal error: the scaffolded spec does not parse back to the intended data",
            details=f"intended: {intended!r}\nparsed:   {parsed!r}",
            hint="please report this with the ONNX file's metadata",
        )


def _tensors(info: OnnxInfo, key: str, batching: bool, model: dict[str, Any]) -> list[str]:
    out = []
    items: list[dict[str, Any]] = model.setdefault(key, [])
    for t in info.inputs if key == "inputs" else info.outputs:
        dims = t.triton_dims(batching=batching)
        item: dict[str, Any] = {"name": t.name, "dtype": t.dtype}
        extra = comment = ""
        if not dims:
            dims = (1,)
            comment = "  # batch-only tensor in the model" if batching else "  # scalar (rank 0) in the model"
        item["dims"] = list(dims)
        if batching and not t.triton_dims(batching=batching):
            extra = ", reshape: []"
            item["reshape"] = []
        items.append(item)
        # dtype is one of deployer.dtypes' names (an identifier), never a string from the file
        out.append(f"      - {{name: {_q(t.name)}, dtype: {t.dtype}, dims: {_list(dims)}{extra}}}{comment}")
    return out


def init_spec(
    model: Path,
    *,
    output: Path | None = None,
    name: str | None = None,
    backend: str = "onnxruntime",
    max_batch_size: int = DEFAULT_MAX_BATCH,
    force: bool = False,
    http_port: int = 8000,
) -> InitResult:
    """Write a spec for `model` next to it (or at `output`); refuses to overwrite unless `force`.

    The generated spec is validated before it replaces anything, so a spec that `init` writes loads.
    """
    from deployer.spec import load_deployment

    if backend not in ("onnxruntime", "tensorrt"):
        raise UserError(f"init supports backend onnxruntime or tensorrt, not {backend!r}",
                        hint="python and ensemble models are written by hand; see docs/spec.md")
    if not 1 <= http_port <= 65533:
        raise UserError(f"--http-port must be in 1..65533, got {http_port}")
    if max_batch_size < 1:
        raise UserError(f"--max-batch-size must be >= 1, got {max_batch_size}")
    info = read_onnx(model)
    decision = batch_dimension(info)
    spec_path = (output or model.with_name(model_name_from(model) + ".deployer.yaml")).absolute()
    if spec_path.exists() and not force:
        raise UserError(f"{spec_path} already exists", hint="pass --force to overwrite, or -o another path")
    mbs = max_batch_size if decision.batching else 0
    shapes = probe_shapes(model, info, batching=decision.batching, max_batch_size=max(mbs, 1))
    source = os.path.relpath(model.absolute(), spec_path.parent)
    text = scaffold(
        info,
        name=name or model_name_from(model),
        source=source,
        backend=backend,
        max_batch_size=mbs,
        batching=decision.batching,
        reason=decision.reason,
        shapes=shapes,
        http_port=http_port,
    )
    spec_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = spec_path.with_name(f".{spec_path.name}.{hashlib.sha256(text.encode()).hexdigest()[:8]}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        # Validate in place so relative paths resolve exactly as they will for the user.
        load_deployment(tmp, fallback="onnxruntime" if backend == "tensorrt" else None)
        tmp.replace(spec_path)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("wrote %s", spec_path)
    return InitResult(spec_path, name or model_name_from(model), decision.batching, decision.reason, mbs, text)
