"""The search, separate from measuring: it gets `evaluate(candidate) -> Measurement | None` and a budget.

Coordinate descent with line searches (docs/tune.md): from the original config, one axis at a time in
the order of `space.AXES` (max_batch_size first: it bounds the others and moves throughput most),
step to the better neighbour and keep stepping while the objective improves; repeat rounds over all
axes until a round improves nothing or the budget is spent. Each candidate is measured once (cached).
On the unimodal-per-axis surfaces dynamic batching gives, this needs a few trials per axis instead of
the product of all axes. `grid` is the exhaustive sweep it is compared with.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal, Protocol

from deployer.tune.space import AXES, Candidate, Space


class MeasurementLike(Protocol):
    """The fields of a Measurement the search reads."""

    @property
    def throughput_rps(self) -> float: ...
    @property
    def p99_ms(self) -> float: ...
    @property
    def errors(self) -> int: ...


SUSTAINED_TOLERANCE = 0.10  # open loop: served >= 90 % of the offered rate counts as keeping up with it

Evaluate = Callable[[Candidate], MeasurementLike | None]  # None: the candidate failed (load, check, errors)


@dataclass(frozen=True)
class Objective:
    """max_throughput under a p99 budget, or min_latency (p99) above a throughput floor.

    Throughput is inferences/s: requests/s times the request batch size.
    """

    kind: Literal["max_throughput", "min_latency"] = "max_throughput"
    p99_ms: float | None = None
    min_throughput: float | None = None
    batch_size: int = 1

    def throughput(self, m: MeasurementLike) -> float:
        """Inferences per second."""
        return m.throughput_rps * self.batch_size

    def feasible(self, m: MeasurementLike | None) -> bool:
        """The measurement meets the budget (and no request failed)."""
        if m is None or m.errors > 0 or math.isnan(m.p99_ms):
            return False
        if self.kind == "max_throughput":
            return self.p99_ms is None or m.p99_ms <= self.p99_ms
        return self.min_throughput is None or self.ranked_throughput(m) >= self.min_throughput

    def value(self, m: MeasurementLike) -> float:
        """The objective's own number: inferences/s (max_throughput) or p99 ms (min_latency)."""
        return self.throughput(m) if self.kind == "max_throughput" else m.p99_ms

    def ranked_throughput(self, m: MeasurementLike) -> float:
        """Inferences/s as candidates are ranked by. In open loop the generator sets the throughput: a
        candidate that keeps up with the offered rate (within the windows' ±10 %) counts that rate, so
        candidates at one rate tie and their p99 decides, not the arrival noise; one that falls behind
        counts what it served."""
        offered: float | None = getattr(m, "offered_rps", None)  # None: closed loop (or a bare test double)
        if offered is not None and m.throughput_rps >= offered * (1.0 - SUSTAINED_TOLERANCE):
            return offered * self.batch_size
        return self.throughput(m)

    def key(self, m: MeasurementLike | None) -> tuple[int, float, float]:
        """Sort key, larger is better: feasible first, then by value (max_throughput: lower p99 breaks a
        tie); infeasible by how close they come."""
        if m is None or m.errors > 0 or math.isnan(m.p99_ms):
            return (-1, 0.0, 0.0)
        if self.feasible(m):
            if self.kind == "max_throughput":
                return (1, self.ranked_throughput(m), -m.p99_ms)
            return (1, -m.p99_ms, 0.0)
        if self.kind == "max_throughput":
            return (0, -m.p99_ms / (self.p99_ms or 1.0), 0.0)
        return (0, self.ranked_throughput(m) / (self.min_throughput or 1.0), 0.0)

    def better(self, a: MeasurementLike | None, b: MeasurementLike | None, min_gain: float = 0.0) -> bool:
        """`a` beats `b` (by more than `min_gain`, relative, when both are feasible)."""
        ka, kb = self.key(a), self.key(b)
        if ka[0] != kb[0]:
            return ka[0] > kb[0]
        if ka[0] != 1:
            return ka[1] > kb[1]
        if ka[1] != kb[1]:
            return ka[1] > kb[1] + abs(kb[1]) * min_gain
        return ka[2] > kb[2] + abs(kb[2]) * min_gain  # the same open-loop rate sustained: by p99

    def describe(self) -> str:
        """`max_throughput (p99 <= 50 ms)` / `min_latency (>= 100 infer/s)`."""
        if self.kind == "max_throughput":
            return "max_throughput" + (f" (p99 <= {self.p99_ms:g} ms)" if self.p99_ms else " (no p99 budget)")
        return "min_latency" + (f" (>= {self.min_throughput:g} infer/s)" if self.min_throughput else "")


@dataclass(frozen=True)
class Budget:
    """Stop after `trials` measured candidates or `seconds` of wall clock, whichever comes first."""

    trials: int = 20
    seconds: float | None = None


@dataclass(frozen=True)
class Evaluated:
    """One measured candidate, in measuring order."""

    candidate: Candidate
    measurement: MeasurementLike | None


@dataclass(frozen=True)
class SearchResult:
    """Every trial, and the best candidate found (None when nothing was measured)."""

    trials: tuple[Evaluated, ...]
    best: Evaluated | None
    exhausted: bool  # the budget ran out before the search converged


class _Stop(Exception):
    pass


class _Memo:
    def __init__(self, evaluate: Evaluate, budget: Budget, clock: Callable[[], float]) -> None:
        self.evaluate, self.budget, self.clock = evaluate, budget, clock
        self.start = clock()
        self.seen: dict[Candidate, MeasurementLike | None] = {}
        self.order: list[Evaluated] = []

    def __call__(self, c: Candidate) -> MeasurementLike | None:
        if c in self.seen:
            return self.seen[c]
        over_time = self.budget.seconds is not None and self.clock() - self.start >= self.budget.seconds
        if len(self.order) >= self.budget.trials or over_time:
            raise _Stop
        m = self.evaluate(c)
        self.seen[c] = m
        self.order.append(Evaluated(c, m))
        return m


def coordinate_descent(space: Space, start: Candidate, evaluate: Evaluate, objective: Objective,
                       budget: Budget = Budget(), *, min_gain: float = 0.01,
                       clock: Callable[[], float] = time.monotonic) -> SearchResult:
    """Search `space` from `start` (see the module doc); `min_gain` ignores improvements within noise."""
    memo = _Memo(evaluate, budget, clock)
    best = start
    exhausted = False
    try:
        best_m = memo(best)
        improved = True
        while improved:
            improved = False
            for axis in AXES:
                best, best_m, moved = _line_search(space, axis, best, best_m, memo, objective, min_gain)
                improved = improved or moved
    except _Stop:
        exhausted = True
    return _result(memo.order, objective, exhausted)


def _line_search(space: Space, axis: str, best: Candidate, best_m: MeasurementLike | None, memo: _Memo,
                 objective: Objective, min_gain: float) -> tuple[Candidate, MeasurementLike | None, bool]:
    values = space.values(axis, best)
    if len(values) < 2:
        return best, best_m, False
    here = getattr(best, axis)
    i = values.index(here) if here in values else 0
    steps = [d for d in (1, -1) if 0 <= i + d < len(values)]
    # the better of the two neighbours sets the direction
    tried = [(d, space.move(best, axis, values[i + d])) for d in steps]
    scored = [(d, c, memo(c)) for d, c in tried]
    scored.sort(key=lambda t: objective.key(t[2]), reverse=True)
    d, c, m = scored[0]
    if not objective.better(m, best_m, min_gain):
        return best, best_m, False
    best, best_m, i = c, m, i + d
    while 0 <= i + d < len(values):
        c = space.move(best, axis, values[i + d])
        m = memo(c)
        if not objective.better(m, best_m, min_gain):
            break
        best, best_m, i = c, m, i + d
    return best, best_m, True


def grid(space: Space, evaluate: Evaluate, objective: Objective,
         candidates: Iterable[Candidate] | None = None) -> SearchResult:
    """Measure every candidate of the space (the exhaustive baseline)."""
    order = [Evaluated(c, evaluate(c)) for c in (candidates if candidates is not None else space.grid())]
    return _result(order, objective, False)


# What `tune_model` runs: (space, start, evaluate, objective, budget) -> result. The default is
# `coordinate_descent`; benchmarks/tune_vs_grid.py passes `grid` (and fixed candidate lists) through the
# same trial code, so the tuner and the baseline are measured by one loop.
Search = Callable[[Space, Candidate, Evaluate, Objective, Budget], SearchResult]


def _result(order: list[Evaluated], objective: Objective, exhausted: bool) -> SearchResult:
    best = max(order, key=lambda e: objective.key(e.measurement), default=None)
    return SearchResult(tuple(order), best, exhausted)


def pareto_front(points: Iterable[tuple[float, float]]) -> list[int]:
    """Indexes of the (throughput, p99) points no other point beats on both (higher, lower)."""
    pts = list(points)
    front = []
    for i, (t, p) in enumerate(pts):
        if math.isnan(t) or math.isnan(p):
            continue
        if not any((t2 >= t and p2 <= p) and (t2 > t or p2 < p) for j, (t2, p2) in enumerate(pts) if j != i):
            front.append(i)
    return front
