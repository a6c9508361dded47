"""`measure` against a slow HTTP server written here (serial, fixed service time): open-loop latency
counts from the intended send time, so above capacity it shows the queue; below, it is the service time.
The server is a test double for *our* generator's timing, not for Triton."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from deployer.errors import EnvironmentProblem, UserError
from deployer.smoke.load import LoadSpec, measure

SERVICE_S = 0.01  # one request at a time: capacity 100 req/s
FEEDS = {"x": np.zeros((1, 4), np.float32)}


class _Slow(socketserver.BaseRequestHandler):
    lock = threading.Lock()

    def handle(self) -> None:
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                chunk = self.request.recv(65536)
                if not chunk:
                    return
                buf += chunk
            head, _, rest = buf.partition(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            length = next(int(h.split(b":")[1]) for h in lines if h.lower().startswith(b"content-length:"))
            while len(rest) < length:
                rest += self.request.recv(65536)
            buf = rest[length:]
            with self.lock:  # serial service: the capacity is 1 / SERVICE_S whatever the connections
                time.sleep(SERVICE_S)
            self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")


@pytest.fixture(scope="module")
def slow_url() -> Iterator[str]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Slow)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_closed_loop_one_client_sees_the_service_time(slow_url: str) -> None:
    m = measure(slow_url, "m", FEEDS, LoadSpec(concurrency=1, warmup_s=0.2, window_s=0.5, max_windows=3), stats=False)
    assert m.errors == 0 and m.requests > 10 and m.breakdown is None
    assert SERVICE_S * 1000 * 0.9 <= m.p50_ms < SERVICE_S * 1000 * 5
    assert m.throughput_rps <= 1 / SERVICE_S * 1.05


def test_open_loop_above_capacity_charges_the_queue(slow_url: str) -> None:
    # 2x capacity for 1 s: the k-th request is due at k/200 s but served at (k+1)/100 s, so latency
    # measured from the intended time grows to ~0.5 s; from the send time it would stay ~10 ms.
    load = LoadSpec(mode="open", rate=2 / SERVICE_S, warmup_s=0.0, window_s=1.0, max_windows=1)
    m = measure(slow_url, "m", FEEDS, load, stats=False)
    assert m.errors == 0 and m.requests > 20
    assert m.throughput_rps <= 1 / SERVICE_S * 1.05  # the server's capacity, not the offered rate
    assert m.p99_ms > 20 * SERVICE_S * 1000  # > 200 ms of queueing shown
    assert m.p50_ms > 5 * SERVICE_S * 1000
    assert not m.stable and m.windows == 1  # a single window is never called stable


def test_open_loop_below_capacity_sees_the_service_time(slow_url: str) -> None:
    load = LoadSpec(mode="open", rate=0.3 / SERVICE_S, arrival="poisson", warmup_s=0.2, window_s=1.0, max_windows=2)
    m = measure(slow_url, "m", FEEDS, load, stats=False)
    assert m.errors == 0
    assert m.throughput_rps == pytest.approx(0.3 / SERVICE_S, rel=0.5)
    assert SERVICE_S * 1000 * 0.9 <= m.p50_ms < SERVICE_S * 1000 * 5


def test_bad_loads_and_unreachable_servers_are_typed_errors() -> None:
    with pytest.raises(UserError, match="rate"):
        measure("http://127.0.0.1:1", "m", FEEDS, LoadSpec(mode="open"))
    with pytest.raises(UserError, match="gRPC URL"):
        measure("http://127.0.0.1:1", "m", FEEDS, LoadSpec(protocol="grpc"))
    with pytest.raises(UserError, match="port"):
        measure("http://localhost", "m", FEEDS, LoadSpec())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(EnvironmentProblem, match="cannot connect"):
        measure(f"http://127.0.0.1:{port}", "m", FEEDS, LoadSpec(warmup_s=0, window_s=0.1, max_windows=1))
    # nothing listens on the gRPC port either: a bounded wait, then an environment error
    start = time.perf_counter()
    with pytest.raises(EnvironmentProblem, match="cannot connect to gRPC"):
        measure("http://127.0.0.1:1", "m", FEEDS, LoadSpec(protocol="grpc", warmup_s=0, window_s=0.1, max_windows=1),
                grpc_url=f"127.0.0.1:{port}", timeout_s=1.0)
    assert time.perf_counter() - start < 10


def test_out_of_range_loads_are_refused_before_any_connection() -> None:
    for load, match in (
        (LoadSpec(mode="open", rate=1e9), "rate"),
        (LoadSpec(stability=0.0), "stability"),
        (LoadSpec(mode="open", rate=10.0, open_connections=0), "open_connections"),
        (LoadSpec(concurrency=0), "concurrency"),
    ):
        with pytest.raises(UserError, match=match):
            measure("http://127.0.0.1:1", "m", FEEDS, load)


def test_a_rate_the_client_cannot_keep_up_with_ends_on_time_and_shows_the_lag(slow_url: str) -> None:
    # 50,000 req/s at a 100 req/s server over 4 sockets: the scheduler must not starve the loop
    # (responses still read, the run ends), and the requests' wait for a socket is reported as send lag
    load = LoadSpec(mode="open", rate=50_000, warmup_s=0.0, window_s=0.5, max_windows=2, open_connections=4)
    t0 = time.perf_counter()
    m = measure(slow_url, "m", FEEDS, load, stats=False, timeout_s=5.0)
    assert time.perf_counter() - t0 < 10.0
    assert m.errors == 0 and m.requests > 5 and m.throughput_rps <= 1 / SERVICE_S * 1.05
    assert m.send_lag_p99_ms > 100  # waited for a socket, and that wait is in the latency too
    assert m.p99_ms >= m.send_lag_p99_ms * 0.9


def test_closed_loop_has_no_send_lag_and_a_non_triton_server_without_stats_is_an_environment_problem(
    slow_url: str,
) -> None:
    m = measure(slow_url, "m", FEEDS, LoadSpec(concurrency=1, warmup_s=0, window_s=0.2, max_windows=1), stats=False)
    assert (m.send_lag_p50_ms, m.send_lag_p99_ms) == (0.0, 0.0)
    with pytest.raises(EnvironmentProblem, match="statistics"):
        measure(slow_url, "m", FEEDS, LoadSpec(concurrency=1, warmup_s=0, window_s=0.2, max_windows=1))


def test_the_open_loop_polls_only_the_last_stretch_before_each_send(slow_url: str) -> None:
    # The scheduler polls (instead of sleeping) for at most 0.5 ms or a tenth of the gap before each
    # send, so at 50 req/s a whole busy loop (~1 CPU-second per second) would show up as process time.
    # Few sockets: the server here is threads in this process, and 64 would cost seconds to accept.
    load = LoadSpec(mode="open", rate=50.0, warmup_s=0.0, window_s=1.0, max_windows=2, open_connections=4)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    m = measure(slow_url, "m", FEEDS, load, stats=False)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    assert m.errors == 0 and m.requests >= 50
    assert wall > 1.5 and cpu < 0.35 * wall
    assert m.send_lag_p50_ms < 5.0
