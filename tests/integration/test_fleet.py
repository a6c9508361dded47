"""`server.replicas: 3` on real parts: three local tritonservers on one shared repository, real nginx
in front (HTTP and gRPC), smoke through the balancer and per replica, load spread over all three
(Triton's statistics extension), and a replica SIGKILLed under load with 0 failed requests."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from deployer import Pipeline
from deployer.fleet import from_spec as fleet
from deployer.fleet.run import FleetStatus

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "examples" / "quickstart"

pytestmark = [pytest.mark.triton, pytest.mark.slow,
              pytest.mark.skipif(shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists(),
                                 reason="nginx missing (apt-get install -y nginx-light)")]


def _spec(tmp_path: Path, ports: list[int]) -> Path:
    shutil.copy(QUICKSTART / "classifier.onnx", tmp_path / "classifier.onnx")
    http, grpc, metrics = ports
    spec = tmp_path / "deployer.yaml"
    # instance count 1 and no batching delay: three replicas on a loaded 2-core machine stay cheap
    spec.write_text(
        f"""repository: repo
server: {{runtime: local, replicas: 3, http_port: {http}, grpc_port: {grpc}, metrics_port: {metrics},
         startup_timeout: 120}}
smoke: {{concurrency: 4, duration: 0.3, batching_requests: 16}}
models:
  - name: classifier
    source: classifier.onnx
    max_batch_size: 8
    instance_group: [{{kind: CPU, count: 1}}]
"""
    )
    return spec


def _infer_count(http_url: str, model: str) -> int:
    import tritonclient.http as httpclient

    c = httpclient.InferenceServerClient(http_url)
    try:
        stats = c.get_inference_statistics(model)
    finally:
        c.close()
    return sum(int(m["inference_stats"]["success"]["count"]) for m in stats["model_stats"])


class _Load:
    """`concurrency` client threads sending inference through `url` until stopped; counts failures."""

    def __init__(self, url: str, model: str, inp: tuple[str, list[int]], concurrency: int) -> None:
        self.url, self.model, (self.input, self.shape) = url, model, inp
        self.ok = 0
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(concurrency)]

    def _run(self) -> None:
        import tritonclient.http as httpclient

        c = httpclient.InferenceServerClient(self.url, network_timeout=30.0)
        x = np.random.default_rng(0).standard_normal(self.shape).astype(np.float32)
        inp = httpclient.InferInput(self.input, self.shape, "FP32")
        inp.set_data_from_numpy(x)
        while not self._stop.is_set():
            try:
                c.infer(self.model, [inp])
                with self._lock:
                    self.ok += 1
            except Exception as exc:  # every failure is the test's finding
                with self._lock:
                    self.failed.append(repr(exc))
        c.close()

    def __enter__(self) -> _Load:
        for t in self._threads:
            t.start()
        return self

    def wait_ok(self, n: int, deadline_s: float) -> None:
        deadline = time.monotonic() + deadline_s
        start = self.ok
        while self.ok - start < n:
            assert time.monotonic() < deadline, f"only {self.ok - start} of {n} requests within {deadline_s} s"
            time.sleep(0.05)

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60.0)


def _input(p: Pipeline) -> tuple[str, tuple[str, list[int]]]:
    m = p.deployment.models[0]
    i = m.config["input"][0]
    return m.name, (str(i["name"]), [1, *[int(d) for d in i["dims"]]])


def test_three_replicas_behind_nginx_spread_load_and_survive_a_sigkill(
    tmp_path: Path, find_free_ports: Callable[..., list[int]], processes_mentioning: Callable[[str], list[int]]
) -> None:
    p = Pipeline.load(_spec(tmp_path, find_free_ports(3)))
    result = p.deploy(keep=True)
    try:
        assert result.report.passed, [(s.model, c) for s in result.report.suites for c in s.checks
                                      if c.status == "fail"]
        suites = {s.model for s in result.report.suites}
        assert {"r0:classifier", "r1:classifier", "r2:classifier"} <= suites  # smoked per replica too
        st = fleet.current(p.deployment)
        assert len(st.replicas) == 3
        model, inp = _input(p)
        before = [_infer_count(r.http_url, model) for r in st.replicas]
        with _Load(st.balancer.http_url, model, inp, 16) as load:
            load.wait_ok(300, 120.0)
            after = [_infer_count(r.http_url, model) for r in st.replicas]
            spread = [a - b for a, b in zip(after, before, strict=True)]
            assert all(d > 0 for d in spread), f"per-replica inference counts {spread}: not spread over all 3"
            victim = st.replicas[1]
            assert victim.pid is not None
            os.kill(victim.pid, signal.SIGKILL)
            load.wait_ok(300, 120.0)  # served by the two left, retried where the kill caught a request
        assert load.failed == [], load.failed[:5]
        status = p.status()
        assert isinstance(status, FleetStatus) and status.balancer_running
        rows = dict(status.replicas)
        assert not rows["r1"].running and rows["r0"].ready and rows["r2"].ready
        assert not status.ready
    finally:
        p.down()
    assert processes_mentioning(str(tmp_path)) == []  # nginx and every tritonserver gone: no orphans
