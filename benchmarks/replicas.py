"""Throughput with 1, 2 and 3 local Triton replicas behind deployer's nginx balancer, in one run.

    python benchmarks/replicas.py [--duration 5] [--json FILE]

The same tiny python-backend model (y = 2x, instance count 1 per replica) is served by a fleet of N
replicas (deployer.fleet, real nginx in front, every replica on one shared repository); load is
`run_http_load` at concurrency 16 through the balancer's HTTP port. Ratios are against N = 1 measured
in the same run. On a machine with fewer free cores than replicas + nginx + the load generator it
cannot scale (2 cores here, shared): the numbers are printed anyway and say so; the benchmark is for
where the cores allow.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
CONCURRENCY = 16

MODEL = '''import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "x").as_numpy()
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("y", (x * 2).astype(np.float32))]))
        return out
'''


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind((HOST, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def write_spec(d: Path, replicas: int) -> Path:
    (d / "double.py").write_text(MODEL)
    http, grpc, metrics = free_ports(3)
    spec = d / f"replicas{replicas}.yaml"
    spec.write_text(f"""repository: repo
server: {{runtime: local, replicas: {replicas}, http_port: {http}, grpc_port: {grpc}, metrics_port: {metrics},
         startup_timeout: 120}}
models:
  - name: double
    source: double.py
    backend: python
    max_batch_size: 8
    instance_group: [{{kind: CPU, count: 1}}]
    inputs: [{{name: x, dtype: FP32, dims: [16]}}]
    outputs: [{{name: y, dtype: FP32, dims: [16]}}]
""")
    return spec


def measure(d: Path, replicas: int, duration: float) -> dict[str, float]:
    import deployer
    from deployer.fleet import from_spec as fleet
    from deployer.smoke.load.httpload import build_http_request, run_http_load

    dep = deployer.load_deployment(write_spec(d, replicas))
    deployer.publish(dep)
    st = fleet.up(dep)  # the fleet path also for N = 1: the same balancer hop in every row
    try:
        b = st.balancer
        req = build_http_request(b.http_url, "double", {"x": np.ones((1, 16), np.float32)}, ("y",))
        run_http_load(HOST, b.http_port, req, concurrency=CONCURRENCY, duration_s=0.5, warmup_requests=32)
        res = run_http_load(HOST, b.http_port, req, concurrency=CONCURRENCY, duration_s=duration, warmup_requests=0)
        if res.errors:
            raise RuntimeError(f"{res.errors} failed requests with {replicas} replicas: {res.first_error}")
        return {"replicas": replicas, "infer_per_s": res.requests_per_s, "requests": res.requests}
    finally:
        fleet.down(dep)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-replicas-") as tmp:
        for n in (1, 2, 3):
            rows.append(measure(Path(tmp), n, args.duration))
    base = rows[0]["infer_per_s"]
    cores = len(os.sched_getaffinity(0))
    print(f"throughput behind nginx, concurrency {CONCURRENCY}, {cores} cores visible (shared with whatever runs)")
    for r in rows:
        ratio = r["infer_per_s"] / base
        print(f"  {int(r['replicas'])} replica(s): {r['infer_per_s']:8.0f} infer/s  x{ratio:.2f} vs 1 replica")
    if cores < 4:
        print(f"note: {cores} cores cannot run 3 replicas, nginx and the load generator side by side: no scaling "
              "is expected here; run it where the cores allow")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
