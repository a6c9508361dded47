"""The server breakdown from two real Triton 2.51 statistics answers (captured from the quickstart
classifier under load: tests/data/triton_stats_classifier*.json)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deployer.smoke.load.stats import breakdown, parse_stats, stats_url

DATA = Path(__file__).resolve().parents[3] / "data"


def _load(name: str) -> dict[str, object]:
    doc: dict[str, object] = json.loads((DATA / name).read_text(encoding="utf-8"))
    return doc


def test_delta_of_two_real_snapshots() -> None:
    raw_a, raw_b = _load("triton_stats_classifier.json"), _load("triton_stats_classifier_after.json")
    a, b = parse_stats(raw_a), parse_stats(raw_b)
    ea, eb = raw_a["model_stats"][0], raw_b["model_stats"][0]  # type: ignore[index]
    d = breakdown(a, b)
    n = eb["inference_stats"]["success"]["count"] - ea["inference_stats"]["success"]["count"]
    assert d.requests == n > 0
    assert d.executions == eb["execution_count"] - ea["execution_count"] > 0
    assert d.avg_batch_size == pytest.approx((eb["inference_count"] - ea["inference_count"]) / d.executions)
    assert 1.0 < d.avg_batch_size <= 16  # the quickstart's max_batch_size
    for phase, value in (("queue", d.queue_us), ("compute_infer", d.compute_infer_us),
                         ("compute_input", d.compute_input_us), ("compute_output", d.compute_output_us)):
        ns = eb["inference_stats"][phase]["ns"] - ea["inference_stats"][phase]["ns"]
        assert value == pytest.approx(ns / n / 1e3)
        assert value > 0


def test_nothing_happened_gives_zeros_not_a_division_error() -> None:
    a = parse_stats(_load("triton_stats_classifier.json"))
    d = breakdown(a, a)
    assert (d.requests, d.executions, d.avg_batch_size, d.queue_us) == (0, 0, 0.0, 0.0)


def test_stats_url() -> None:
    assert stats_url("http://127.0.0.1:8000/", "m", "2") == "http://127.0.0.1:8000/v2/models/m/versions/2/stats"
    assert stats_url("127.0.0.1:8000", "m", None) == "http://127.0.0.1:8000/v2/models/m/stats"
