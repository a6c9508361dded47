"""Render a TuneResult: a rich table of every trial, and a JSON document (the CLI prints/writes them)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from deployer._files import atomic_write
from deployer.smoke.load import LoadSpec
from deployer.tune.run import Trial, TuneResult


def _num(x: float | None, fmt: str) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def render_result(result: TuneResult) -> RenderableType:
    """The trials table and a one-line verdict."""
    table = Table("#", "candidate", "infer/s", "p50 ms", "p99 ms", "avg batch", "queue us", "ok", "note",
                  title=f"tune {result.model}: {result.objective}; {result.load}")
    for tr in result.trials:
        m = tr.measurement
        b = m.breakdown if m else None
        mark = "best" if result.best is not None and tr.index == result.best.index else (
            "original" if result.original is not None and tr.index == result.original.index else "")
        table.add_row(str(tr.index), Text(tr.candidate.label()),
                      _num(m.throughput_rps * result.batch_size if m else None, ".0f"),
                      _num(m.p50_ms if m else None, ".2f"), _num(m.p99_ms if m else None, ".2f"),
                      _num(b.avg_batch_size if b else None, ".1f"), _num(b.queue_us if b else None, ".0f"),
                      "yes" if tr.feasible else "no", Text(mark or tr.error[:60]))
    verdict = (f"{len(result.trials)} trials of a {result.grid_size}-point grid in {result.seconds:.0f} s; "
               f"server: {result.server}")
    return Group(table, Text(verdict))


def _clean(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}


def _load_dict(ld: LoadSpec) -> dict[str, Any]:
    """One load point; `latency_from` says where each latency starts (open loop: the intended send time)."""
    point: dict[str, Any] = ({"concurrency": ld.concurrency} if ld.mode == "closed"
                             else {"rate_rps": ld.rate, "arrival": ld.arrival, "connections": ld.open_connections})
    return {"mode": ld.mode, **point, "latency_from": "intended send time" if ld.mode == "open" else "send",
            "warmup_s": ld.warmup_s, "window_s": ld.window_s, "max_windows": ld.max_windows,
            "protocol": ld.protocol}


def _trial_dict(tr: Trial, batch: int) -> dict[str, Any]:
    ms = []
    for i, m in enumerate(tr.measurements):
        d = _clean({k: getattr(m, k) for k in ("throughput_rps", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "requests",
                                               "errors", "stable", "windows", "offered_rps", "send_lag_p50_ms",
                                               "send_lag_p99_ms")})
        d["load"] = i  # index into the result's "loads"
        d["throughput_infer_s"] = m.throughput_rps * batch
        d["breakdown"] = _clean(dict(m.breakdown.__dict__)) if m.breakdown else None
        ms.append(d)
    return {"index": tr.index, "candidate": tr.candidate.as_dict(), "label": tr.candidate.label(),
            "served": tr.served, "measurements": ms, "chosen": tr.chosen, "feasible": tr.feasible,
            "error": tr.error, "seconds": tr.seconds}


def to_dict(result: TuneResult) -> dict[str, Any]:
    """The whole result as JSON-ready data."""
    return {
        "model": result.model, "spec": str(result.spec_path), "objective": result.objective,
        "p99_budget_ms": result.p99_budget_ms, "min_throughput": result.min_throughput, "load": result.load,
        "loads": [_load_dict(ld) for ld in result.loads],
        "server": result.server, "met": result.met, "written": result.written, "dry_run": result.dry_run,
        "grid_size": result.grid_size, "budget_trials": result.budget_trials, "seconds": result.seconds,
        "best": result.best.index if result.best else None,
        "original": result.original.index if result.original else None,
        "trials": [_trial_dict(t, result.batch_size) for t in result.trials], "diff": result.diff,
        "comment": list(result.comment),
    }


def write_json(result: TuneResult, path: Path) -> None:
    """Write `to_dict(result)` atomically."""
    atomic_write(path, (json.dumps(to_dict(result), indent=2) + "\n").encode("utf-8"))
