"""The report: a table and JSON of every trial (the HTML report: tests/integration/tune)."""

from __future__ import annotations

import json
from pathlib import Path

from deployer.smoke.load import Measurement, ServerBreakdown
from deployer.tune.report import render_result, to_dict, write_json
from deployer.tune.run import Trial, TuneResult
from deployer.tune.space import Candidate


def _m(thr: float, p99: float, queue: float) -> Measurement:
    return Measurement(thr, p99 / 3, p99 / 2, p99 / 1.5, p99, int(thr * 6), 0, True, 3,
                       ServerBreakdown(queue, 100.0, 800.0, 200.0, 9.5, int(thr * 6), int(thr * 6 / 9.5)))


def _result(tmp_path: Path) -> TuneResult:
    trials = (
        Trial(1, Candidate(16, (8, 16), 2000, 1), (_m(5000, 6.0, 600),), 0, True),
        Trial(2, Candidate(32, (16, 32), 2000, 1), (_m(6400, 6.3, 320),), 0, True),
        Trial(3, Candidate(8, (4, 8), 2000, 1), (_m(4800, 7.8, 1200),), 0, False),
        Trial(4, Candidate(64, (32, 64), 2000, 1), error="the server refused the candidate config: <b>x</b>"),
    )
    return TuneResult(model="classifier", spec_path=tmp_path / "deployer.yaml",
                      objective="max_throughput (p99 <= 7 ms)",
                      load="closed loop c=16, batch 1, http", server="local Triton 2.51.0, model on CPU",
                      trials=trials, best=trials[1], original=trials[0], met=True, written=False, dry_run=True,
                      diff="", grid_size=360, budget_trials=20, seconds=42.0, p99_budget_ms=7.0)


def test_json_has_every_trial(tmp_path: Path) -> None:
    result = _result(tmp_path)
    write_json(result, tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert data == to_dict(result)
    assert [t["index"] for t in data["trials"]] == [1, 2, 3, 4] and data["best"] == 2
    assert data["trials"][1]["measurements"][0]["breakdown"]["queue_us"] == 320
    assert data["trials"][3]["measurements"] == [] and "refused" in data["trials"][3]["error"]
    from rich.console import Console

    console = Console(record=True, width=200)
    console.print(render_result(result))
    text = console.export_text()
    assert "mbs 32 pref [16,32]" in text and "best" in text and "original" in text
