"""`probe_shapes`: min/opt/max shapes an ONNX model really accepts on ONNX Runtime (CPU), for `deployer
init`; `run_reference`: every output of a model for some inputs."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deployer.errors import ModelFileError
from deployer.onnx.info import DYNAMIC, Array, OnnxInfo, ShapeRange, TensorInfo
from deployer.onnx.runtime import ort_model, random_tensor

__all__ = ["probe_shapes", "run_reference"]

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------- running

_IMAGE_CANDIDATES = (32, 64, 96, 128, 160, 192, 224, 256, 320, 384, 448, 512, 640)
_SEQUENCE_CANDIDATES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_IMAGE_OPT = 224
_SEQUENCE_OPT = 64
_MAX_ELEMENTS = 1 << 22  # per input at batch 1: keeps one probe run well under a second on 2 cores
_IMAGE_WORDS = ("height", "width", "_h", "_w")


def run_reference(path: Path | str, feeds: Mapping[str, Array]) -> dict[str, Array]:
    """Run the model on ONNX Runtime (CPU) and return every output by name."""
    return ort_model(path).run(feeds)


# -------------------------------------------------------------------------------------------- probing


@dataclass(frozen=True)
class _Var:
    """One free size: a symbolic dim name (shared by every tensor using it) or one unnamed dim."""

    key: str
    candidates: tuple[int, ...]
    opt: int


def _is_image_axis(t: TensorInfo, axis: int) -> bool:
    name = str(t.shape[axis]).lower()
    if any(w in name for w in _IMAGE_WORDS):
        return True
    s = t.shape
    if len(s) == 4 and t.dtype in ("FP32", "FP16", "FP64", "UINT8", "BF16"):
        channels_first = not isinstance(s[3], int) or s[3] not in (1, 3, 4)
        return axis in ((2, 3) if channels_first else (1, 2))
    return len(s) == 3 and isinstance(s[0], int) and s[0] in (1, 3) and axis in (1, 2)


def _free_vars(
    info: OnnxInfo,
    batching: bool,
    fixed: Mapping[str, Any],
    candidates: Sequence[int] | Mapping[str, Sequence[int]] | None,
) -> tuple[list[_Var], dict[tuple[str, int], str]]:
    """Group dynamic non-batch dims into variables; returns them and (input, axis) -> variable key."""
    where: dict[tuple[str, int], str] = {}
    image: dict[str, bool] = {}
    batch_like: dict[str, bool] = {}  # axis 0 of a non-batching model: usually a batch, so opt 1
    for t in info.inputs:
        if t.name in fixed:
            continue
        for axis in t.dynamic_axes:
            if batching and axis == 0:
                continue
            d = t.shape[axis]
            key = f"{t.name}[{axis}]" if d == DYNAMIC else str(d)
            where[(t.name, axis)] = key
            image[key] = image.get(key, False) or _is_image_axis(t, axis)
            batch_like[key] = batch_like.get(key, True) and axis == 0 and t.rank > 1
    out = []
    for key, is_image in image.items():
        cands: Sequence[int] = _IMAGE_CANDIDATES if is_image else _SEQUENCE_CANDIDATES
        opt = _IMAGE_OPT if is_image else (1 if batch_like[key] else _SEQUENCE_OPT)
        if isinstance(candidates, Mapping):
            cands = candidates.get(key, cands)
        elif candidates is not None:
            cands = candidates
        uniq = tuple(sorted({int(c) for c in cands if int(c) >= 1}))
        if not uniq:
            raise ValueError(f"no positive candidate sizes for dim {key!r}")
        out.append(_Var(key, uniq, opt))
    return out, where


class _Prober:
    """Runs trial shapes on ONNX Runtime within a time budget, remembering the last failure."""

    def __init__(
        self,
        path: Path | str,
        info: OnnxInfo,
        where: Mapping[tuple[str, int], str],
        batching: bool,
        fixed: Mapping[str, Array],
        deadline: float,
    ) -> None:
        self.model = ort_model(path)
        self.info, self.where, self.batching, self.fixed = info, where, batching, fixed
        self.deadline = deadline
        self.rng = np.random.default_rng(0)
        self.last_error = ""
        self.runs = 0
        self.seen: dict[tuple[tuple[tuple[str, int], ...], int], bool] = {}

    def shape(self, t: TensorInfo, sizes: Mapping[str, int], batch: int) -> tuple[int, ...]:
        if t.name in self.fixed:
            s = tuple(self.fixed[t.name].shape)
            return (batch, *s[1:]) if self.batching and s else s
        dims = []
        for axis, d in enumerate(t.shape):
            if isinstance(d, int):
                dims.append(d)
            elif self.batching and axis == 0:
                dims.append(batch)
            else:
                dims.append(sizes[self.where[(t.name, axis)]])
        return tuple(dims)

    def too_big(self, sizes: Mapping[str, int]) -> bool:
        return any(math.prod(self.shape(t, sizes, 1)) > _MAX_ELEMENTS for t in self.info.inputs)

    def out_of_time(self) -> bool:
        return time.monotonic() > self.deadline

    def runs_with(self, sizes: Mapping[str, int], batch: int = 1) -> bool:
        key = (tuple(sorted(sizes.items())), batch)
        if key not in self.seen:
            self.seen[key] = self._run(sizes, batch)
        return self.seen[key]

    def _run(self, sizes: Mapping[str, int], batch: int) -> bool:
        feeds: dict[str, Array] = {}
        for t in self.info.inputs:
            if t.name in self.fixed:
                v = self.fixed[t.name]
                feeds[t.name] = np.repeat(v, batch, axis=0) if self.batching and v.ndim and batch > 1 else v
            else:
                feeds[t.name] = random_tensor(t.dtype, self.shape(t, sizes, batch), self.rng, name=t.name)
        self.runs += 1
        try:
            self.model.run(feeds)
        except ModelFileError as exc:  # any failure means "not accepted"
            self.last_error = str(exc.__cause__ or exc).strip().splitlines()[0][:400]  # ORT's own words
            return False
        return True


def probe_shapes(
    path: Path | str,
    info: OnnxInfo,
    *,
    batching: bool,
    max_batch_size: int,
    candidates: Sequence[int] | Mapping[str, Sequence[int]] | None = None,
    values: Mapping[str, Array] | None = None,
    time_budget_s: float = 30.0,
) -> dict[str, ShapeRange]:
    """Pick min/opt/max shapes per input that the model really runs with on ONNX Runtime (CPU).

    Dynamic non-batch dims are tried from `candidates` (default: multiples of 32 up to 640 for
    image-like H/W dims, powers of two up to 512 for others; a mapping is keyed by symbolic dim name
    or "input[axis]"). Dims sharing a symbolic name get the same size. `values` pins the data (and
    shape) of some inputs, e.g. a sample rate. With batching, axis 0 is 1 / ceil(mbs/2) / mbs.
    Raises ModelFileError naming the inputs when no candidate works.
    """
    if batching and max_batch_size < 1:
        raise ValueError(f"max_batch_size must be >= 1 when batching, got {max_batch_size}")
    fixed = {k: np.asarray(v) for k, v in (values or {}).items()}
    unknown = sorted(set(fixed) - set(info.input_names))
    if unknown:
        raise ValueError(f"values given for unknown inputs {unknown}; inputs are {list(info.input_names)}")
    for t in info.inputs:
        if not t.has_shape and t.name not in fixed:
            raise ModelFileError(f"input {t.name!r} declares no shape", hint="pass its data in `values`")
    variables, where = _free_vars(info, batching, fixed, candidates)
    p = _Prober(path, info, where, batching, fixed, time.monotonic() + time_budget_s)

    base = _find_base(p, variables)
    lo, hi = dict(base), dict(base)
    for v in variables:
        below = sorted((c for c in v.candidates if c < base[v.key]), reverse=True)
        lo[v.key] = _edge(p, base, v.key, below, grow=False)
        hi[v.key] = _edge(p, base, v.key, [c for c in v.candidates if c > base[v.key]], grow=True)
    ties = _tied_edges(p, variables, base, lo, hi)
    if variables and lo != base and not p.runs_with(lo):
        lo = dict(base)  # each min works alone but not together: be conservative
    if variables and hi != base and (p.too_big(hi) or not p.runs_with(hi)):
        hi = dict(base)
    opt = {v.key: _nearest(v, lo[v.key], hi[v.key]) for v in variables}
    for a, b in ties:
        opt[b] = opt[a]
    if opt != base and (p.out_of_time() or not p.runs_with(opt)):
        opt = base
    if batching and max_batch_size >= 2 and not p.runs_with(opt, batch=2):
        raise ModelFileError(
            f"{info.path} declares a dynamic first dim but fails with batch 2: {p.last_error}",
            hint="the batch size is probably fixed inside the graph; set max_batch_size: 0",
        )
    log.debug("probe_shapes(%s): %d runs, min %s, opt %s, max %s", info.path, p.runs, lo, opt, hi)
    b_opt = max(1, (max_batch_size + 1) // 2)
    return {
        t.name: ShapeRange(p.shape(t, lo, 1), p.shape(t, opt, b_opt if batching else 1), p.shape(t, hi, max_batch_size))
        for t in info.inputs
    }


def _edge(
    p: _Prober, base: Mapping[str, int], key: str | tuple[str, ...], outward: Sequence[int], *, grow: bool
) -> int:
    """The farthest size in `outward` (candidates ordered away from the working base size) that runs.

    Shrinking tries the farthest (cheapest) size first; growing gallops outward, because a large
    size that fails deep inside the graph can cost seconds. Both then bisect, assuming the accepted
    sizes are contiguous, so the number of runs stays logarithmic.
    """
    keys = (key,) if isinstance(key, str) else key

    def at(c: int) -> dict[str, int]:
        return {**base, **dict.fromkeys(keys, c)}

    cands = [c for c in outward if not p.too_big(at(c))]
    if not cands or p.out_of_time():
        return base[keys[0]]
    good, bad = -1, len(cands) - 1  # index -1 stands for the base size, known to run
    if not grow:
        if p.runs_with(at(cands[-1])):
            return cands[-1]
    else:
        step = 1
        while not p.out_of_time():
            i = min(good + step, len(cands) - 1)
            if not p.runs_with(at(cands[i])):
                bad = i
                break
            good, step = i, step * 2
            if i == len(cands) - 1:
                return cands[i]
    while bad - good > 1 and not p.out_of_time():
        mid = (good + bad) // 2
        if p.runs_with(at(cands[mid])):
            good = mid
        else:
            bad = mid
    return cands[good] if good >= 0 else base[keys[0]]


def _tied_edges(
    p: _Prober, variables: Sequence[_Var], base: Mapping[str, int], lo: dict[str, int], hi: dict[str, int]
) -> list[tuple[str, str]]:
    """Move pairs of stuck variables together: unnamed dims that must be equal (a batch dim that
    the exporter left unnamed in two inputs) cannot move one at a time. Returns the pairs tied."""
    ties: list[tuple[str, str]] = []
    for side, bound, pick in (("min", lo, min), ("max", hi, max)):
        stuck = [v for v in variables if bound[v.key] == base[v.key]]
        for i, a in enumerate(stuck[:6]):
            for b in stuck[i + 1 : 6]:
                if base[a.key] != base[b.key] or bound[a.key] != base[a.key] or bound[b.key] != base[b.key]:
                    continue
                shared = sorted(set(a.candidates) & set(b.candidates), reverse=side == "min")
                outward = [c for c in shared if (c < base[a.key] if side == "min" else c > base[a.key])]
                c = _edge(p, base, (a.key, b.key), outward, grow=side == "max")
                bound[a.key] = bound[b.key] = pick(c, base[a.key])
                if c != base[a.key] and (a.key, b.key) not in ties:
                    ties.append((a.key, b.key))
    return ties


def _nearest(v: _Var, lo: int, hi: int) -> int:
    """The candidate in [lo, hi] nearest (in ratio) to the variable's typical size."""
    inside = [c for c in v.candidates if lo <= c <= hi] or [lo]
    return min(inside, key=lambda c: (abs(math.log(c / v.opt)), c))


def _find_base(p: _Prober, variables: Sequence[_Var]) -> dict[str, int]:
    """A working assignment: the typical sizes; else one variable at a time from its smallest
    candidate up (small trials are cheap; large ones can take seconds); else all together."""
    start = {v.key: _nearest(v, 0, 1 << 62) for v in variables}
    if not p.too_big(start) and p.runs_with(start):
        return start
    for v in variables:
        for c in v.candidates:
            trial = {**start, v.key: c}
            if p.out_of_time():
                break
            if c != start[v.key] and not p.too_big(trial) and p.runs_with(trial):
                return trial
    depth = max((len(v.candidates) for v in variables), default=0)
    for k in range(depth):
        trial = {v.key: v.candidates[min(k, len(v.candidates) - 1)] for v in variables}
        if p.out_of_time():
            break
        if not p.too_big(trial) and p.runs_with(trial):
            return trial
    dyn = sorted({f"{name}[{axis}]" for name, axis in p.where})
    what = f"dynamic dims {', '.join(dyn)}" if dyn else "its declared shapes"
    stopped = ", stopped by the time budget" if p.out_of_time() else ""
    raise ModelFileError(
        f"{p.info.path}: ONNX Runtime rejected every trial shape for {what} "
        f"({p.runs} runs{stopped}); last error: {p.last_error}",
        hint="give explicit shapes (min/opt/max) for these inputs in the spec",
    )
