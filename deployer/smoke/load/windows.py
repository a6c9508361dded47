"""Pure parts of a measurement: window stability (perf_analyzer's rule) and arrival schedules."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from deployer.smoke.load.loadgen import percentile

__all__ = ["Window", "arrivals", "is_stable", "stable_tail"]

STABLE_WINDOWS = 3


@dataclass(frozen=True)
class Window:
    """Requests completed in one measurement window; latencies in ms, ascending."""

    duration_s: float
    latencies_ms: tuple[float, ...]
    errors: int = 0

    @property
    def throughput_rps(self) -> float:
        return len(self.latencies_ms) / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies_ms, 99)


def _within(values: Sequence[float], tolerance: float) -> bool:
    mean = sum(values) / len(values)
    return mean > 0 and all(abs(v - mean) <= tolerance * mean for v in values)


def is_stable(windows: Sequence[Window], tolerance: float, n: int = STABLE_WINDOWS) -> bool:
    """The last `n` windows agree within ±`tolerance` of their mean in throughput and in p99
    (perf_analyzer's criterion). Windows with no completed request are never stable."""
    tail = windows[-n:]
    if len(tail) < n or any(not w.latencies_ms for w in tail):
        return False
    return _within([w.throughput_rps for w in tail], tolerance) and _within([w.p99_ms for w in tail], tolerance)


def stable_tail(windows: Sequence[Window], n: int = STABLE_WINDOWS) -> Sequence[Window]:
    """The windows a measurement reports: the last `n` (all of them when fewer)."""
    return windows[-n:]


def arrivals(rate: float, kind: str, seed: int = 0) -> Iterator[float]:
    """Intended send offsets (s from the start) for `rate` requests/s: evenly spaced, or a Poisson
    process (exponential gaps). Offsets are computed from the start, not from the previous send, so
    a late sender never shifts the schedule (that would hide queueing: coordinated omission)."""
    if rate <= 0:
        raise ValueError(f"arrival rate must be > 0, got {rate}")
    if kind == "constant":
        i = 0
        while True:
            yield i / rate
            i += 1
    elif kind == "poisson":
        rng = random.Random(seed)
        t = 0.0
        while True:
            yield t
            t += rng.expovariate(rate)
    else:
        raise ValueError(f"unknown arrival process {kind!r}")
