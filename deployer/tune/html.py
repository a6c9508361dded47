"""A single-file HTML report: throughput vs p99 per trial (budget line, Pareto front, winner, original)
and the latency breakdown (queue vs compute) of the winner vs the original. plotly (extra `tune`),
imported lazily, with its JS inlined so the file works offline."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from deployer._files import atomic_write
from deployer.errors import MissingDependency
from deployer.tune.run import Trial, TuneResult
from deployer.tune.search import pareto_front


def _plotly() -> Any:
    try:
        import plotly.graph_objects as go
    except ImportError:
        raise MissingDependency("the HTML report needs plotly", hint="pip install 'triton-deployer[tune]'") from None
    return go


def render_html(result: TuneResult) -> str:
    """The report's HTML text."""
    go = _plotly()
    measured = [t for t in result.trials if t.measurement is not None]
    pts = [(t.measurement.throughput_rps * result.batch_size, t.measurement.p99_ms) for t in measured]  # type: ignore[union-attr]
    front = set(pareto_front(pts))
    scatter = go.Figure()
    scatter.add_trace(go.Scatter(
        x=[p[1] for p in pts], y=[p[0] for p in pts], mode="markers", name="trials",
        text=[f"#{t.index} {t.candidate.label()}" for t in measured],
        marker={"color": ["#2a9d8f" if t.feasible else "#e76f51" for t in measured], "size": 9}))
    fr = sorted((pts[i] for i in front), key=lambda p: p[1])
    scatter.add_trace(go.Scatter(x=[p[1] for p in fr], y=[p[0] for p in fr], mode="lines", name="Pareto front",
                                 line={"dash": "dot", "color": "#264653"}))
    for label, trial, symbol in (("original", result.original, "diamond"), ("winner", result.best, "star")):
        if trial is not None and trial.measurement is not None:
            m = trial.measurement
            scatter.add_trace(go.Scatter(x=[m.p99_ms], y=[m.throughput_rps * result.batch_size], mode="markers",
                                         name=label, marker={"symbol": symbol, "size": 16}))
    if result.p99_budget_ms:
        scatter.add_vline(x=result.p99_budget_ms, line_dash="dash", line_color="#e76f51",
                          annotation_text=f"p99 budget {result.p99_budget_ms:g} ms")
    scatter.update_layout(title="throughput vs p99 per trial", xaxis_title="p99 latency (ms)",
                          yaxis_title="throughput (infer/s)")
    bars = go.Figure()
    rows = [(n, t) for n, t in (("original", result.original), ("winner", result.best)) if _breakdown(t)]
    for part, key in (("queue", "queue_us"), ("compute input", "compute_input_us"),
                      ("compute infer", "compute_infer_us"), ("compute output", "compute_output_us")):
        bars.add_trace(go.Bar(name=part, x=[n for n, _ in rows], y=[getattr(_breakdown(t), key) for _, t in rows]))
    bars.update_layout(barmode="stack", title="server-side latency per request (Triton statistics)",
                       yaxis_title="microseconds")
    plot1 = scatter.to_html(full_html=False, include_plotlyjs=True, div_id="throughput-vs-p99")
    plot2 = bars.to_html(full_html=False, include_plotlyjs=False, div_id="latency-breakdown")
    verdict = "met" if result.met else "not met"
    head = (f"<h1>deployer tune: {html.escape(result.model)}</h1><p>{html.escape(result.objective)} — {verdict}; "
            f"{len(result.trials)} trials of a {result.grid_size}-point grid; load {html.escape(result.load)}; "
            f"server {html.escape(result.server)}</p>")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>deployer tune {html.escape(result.model)}"
            f"</title></head><body>{head}{plot1}{plot2}</body></html>")


def _breakdown(t: Trial | None) -> Any:
    return t.measurement.breakdown if t is not None and t.measurement is not None else None


def write_html(result: TuneResult, path: Path) -> None:
    """Write the report atomically."""
    atomic_write(path, render_html(result).encode("utf-8"))
