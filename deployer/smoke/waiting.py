"""Waiting for a condition with a deadline, instead of reading once or sleeping a fixed time.

Triton's counters (statistics extension, Prometheus metrics) are updated by the backend after the
response went out, so a client that just got every response can still read counters that miss some
of them; on a loaded machine the gap grows. Checks poll until what they expect shows up, and report
the last values seen when the deadline passes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["Waited", "wait_until"]

T = TypeVar("T")


@dataclass(frozen=True)
class Waited(Generic[T]):
    """Outcome of `wait_until`: the last value probed, whether the condition held, and for how long we waited."""

    value: T
    ok: bool
    waited_s: float
    polls: int


def wait_until(
    probe: Callable[[], T],
    condition: Callable[[T], bool],
    timeout_s: float,
    *,
    interval_s: float = 0.05,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Waited[T]:
    """Call `probe()` until `condition(value)` holds or `timeout_s` has passed.

    Probes at least once (immediately) and once more at the deadline, so a timeout of 0 is a single
    read. Exceptions from `probe` propagate. Returns the last value either way: `ok` says which.
    """
    start = clock()
    deadline = start + max(timeout_s, 0.0)
    polls = 0
    while True:
        value = probe()
        polls += 1
        now = clock()
        if condition(value):
            return Waited(value, True, now - start, polls)
        if now >= deadline:
            return Waited(value, False, now - start, polls)
        sleep(max(0.0, min(interval_s, deadline - now)))
