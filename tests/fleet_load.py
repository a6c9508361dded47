"""Fleet tests' client side: per-replica inference counts and a continuous load that records every failure."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Load", "classifier_fleet_spec", "infer_count"]

QUICKSTART = Path(__file__).resolve().parents[1] / "examples" / "quickstart"


def infer_count(http_url: str, model: str) -> int:
    import tritonclient.http as httpclient

    c = httpclient.InferenceServerClient(http_url)
    try:
        stats = c.get_inference_statistics(model)
    finally:
        c.close()
    return sum(int(m["inference_stats"]["success"]["count"]) for m in stats["model_stats"])


class Load:
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

    def __enter__(self) -> Load:
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


def classifier_fleet_spec(tmp_path: Path, ports: list[int], *, repository: str = "repo", extra: str = "") -> Path:
    """A spec of 3 local replicas serving the quickstart classifier (instance count 1, no batching delay:
    three replicas on a loaded 2-core machine stay cheap); `extra` adds top-level lines."""
    shutil.copy(QUICKSTART / "classifier.onnx", tmp_path / "classifier.onnx")
    http, grpc, metrics = ports
    spec = tmp_path / "deployer.yaml"
    spec.write_text(
        f"""repository: {repository}
{extra}server: {{runtime: local, replicas: 3, http_port: {http}, grpc_port: {grpc}, metrics_port: {metrics},
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
