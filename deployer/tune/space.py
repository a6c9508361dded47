"""The search space: candidates (frozen), the axes they vary along, and the space a spec's model allows.

Pure: no server, no files. `Space.values(axis, c)` are the ordered values of one axis given the rest
of candidate `c` (preferred batch sets depend on max_batch_size), which is all the search needs.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

AXES = ("max_batch_size", "max_queue_delay_microseconds", "instance_count", "preferred_batch_size",
        "max_queue_size", "default_timeout_microseconds")  # the search's order: batch size first
DELAY_LADDER = (0, 100, 250, 500, 1000, 2000, 5000, 10000)
INSTANCE_LADDER = (1, 2, 3)
MAX_RANGE_VALUES = 16  # an instance_count range wider than this is sampled, not enumerated


@dataclass(frozen=True, order=True)
class Candidate:
    """One point of the space: the dynamic-batching and instance settings of one model."""

    max_batch_size: int
    preferred_batch_size: tuple[int, ...]
    max_queue_delay_microseconds: int
    instance_count: int
    max_queue_size: int | None = None  # None: queue policy not tuned (left as the spec has it)
    default_timeout_microseconds: int | None = None

    def label(self) -> str:
        """Short text for tables: `mbs 16 pref [8,16] delay 2000us x1`."""
        text = (f"mbs {self.max_batch_size} pref [{','.join(map(str, self.preferred_batch_size))}] "
                f"delay {self.max_queue_delay_microseconds}us x{self.instance_count}")
        if self.max_queue_size is not None:
            text += f" queue {self.max_queue_size}"
        if self.default_timeout_microseconds is not None:
            text += f" timeout {self.default_timeout_microseconds}us"
        return text

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields (lists for tuples)."""
        return {"max_batch_size": self.max_batch_size, "preferred_batch_size": list(self.preferred_batch_size),
                "max_queue_delay_microseconds": self.max_queue_delay_microseconds,
                "instance_count": self.instance_count, "max_queue_size": self.max_queue_size,
                "default_timeout_microseconds": self.default_timeout_microseconds}


@dataclass(frozen=True)
class Space:
    """Ordered values per axis. `preferred_sets` None = sets relative to max_batch_size (none, half+max)."""

    max_batch_size: tuple[int, ...]
    max_queue_delay_microseconds: tuple[int, ...]
    instance_count: tuple[int, ...]
    preferred_sets: tuple[tuple[int, ...], ...] | None = None
    max_queue_size: tuple[int | None, ...] = (None,)
    default_timeout_microseconds: tuple[int | None, ...] = (None,)
    extra_sets: tuple[tuple[int, tuple[int, ...]], ...] = ()  # (mbs, set): the original's own set

    def preferred_options(self, mbs: int) -> tuple[tuple[int, ...], ...]:
        """The preferred_batch_size sets valid for `mbs` (every size <= mbs), in a fixed order."""
        if mbs <= 1:
            base: list[tuple[int, ...]] = [()]
        elif self.preferred_sets is None:  # no [mbs]: Triton serves "none" as exactly that
            base = [(), (mbs // 2, mbs)]
        else:
            base = [s for s in self.preferred_sets if all(1 <= b <= mbs for b in s)] or [()]
        base += [s for m, s in self.extra_sets if m == mbs and s not in base]
        return tuple(dict.fromkeys(base))

    def values(self, axis: str, c: Candidate) -> tuple[Any, ...]:
        """The ordered values of `axis` given the other fields of `c`."""
        if axis == "preferred_batch_size":
            return self.preferred_options(c.max_batch_size)
        return tuple(getattr(self, axis))

    def move(self, c: Candidate, axis: str, value: Any) -> Candidate:
        """`c` with `axis` set to `value`; a preferred set that no longer fits keeps its position in the list."""
        if axis != "max_batch_size":
            return replace(c, **{axis: value})
        old = self.preferred_options(c.max_batch_size)
        new = self.preferred_options(value)
        pos = old.index(c.preferred_batch_size) if c.preferred_batch_size in old else 0
        pref = c.preferred_batch_size if c.preferred_batch_size in new else new[min(pos, len(new) - 1)]
        return replace(c, max_batch_size=value, preferred_batch_size=pref)

    def grid(self) -> Iterator[Candidate]:
        """Every candidate of the space (what an exhaustive sweep measures)."""
        for mbs, delay, inst, qs, to in itertools.product(self.max_batch_size, self.max_queue_delay_microseconds,
                                                          self.instance_count, self.max_queue_size,
                                                          self.default_timeout_microseconds):
            for pref in self.preferred_options(mbs):
                yield Candidate(mbs, pref, delay, inst, qs, to)

    def size(self) -> int:
        """Number of candidates in the grid."""
        return sum(1 for _ in self.grid())

    def contains(self, c: Candidate) -> bool:
        """`c` is a point of this space."""
        return all(getattr(c, a) in self.values(a, c) for a in AXES)


def ladder(given: Sequence[int] | None, bounds: tuple[int, int] | None, default: Sequence[int], *,
           current: int | None, dense: bool = False) -> tuple[int, ...]:
    """Ordered axis values: the given ones; else `default` cut to `bounds` (plus both ends, and every
    integer when `dense` and the range is short); the current value is added when it fits."""
    if given is not None:
        return tuple(sorted(set(given)))
    if bounds is None:
        out = set(default)
    else:
        lo, hi = bounds
        out = {v for v in default if lo <= v <= hi} | {lo, hi}
        if dense and hi - lo < MAX_RANGE_VALUES:
            out |= set(range(lo, hi + 1))
    if current is not None and (bounds is None or bounds[0] <= current <= bounds[1]):
        out.add(current)
    return tuple(sorted(out))


def filtered(space: Space, start: Candidate, valid: Callable[[Candidate], bool]) -> Space:
    """The space without axis values that are invalid on their own (tried from `start`, one axis at a time)."""
    keep: dict[str, tuple[Any, ...]] = {}
    for axis in ("max_batch_size", "max_queue_delay_microseconds", "instance_count", "max_queue_size",
                 "default_timeout_microseconds"):
        values = tuple(getattr(space, axis))
        if len(values) > 1:
            values = tuple(v for v in values if v == getattr(start, axis) or valid(space.move(start, axis, v)))
        keep[axis] = values
    return replace(space, **keep)
