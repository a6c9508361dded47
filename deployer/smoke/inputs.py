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

from deployer.errors import UserError
from deployer.onnx.runtime import random_tensor
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
    """A tensor of `shape` for `tensor`: its fixed value, or uniform values in its range (see
    `deployer.onnx.runtime.random_tensor`, the one generator `init` and smoke share)."""
    return random_tensor(tensor.dtype, shape, rng, tensor.value_range, tensor.fixed_value, name=tensor.name)


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
