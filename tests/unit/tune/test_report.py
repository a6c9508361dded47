"""The report: a table and JSON of every trial (the HTML report: tests/integration/tune)."""

from __future__ import annotations

import json
from pathlib import Path

from deployer.tune.report import render_result, to_dict, write_json
from tests.tune_results import sample_result


def test_json_has_every_trial(tmp_path: Path) -> None:
    result = sample_result(tmp_path)
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
