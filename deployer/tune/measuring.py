"""TEMPORARY adapter: the measuring API of `deployer.smoke.load` (being built in parallel), over the
existing raw-socket HTTP generator. Delete this module once `deployer.smoke.load` lands and import
`LoadSpec, Measurement, ServerBreakdown, measure` from there instead (same names, same fields).

Closed loop only (open loop needs the new generator); windows are repeated runs of `run_http_load`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from deployer.errors import EnvironmentProblem, UserError


@dataclass(frozen=True)
class LoadSpec:
    """How to load the server for one measurement."""

    mode: Literal["closed", "open"] = "closed"
    concurrency: int = 8
    rate: float | None = None
    arrival: Literal["constant", "poisson"] = "constant"
    warmup_s: float = 1.0
    window_s: float = 2.0
    max_windows: int = 6
    stability: float = 0.10
    protocol: Literal["http", "grpc"] = "http"


@dataclass(frozen=True)
class ServerBreakdown:
    """Triton's statistics over the measured windows: average microseconds per request, batch size."""

    queue_us: float
    compute_input_us: float
    compute_infer_us: float
    compute_output_us: float
    avg_batch_size: float
    requests: int
    executions: int


@dataclass(frozen=True)
class Measurement:
    """Client-side throughput and latency percentiles, and the server's own breakdown."""

    throughput_rps: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    requests: int
    errors: int
    stable: bool
    windows: int
    breakdown: ServerBreakdown | None


def _stats(client: Any, model: str, version: str) -> dict[str, float]:
    stats = client.get_inference_statistics(model, version)
    out = {"count": 0.0, "executions": 0.0, "queue": 0.0, "input": 0.0, "infer": 0.0, "output": 0.0}
    for e in stats.get("model_stats", []):
        inf = e.get("inference_stats", {})
        out["count"] += float(inf.get("success", {}).get("count", 0))
        out["executions"] += float(e.get("execution_count", 0))
        for key, name in (("queue", "queue"), ("input", "compute_input"), ("infer", "compute_infer"),
                          ("output", "compute_output")):
            out[key] += float(inf.get(name, {}).get("ns", 0))
    return out


def _breakdown(before: Mapping[str, float], after: Mapping[str, float]) -> ServerBreakdown | None:
    d = {k: after[k] - before[k] for k in after}
    n = d["count"]
    if n <= 0:
        return None
    return ServerBreakdown(d["queue"] / n / 1e3, d["input"] / n / 1e3, d["infer"] / n / 1e3, d["output"] / n / 1e3,
                           n / d["executions"] if d["executions"] else math.nan, int(n), int(d["executions"]))


def measure(http_url: str, model: str, inputs: Mapping[str, npt.NDArray[Any]], load: LoadSpec, *,
            grpc_url: str | None = None, version: str | None = None, timeout_s: float = 30.0) -> Measurement:
    """Warm up, then measure windows until 3 in a row agree within `load.stability` (or `max_windows`)."""
    import tritonclient.http as httpclient

    from deployer.smoke import build_http_request, percentile, run_http_load

    if load.mode != "closed" or load.protocol != "http":
        raise UserError("open-loop and gRPC load need deployer.smoke.load (not merged yet)",
                        hint="use tune.load.concurrency with protocol http")
    host, _, port = http_url.rpartition(":")
    request = build_http_request(http_url, model, inputs, version=version or "")
    client = httpclient.InferenceServerClient(http_url, network_timeout=timeout_s)
    try:
        if load.warmup_s > 0:
            run_http_load(host, int(port), request, concurrency=load.concurrency, duration_s=load.warmup_s,
                          warmup_requests=0, timeout_s=timeout_s)
        before = _stats(client, model, version or "")
        windows: list[tuple[float, float]] = []
        latencies: list[float] = []
        requests = errors = 0
        elapsed = 0.0
        stable = False
        for _ in range(load.max_windows):
            r = run_http_load(host, int(port), request, concurrency=load.concurrency, duration_s=load.window_s,
                              warmup_requests=0, timeout_s=timeout_s)
            if r.requests == 0 and r.errors:
                raise EnvironmentProblem(f"every request to {model!r} failed: {r.first_error}")
            windows.append((r.requests_per_s, r.p(99)))
            latencies.extend(r.latencies_ms)
            requests += r.requests
            errors += r.errors
            elapsed += r.elapsed_s
            if len(windows) >= 3 and _agree(windows[-3:], load.stability):
                stable = True
                break
        after = _stats(client, model, version or "")
    finally:
        client.close()
    lat = sorted(latencies)
    return Measurement(requests / elapsed if elapsed else 0.0, percentile(lat, 50), percentile(lat, 90),
                       percentile(lat, 95), percentile(lat, 99), requests, errors, stable, len(windows),
                       _breakdown(before, after))


def _agree(windows: list[tuple[float, float]], tolerance: float) -> bool:
    for k in (0, 1):
        values = np.array([w[k] for w in windows])
        mean = float(values.mean())
        if mean <= 0 or float(np.abs(values - mean).max()) > tolerance * mean:
            return False
    return True
