"""Our load generator vs `wrk`, and the open-loop honesty proof, on one real tritonserver (issue 11).

    python benchmarks/loadgen_vs_wrk.py            # ~5 minutes; --rounds N (5), --json FILE
    python benchmarks/loadgen_vs_wrk.py --below-only   # only the 10 % target (3), ~3 minutes

Serves a copy of examples/quickstart (classifier ONNX, dynamic batching) through the library
(`Pipeline.publish`, `up`, `down`), on free ports of 127.0.0.1, then prints:

1. closed loop at c=16: `measure` req/s vs `wrk` req/s (same pre-built binary KServe v2 request, wrk
   reading the body from a file through a Lua script), alternating, median ratio of the rounds
   (target >= 0.9);
2. open loop above capacity (1.5 x the closed-loop rate): p99 of 2 s, 4 s, 8 s runs must grow with
   the run length (queueing is shown, not hidden);
3. open loop below capacity, p50 open / p50 closed at the same throughput (target within 10 %):
   closed loop c=1 vs open loop at its rate (evenly spaced; Poisson at the same rate for reference,
   which queues, as it should), alternating rounds, median ratio. The target is taken on a load whose
   service time depends on the rate only: `fixed_4ms`, a python-backend model that sleeps 4 ms per
   request, default scheduler, 2 instances (c=1's rate is ~50 % of them). The same rows on `ppocr_det`
   (PP-OCRv4 text detector, a real third-party model, ~3 ms per 128 x 128 image) are printed beside it
   with Triton's own compute-infer time per request for both loops: there that time itself moves with
   the arrival pattern (measured open / closed 0.98-1.16), so a latency gap on it is the server's, and
   the statistics show how much. The
   tiny classifier's rows (as deployed, and without its delay window) are printed for reference:
   there the batcher makes the arrival pattern part of the load (see `without_delay_window`).

Needs `wrk` (Debian: `apt-get install -y wrk`). Client and server share this machine's cores.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import bench_serving
import numpy as np
import serving_deploy

from deployer.smoke.load import LoadSpec, Measurement, measure
from deployer.smoke.load.httpload import build_http_request

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
MODEL = "classifier"
FEEDS = {"features": np.random.default_rng(0).random((1, 16), dtype=np.float32)}

_LUA = """
local f = io.open("{body}", "rb")
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
{headers}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRK %d %d %d %d %.1f\\n", summary.requests, summary.duration,
    e.connect + e.read + e.write + e.timeout, e.status, latency:percentile(99)))
end
"""


def wrk_script(work: Path, port: int) -> Path:
    """A Lua script POSTing the same binary request `measure` sends (body + the two KServe headers)."""
    raw = build_http_request(f"{HOST}:{port}", MODEL, FEEDS)
    head, body = raw.split(b"\r\n\r\n", 1)
    (work / "body.bin").write_bytes(body)
    headers = []
    for line in head.decode().split("\r\n")[1:]:
        name, value = line.split(": ", 1)
        if name in ("Content-Type", "Inference-Header-Content-Length"):
            headers.append(f'wrk.headers["{name}"] = "{value}"')
    script = work / "infer.lua"
    script.write_text(_LUA.format(body=work / "body.bin", headers="\n".join(headers)), encoding="utf-8")
    return script


def run_wrk(script: Path, port: int, connections: int, seconds: float) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds:g}s", "-s", str(script),
         f"http://{HOST}:{port}/v2/models/{MODEL}/infer"],
        capture_output=True, text=True, timeout=seconds + 60, check=True,
    ).stdout
    m = re.search(r"^WRK (\d+) (\d+) (\d+) (\d+) ([\d.]+)$", out, re.M)
    if m is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    n, dur_us, errs, status = (int(m.group(i)) for i in range(1, 5))
    if errs or status:
        raise RuntimeError(f"wrk saw errors ({errs} socket, {status} non-2xx):\n{out}")
    return {"rps": n / (dur_us / 1e6), "p99_ms": float(m.group(5)) / 1e3}


def ours(url: str, load: LoadSpec, model: str = MODEL, feeds: dict[str, np.ndarray] | None = None) -> Measurement:
    m = measure(url, model, FEEDS if feeds is None else feeds, load)
    if m.errors or m.requests == 0:
        raise RuntimeError(f"measure saw {m.errors} errors: {m.first_error}")
    return m


def closed_vs_wrk(url: str, script: Path, port: int, rounds: int) -> dict[str, Any]:
    load = LoadSpec(concurrency=16, warmup_s=1.0, window_s=2.0, max_windows=3)
    rows = []
    for i in range(rounds):
        # alternate who goes first: other tenants' load drifts, and a fixed order would bias the ratio
        if i % 2 == 0:
            w, m = run_wrk(script, port, 16, 6.0), ours(url, load)  # same length: 1 s warm-up + 3 x 2 s
        else:
            m, w = ours(url, load), run_wrk(script, port, 16, 6.0)
        cpu_us = 1e6 * m.client_cpu_s / max(1, m.requests + (m.throughput_rps * load.warmup_s))
        rows.append({"ours_rps": m.throughput_rps, "wrk_rps": w["rps"], "ratio": m.throughput_rps / w["rps"],
                     "ours_p99_ms": m.p99_ms, "wrk_p99_ms": w["p99_ms"], "stable": m.stable,
                     "client_cpu_us_per_request": cpu_us})
        print(f"  [{i + 1}] ours {m.throughput_rps:8,.0f} req/s (p99 {m.p99_ms:6.2f} ms, "
              f"{'stable' if m.stable else 'not stable'}, ~{cpu_us:.0f} us client CPU/req)   "
              f"wrk {w['rps']:8,.0f} req/s (p99 {w['p99_ms']:6.2f} ms)   ratio {m.throughput_rps / w['rps']:.2f}")
    ratios = sorted(r["ratio"] for r in rows)
    med = statistics.median(ratios)
    print(f"  closed loop c=16, ours / wrk: median {med:.2f} (min {ratios[0]:.2f}, max {ratios[-1]:.2f}) "
          f"target >= 0.9: {'OK' if med >= 0.9 else 'MISSED'}")
    return {"rounds": rows, "median_ratio": med, "capacity_rps": statistics.median(r["ours_rps"] for r in rows)}


def over_capacity(url: str, capacity: float) -> dict[str, Any]:
    rate = 1.5 * capacity
    p99 = {}
    for seconds in (2.0, 4.0, 8.0):
        m = ours(url, LoadSpec(mode="open", rate=rate, warmup_s=0.0, window_s=seconds, max_windows=1))
        p99[seconds] = m.p99_ms
        print(f"  open loop at {rate:,.0f} req/s (1.5 x capacity) for {seconds:g} s: completed "
              f"{m.throughput_rps:,.0f} req/s, p50 {m.p50_ms:8.1f} ms, p99 {m.p99_ms:8.1f} ms "
              f"(send lag p99 {m.send_lag_p99_ms:.1f} ms: all sockets busy)")
    r1, r2 = p99[4.0] / p99[2.0], p99[8.0] / p99[4.0]
    ok = r1 > 1.2 and r2 > 1.2
    print(f"  p99 growth with run length: 4 s / 2 s = {r1:.2f}, 8 s / 4 s = {r2:.2f} "
          f"(queueing shown: {'OK' if ok else 'MISSED'})")
    return {"rate_rps": rate, "p99_ms": p99, "growth": [r1, r2]}


def below_capacity(url: str, capacity: float, label: str) -> dict[str, Any]:
    short = {"warmup_s": 0.5, "window_s": 1.5, "max_windows": 3}
    closed = {c: ours(url, LoadSpec(concurrency=c, **short)) for c in (1, 2, 4)}  # type: ignore[arg-type]
    c, ref = min(closed.items(), key=lambda kv: abs(kv[1].throughput_rps - 0.5 * capacity))
    rate = ref.throughput_rps
    opened = ours(url, LoadSpec(mode="open", rate=rate, warmup_s=1.0, window_s=2.0, max_windows=3))
    ratio = opened.p50_ms / ref.p50_ms
    print(f"  [{label}]")
    for k, m in closed.items():
        print(f"  closed loop c={k}: {m.throughput_rps:8,.0f} req/s, p50 {m.p50_ms:.2f} ms")
    print(f"  open loop at c={c}'s rate {rate:,.0f} req/s ({rate / capacity:.0%} of capacity): "
          f"{opened.throughput_rps:,.0f} req/s, p50 {opened.p50_ms:.2f} ms (send lag p50 {opened.send_lag_p50_ms:.3f}, "
          f"p99 {opened.send_lag_p99_ms:.3f} ms) vs closed {ref.p50_ms:.2f} ms: "
          f"ratio {ratio:.2f} (target within 10 %: {'OK' if abs(ratio - 1) <= 0.10 else 'MISSED'})")
    return {"label": label, "closed_concurrency": c, "rate_rps": rate, "open_p50_ms": opened.p50_ms,
            "closed_p50_ms": ref.p50_ms, "ratio": ratio}


DET = "ppocr_det"
DET_FEEDS = {"x": np.random.default_rng(0).random((1, 3, 128, 128), dtype=np.float32)}


def det_spec(work: Path, ports: tuple[int, ...]) -> Path:
    """ppocr_det with the default scheduler (each request executes alone: no batcher to merge bursts)
    and 2 CPU instances; one fixed 128 x 128 image, the shape every request sends."""
    sys.path.insert(0, str(REPO / "tests"))
    from models import third_party_model

    work.mkdir(parents=True, exist_ok=True)
    shutil.copy(third_party_model(DET), work / f"{DET}.onnx")
    image = [1, 3, 128, 128]
    spec = {
        "repository": "model_repository",
        "server": {"runtime": "local", "http_port": ports[0], "grpc_port": ports[1], "metrics_port": ports[2]},
        "models": [{"name": DET, "source": f"{DET}.onnx", "max_batch_size": 4,
                    "shapes": {"x": {"min": image, "opt": image, "max": image}},
                    "instance_group": [{"kind": "CPU", "count": 2}]}],
    }
    path = work / "deployer.yaml"
    path.write_text(json.dumps(spec, indent=2), encoding="utf-8")  # JSON is YAML
    return path


FIXED = "fixed_4ms"
FIXED_FEEDS = {"x": np.ones((4,), dtype=np.float32)}
FIXED_SERVICE_S = 0.004
_FIXED_MODEL = f'''"""Known service time: each request sleeps {FIXED_SERVICE_S * 1000:g} ms, returns its input."""
import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "x").as_numpy()
            time.sleep({FIXED_SERVICE_S})  # a sleep, not a computation: idle vCPUs do not change it
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("y", x)]))
        return out
'''


def fixed_spec(work: Path, ports: tuple[int, ...]) -> Path:
    """A Triton python-backend model whose service time does not depend on the arrival pattern (it
    sleeps), default scheduler, 2 instances: the calibration load for the generator's open loop."""
    work.mkdir(parents=True, exist_ok=True)
    (work / f"{FIXED}.py").write_text(_FIXED_MODEL, encoding="utf-8")
    spec = {
        "repository": "model_repository",
        "server": {"runtime": "local", "http_port": ports[0], "grpc_port": ports[1], "metrics_port": ports[2]},
        "models": [{"name": FIXED, "source": f"{FIXED}.py", "backend": "python", "max_batch_size": 0,
                    "inputs": [{"name": "x", "dtype": "FP32", "dims": [4]}],
                    "outputs": [{"name": "y", "dtype": "FP32", "dims": [4]}],
                    "instance_group": [{"kind": "CPU", "count": 2}]}],
    }
    path = work / "deployer.yaml"
    path.write_text(json.dumps(spec, indent=2), encoding="utf-8")  # JSON is YAML
    return path


def _infer_us(m: Measurement) -> float:
    return m.breakdown.compute_infer_us if m.breakdown is not None else float("nan")


def below_capacity_steady(url: str, model: str, feeds: dict[str, np.ndarray], rounds: int,
                          label: str) -> dict[str, Any]:
    """Closed loop c=1 vs open loop at its rate, alternating, `rounds` times; median of the ratios.
    Triton's own compute-infer time per request is printed for both loops: where it differs, the
    server did different work, and the latency gap is the server's, not the generator's."""
    short = {"warmup_s": 1.0, "window_s": 2.0, "max_windows": 3}
    rows = []
    print(f"  [{label}; closed loop c=1 vs open loop at its rate]")
    for i in range(rounds):
        closed = ours(url, LoadSpec(concurrency=1, **short), model, feeds)  # type: ignore[arg-type]
        rate = closed.throughput_rps
        const = ours(url, LoadSpec(mode="open", rate=rate, **short), model, feeds)  # type: ignore[arg-type]
        poisson = ours(url, LoadSpec(mode="open", rate=rate, arrival="poisson", seed=i, **short),  # type: ignore[arg-type]
                       model, feeds)
        ratio = const.p50_ms / closed.p50_ms
        infer = _infer_us(const) / _infer_us(closed)
        rows.append({"rate_rps": rate, "closed_p50_ms": closed.p50_ms, "open_p50_ms": const.p50_ms,
                     "open_rps": const.throughput_rps, "send_lag_p50_ms": const.send_lag_p50_ms,
                     "closed_infer_us": _infer_us(closed), "open_infer_us": _infer_us(const),
                     "poisson_p50_ms": poisson.p50_ms, "poisson_p99_ms": poisson.p99_ms, "ratio": ratio,
                     "infer_ratio": infer})
        print(f"  [{i + 1}] closed c=1 {rate:6.1f} req/s p50 {closed.p50_ms:6.2f} ms | open constant "
              f"{const.throughput_rps:6.1f} req/s p50 {const.p50_ms:6.2f} ms (send lag p50 "
              f"{const.send_lag_p50_ms:.3f} ms) | ratio {ratio:.3f} | Triton compute-infer open/closed "
              f"{_infer_us(const):.0f}/{_infer_us(closed):.0f} us = {infer:.3f} | Poisson p50 "
              f"{poisson.p50_ms:6.2f} ms, p99 {poisson.p99_ms:6.2f} ms")
    med = statistics.median(r["ratio"] for r in rows)
    med_infer = statistics.median(r["infer_ratio"] for r in rows)
    print(f"  open / closed p50 at the same throughput: median {med:.3f}, Triton compute-infer open / closed: "
          f"median {med_infer:.3f} (target within 10 %: {'OK' if abs(med - 1) <= 0.10 else 'MISSED'})")
    return {"rounds": rows, "median_ratio": med, "median_infer_ratio": med_infer}


def served(spec: Path, rounds: int, model: str, feeds: dict[str, np.ndarray], label: str) -> dict[str, Any]:
    from deployer import Pipeline

    p = Pipeline.load(spec)
    p.publish()
    state = p.up()
    try:
        return below_capacity_steady(f"http://{HOST}:{state.http_port}", model, feeds, rounds, label)
    finally:
        p.down()


def without_delay_window(url: str, model: str, instances: int) -> Any:
    """Serve `model` with no batching delay and `instances` instances (a live reload through Triton's
    repository API, the tuner's own `ModelSession`); returns the session, whose `restore()` undoes it.

    Why: with a delay window (the quickstart's 2 ms) latency depends on the arrival pattern, not only
    the rate. Closed-loop clients arrive together and all wait the whole window; open-loop arrivals are
    spread over it and wait less on average (measured: open/closed p50 0.76-0.79). Both are right; they
    are different loads. Without the window the pattern still matters on this server: closed-loop
    requests arrive in bursts the batcher merges, evenly spaced ones run one by one at the full
    per-execution cost of the Python-based backend, so the same rate is a higher load (measured at
    5.4k/s: p50 1.19 vs 0.72 ms, with the generator's own send lag p50 0.11 ms). The benchmark prints
    both rows; the 10 % target is reported as missed when it is."""
    from deployer.tune.session import ModelSession

    session = ModelSession(url.removeprefix("http://"), model)
    cfg = dict(session.begin())
    cfg["dynamic_batching"] = {**dict(cfg.get("dynamic_batching") or {}), "max_queue_delay_microseconds": 0}
    groups = cfg.get("instance_group") or [{"kind": "KIND_CPU"}]
    cfg["instance_group"] = [{**dict(g), "count": instances} for g in groups]
    session.apply(cfg)
    return session


def classifier_parts(work: Path, rounds: int) -> dict[str, Any]:
    """(1), (2) and the classifier's reference rows of (3), on the quickstart classifier."""
    from deployer import Pipeline

    out: dict[str, Any] = {}
    ports = bench_serving.free_ports(3)
    spec = serving_deploy.write_spec(REPO / "examples" / "quickstart", work / "qs", ports)  # type: ignore[arg-type]
    p = Pipeline.load(spec)
    p.publish()
    state = p.up()
    try:
        url = f"http://{HOST}:{state.http_port}"
        script = wrk_script(work, state.http_port)
        print(f"== quickstart classifier on tritonserver, {os.cpu_count()} cores shared with the clients")
        out["closed"] = closed_vs_wrk(url, script, state.http_port, max(1, rounds))
        cap = out["closed"]["capacity_rps"]
        out["over"] = over_capacity(url, cap)
        out["below_as_deployed"] = below_capacity(url, cap, "the quickstart config: 2 ms delay window")
        session = without_delay_window(url, MODEL, instances=2)
        try:
            out["below"] = below_capacity(url, cap, "no delay window, 2 instances")
        finally:
            session.restore()
            session.close()
    finally:
        p.down()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--below-only", action="store_true", help="only (3), the 10 %% target (~3 min)")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        print("wrk not found: apt-get install -y wrk", file=sys.stderr)
        return 3
    out: dict[str, Any] = {"cores": os.cpu_count(), "loadavg_start": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="loadgen_vs_wrk_") as tmp:
        work = Path(tmp)
        if not args.below_only:
            out.update(classifier_parts(work, args.rounds))
        n = max(3, args.rounds // 2 + 1)
        print("== the 10 % target, on tritonserver")
        out["below_calibrated"] = served(fixed_spec(work / "fixed", bench_serving.free_ports(3)), n, FIXED,
                                         FIXED_FEEDS, f"{FIXED}: python backend, sleeps 4 ms, 2 instances")
        out["below_steady"] = served(det_spec(work / "det", bench_serving.free_ports(3)), n, DET, DET_FEEDS,
                                     f"{DET} (rapidocr-onnxruntime wheel): default scheduler, 2 instances")
    out["loadavg_end"] = os.getloadavg()
    print(f"load average before/after: {out['loadavg_start'][0]:.2f} / {out['loadavg_end'][0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
