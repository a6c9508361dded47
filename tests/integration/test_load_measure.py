"""`measure` against a real tritonserver serving the quickstart classifier: the server breakdown is
Triton's, and the open loop is honest (queueing shown above capacity, closed-loop p50 below it).

Thresholds are generous on purpose (2 shared cores): the benchmark benchmarks/loadgen_vs_wrk.py
prints the tight ratios; this test catches a generator that hides queueing or misreports latency."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from deployer import Pipeline
from deployer.smoke.load import LoadSpec, measure

ROOT = Path(__file__).resolve().parents[2]
FEEDS = {"features": np.random.default_rng(0).random((1, 16), dtype=np.float32)}

pytestmark = [pytest.mark.triton, pytest.mark.slow]


@pytest.fixture(scope="module")
def urls(tmp_path_factory: pytest.TempPathFactory, find_free_ports: Callable[..., list[int]]) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("measure")
    shutil.copy(ROOT / "examples" / "quickstart" / "classifier.onnx", tmp / "classifier.onnx")
    http, grpc, metrics = find_free_ports(3)
    spec = tmp / "deployer.yaml"
    spec.write_text(
        f"""repository: repo
server: {{runtime: local, http_port: {http}, grpc_port: {grpc}, metrics_port: {metrics}, startup_timeout: 120}}
models:
  - name: classifier
    source: classifier.onnx
    max_batch_size: 16
    dynamic_batching: {{preferred_batch_size: [8, 16], max_queue_delay_microseconds: 2000}}
"""
    )
    p = Pipeline.load(spec)
    p.publish()
    state = p.up()
    try:
        yield f"http://{state.host}:{state.http_port}", f"{state.host}:{state.grpc_port}"
    finally:
        p.down()


@pytest.fixture(scope="module")
def url(urls: tuple[str, str]) -> str:
    return urls[0]


def test_closed_loop_with_the_server_breakdown(url: str) -> None:
    m = measure(url, "classifier", FEEDS, LoadSpec(concurrency=16, warmup_s=0.5, window_s=1.0, max_windows=4),
                version="1")
    assert m.errors == 0 and m.requests > 0 and 1 <= m.windows <= 4
    assert 0 < m.p50_ms <= m.p90_ms <= m.p95_ms <= m.p99_ms
    b = m.breakdown
    assert b is not None
    # the server counted about what we measured over the same windows (edges differ by in-flight requests)
    assert b.requests == pytest.approx(m.requests, rel=0.3)
    assert b.avg_batch_size > 1.0 and b.executions < b.requests  # 16 clients, a dynamic batcher
    assert b.compute_infer_us > 0 and b.queue_us > 0


def test_open_loop_shows_queueing_above_capacity_and_agrees_below(url: str) -> None:
    closed = measure(url, "classifier", FEEDS, LoadSpec(concurrency=16, warmup_s=0.5, window_s=1.0, max_windows=3))
    capacity = closed.throughput_rps
    assert closed.errors == 0 and capacity > 0
    rate = max(4.0 * capacity, 30_000.0)
    over = [
        measure(url, "classifier", FEEDS,
                LoadSpec(mode="open", rate=rate, warmup_s=0.0, window_s=seconds, max_windows=1))
        for seconds in (1.0, 3.0)
    ]
    assert all(o.errors == 0 for o in over)
    # The offered rate must stay above what server and client manage together whatever the machine does:
    # a closed loop of 16 is no bound for 64 open sockets (under a CPU hog: 3.4k/s closed, then 11.4k/s
    # served open), and a loaded machine's capacity swings 2x. 30k/s is above anything seen on 2 cores
    # (~16.5k/s), so the backlog (in the server or in the generator's own send queue: both count from the
    # intended send time) grows all run long, and a 3x longer run has a clearly larger p99.
    assert all(o.throughput_rps < 0.8 * o.offered_rps for o in over), [(o.throughput_rps, o.offered_rps) for o in over]
    assert over[1].p99_ms > 1.3 * over[0].p99_ms, [o.p99_ms for o in over]
    assert over[0].p99_ms > 3 * closed.p99_ms

    low = measure(url, "classifier", FEEDS, LoadSpec(concurrency=2, warmup_s=0.5, window_s=1.0, max_windows=3))
    opened = measure(url, "classifier", FEEDS,
                     LoadSpec(mode="open", rate=low.throughput_rps, warmup_s=0.5, window_s=1.0, max_windows=3))
    assert opened.errors == 0
    assert opened.throughput_rps == pytest.approx(low.throughput_rps, rel=0.25)
    # below capacity nothing queues in the server; what a CPU-starved generator adds by sending late is
    # its own lag, which it measures and reports (send_lag_*): without it the two loops agree
    server_p50 = opened.p50_ms - opened.send_lag_p50_ms
    assert 0.5 < server_p50 / low.p50_ms < 2.0, (opened.p50_ms, opened.send_lag_p50_ms, low.p50_ms)


@pytest.mark.parametrize("mode", ["closed", "open"])
def test_grpc_load_on_streams_is_counted_by_the_server_too(urls: tuple[str, str], mode: str) -> None:
    http, grpc = urls
    load = (LoadSpec(concurrency=8, protocol="grpc", warmup_s=0.5, window_s=1.0, max_windows=4) if mode == "closed"
            else LoadSpec(mode="open", rate=400.0, protocol="grpc", warmup_s=0.5, window_s=1.0, max_windows=4))
    m = measure(http, "classifier", FEEDS, load, grpc_url=grpc, version="1")
    assert m.errors == 0 and m.requests > 0, m.first_error
    assert 0 < m.p50_ms <= m.p99_ms
    b = m.breakdown
    assert b is not None
    # Triton saw these requests (over gRPC: the HTTP endpoint was only asked for statistics)
    assert b.requests == pytest.approx(m.requests, rel=0.3)
    if mode == "open":
        assert m.offered_rps == 400.0 and m.throughput_rps == pytest.approx(400.0, rel=0.2)
    else:
        assert b.avg_batch_size > 1.0  # 8 streams in flight meet in the batcher


def test_grpc_errors_are_counted_with_the_servers_reason(urls: tuple[str, str]) -> None:
    http, grpc = urls
    m = measure(http, "no_such_model", FEEDS, LoadSpec(concurrency=2, protocol="grpc", warmup_s=0.1, window_s=0.3,
                                                       max_windows=1), grpc_url=grpc, stats=False)
    assert m.requests == 0 and m.errors > 0
    assert "no_such_model" in m.first_error
