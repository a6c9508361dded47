"""Checks that need concurrent load: dynamic batching proven by statistics, and latency/throughput."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import numpy.typing as npt

from deployer.server.base import ServerState
from deployer.smoke.load.httpload import build_http_request, run_http_load
from deployer.smoke.load.loadgen import build_request, fire_concurrent, run_load
from deployer.smoke.report import CheckResult
from deployer.smoke.targets import SmokeModel, SmokeOptions
from deployer.smoke.waiting import wait_until

__all__ = [
    "batching_skip_reason",
    "check_batching",
    "check_metrics",
    "check_perf",
    "executions_cover_inferences",
    "parse_metrics",
    "scrape_metrics",
    "settled_snapshot",
    "stats_snapshot",
]

Array = npt.NDArray[Any]


def batching_skip_reason(model: SmokeModel) -> str:
    """Why the batching check does not apply to `model`, or "" when it does."""
    if model.max_batch_size == 0:
        return "max_batch_size is 0: the model does not batch (Triton's batcher runs with max 1)"
    if model.max_batch_size == 1:
        return "max_batch_size is 1: no batch larger than 1 can form"
    if not model.dynamic_batching:
        return "dynamic_batching is not configured for this model"
    return ""


def stats_snapshot(http: Any, model: SmokeModel) -> dict[str, int]:
    """`inference_count`, `execution_count` and `batch_<size>` execution counts from the statistics API.

    Uses HTTP, where int64 counters are JSON numbers (gRPC's JSON form returns strings, brief D.3 #22).
    """
    stats = http.get_inference_statistics(model.name, model.version)
    entries = stats.get("model_stats", [])
    out = {"inference_count": 0, "execution_count": 0}
    for e in entries:
        out["inference_count"] += int(e.get("inference_count", 0))
        out["execution_count"] += int(e.get("execution_count", 0))
        for b in e.get("batch_stats", []):
            key = f"batch_{int(b.get('batch_size', 0))}"
            out[key] = out.get(key, 0) + int(b.get("compute_infer", {}).get("count", 0))
    return out


def executions_cover_inferences(counts: Mapping[str, int]) -> bool:
    """Every inference in `counts` (a snapshot or a delta) is accounted to an execution:
    sum(batch size x executions of that size) == inference_count. Triton records the two separately,
    so right after the responses one can be ahead of the other."""
    executed = sum(int(k[6:]) * v for k, v in counts.items() if k.startswith("batch_"))
    return executed == counts.get("inference_count", 0)


def settled_snapshot(
    http: Any, model: SmokeModel, timeout_s: float = 2.0, *, quiet_s: float = 0.1
) -> dict[str, int]:
    """A statistics snapshot that stopped changing (equal across `quiet_s`) with every inference
    accounted to an execution: counters of requests that just returned can still be in flight when
    the client sees the response, and would leak into the next delta. At `timeout_s`, the last one."""
    seen: list[dict[str, int]] = []

    def probe() -> dict[str, int]:
        seen.append(stats_snapshot(http, model))
        return seen[-1]

    def settled(snap: dict[str, int]) -> bool:
        return len(seen) >= 2 and seen[-2] == snap and executions_cover_inferences(snap)

    return wait_until(probe, settled, timeout_s, interval_s=quiet_s).value


def _delta(after: Mapping[str, int], before: Mapping[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


def _stats_delta(http: Any, model: SmokeModel, before: Mapping[str, int]) -> dict[str, int]:
    return _delta(stats_snapshot(http, model), before)


def _all_counted(n_req: int, delta: Mapping[str, int]) -> bool:
    return delta.get("inference_count", 0) >= n_req and executions_cover_inferences(delta)


def _why_not_batched(served_config: Mapping[str, Any]) -> str:
    db = served_config.get("dynamic_batching") or {}
    delay = int(db.get("max_queue_delay_microseconds", 0) or 0)
    groups = served_config.get("instance_group") or []
    instances = sum(int(g.get("count", 1) or 1) for g in groups) if groups else 1
    causes = []
    if delay == 0:
        causes.append(
            "max_queue_delay_microseconds is 0, so the batcher never waits for more requests (set e.g. 500-2000)"
        )
    if instances > 1:
        causes.append(
            f"{instances} model instances share the requests, so each sees a small queue "
            "(fewer instances, or a queue delay)"
        )
    if not db:
        causes.append("the served config has no dynamic_batching block")
    causes.append("all requests here are concurrent and have identical shapes, so the client is not the cause")
    return "; ".join(causes)


def check_batching(
    http: Any,
    grpc_url: str,
    model: SmokeModel,
    feeds: Mapping[str, Array],
    options: SmokeOptions,
    served_config: Mapping[str, Any],
) -> CheckResult:
    """N concurrent batch-1 requests must run in fewer than N executions (statistics before/after).

    Passes iff Δinference_count == N, Δexecution_count < N and some batch size > 1 executed. One retry
    with 4N requests when the first burst formed no batch (a cold, fast model can drain a queue).
    The statistics trail the responses (more so on a loaded machine): after the burst, they are
    polled until all N inferences and their executions show up, for at most `options.timeout_s`.
    """
    reason = batching_skip_reason(model)
    if reason:
        return CheckResult("batching", "skip", reason)
    dtypes = {t.name: t.dtype for t in model.inputs}
    request = build_request(model.name, feeds, [o.name for o in model.outputs], version=model.version, dtypes=dtypes)
    n = options.batching_requests
    attempts = 0
    delta: dict[str, int] = {}
    waited_s = 0.0
    for n_req in (n, min(4 * n, 1024)):
        attempts += 1
        before = settled_snapshot(http, model)
        _, errors = fire_concurrent(grpc_url, request, n_req, timeout_s=options.timeout_s)
        if errors:
            return CheckResult(
                "batching",
                "fail",
                f"{len(errors)}/{n_req} concurrent requests failed: {errors[0]}",
                {"requests": n_req, "errors": len(errors)},
                tuple(errors[:5]),
            )
        # Statistics trail the responses: wait for all N inferences and their executions, then for the
        # counters to settle (anything beyond N, e.g. other traffic, shows up as a wrong count).
        waited = wait_until(
            functools.partial(_stats_delta, http, model, before),
            functools.partial(_all_counted, n_req),
            options.timeout_s,
        )
        delta = _delta(settled_snapshot(http, model), before) if waited.ok else waited.value
        waited_s = waited.waited_s
        d_inf, d_exec = delta.get("inference_count", 0), delta.get("execution_count", 0)
        sizes = sorted(int(k[6:]) for k in delta if k.startswith("batch_"))
        if d_exec < n_req and any(s > 1 for s in sizes):
            break
    numbers: dict[str, float] = {
        "requests": n_req,
        "inference_count": d_inf,
        "execution_count": d_exec,
        "avg_batch": (d_inf / d_exec) if d_exec else 0.0,
        "max_batch": max(sizes, default=0),
        "attempts": attempts,
    }
    hist = ", ".join(f"{s}x{delta[f'batch_{s}']}" for s in sizes)
    details = (f"executions by batch size: {hist or 'none'}",)
    if d_inf != n_req:
        late = f"; still {d_inf} after waiting {waited_s:.1f} s for the statistics" if d_inf < n_req else ""
        return CheckResult(
            "batching",
            "fail",
            f"Δinference_count {d_inf} != {n_req} requests sent (cache hits or other traffic?{late})",
            numbers,
            details,
        )
    if d_exec >= n_req or not any(s > 1 for s in sizes):
        if not served_config:  # the config check did not run: fetch it to explain the failure
            served_config = http.get_model_config(model.name, model.version)
        return CheckResult(
            "batching",
            "fail",
            f"{n_req} concurrent requests ran in {d_exec} executions: no batch > 1 was formed. "
            f"Likely: {_why_not_batched(served_config)}",
            numbers,
            details,
        )
    return CheckResult(
        "batching",
        "pass",
        f"{n_req} concurrent requests ran in {d_exec} executions (avg batch {d_inf / d_exec:.1f}, max {max(sizes)})",
        numbers,
        details,
    )


def check_perf(
    state: ServerState, model: SmokeModel, feeds: Mapping[str, Array], options: SmokeOptions, batch: int
) -> CheckResult:
    """Latency p50/p90/p99 and throughput at `options.concurrency`; SLA gates fail the check."""
    dtypes = {t.name: t.dtype for t in model.inputs}
    outputs = tuple(o.name for o in model.outputs)
    common: dict[str, Any] = {
        "concurrency": options.concurrency,
        "duration_s": options.duration_s,
        "max_requests": options.max_requests,
        "warmup_requests": options.warmup_requests,
        "timeout_s": options.timeout_s,
        "batch_size": max(batch, 1),
    }
    if options.perf_protocol == "http":
        raw = build_http_request(state.host, model.name, feeds, outputs, version=model.version, dtypes=dtypes)
        res = run_http_load(state.host, state.http_port, raw, **common)
    else:
        request = build_request(model.name, feeds, outputs, version=model.version, dtypes=dtypes)
        res = run_load(state.grpc_url, request, processes=options.load_processes, **common)
    numbers = res.numbers()
    summary = (
        f"{options.perf_protocol} c={options.concurrency} b={max(batch, 1)}: {res.inferences_per_s:.0f} infer/s, "
        f"p50 {res.p(50):.2f} ms, p90 {res.p(90):.2f} ms, p99 {res.p(99):.2f} ms"
    )
    if res.errors or res.requests == 0:
        return CheckResult(
            "perf",
            "fail",
            f"{res.errors} of {res.requests + res.errors} requests failed: {res.first_error or 'no request completed'}",
            numbers,
        )
    violations: list[str] = []
    sla = model.sla
    if sla is not None:
        for key, limit in (("p50_ms", sla.p50_ms), ("p90_ms", sla.p90_ms), ("p99_ms", sla.p99_ms)):
            if limit is not None and numbers[key] > limit:
                violations.append(f"{key} {numbers[key]:.2f} > SLA {limit:g}")
        if sla.min_throughput is not None and res.inferences_per_s < sla.min_throughput:
            violations.append(f"throughput {res.inferences_per_s:.1f} infer/s < SLA {sla.min_throughput:g}")
    if violations:
        return CheckResult(
            "perf", "fail", f"SLA violated: {'; '.join(violations)} ({summary})", numbers, tuple(violations)
        )
    return CheckResult("perf", "pass", summary + (" (SLA met)" if sla is not None else ""), numbers)


_METRICS = (
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_count",
    "nv_inference_exec_count",
)


def parse_metrics(text: str, model: str) -> dict[str, float]:
    """Sum the per-model counters in Prometheus text for `model` (all versions, all failure reasons)."""
    out = dict.fromkeys(_METRICS, 0.0)
    needle = f'model="{model}"'
    for line in text.splitlines():
        if line.startswith("#") or needle not in line:
            continue
        name, _, rest = line.partition("{")
        if name in out:
            try:
                out[name] += float(rest.rsplit("}", 1)[1].split()[0])
            except (IndexError, ValueError):
                continue
    return out


def scrape_metrics(metrics_url: str, model: str, timeout_s: float) -> dict[str, float] | str:
    """The model's counters from the Prometheus endpoint, or why they could not be read."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(metrics_url, timeout=timeout_s) as resp:
            return parse_metrics(resp.read().decode(errors="replace"), model)
    except (urllib.error.URLError, OSError) as exc:
        return f"metrics endpoint {metrics_url} not reachable ({exc})"


def check_metrics(
    metrics_url: str,
    model: SmokeModel,
    timeout_s: float,
    before: dict[str, float] | str,
    completed: int = 1,
) -> CheckResult:
    """Prometheus counters moved during the smoke run: successes recorded, no failed requests.

    `before` is `scrape_metrics` taken before the model's checks (counters are cumulative);
    `completed` is how many requests the checks know succeeded (a lower bound). The counters trail
    the responses, so they are polled until they show `completed` successes, for at most `timeout_s`;
    fewer by then is a failure quoting the last values.
    """
    if isinstance(before, str):
        return CheckResult("metrics", "skip", before)
    want = max(completed, 1)

    def success(scraped: dict[str, float] | str) -> float:
        return 0.0 if isinstance(scraped, str) else scraped["nv_inference_request_success"] - before.get(
            "nv_inference_request_success", 0.0
        )

    waited = wait_until(
        lambda: scrape_metrics(metrics_url, model.name, timeout_s),
        lambda scraped: isinstance(scraped, str) or success(scraped) >= want,  # unreachable: no point waiting
        timeout_s,
        interval_s=0.1,
    )
    after = waited.value
    if isinstance(after, str):
        return CheckResult("metrics", "skip", after)
    m = {k: after[k] - before.get(k, 0.0) for k in after}
    numbers = {k.removeprefix("nv_inference_"): v for k, v in m.items()}
    numbers["completed_requests"] = float(completed)
    if m["nv_inference_request_success"] <= 0:
        return CheckResult(
            "metrics",
            "fail",
            f"nv_inference_request_success for model {model.name!r} did not increase although requests were served "
            f"(waited {waited.waited_s:.1f} s)",
            numbers,
        )
    if not waited.ok:
        return CheckResult(
            "metrics",
            "fail",
            f"nv_inference_request_success for model {model.name!r} rose by {m['nv_inference_request_success']:.0f}, "
            f"fewer than the {completed} requests the checks completed (after waiting {waited.waited_s:.1f} s)",
            numbers,
        )
    if m["nv_inference_request_failure"] > 0:
        return CheckResult(
            "metrics",
            "fail",
            f"{m['nv_inference_request_failure']:.0f} failed requests recorded for model {model.name!r} "
            "during the smoke run (nv_inference_request_failure)",
            numbers,
        )
    avg = m["nv_inference_count"] / m["nv_inference_exec_count"] if m["nv_inference_exec_count"] else 0.0
    numbers["avg_batch"] = avg
    return CheckResult(
        "metrics",
        "pass",
        f"+{m['nv_inference_request_success']:.0f} successful requests, average batch {avg:.2f}",
        numbers,
    )
