"""Counters that trail the responses (hardening #13): the checks wait for them with a deadline.

A fake server whose statistics show a burst only after a number of polls, first the inferences and
later their executions (Triton records the two separately), and a metrics endpoint that lags too.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from deployer.smoke import SmokeModel, SmokeOptions, SmokeOutput, SmokeTensor
from deployer.smoke.load import loadchecks
from deployer.smoke.load.loadchecks import check_batching, check_metrics, executions_cover_inferences, settled_snapshot
from deployer.smoke.waiting import wait_until

MODEL = SmokeModel(
    "m", (SmokeTensor("x", "FP32", (4,)),), (SmokeOutput("y", "FP32", (4,)),), max_batch_size=8, dynamic_batching=True
)
CONFIG = {"dynamic_batching": {"max_queue_delay_microseconds": 1000}}


# -- wait_until -------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_wait_until_returns_as_soon_as_the_condition_holds() -> None:
    clock = FakeClock()
    values = itertools.count()
    waited = wait_until(lambda: next(values), lambda v: v >= 3, 10.0, interval_s=0.5, clock=clock, sleep=clock.sleep)
    assert (waited.value, waited.ok, waited.polls) == (3, True, 4)
    assert clock.sleeps == [0.5, 0.5, 0.5] and waited.waited_s == pytest.approx(1.5)


def test_wait_until_reports_the_last_value_at_the_deadline() -> None:
    clock = FakeClock()
    values = itertools.count()
    waited = wait_until(lambda: next(values), lambda v: v < 0, 1.2, interval_s=0.5, clock=clock, sleep=clock.sleep)
    assert not waited.ok and waited.value == 3, "probed at 0, 0.5, 1.0 and once more at the deadline"
    assert clock.sleeps == [0.5, 0.5, pytest.approx(0.2)] and waited.waited_s == pytest.approx(1.2)
    once = wait_until(lambda: 7, lambda v: False, 0.0, clock=clock, sleep=clock.sleep)
    assert (once.value, once.ok, once.polls) == (7, False, 1)


# -- a server whose statistics trail its responses --------------------------------------------------


class LaggingStats:
    """`get_inference_statistics` of one model: a burst's inferences become visible `lag` polls after it
    was served, its executions `exec_lag` polls after that. `fire` is what `fire_concurrent` sent."""

    def __init__(self, lag: int, exec_lag: int | None = None, batch: int = 8) -> None:
        self.lag, self.exec_lag, self.batch = lag, lag if exec_lag is None else exec_lag, batch
        self.polls = 0
        self.inferences = 0
        self.batches: dict[int, int] = {}
        self.pending: list[tuple[int, int, str, Any]] = []  # (visible at poll, kind, payload)

    def fire(self, n: int) -> None:
        self.pending.append((self.polls + self.lag, 0, "inferences", n))
        self.pending.append((self.polls + self.lag + self.exec_lag, 1, "executions", n))

    def get_inference_statistics(self, name: str, version: str = "") -> dict[str, Any]:
        self.polls += 1
        for item in [p for p in self.pending if p[0] <= self.polls]:
            self.pending.remove(item)
            _, _, kind, n = item
            if kind == "inferences":
                self.inferences += n
            else:
                full, rest = divmod(n, self.batch)
                self.batches[self.batch] = self.batches.get(self.batch, 0) + full
                if rest:
                    self.batches[rest] = self.batches.get(rest, 0) + 1
        return {
            "model_stats": [
                {
                    "inference_count": self.inferences,
                    "execution_count": sum(self.batches.values()),
                    "batch_stats": [{"batch_size": k, "compute_infer": {"count": v}} for k, v in self.batches.items()],
                }
            ]
        }

    def get_model_config(self, name: str, version: str = "") -> dict[str, Any]:
        return CONFIG


@pytest.fixture
def burst(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Make `check_batching`'s concurrent burst land on the fake server given to it."""
    servers: list[LaggingStats] = []

    def fake_fire(url: str, request: Any, n: int, *, timeout_s: float) -> tuple[int, list[str]]:
        servers[-1].fire(n)
        return n, []

    monkeypatch.setattr(loadchecks, "build_request", lambda *a, **k: object())
    monkeypatch.setattr(loadchecks, "fire_concurrent", fake_fire)
    return servers.append


def test_executions_cover_inferences() -> None:
    assert executions_cover_inferences({"inference_count": 16, "execution_count": 3, "batch_8": 1, "batch_4": 2})
    assert not executions_cover_inferences({"inference_count": 16, "execution_count": 1, "batch_8": 1})
    assert executions_cover_inferences({})


def test_batching_waits_for_statistics_that_trail_the_responses(burst: Any) -> None:
    server = LaggingStats(lag=6)
    burst(server)
    result = check_batching(server, "grpc", MODEL, {}, SmokeOptions(batching_requests=16, timeout_s=30), CONFIG)
    assert result.status == "pass", result.message
    assert (result.numbers["inference_count"], result.numbers["execution_count"]) == (16, 2)
    assert result.numbers["attempts"] == 1 and "16 concurrent requests ran in 2 executions" in result.message


def test_batching_reports_the_last_counts_when_the_statistics_never_arrive(burst: Any) -> None:
    server = LaggingStats(lag=10**9)
    burst(server)
    result = check_batching(server, "grpc", MODEL, {}, SmokeOptions(batching_requests=16, timeout_s=0.3), CONFIG)
    assert result.status == "fail" and result.numbers["inference_count"] == 0
    assert "Δinference_count 0 != 64 requests sent" in result.message  # the retry burst, 4N
    assert "still 0 after waiting 0.3 s for the statistics" in result.message


def test_settled_snapshot_waits_for_executions_to_catch_up() -> None:
    # the inferences of earlier requests are counted, their executions are not yet
    server = LaggingStats(lag=0, exec_lag=4)
    server.fire(16)
    snap = settled_snapshot(server, MODEL, timeout_s=30, quiet_s=0.01)
    assert snap == {"inference_count": 16, "execution_count": 2, "batch_8": 2}


# -- metrics that trail the responses ---------------------------------------------------------------


def _metrics(success: float) -> dict[str, float]:
    return {
        "nv_inference_request_success": success,
        "nv_inference_request_failure": 0.0,
        "nv_inference_count": success,
        "nv_inference_exec_count": success,
    }


def test_metrics_wait_for_every_completed_request(monkeypatch: pytest.MonkeyPatch) -> None:
    scrapes = iter([_metrics(5), _metrics(5), _metrics(40), _metrics(50)])
    monkeypatch.setattr(loadchecks, "scrape_metrics", lambda *a: next(scrapes))
    result = check_metrics("http://m", MODEL, 30.0, _metrics(0), completed=50)
    assert result.status == "pass", result.message
    assert result.numbers["request_success"] == 50 and result.numbers["completed_requests"] == 50


def test_metrics_short_of_the_completed_requests_fail_with_the_last_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loadchecks, "scrape_metrics", lambda *a: _metrics(12))
    result = check_metrics("http://m", MODEL, 0.3, _metrics(2), completed=50)
    assert result.status == "fail" and result.numbers["request_success"] == 10
    assert "rose by 10, fewer than the 50 requests the checks completed" in result.message
    monkeypatch.setattr(loadchecks, "scrape_metrics", lambda *a: "metrics endpoint http://m not reachable (refused)")
    skipped = check_metrics("http://m", MODEL, 30.0, _metrics(2), completed=50)
    assert skipped.status == "skip" and "not reachable" in skipped.message
