"""Window stability (perf_analyzer's rule), percentile math, and the open-loop arrival schedule."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from deployer.smoke.load.loadgen import percentile
from deployer.smoke.load.windows import Window, arrivals, is_stable, stable_tail


def _w(rps: float, p99: float, seconds: float = 1.0) -> Window:
    # n latencies whose p99 (linear interpolation) is `p99`: all equal
    return Window(seconds, tuple([p99] * int(rps * seconds)))


def test_three_agreeing_windows_are_stable_two_are_not() -> None:
    assert not is_stable([_w(100, 10), _w(100, 10)], 0.10)
    assert is_stable([_w(100, 10), _w(105, 10.5), _w(96, 9.6)], 0.10)


def test_throughput_or_p99_outside_the_band_is_not_stable() -> None:
    assert not is_stable([_w(100, 10), _w(100, 10), _w(130, 10)], 0.10)  # throughput
    assert not is_stable([_w(100, 10), _w(100, 10), _w(100, 14)], 0.10)  # p99
    # only the last three count: an unstable start does not matter
    assert is_stable([_w(10, 100), _w(100, 10), _w(100, 10), _w(100, 10)], 0.10)


def test_empty_windows_are_never_stable() -> None:
    assert not is_stable([Window(1.0, ()), Window(1.0, ()), Window(1.0, ())], 0.10)


def test_stable_tail_is_the_last_three() -> None:
    ws = [_w(i, 1) for i in range(1, 6)]
    assert [w.throughput_rps for w in stable_tail(ws)] == [3, 4, 5]
    assert len(stable_tail(ws[:2])) == 2


def test_percentile_matches_numpy_on_random_samples() -> None:
    rng = np.random.default_rng(3)
    for n in (1, 2, 7, 100, 1001):
        s = sorted(rng.exponential(5.0, n).tolist())
        for q in (50, 90, 95, 99):
            assert percentile(s, q) == pytest.approx(float(np.percentile(s, q)))
    assert math.isnan(percentile([], 99))


def test_constant_schedule_is_evenly_spaced() -> None:
    assert list(itertools.islice(arrivals(4.0, "constant"), 5)) == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_poisson_schedule_has_the_mean_rate_and_exponential_gaps() -> None:
    times = list(itertools.islice(arrivals(200.0, "poisson", seed=1), 20001))
    gaps = np.diff(times)
    assert len(times) / times[-1] == pytest.approx(200.0, rel=0.03)
    # exponential: the coefficient of variation is 1 (constant spacing would give 0)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.05)
    assert times == sorted(times)


def test_bad_schedules_are_refused() -> None:
    with pytest.raises(ValueError):
        next(arrivals(0.0, "constant"))
    with pytest.raises(ValueError):
        next(arrivals(1.0, "bursty"))
