"""What an ONNX file declares (I/O names, dtypes, shapes) and what it actually accepts at run time.

`read_onnx` parses the graph only (external tensor data is never loaded). `batch_dimension` applies
Triton's ONNX Runtime backend batching rule. Running the model (shape probing, reference outputs,
synthetic inputs) lives in `deployer.onnx.probe`.
"""

from __future__ import annotations

import hashlib
import logging
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from deployer.dtypes import from_onnx_elem_type
from deployer.errors import ModelFileError
from deployer.tensors import ShapeRange

if TYPE_CHECKING:
    import onnx

__all__ = [
    "DYNAMIC",
    "BatchDecision",
    "OnnxInfo",
    "ShapeRange",
    "TensorInfo",
    "batch_dimension",
    "external_data_files",
    "read_onnx",
    "resolve_model_file",
]

log = logging.getLogger(__name__)

Dim = int | str
Array = np.ndarray[Any, Any]
DYNAMIC = "?"  # a dynamic dim without a symbolic name


@dataclass(frozen=True)
class TensorInfo:
    """One graph input or output. Fixed dims are ints; dynamic dims are their symbolic name or "?"."""

    name: str
    dtype: str  # canonical name, see deployer.dtypes
    shape: tuple[Dim, ...]
    has_shape: bool = True  # False when the model declares no shape at all (rank unknown)

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_scalar(self) -> bool:
        return self.has_shape and not self.shape

    @property
    def dynamic_axes(self) -> tuple[int, ...]:
        return tuple(i for i, d in enumerate(self.shape) if isinstance(d, str))

    def triton_dims(self, *, batching: bool) -> tuple[int, ...]:
        """Dims as Triton writes them (-1 for dynamic), without the batch dim when batching."""
        dims = tuple(-1 if isinstance(d, str) else d for d in self.shape)
        return dims[1:] if batching else dims


@dataclass(frozen=True)
class OnnxInfo:
    """The interface of an ONNX model as declared in its graph."""

    path: Path  # the .onnx file that was read (inside the directory for `model.onnx/` layouts)
    sha256: str  # of the graph file, plus external data files (name and bytes) when present
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    opset: int  # default-domain opset (0 when not declared)
    ir_version: int
    producer: str
    external_data: bool
    external_files: tuple[Path, ...] = ()  # external tensor data files, sorted (empty when none)

    @property
    def batchable(self) -> bool:
        """ONNX Runtime backend's rule: every input and output has a dynamic first dim."""
        return batch_dimension(self).batching

    def input(self, name: str) -> TensorInfo:
        return _find(self.inputs, name, "input", self.path)

    def output(self, name: str) -> TensorInfo:
        return _find(self.outputs, name, "output", self.path)

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.outputs)


def _find(tensors: Iterable[TensorInfo], name: str, kind: str, path: Path) -> TensorInfo:
    tensors = tuple(tensors)
    for t in tensors:
        if t.name == name:
            return t
    names = ", ".join(repr(t.name) for t in tensors)
    raise KeyError(f"model {path} has no {kind} {name!r}; its {kind}s are: {names}")


@dataclass(frozen=True)
class BatchDecision:
    """Whether Triton may batch on axis 0 (max_batch_size > 0), and why."""

    batching: bool
    reason: str


# ---------------------------------------------------------------------------------------------- reading


def resolve_model_file(path: Path | str) -> Path:
    """The .onnx file to read: `path` itself, or the graph file inside a `model.onnx/` directory."""
    p = Path(path)
    if not p.exists():
        raise ModelFileError(f"ONNX model not found: {p}", hint="check the model path in the spec")
    if p.is_dir():
        inner = p / "model.onnx"
        if inner.exists():
            return _regular_file(inner)
        found = sorted(q for q in p.glob("*.onnx") if q.is_file() or _is_special(q))
        if len(found) == 1:
            return _regular_file(found[0])
        raise ModelFileError(
            f"{p} is a directory with {len(found)} .onnx files; cannot tell which is the model",
            hint="a directory model must contain the graph as model.onnx (Triton's layout)",
        )
    return _regular_file(p)


def _regular_file(p: Path) -> Path:
    """`p` if it is a regular file (after symlinks); opening a FIFO or a device could block forever."""
    try:
        mode = p.stat().st_mode
    except OSError as exc:
        raise ModelFileError(f"cannot read {p}: {exc.strerror}", hint="check the model path in the spec") from exc
    if not stat.S_ISREG(mode):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device or special file"
        raise ModelFileError(f"{p} is {kind}, not a regular file", hint="point the spec at an .onnx file")
    return p


def read_onnx(path: Path | str) -> OnnxInfo:
    """Parse the graph of an ONNX model (never its external tensor data) into an `OnnxInfo`.

    Raises ModelFileError for missing, unreadable, corrupt or non-ONNX files, missing external data
    files and I/O types Triton cannot carry.
    """
    import onnx

    file = resolve_model_file(path)
    try:
        model = onnx.load(str(file), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError, OSError, ... -> one clear user error
        raise ModelFileError(
            f"cannot read {file} as an ONNX model: {type(exc).__name__}: {exc}".rstrip(": "),
            hint="is the file complete (not truncated) and really an .onnx ModelProto?",
        ) from exc
    if model.ir_version <= 0 or not model.HasField("graph") or not model.graph.output:
        raise ModelFileError(
            f"{file} is not an ONNX model (no IR version or no graph outputs)",
            hint="export the model with torch.onnx.export / tf2onnx, or point the spec at the right file",
        )
    ext_files = _external_data_files(model, file)
    graph = model.graph
    init_names = {t.name for t in graph.initializer} | {t.values.name for t in graph.sparse_initializer}
    graph_inputs = [v for v in graph.input if v.name not in init_names]
    graph_outputs = list(graph.output)
    if any(not _has_shape(v) for v in graph_outputs):
        graph_outputs = _inferred_outputs(model)
    return OnnxInfo(
        path=file,
        sha256=_sha256([file, *ext_files], base=file.parent),
        inputs=tuple(_tensor_info(v, "input", file) for v in graph_inputs),
        outputs=tuple(_tensor_info(v, "output", file) for v in graph_outputs),
        opset=next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0),
        ir_version=int(model.ir_version),
        producer=f"{model.producer_name} {model.producer_version}".strip(),
        external_data=bool(ext_files),
        external_files=tuple(ext_files),
    )


def _has_shape(v: onnx.ValueInfoProto) -> bool:
    return v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape")


def _inferred_outputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Graph outputs with shapes from ONNX shape inference where the graph declares none."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False).graph
    except Exception as exc:  # inference is best effort; the declared outputs are still valid
        log.debug("shape inference failed: %s", exc)
        return list(model.graph.output)
    known = {v.name: v for v in [*inferred.output, *inferred.value_info]}
    return [v if _has_shape(v) or v.name not in known else known[v.name] for v in model.graph.output]


def _tensor_info(v: onnx.ValueInfoProto, kind: str, file: Path) -> TensorInfo:
    if not v.type.HasField("tensor_type"):
        which = v.type.WhichOneof("value")
        raise ModelFileError(
            f"{kind} {v.name!r} of {file} is a {which}, not a tensor; Triton only carries tensors",
            hint="wrap the model so that its inputs and outputs are plain tensors",
        )
    tt = v.type.tensor_type
    try:
        dtype = from_onnx_elem_type(tt.elem_type)
    except ValueError as exc:
        raise ModelFileError(f"{kind} {v.name!r} of {file}: {exc}") from exc
    if not tt.HasField("shape"):
        return TensorInfo(v.name, dtype, (), has_shape=False)
    dims: list[Dim] = []
    for d in tt.shape.dim:
        if d.HasField("dim_value") and d.dim_value > 0:
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param:
            dims.append(d.dim_param)
        else:  # unnamed, -1, 0 or missing: dynamic without a name
            dims.append(DYNAMIC)
    return TensorInfo(v.name, dtype, tuple(dims))


def external_data_files(path: Path | str) -> tuple[Path, ...]:
    """The external tensor data files of a model (graph only is parsed); same errors as read_onnx."""
    return read_onnx(path).external_files


def _external_data_files(model: onnx.ModelProto, file: Path) -> list[Path]:
    """Files holding external tensor data, inside the model's folder; missing ones are a user error.

    A `location` is a path the ONNX file chooses, so a downloaded model could point at any file on
    the machine (`/etc/shadow`, `../../secret`): it would be read, hashed and published into the
    repository. Like onnx's own loader (which refuses them too), only relative paths that stay in the
    model's folder, symlinks resolved, are accepted.
    """
    from onnx.external_data_helper import _get_all_tensors

    locations: set[str] = set()
    for t in _get_all_tensors(model):
        if t.data_location == 1:  # TensorProto.EXTERNAL
            loc = next((e.value for e in t.external_data if e.key == "location"), "")
            if loc:
                locations.add(loc)
    base = file.parent.resolve()
    outside = [loc for loc in sorted(locations) if not _inside(base, loc)]
    if outside:
        raise ModelFileError(
            f"{file} names external data outside the model's folder: {', '.join(repr(o) for o in outside)}",
            hint="external data locations must be relative paths inside the folder of the .onnx file "
            "(re-save the model with onnx.save_model(..., save_as_external_data=True, location='weights.bin'))",
        )
    paths = [file.parent / loc for loc in sorted(locations)]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise ModelFileError(
            f"{file} keeps weights in external data files that are missing: {', '.join(missing)}",
            hint="copy the external data files next to the .onnx file (same relative paths)",
        )
    for p in paths:
        _regular_file(p)
    return paths


def _inside(base: Path, location: str) -> bool:
    """True when `location` is a relative path that stays inside `base` (a resolved directory)."""
    if not location or "\0" in location or Path(location).is_absolute() or location.startswith("\\"):
        return False
    if ".." in Path(location).parts:
        return False
    try:
        return (base / location).resolve().is_relative_to(base)
    except (OSError, ValueError):
        return False


def _is_special(p: Path) -> bool:
    try:
        return not stat.S_ISREG(p.stat().st_mode) and not stat.S_ISDIR(p.stat().st_mode)
    except OSError:
        return False


def _sha256(files: Sequence[Path], *, base: Path) -> str:
    h = hashlib.sha256()
    for i, f in enumerate(files):
        if i:  # name external files so that renaming one changes the digest
            h.update(f.relative_to(base).as_posix().encode() + b"\0")
        with f.open("rb") as fh:
            for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):  # type: ignore[misc]
                h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------- batching


def batch_dimension(info: OnnxInfo) -> BatchDecision:
    """Decide whether axis 0 is a batch dim Triton may use (ONNX Runtime backend's rule, stated why)."""
    tensors = [("input", t) for t in info.inputs] + [("output", t) for t in info.outputs]
    for kind, t in tensors:
        if not t.has_shape:
            return BatchDecision(False, f"{kind} {t.name!r} declares no shape, so its first dim is unknown")
        if t.is_scalar:
            return BatchDecision(False, f"{kind} {t.name!r} is a scalar (rank 0), it has no batch dim")
    for kind, t in tensors:
        first = t.shape[0]
        if isinstance(first, int):
            later = [i for i in t.dynamic_axes if i > 0]
            if later:
                reason = (
                    f"{kind} {t.name!r} has a fixed first dim {first} and dynamic dims on axes {later} "
                    f"(shape {_fmt(t.shape)}): its batch, if any, is not on axis 0"
                )
            elif first == 1:
                reason = f"{kind} {t.name!r} has a static batch of 1 (shape {_fmt(t.shape)})"
            else:
                reason = f"{kind} {t.name!r} has a fixed first dim {first} (shape {_fmt(t.shape)})"
            return BatchDecision(False, reason)
    names = sorted({str(t.shape[0]) for _, t in tensors})
    reason = f"every input and output has a dynamic first dim ({', '.join(repr(n) for n in names)})"
    return BatchDecision(True, reason)


def _fmt(shape: Sequence[Dim]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"
