"""A TuneResult of four trials (met, best, over budget, refused) for the report tests, unit and HTML."""

from __future__ import annotations

from pathlib import Path

from deployer.smoke.load import Measurement, ServerBreakdown
from deployer.tune.run import Trial, TuneResult
from deployer.tune.space import Candidate


def measurement(thr: float, p99: float, queue: float) -> Measurement:
    return Measurement(thr, p99 / 3, p99 / 2, p99 / 1.5, p99, int(thr * 6), 0, True, 3,
                       ServerBreakdown(queue, 100.0, 800.0, 200.0, 9.5, int(thr * 6), int(thr * 6 / 9.5)))


def sample_result(tmp_path: Path) -> TuneResult:
    trials = (
        Trial(1, Candidate(16, (8, 16), 2000, 1), (measurement(5000, 6.0, 600),), 0, True),
        Trial(2, Candidate(32, (16, 32), 2000, 1), (measurement(6400, 6.3, 320),), 0, True),
        Trial(3, Candidate(8, (4, 8), 2000, 1), (measurement(4800, 7.8, 1200),), 0, False),
        Trial(4, Candidate(64, (32, 64), 2000, 1), error="the server refused the candidate config: <b>x</b>"),
    )
    return TuneResult(model="classifier", spec_path=tmp_path / "deployer.yaml",
                      objective="max_throughput (p99 <= 7 ms)",
                      load="closed loop c=16, batch 1, http", server="local Triton 2.51.0, model on CPU",
                      trials=trials, best=trials[1], original=trials[0], met=True, written=False, dry_run=True,
                      diff="", grid_size=360, budget_trials=20, seconds=42.0, p99_budget_ms=7.0)
