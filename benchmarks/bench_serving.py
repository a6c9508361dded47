"""Serving benchmarks for issue 3, every ratio measured in this one run on this machine.

    python benchmarks/bench_serving.py                  # both benchmarks (~1 minute)
    python benchmarks/bench_serving.py --only deploy    # or --only throughput; --json FILE for the numbers

1. Deploy overhead: `deployer -v deploy SPEC` (the CLI's `main()` through deploy_probe.py, the
   quickstart example on free ports) minus the server's own start-to-ready time and the smoke stage
   (target <= 1 s), split part by part: interpreter start, imports, spec load + validate, render,
   publish, up, smoke, down (unload + stop), report, interpreter exit (see serving_deploy.py).
2. Served throughput at concurrency 16 of one ONNX MLP (generated here; batching matters for it:
   batch-1 GEMVs are memory-bound) served twice by one tritonserver: with the dynamic-batching config
   `deployer init` writes, and without batching (max_batch_size 0, no dynamic_batching). Target >= 2x.
   Then vs in-process ONNX Runtime at the average batch size Triton formed (from the statistics
   extension), same session options (ORT defaults, as the backend uses), target >= 0.9.
   Load: `run_http_load` (pre-built binary-tensor HTTP requests on raw keep-alive sockets, our cheapest
   generator); its own ceiling is measured against Triton's cheapest endpoint.

Client and server share the machine's cores (2 here): the CPU split per phase is reported from
/proc (tritonserver, its python-backend stubs) and the generator's own process CPU time.
Everything binds to 127.0.0.1 on free ports; servers are stopped in `finally` (Ctrl-C included).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import socket
import statistics
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import serving_deploy

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
CONCURRENCY = 16
D_IN, HIDDEN, D_OUT = 256, 2048, 64  # ~19 MB of weights: batch-1 GEMVs are bound by memory bandwidth
_CLK = os.sysconf("SC_CLK_TCK")


def free_ports(n: int) -> tuple[int, ...]:
    """`n` distinct ports free on 127.0.0.1 right now (kernel-assigned)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((HOST, 0))
            socks.append(s)
        return tuple(s.getsockname()[1] for s in socks)
    finally:
        for s in socks:
            s.close()


# --------------------------------------------------------------------------- 1. deploy overhead


def bench_deploy(work: Path, runs: int = 1, sources: tuple[Path | None, ...] = (None,),
                 fast_exit: bool = False) -> dict[str, Any]:
    """`deployer -v deploy` of the quickstart example, `runs` times per deployer source (None = this
    checkout), the sources interleaved run by run so that both see the same machine; each run split."""
    results, labels = [], []
    for i in range(runs):
        for k, src in enumerate(sources):
            spec = serving_deploy.write_spec(REPO / "examples" / "quickstart", work / f"deploy{i}-{k}", free_ports(3))  # type: ignore[arg-type]
            state_dir = spec.parent / ".deployer" / spec.stem
            try:
                results.append(serving_deploy.run_deploy(spec, state_dir, deployer_src=src, fast_exit=fast_exit))
                labels.append(f"{'src' + str(k) if len(sources) > 1 else 'run'} {i + 1}")
            finally:
                _down_leftover(state_dir)
    print("\n== 1. deploy overhead: `deployer -v deploy` (quickstart example: classifier ONNX + python model)"
          + (" -- WHAT-IF: the CLI ends with os._exit after flushing" if fast_exit else ""))
    for k, src in enumerate(sources):
        if len(sources) > 1:
            print(f"  src{k}: {src or 'this checkout'}")
    print(f"  {'part':<62} " + " ".join(f"{label:>8}" for label in labels))
    for name in results[0].parts:
        print(f"  {name:<62} " + " ".join(f"{t.parts.get(name, 0.0):8.3f}" for t in results))
    rows = {
        "wall": [t.wall for t in results],
        "server's own start-to-ready (init + loads)": [t.server_start_to_ready for t in results],
        "smoke": [t.stages.get("smoke", 0.0) for t in results],
        "OVERHEAD = wall - start-to-ready - smoke (target <= 1 s)": [t.overhead for t in results],
        "  of which down's unload (repository API)": [t.unload for t in results],
        "  of which Triton's own SIGTERM -> exit": [t.server_shutdown for t in results],
        "overhead without the server's own shutdown work": [t.overhead_excl_shutdown for t in results],
    }
    for name, vals in rows.items():
        print(f"  {name:<62} " + " ".join(f"{v:8.3f}" for v in vals))
    for label, t in zip(labels, results, strict=True):
        print(f"  {label}: model loads " + ", ".join(f"{m} {s:.3f} s" for m, s in t.model_loads.items())
              + "; imports to publish: " + ", ".join(f"{m} {s:.3f}" for m, s in t.validate_imports.items()))
    for k in range(len(sources)):
        mine = [t.overhead for t in results[k :: len(sources)]]
        print(f"  overhead{f' src{k}' if len(sources) > 1 else ''}: median {statistics.median(mine):.3f} s, "
              f"best {min(mine):.3f} s, worst {max(mine):.3f} s (target <= 1 s: "
              f"{'OK' if statistics.median(mine) <= 1.0 else 'MISSED'})")
    runs_out = [{"wall_s": t.wall, "parts_s": t.parts, "stages_s": t.stages, "model_loads_s": t.model_loads,
                 "server_start_to_ready_s": t.server_start_to_ready, "server_shutdown_s": t.server_shutdown,
                 "unload_s": t.unload, "overhead_s": t.overhead, "overhead_excl_shutdown_s": t.overhead_excl_shutdown,
                 "validate_imports_s": t.validate_imports} for t in results]
    return {"sources": [str(src or REPO) for src in sources], "labels": labels, "runs": runs_out}


def _down_leftover(state_dir: Path) -> None:
    """Last resort after a failed/interrupted deploy: stop whatever server.json still records."""
    from deployer.server.local import LocalRuntime
    from deployer.server.state import load_state

    with contextlib.suppress(Exception):
        state = load_state(state_dir)
        if state is not None:
            LocalRuntime().down(state, grace_s=3.0)


# --------------------------------------------------------------------------- 2. throughput


def make_mlp(path: Path, hidden: int = HIDDEN) -> None:
    """x[batch, 256] -> Gemm hidden -> Relu -> Gemm hidden -> Relu -> Gemm 64 -> y (deterministic weights)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    dims = [D_IN, hidden, hidden, D_OUT]
    nodes, inits, cur = [], [], "x"
    for i, (a, b) in enumerate(itertools.pairwise(dims)):
        inits += [numpy_helper.from_array((rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32), f"w{i}"),
                  numpy_helper.from_array(np.zeros(b, np.float32), f"b{i}")]
        last = i == len(dims) - 2
        nodes.append(helper.make_node("Gemm", [cur, f"w{i}", f"b{i}"], ["y" if last else f"g{i}"]))
        if not last:
            nodes.append(helper.make_node("Relu", [f"g{i}"], [f"h{i}"]))
            cur = f"h{i}"
    graph = helper.make_graph(nodes, "bench_mlp",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", D_IN])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", D_OUT])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def make_spec(work: Path, ports: tuple[int, ...], hidden: int = HIDDEN) -> Path:
    """`deployer init` output for the MLP (model `mlp`), plus `mlp_nobatch`: same file, no batching."""
    from ruamel.yaml import YAML

    from deployer.spec.init import init_spec

    work.mkdir(parents=True, exist_ok=True)
    make_mlp(work / "mlp.onnx", hidden)
    spec = init_spec(work / "mlp.onnx", output=work / "spec.yaml").spec_path
    yaml = YAML()
    data = yaml.load(spec.read_text(encoding="utf-8"))
    data["server"].update(http_port=ports[0], grpc_port=ports[1], metrics_port=ports[2])
    batched = data["models"][0]
    plain = {k: v for k, v in batched.items() if k != "dynamic_batching"}
    plain.update(name="mlp_nobatch", max_batch_size=0,
                 inputs=[{**t, "dims": [-1, *t["dims"]]} for t in batched["inputs"]],
                 outputs=[{**t, "dims": [-1, *t["dims"]]} for t in batched["outputs"]],
                 shapes={"x": {"min": [1, D_IN], "opt": [1, D_IN], "max": [8, D_IN]}})
    data["models"].append(plain)
    with spec.open("w", encoding="utf-8") as fh:
        yaml.dump(data, fh)
    return spec


def group_cpu(pgid: int) -> dict[str, float]:
    """CPU seconds (user+sys) of every process in the server's process group, by command name."""
    out: dict[str, float] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1: stat.rindex(")")]
        f = stat[stat.rindex(")") + 2:].split()
        if int(f[2]) == pgid:  # field 5 (pgrp)
            name = "python stubs" if comm.startswith("triton_python") else comm
            out[name] = out.get(name, 0.0) + (int(f[11]) + int(f[12])) / _CLK
    return out


def machine_busy() -> tuple[float, float, float]:
    """CPU seconds since boot, all cores, from /proc/stat: (busy, irq+softirq, steal). Busy is everything
    but idle and iowait; interrupt time (loopback TCP runs in softirqs) and steal (the hypervisor ran
    someone else) are charged to no process."""
    f = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(f[:8]) - f[3] - f[4]) / _CLK, (f[5] + f[6]) / _CLK, f[7] / _CLK


def model_stats(port: int, model: str) -> dict[str, float]:
    with urllib.request.urlopen(f"http://{HOST}:{port}/v2/models/{model}/stats", timeout=10) as r:
        s = json.load(r)["model_stats"][0]
    inf = s["inference_stats"]
    return {"inferences": float(s["inference_count"]), "executions": float(s["execution_count"]),
            "queue_ns": float(inf["queue"]["ns"]), "compute_ns": float(inf["compute_infer"]["ns"]),
            "input_ns": float(inf["compute_input"]["ns"]), "output_ns": float(inf["compute_output"]["ns"])}


@dataclass
class Served:
    """One served load phase."""

    model: str
    infer_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    avg_batch: float
    client_cpu_us_per_req: float
    cpu_split: dict[str, float]  # share of all cores, by process kind, over the phase
    compute_ms_per_exec: float  # Triton accumulates compute time per request: ns / requests = per batch
    queue_ms_per_req: float


def served_phase(state: Any, model: str, duration: float, ncpu: int) -> Served:
    from deployer.smoke.load.httpload import build_http_request, run_http_load

    x = np.random.default_rng(1).random((1, D_IN), dtype=np.float32)
    req = build_http_request(f"{HOST}:{state.http_port}", model, {"x": x}, ("y",))
    run_http_load(HOST, state.http_port, req, concurrency=CONCURRENCY, duration_s=0.5, warmup_requests=32)
    time.sleep(0.2)  # let the counters of the warm-up settle
    s0, c0, m0, w0 = model_stats(state.http_port, model), group_cpu(state.pid), machine_busy(), time.perf_counter()
    res = run_http_load(HOST, state.http_port, req, concurrency=CONCURRENCY, duration_s=duration, warmup_requests=0)
    wall = time.perf_counter() - w0
    c1, m1 = group_cpu(state.pid), machine_busy()
    time.sleep(0.2)
    s1 = model_stats(state.http_port, model)
    d = {k: s1[k] - s0[k] for k in s0}
    split = {k: (c1.get(k, 0.0) - c0.get(k, 0.0)) / (wall * ncpu) for k in c1}
    split["load generator"] = res.client_cpu_s / (wall * ncpu)
    # other processes on the box meanwhile (other users' jobs)
    split["irq"] = (m1[1] - m0[1]) / (wall * ncpu)
    split["steal"] = (m1[2] - m0[2]) / (wall * ncpu)
    split["other"] = max(0.0, (m1[0] - m0[0]) / (wall * ncpu) - sum(split.values()))
    return Served(model, res.inferences_per_s, res.p(50), res.p(99), res.errors,
                  d["inferences"] / max(d["executions"], 1.0), res.client_cpu_us_per_request, split,
                  d["compute_ns"] / max(d["inferences"], 1.0) / 1e6, d["queue_ns"] / max(d["inferences"], 1.0) / 1e6)


def loadgen_ceiling(state: Any, duration: float) -> tuple[float, float]:
    """run_http_load against `GET /v2/health/ready` (no inference): (requests/s, client CPU us/request)."""
    from deployer.smoke.load.httpload import run_http_load

    req = f"GET /v2/health/ready HTTP/1.1\r\nHost: {HOST}:{state.http_port}\r\n\r\n".encode()
    res = run_http_load(HOST, state.http_port, req, concurrency=CONCURRENCY, duration_s=duration)
    if res.errors:
        raise RuntimeError(f"ceiling run failed: {res.first_error}")
    return res.requests_per_s, res.client_cpu_us_per_request


def inprocess_ort(path: Path, batch: int, duration: float, instances: int = 1, threads: int = 0,
                  spin: bool = True) -> float:
    """Inferences/s of `instances` ONNX Runtime sessions, each run back to back at `batch` by its own thread:
    the served layout (Triton runs one session per model instance, side by side) without the serving.

    Session options default to ORT's defaults: what deployer's backend uses when the config sets no
    `intra_op_thread_count` parameter. ORT releases the GIL in `run`, so the threads really overlap.
    """
    import threading

    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sessions = [ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]) for _ in range(instances)]
    x = np.random.default_rng(1).random((batch, D_IN), dtype=np.float32)
    for sess in sessions:
        for _ in range(10):
            sess.run(["y"], {"x": x})
    counts = [0] * instances
    t0 = time.perf_counter()
    stop = t0 + duration

    def work(i: int) -> None:
        while time.perf_counter() < stop:
            sessions[i].run(["y"], {"x": x})
            counts[i] += 1

    threads_ = [threading.Thread(target=work, args=(i,)) for i in range(instances)]
    for t in threads_:
        t.start()
    for t in threads_:
        t.join()
    return sum(counts) * batch / (time.perf_counter() - t0)


def bench_throughput(work: Path, duration: float, rounds: int, ort_threads: int = 0, ort_spin: bool = True,
                     backend: Path | None = None, hidden: int = HIDDEN) -> dict[str, Any]:
    from deployer import pipeline
    from deployer.server.from_spec import server_settings
    from deployer.server.local import LocalRuntime
    from deployer.spec import load_deployment

    ncpu = os.cpu_count() or 1
    spec = make_spec(work / "tp", free_ports(3), hidden)
    dep = load_deployment(spec)
    pipeline.publish(dep)
    if backend is not None:  # diagnostic: serve through a prototype of the Python-based ORT backend
        import deployer.server.local as local_mod

        local_mod._ORT_BACKEND_SRC = backend.resolve()
        print(f"PROTOTYPE backend: {backend}")
    runtime = LocalRuntime()
    state = runtime.up(server_settings(dep))
    try:
        with urllib.request.urlopen(f"http://{HOST}:{state.http_port}/v2/models/mlp/config", timeout=10) as r:
            cfg = json.load(r)
        instances = sum(int(g.get("count", 1)) for g in cfg.get("instance_group", [])) or 1
        onnx_path = spec.parent / "mlp.onnx"
        ceiling, ceiling_cpu = loadgen_ceiling(state, min(duration, 2.0))
        results = []
        for _ in range(rounds):
            b = served_phase(state, "mlp", duration, ncpu)
            u = served_phase(state, "mlp_nobatch", duration, ncpu)
            batch = max(1, round(b.avg_batch))
            ort_b = inprocess_ort(onnx_path, batch, duration, instances, ort_threads, ort_spin)
            results.append((b, u, batch, ort_b))
        ort_1 = inprocess_ort(onnx_path, 1, duration, instances, ort_threads, ort_spin)
    finally:
        runtime.down(state)
    print(f"\n== 2. served throughput, concurrency {CONCURRENCY}, MLP {D_IN}-{hidden}-{hidden}-{D_OUT} FP32, "
          f"{ncpu} cores shared by client and server, {duration:g} s per phase")
    print(f"  batched config (as `deployer init` writes it): max_batch_size {cfg.get('max_batch_size')}, "
          f"dynamic_batching {json.dumps(cfg.get('dynamic_batching', {}), separators=(',', ':'))}, "
          f"instance_group {json.dumps(cfg.get('instance_group', []), separators=(',', ':'))}")
    print(f"  load generator run_http_load ceiling (GET /v2/health/ready, same box): {ceiling:,.0f} req/s, "
          f"{ceiling_cpu:.0f} us client CPU/request (one core saturates at {1e6 / ceiling_cpu:,.0f} req/s)")
    opts = (f"{instances} session(s) side by side like the served instances, intra_op threads "
            f"{ort_threads or 'default'}, spinning {'on' if ort_spin else 'off'}")
    print(f"  in-process ONNX Runtime ({opts}), batch 1: {ort_1:,.0f} infer/s")
    rows: list[dict[str, object]] = []
    for i, (b, u, batch, ort_b) in enumerate(results, 1):
        for s in (b, u):
            split = ", ".join(f"{k} {v:.0%}" for k, v in sorted(s.cpu_split.items()))
            print(f"  [{i}] {s.model:<12} {s.infer_s:8,.0f} infer/s  p50 {s.p50_ms:6.2f} ms  p99 {s.p99_ms:6.2f} ms  "
                  f"avg batch {s.avg_batch:4.2f}  compute {s.compute_ms_per_exec:5.2f} ms/exec  "
                  f"queue {s.queue_ms_per_req:5.2f} ms/req  errors {s.errors}  client {s.client_cpu_us_per_req:.0f} "
                  f"us/req  CPU of {ncpu} cores: {split}")
        r_batch, r_ort = b.infer_s / u.infer_s, b.infer_s / ort_b
        print(f"  [{i}] in-process ONNX Runtime at batch {batch}: {ort_b:,.0f} infer/s")
        print(f"  [{i}] batched / unbatched = {r_batch:.2f}x (target >= 2: {'OK' if r_batch >= 2 else 'MISSED'});  "
              f"batched served / in-process ORT at batch {batch} = {r_ort:.2f} "
              f"(target >= 0.9: {'OK' if r_ort >= 0.9 else 'MISSED'})")
        rows.append({"batched": asdict(b), "unbatched": asdict(u), "ort_batch": batch, "ort_infer_s": ort_b,
                     "batched_over_unbatched": r_batch, "served_over_inprocess": r_ort})
    summary: dict[str, dict[str, float]] = {}
    for key, target in (("batched_over_unbatched", 2.0), ("served_over_inprocess", 0.9)):
        vals = sorted(float(r[key]) for r in rows)  # type: ignore[arg-type]
        summary[key] = {"median": statistics.median(vals), "min": vals[0], "max": vals[-1]}
        med = summary[key]["median"]
        print(f"  {key}: median {med:.2f} over {len(vals)} rounds (min {vals[0]:.2f}, max {vals[-1]:.2f}); "
              f"target {target:g}: {'OK' if med >= target else 'MISSED'}")
    return {"cores": ncpu, "loadgen_ceiling_req_s": ceiling, "loadgen_ceiling_cpu_us": ceiling_cpu,
            "ort_batch1_infer_s": ort_1, "rounds": rows, "summary": summary, "config": cfg}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=("deploy", "throughput"))
    ap.add_argument("--duration", type=float, default=3.0, help="seconds per load phase (default 3)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="batched/unbatched/in-process rounds, interleaved; ratios are their median (default 3)")
    ap.add_argument("--deploy-runs", type=int, default=3, help="deploys to measure, side by side (default 3)")
    ap.add_argument("--compare", type=Path, metavar="DIR",
                    help="also measure the deployer package in DIR (e.g. `git archive HEAD deployer | tar -x -C DIR`), "
                         "runs interleaved with this checkout's")
    ap.add_argument("--fast-exit", action="store_true",
                    help="what-if: end the CLI with os._exit after flushing (a change proposed for deployer/cli.py)")
    ap.add_argument("--json", type=Path, help="write the numbers here")
    ap.add_argument("--hidden", type=int, default=HIDDEN, help=f"MLP hidden width (default {HIDDEN})")
    ap.add_argument("--backend", type=Path, help="diagnostic: serve with this copy of the Python ORT backend")
    ap.add_argument("--ort-threads", type=int, default=0, help="in-process baseline intra-op threads (0 = ORT default)")
    ap.add_argument("--ort-no-spin", action="store_true", help="in-process baseline without spinning workers")
    args = ap.parse_args()
    out: dict[str, Any] = {"machine": {"cores": os.cpu_count(), "loadavg_start": os.getloadavg()}}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_serving_") as tmp:
        if args.only in (None, "deploy"):
            sources = (None,) if args.compare is None else (args.compare, None)
            out["deploy"] = bench_deploy(Path(tmp), max(1, args.deploy_runs), sources, args.fast_exit)
        if args.only in (None, "throughput"):
            out["throughput"] = bench_throughput(Path(tmp), args.duration, max(1, args.rounds), args.ort_threads,
                                                 not args.ort_no_spin, args.backend, args.hidden)
    out["machine"]["loadavg_end"] = os.getloadavg()
    print(f"\nload average before/after: {out['machine']['loadavg_start'][0]:.2f} / "
          f"{out['machine']['loadavg_end'][0]:.2f} (other work on the box skews everything); "
          f"total {time.perf_counter() - t0:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
