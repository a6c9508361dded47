"""Triton's statistics extension as a per-measurement breakdown: deltas of two snapshots.

Triton accumulates, per model version, `inference_stats.{queue,compute_input,compute_infer,compute_output}`
(count, ns) per request and `inference_count` / `execution_count`; only differences between two
snapshots describe one measurement. HTTP is used because its int64 counters are JSON numbers.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from deployer.errors import EnvironmentProblem

__all__ = ["ServerBreakdown", "StatsSnapshot", "breakdown", "fetch_stats", "parse_stats", "stats_url"]

_PHASES = ("queue", "compute_input", "compute_infer", "compute_output")


@dataclass(frozen=True)
class ServerBreakdown:
    """Server-side averages over one measurement (deltas of the statistics extension)."""

    queue_us: float  # per request
    compute_input_us: float
    compute_infer_us: float
    compute_output_us: float
    avg_batch_size: float  # inference_count / execution_count
    requests: int  # successful requests the server counted
    executions: int


@dataclass(frozen=True)
class StatsSnapshot:
    """Cumulative counters of one model (all versions in the answer summed)."""

    success: int
    inference_count: int
    execution_count: int
    ns: tuple[int, int, int, int]  # _PHASES order


def parse_stats(doc: Mapping[str, Any]) -> StatsSnapshot:
    """A snapshot from the JSON of `GET /v2/models/<m>[/versions/<v>]/stats`."""
    success = inf = execs = 0
    ns = [0, 0, 0, 0]
    for entry in doc.get("model_stats", []):
        stats = entry.get("inference_stats", {})
        success += int(stats.get("success", {}).get("count", 0))
        inf += int(entry.get("inference_count", 0))
        execs += int(entry.get("execution_count", 0))
        for i, phase in enumerate(_PHASES):
            ns[i] += int(stats.get(phase, {}).get("ns", 0))
    return StatsSnapshot(success, inf, execs, (ns[0], ns[1], ns[2], ns[3]))


def breakdown(before: StatsSnapshot, after: StatsSnapshot) -> ServerBreakdown:
    """Averages over what happened between two snapshots (zeros when nothing did)."""
    req = after.success - before.success
    execs = after.execution_count - before.execution_count
    inf = after.inference_count - before.inference_count
    per = [(a - b) / req / 1e3 if req > 0 else 0.0 for a, b in zip(after.ns, before.ns, strict=True)]
    return ServerBreakdown(per[0], per[1], per[2], per[3], inf / execs if execs > 0 else 0.0, req, execs)


def stats_url(http_url: str, model: str, version: str | None) -> str:
    base = http_url if "://" in http_url else f"http://{http_url}"
    return base.rstrip("/") + f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/stats"


def fetch_stats(url: str, timeout_s: float) -> StatsSnapshot:
    """One snapshot; a server without the statistics extension (or not Triton) is an environment problem."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return parse_stats(json.load(resp))
    except (OSError, ValueError, AttributeError, TypeError) as exc:  # URLError/HTTPError are OSErrors
        raise EnvironmentProblem(
            f"cannot read Triton's statistics at {url}: {exc} (measure(..., stats=False) skips the breakdown)"
        ) from exc
