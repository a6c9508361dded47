"""`measure`: one trusted load measurement against a Triton model (the tuner's instrument).

Closed loop keeps `concurrency` requests in flight; open loop sends at a fixed rate (constant or
Poisson) whatever the server does, and measures each latency from the request's *intended* send time:
a request that waits for a free connection or a late scheduler tick is charged that wait, so queueing
above capacity shows up (no coordinated omission). After `warmup_s`, windows of `window_s` repeat until
the last three agree within ±`stability` in throughput and p99 (perf_analyzer's rule) or `max_windows`;
the result covers those last windows and says whether they were stable. Over HTTP, requests are
pre-built binary KServe v2 requests on raw keep-alive sockets (`httpload`): ~40-50 us of client CPU
each; over gRPC (`load.protocol: grpc`, needs the server's gRPC URL), one pre-serialized
`ModelInferRequest` per `ModelStreamInfer` stream in flight (`grpcload`), about 2-3x that CPU. Both run
on the same recorder, schedule and windows, so the two protocols are measured by the same rules.
"""

from __future__ import annotations

import asyncio
import collections
import selectors
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy.typing as npt

from deployer.errors import EnvironmentProblem, UserError
from deployer.smoke.load.grpcload import GrpcSlots
from deployer.smoke.load.httpload import Slot, _Conn, build_http_request
from deployer.smoke.load.loadgen import build_request, percentile, run_async
from deployer.smoke.load.stats import ServerBreakdown, StatsSnapshot, breakdown, fetch_stats, stats_url
from deployer.smoke.load.windows import Window, arrivals, is_stable, stable_tail

__all__ = ["MAX_RATE", "LoadSpec", "Measurement", "ServerBreakdown", "measure"]


MAX_RATE = 100_000.0  # req/s: far beyond what one Python client sends (~20k/s); a typo, not a load


@dataclass(frozen=True)
class LoadSpec:
    """What load to offer and how long to measure it.

    Closed loop: `concurrency` clients, each sending its next request when the previous answers.
    Open loop: `rate` requests/s, evenly spaced (`arrival="constant"`) or a Poisson process
    (`"poisson"`, seeded by `seed`), over up to `open_connections` sockets; a request due while every
    socket is busy waits for one, and that wait is part of its latency. After `warmup_s`, windows of
    `window_s` are measured until the last 3 agree within ±`stability` in throughput and p99, or
    `max_windows` were measured.
    """

    mode: Literal["closed", "open"] = "closed"
    concurrency: int = 8
    rate: float | None = None
    arrival: Literal["constant", "poisson"] = "constant"
    warmup_s: float = 1.0
    window_s: float = 2.0
    max_windows: int = 6
    stability: float = 0.10
    protocol: Literal["http", "grpc"] = "http"
    open_connections: int = 64
    seed: int = 0


@dataclass(frozen=True)
class Measurement:
    """One measurement, over the last (up to 3) windows: stable or not, it is reported.

    Latencies are client-side, in ms; in open loop from each request's intended send time.
    `send_lag_*` is how late the generator itself sent (open loop; 0 in closed loop): large values
    mean the client, not the server, was the bottleneck (or all sockets were busy). `breakdown` is
    Triton's own account of the same windows (None with `stats=False`). `errors` counts failed
    requests, plus requests still unanswered one timeout after the end; `first_error` says why.
    """

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
    first_error: str = ""
    client_cpu_s: float = 0.0
    send_lag_p50_ms: float = 0.0
    send_lag_p99_ms: float = 0.0
    offered_rps: float | None = None  # open loop: the arrival rate offered (None in closed loop)


class _Recorder:
    """The slot driver for both loops and both protocols: records (completion time, latency), refills slots."""

    def __init__(self, request: bytes, open_loop: bool) -> None:
        self.request = request
        self.open_loop = open_loop
        self.done_at: list[float] = []
        self.latency_ms: list[float] = []
        self.error_at: list[float] = []
        self.first_error = ""
        self.sending = True
        self.idle: list[Slot] = []
        self.backlog: collections.deque[float] = collections.deque()  # intended times waiting for a socket
        self.in_flight = 0
        self.lag_ms: list[float] = []  # open loop: actual send - intended send

    def dispatch(self, conn: Slot, intended: float | None) -> None:
        self.in_flight += 1
        conn.send()
        if intended is not None:
            self.lag_ms.append((conn.t0 - intended) * 1000.0)
            conn.t0 = intended  # latency counts from when the request was due, not when it left

    def done(self, conn: Slot, seconds: float, error: str) -> None:
        now = conn.t0 + seconds  # the completion time the slot just read, not a second clock call
        self.in_flight -= 1
        if error:
            self._error(now, error)
        else:
            self.done_at.append(now)
            self.latency_ms.append(seconds * 1000.0)
        self._next(conn)

    def lost(self, conn: Slot, error: str) -> None:
        self.in_flight -= 1
        self._error(time.perf_counter(), error)

    def _error(self, now: float, error: str) -> None:
        self.error_at.append(now)
        self.first_error = self.first_error or error

    def _next(self, conn: Slot) -> None:
        if not self.sending:
            return
        if not self.open_loop:
            self.dispatch(conn, None)
        elif self.backlog:
            self.dispatch(conn, self.backlog.popleft())
        else:
            self.idle.append(conn)

    def due(self, intended: float) -> None:
        if self.idle:
            self.dispatch(self.idle.pop(), intended)
        else:
            self.backlog.append(intended)


def _window(rec: _Recorder, lo: int, hi: int, t0: float, t1: float) -> Window:
    lat = sorted(rec.latency_ms[lo:hi])
    errors = sum(1 for t in rec.error_at if t0 <= t < t1)
    return Window(t1 - t0, tuple(lat), errors)


# A timer sleep wakes up late (on this 2-vCPU VM ~0.2 ms at p50: the idle vCPU halts and must be woken),
# and the lag counts into open-loop latency. So the last stretch before each send is polled instead:
# the loop keeps reading responses (select with no timeout) while it waits. Bounded to a share of the
# time between sends so a high rate does not turn into a busy loop that takes the server's CPU.
_SPIN_S = 0.0005
_SPIN_SHARE = 0.1


async def _schedule(rec: _Recorder, rate: float, arrival: str, seed: int, start: float) -> None:
    """Hand each request to the recorder when it is due. Everything due by now goes out in one tick
    (a late tick never shifts the schedule), then the loop yields so responses are read even when
    the client cannot keep up."""
    offsets = arrivals(rate, arrival, seed)
    due = start + next(offsets)
    spin = min(_SPIN_S, _SPIN_SHARE / rate)
    while rec.sending:
        now = time.perf_counter()
        if due - now > spin:
            await asyncio.sleep(due - now - spin)
            continue
        if due > now:
            await asyncio.sleep(0)  # see _SPIN_S
            continue
        while due <= now and rec.sending:
            rec.due(due)
            due = start + next(offsets)
        await asyncio.sleep(0)


class _Target:
    """Where and how to send: the HTTP host/port or the gRPC URL, and the pre-built request."""

    def __init__(self, protocol: str, host: str, port: int, grpc_url: str, request: bytes) -> None:
        self.protocol, self.host, self.port, self.grpc_url, self.request = protocol, host, port, grpc_url, request


async def _open_slots(target: _Target, rec: _Recorder, n: int, timeout_s: float, stream_s: float) -> tuple[
    list[Slot], list[_Conn], GrpcSlots | None
]:
    """`n` slots: keep-alive sockets for HTTP, streams on one channel for gRPC (closed by the caller)."""
    if target.protocol == "grpc":
        grpc = GrpcSlots(target.grpc_url, rec, n, stream_s)
        return list(await grpc.open(timeout_s)), [], grpc
    loop = asyncio.get_running_loop()
    conns: list[_Conn] = []
    try:
        for _ in range(n):
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: _Conn(rec), target.host, target.port), timeout_s
            )
            conns.append(conn)
    except (OSError, asyncio.TimeoutError) as exc:
        for c in conns:
            if c.transport is not None:
                c.transport.close()
        raise EnvironmentProblem(f"cannot connect to {target.host}:{target.port}: {exc}") from exc
    return list(conns), conns, None


async def _measure(
    target: _Target, load: LoadSpec, url: str | None, timeout_s: float
) -> tuple[list[Window], bool, ServerBreakdown | None, _Recorder, float, int]:
    loop = asyncio.get_running_loop()
    rec = _Recorder(target.request, load.mode == "open")
    n_conns = load.open_connections if load.mode == "open" else load.concurrency
    # a stream outlives the whole measurement; its deadline only bounds a server that never answers
    stream_s = load.warmup_s + load.window_s * load.max_windows + 3 * timeout_s
    conns: list[_Conn] = []
    grpc: GrpcSlots | None = None
    scheduler: asyncio.Task[None] | None = None
    try:
        slots, conns, grpc = await _open_slots(target, rec, n_conns, timeout_s, stream_s)
        cpu0, start = time.process_time(), time.perf_counter()
        if load.mode == "closed":
            for c in slots:
                rec.dispatch(c, None)
        else:
            rec.idle = list(slots)
            scheduler = asyncio.create_task(_schedule(rec, float(load.rate or 0), load.arrival, load.seed, start))
        await asyncio.sleep(load.warmup_s)
        snaps: list[StatsSnapshot | None] = []

        async def snapshot() -> None:
            if url is not None:
                snaps.append(await loop.run_in_executor(None, fetch_stats, url, timeout_s))

        await snapshot()
        rec.lag_ms.clear()  # the lag of warm-up sends is not part of the measurement
        windows: list[Window] = []
        t0, i0 = time.perf_counter(), len(rec.done_at)
        stable = False
        while len(windows) < load.max_windows and not stable:
            await asyncio.sleep(max(0.0, t0 + load.window_s - time.perf_counter()))
            t1, i1 = time.perf_counter(), len(rec.done_at)
            windows.append(_window(rec, i0, i1, t0, t1))
            await snapshot()
            t0, i0 = t1, i1
            stable = is_stable(windows, load.stability)
        rec.sending = False
        cpu = time.process_time() - cpu0
        server = None
        if url is not None:
            first = len(windows) - len(stable_tail(windows))
            before, after = snaps[first], snaps[-1]
            server = breakdown(before, after) if before is not None and after is not None else None
        # let the requests in flight finish (bounded) so the server is quiet for the next measurement
        deadline = time.perf_counter() + timeout_s
        while rec.in_flight > 0 and time.perf_counter() < deadline:
            await asyncio.sleep(0.005)
        return windows, stable, server, rec, cpu, rec.in_flight
    finally:
        rec.sending = False
        if scheduler is not None:
            scheduler.cancel()
        for c in conns:
            if c.transport is not None:
                c.transport.close()
        if grpc is not None:
            await grpc.close()


def _host_port(http_url: str) -> tuple[str, int]:
    parsed = urllib.parse.urlsplit(http_url if "://" in http_url else f"http://{http_url}")
    if parsed.hostname is None or parsed.port is None:
        raise UserError(f"HTTP URL {http_url!r} needs a host and a port (e.g. http://127.0.0.1:8000)")
    return parsed.hostname, parsed.port


def _grpc_target(grpc_url: str) -> str:
    # grpc takes host:port; accept the http-style URL users pass elsewhere (grpc://host:port)
    return grpc_url.split("://", 1)[1] if "://" in grpc_url else grpc_url


def _check(load: LoadSpec, grpc_url: str | None) -> None:
    if load.protocol not in ("http", "grpc"):
        raise UserError(f"load protocol must be 'http' or 'grpc', got {load.protocol!r}")
    if load.protocol == "grpc" and not grpc_url:
        raise UserError("gRPC load needs the server's gRPC URL (host:port)")
    if load.mode not in ("closed", "open"):
        raise UserError(f"load mode must be 'closed' or 'open', got {load.mode!r}")
    if load.mode == "open":
        if not (load.rate and 0 < load.rate <= MAX_RATE):
            raise UserError(f"open-loop load needs a rate in (0, {MAX_RATE:g}] requests/s, got {load.rate}")
        if load.arrival not in ("constant", "poisson"):
            raise UserError(f"arrival must be 'constant' or 'poisson', got {load.arrival!r}")
        if load.open_connections < 1:
            raise UserError("open-loop load needs open_connections >= 1")
    if load.mode == "closed" and load.concurrency < 1:
        raise UserError("closed-loop load needs concurrency >= 1")
    if load.window_s <= 0 or load.max_windows < 1 or load.warmup_s < 0:
        raise UserError("load windows: window_s > 0, max_windows >= 1, warmup_s >= 0")
    if not 0 < load.stability < 1:
        raise UserError(f"stability is a fraction in (0, 1) (0.1 = ±10 %), got {load.stability}")


def _precise_loop() -> asyncio.AbstractEventLoop:
    # epoll rounds timeouts up to whole milliseconds, which would send open-loop requests up to 1 ms
    # late and charge it to their latency; select() takes microseconds, and we watch < 100 sockets.
    return asyncio.SelectorEventLoop(selectors.SelectSelector())


def measure(
    http_url: str,
    model: str,
    inputs: Mapping[str, npt.NDArray[Any]],
    load: LoadSpec,
    *,
    grpc_url: str | None = None,
    version: str | None = None,
    timeout_s: float = 30.0,
    stats: bool = True,
) -> Measurement:
    """Measure `model` under `load` (see the module doc). `stats=False` skips the server breakdown
    (for endpoints that are not Triton, e.g. a test server)."""
    _check(load, grpc_url)
    host, port = _host_port(http_url)
    if load.protocol == "grpc":
        request = build_request(model, inputs, version=version or "").SerializeToString()
    else:
        request = build_http_request(f"{host}:{port}", model, inputs, version=version or "")
    target = _Target(load.protocol, host, port, _grpc_target(grpc_url or ""), request)
    url = stats_url(http_url, model, version) if stats else None
    windows, stable, server, rec, cpu, pending = run_async(
        _measure(target, load, url, timeout_s), _precise_loop if load.mode == "open" else None
    )
    first_error = rec.first_error or (f"{pending} requests unanswered {timeout_s:g} s after the end" if pending else "")
    lag = sorted(rec.lag_ms)
    tail = stable_tail(windows)
    lat = sorted(x for w in tail for x in w.latencies_ms)
    span = sum(w.duration_s for w in tail)
    return Measurement(
        throughput_rps=len(lat) / span if span > 0 else 0.0,
        p50_ms=percentile(lat, 50),
        p90_ms=percentile(lat, 90),
        p95_ms=percentile(lat, 95),
        p99_ms=percentile(lat, 99),
        requests=len(lat),
        errors=sum(w.errors for w in tail) + pending,
        stable=stable,
        windows=len(windows),
        breakdown=server,
        first_error=first_error,
        client_cpu_s=cpu,
        send_lag_p50_ms=percentile(lag, 50) if lag else 0.0,
        send_lag_p99_ms=percentile(lag, 99) if lag else 0.0,
        offered_rps=float(load.rate) if load.mode == "open" and load.rate else None,
    )
