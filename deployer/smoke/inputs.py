"""Deterministic synthetic inputs: which shapes to test a model at, and the tensors themselves.

Pure functions of (model, seed): the same spec and seed always produce the same arrays, so a failure
reproduces. The same arrays go to every protocol and to the ONNX Runtime reference.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from deployer.dtypes import numpy_dtype
from deployer.errors import UserError
from deployer.smoke.targets import ShapeRange, SmokeModel, SmokeTensor

__all__ = [
    "InferCase",
    "load_golden",
    "make_inputs",
    "plan_cases",
    "shape_range",
    "synthesize",
]

Array = npt.NDArray[np.generic]

# Defaults keep values small and non-negative: safe for log/sqrt-style ops and for index-like ints.
_FLOAT_RANGE = (0.0, 1.0)
_INT_RANGE = (0, 15)  # inclusive, like a spec's value_range
_STRING_RANGE = (0, 99)


@dataclass(frozen=True)
class InferCase:
    """One request signature: a label (`min`, `opt`, `max`, `batch4`...) and a full shape per input."""

    label: str
    shapes: Mapping[str, tuple[int, ...]]
    batch: int  # 0 = the model does not batch


def shape_range(model: SmokeModel, tensor: SmokeTensor) -> ShapeRange:
    """The full shapes to test `tensor` at, with config-fixed dims enforced and batch clipped to max.

    Without an explicit range every -1 dim is 1; the batch dim spans 1 / max_batch_size // 2 / max.
    """
    batching = model.max_batch_size > 0
    want_rank = len(tensor.dims) + (1 if batching else 0)
    if tensor.shapes is None:
        inner = tuple(1 if d < 0 else d for d in tensor.dims)
        if not batching:
            return ShapeRange(inner, inner, inner)
        mbs = model.max_batch_size
        return ShapeRange((1, *inner), (max(1, mbs // 2), *inner), (mbs, *inner))
    rng = tensor.shapes
    if len(rng.min) != want_rank:
        raise UserError(
            f"model {model.name!r} input {tensor.name!r}: shape range rank {len(rng.min)} != {want_rank} "
            f"(dims {list(tensor.dims)}{' plus the batch dim' if batching else ''})",
            hint="give full request shapes, with the batch dim first when max_batch_size > 0",
        )

    def fix(shape: tuple[int, ...]) -> tuple[int, ...]:
        out = list(shape)
        offset = 1 if batching else 0
        for i, d in enumerate(tensor.dims):
            if d >= 0:  # the config fixes this dim; a request with anything else is rejected
                out[i + offset] = d
        if batching:
            out[0] = min(out[0], model.max_batch_size)
        return tuple(out)

    lo, mid, hi = fix(rng.min), fix(rng.opt), fix(rng.max)
    return ShapeRange(lo, tuple(min(a, b) for a, b in zip(mid, hi, strict=True)), hi)


def plan_cases(model: SmokeModel) -> tuple[InferCase, ...]:
    """min / opt / max signatures plus one per preferred batch size, duplicates merged.

    All inputs of one case share the batch size of the first input's range (Triton requires it).
    """
    if not model.inputs:
        return (InferCase("min/opt/max", {}, 1 if model.max_batch_size > 0 else 0),)
    batching = model.max_batch_size > 0
    ranges = {t.name: shape_range(model, t) for t in model.inputs}
    first = ranges[model.inputs[0].name]

    def case(which: str, batch: int | None = None) -> tuple[int, dict[str, tuple[int, ...]]]:
        shapes: dict[str, tuple[int, ...]] = {}
        b = 0
        if batching:
            b = batch if batch is not None else getattr(first, which)[0]
        for name, r in ranges.items():
            shape = getattr(r, which)
            shapes[name] = (b, *shape[1:]) if batching else shape
        return b, shapes

    ordered: list[tuple[str, int, dict[str, tuple[int, ...]]]] = []
    wanted: list[tuple[str, str, int | None]] = [(w, w, None) for w in ("min", "opt", "max")]
    wanted += [(f"batch{b}", "opt", b) for b in model.preferred_batch_sizes if batching]
    for label, which, batch in wanted:
        b, shapes = case(which, batch)
        for i, (old_label, old_b, old_shapes) in enumerate(ordered):
            if old_shapes == shapes:
                ordered[i] = (f"{old_label}/{label}", old_b, old_shapes)
                break
        else:
            ordered.append((label, b, shapes))
    return tuple(InferCase(label, shapes, b) for label, b, shapes in ordered)


def synthesize(tensor: SmokeTensor, shape: tuple[int, ...], rng: np.random.Generator) -> Array:
    """A tensor of `shape` for `tensor`: its fixed value, or uniform values in its range.

    Ranges are inclusive. Floats default to [0, 1), integers to [0, 15], strings to decimal numbers
    in [0, 99].
    BF16 values are float32 arrays rounded to bfloat16 precision, so client and reference agree.
    """
    dtype = tensor.dtype
    np_dtype = numpy_dtype(dtype)
    if tensor.fixed_value is not None:
        if dtype == "STRING":
            value = tensor.fixed_value
            raw = value if isinstance(value, bytes) else str(value).encode()
            arr: Array = np.empty(shape, dtype=object)
            arr.fill(raw)
            return arr
        return (
            _bf16_round(np.full(shape, tensor.fixed_value, dtype=np_dtype))
            if dtype == "BF16"
            else (np.full(shape, tensor.fixed_value, dtype=np_dtype))
        )
    if dtype == "BOOL":
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if dtype == "STRING":
        lo, hi = tensor.value_range or _STRING_RANGE
        ints = rng.integers(int(lo), int(hi), size=shape, endpoint=True)
        out: Array = np.empty(shape, dtype=object)
        for idx, v in np.ndenumerate(ints):
            out[idx] = str(int(v)).encode()
        return out
    if np.issubdtype(np_dtype, np.integer):
        info = np.iinfo(np_dtype)  # type: ignore[type-var]
        lo, hi = tensor.value_range or _INT_RANGE
        low = max(int(np.ceil(lo)), int(info.min))
        high = min(int(np.floor(hi)), int(info.max))  # inclusive
        if high < low:
            raise UserError(
                f"input {tensor.name!r}: value_range {tensor.value_range} is empty for {dtype}",
                hint=f"use a range within [{info.min}, {info.max}]",
            )
        kind = np.int64 if low < 0 else np.uint64
        return rng.integers(low, high, size=shape, dtype=kind, endpoint=True).astype(np_dtype)
    lo, hi = tensor.value_range or _FLOAT_RANGE
    values = rng.uniform(float(lo), float(hi), size=shape)
    if dtype == "BF16":
        return _bf16_round(values.astype(np.float32))
    return values.astype(np_dtype)


def _bf16_round(values: Array) -> Array:
    """Truncate float32 values to bfloat16 precision, so converting to bfloat16 later is exact."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32) & np.uint32(0xFFFF0000)
    return bits.view(np.float32)


def make_inputs(model: SmokeModel, case: InferCase, seed: int, case_index: int) -> dict[str, Array]:
    """All input tensors of `case`, seeded by (seed, case index, input index) so each is reproducible."""
    out: dict[str, Array] = {}
    for i, tensor in enumerate(model.inputs):
        rng = np.random.default_rng([seed, case_index, i])
        out[tensor.name] = synthesize(tensor, case.shapes[tensor.name], rng)
    return out


def load_golden(path: Path, model: SmokeModel) -> tuple[dict[str, Array], dict[str, Array]]:
    """Read a golden `.npz`: arrays `inputs/<name>` for every input and `outputs/<name>` to compare.

    Raises UserError naming the missing or unknown arrays.
    """
    try:
        with np.load(path, allow_pickle=True) as data:
            arrays = {k: np.asarray(data[k]) for k in data.files}
    except (OSError, ValueError) as exc:
        raise UserError(
            f"model {model.name!r}: cannot read golden file {path}: {exc}",
            hint="write it with numpy.savez(path, **{'inputs/x': ..., 'outputs/y': ...})",
        ) from exc
    inputs = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("inputs/")}
    outputs = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("outputs/")}
    missing = [t.name for t in model.inputs if t.name not in inputs]
    known_out = {o.name for o in model.outputs}
    unknown = sorted(set(outputs) - known_out)
    if missing or unknown or not outputs:
        problems = []
        if missing:
            problems.append(f"missing inputs/{', inputs/'.join(missing)}")
        if unknown:
            problems.append(f"unknown outputs {unknown} (model outputs: {sorted(known_out)})")
        if not outputs:
            problems.append("no outputs/<name> arrays")
        raise UserError(
            f"model {model.name!r}: golden file {path}: {'; '.join(problems)} (arrays: {sorted(arrays)})",
            hint="name arrays 'inputs/<input name>' and 'outputs/<output name>'",
        )
    return inputs, outputs
