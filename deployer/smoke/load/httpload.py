"""The cheapest client we have: pre-built HTTP/1.1 binary-tensor requests over raw keep-alive sockets.

Per request the client writes one pre-built byte string and, in an `asyncio.Protocol` callback, waits
for one response (head plus Content-Length bytes); nothing is encoded, parsed as JSON or decoded, and
no coroutine is resumed per request. Measured here: ~40-50 us of client CPU per request, against
~300-400 us for gRPC's Python stack, which leaves the CPU to the server on a small box.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any, Protocol

import numpy.typing as npt

from deployer.dtypes import wire_dtype
from deployer.smoke.load.loadgen import LoadResult, run_async, to_wire_array

__all__ = ["Slot", "build_http_request", "run_http_load"]


def build_http_request(
    host: str,
    model: str,
    inputs: Mapping[str, npt.NDArray[Any]],
    outputs: tuple[str, ...] = (),
    *,
    version: str = "",
    dtypes: Mapping[str, str] | None = None,
) -> bytes:
    """A complete `POST v2/models/<m>[/versions/<v>]/infer` request with binary tensor data."""
    import tritonclient.http as httpclient

    infer_inputs = []
    for name, arr in inputs.items():
        canon = dtypes[name] if dtypes and name in dtypes else None
        dt = wire_dtype(canon) if canon else None
        ii = httpclient.InferInput(name, list(arr.shape), dt or _np_wire(arr))
        ii.set_data_from_numpy(to_wire_array(arr, canon) if canon else arr, binary_data=True)
        infer_inputs.append(ii)
    outs = [httpclient.InferRequestedOutput(o, binary_data=True) for o in outputs] or None
    body, json_size = httpclient.InferenceServerClient.generate_request_body(infer_inputs, outputs=outs)
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
    headers = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    if json_size is not None:  # absent when everything fits in the JSON header
        headers += ["Content-Type: application/octet-stream", f"Inference-Header-Content-Length: {json_size}"]
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + bytes(body)


def _np_wire(arr: npt.NDArray[Any]) -> str:
    from tritonclient.utils import np_to_triton_dtype

    return str(np_to_triton_dtype(arr.dtype))


class Slot(Protocol):
    """One request in flight at a time: an HTTP connection here, a gRPC stream in `grpcload`."""

    t0: float  # when the request in flight was sent (perf_counter); a driver may move it back

    def send(self) -> None: ...


class _Sink(Protocol):
    """What a connection reports to: `_Driver` here, `measure._Recorder` for windowed measurements."""

    request: bytes

    def done(self, conn: Slot, seconds: float, error: str) -> None: ...

    def lost(self, conn: Slot, error: str) -> None: ...


class _Conn(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight; parses only what it must."""

    def __init__(self, driver: _Sink) -> None:
        self.driver = driver
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.need = -1  # bytes of the current response (head + body) once its head is parsed
        self.status_ok = False
        self.t0 = 0.0
        self.busy = False
        # the same request gets the same response head: once a 200 head is parsed, recognise it by prefix
        self.ok_head = b""
        self.ok_need = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self) -> None:
        assert self.transport is not None
        self.busy = True
        self.t0 = time.perf_counter()
        self.transport.write(self.driver.request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while self.busy:
            if self.need < 0 and self.ok_head and self.buf.startswith(self.ok_head):
                self.need, self.status_ok = self.ok_need, True
            if self.need < 0:
                end_head = self.buf.find(b"\r\n\r\n")
                if end_head < 0:
                    return
                head = bytes(self.buf[: end_head + 4])
                # "\r\ncontent-length:" so that "Inference-Header-Content-Length:" does not match first
                i = head.lower().find(b"\r\ncontent-length:")
                if i < 0:
                    self._fail(f"response without Content-Length: {head[:200]!r}")
                    return
                self.need = end_head + 4 + int(head[i + 17 : head.index(b"\r\n", i + 2)])
                self.status_ok = head.startswith(b"HTTP/1.1 200")
                if self.status_ok:
                    self.ok_head, self.ok_need = head, self.need
            if len(self.buf) < self.need:
                return
            error = ""
            if not self.status_ok:
                head_end = self.buf.find(b"\r\n\r\n") + 4
                status = bytes(self.buf[: self.buf.find(b"\r\n")]).decode(errors="replace")
                error = f"{status}: {bytes(self.buf[head_end : self.need][:300]).decode(errors='replace')}"
            del self.buf[: self.need]
            self.need = -1
            self.busy = False
            self.driver.done(self, time.perf_counter() - self.t0, error)

    def _fail(self, error: str) -> None:
        self.busy = False
        if self.transport is not None:
            self.transport.close()
        self.driver.lost(self, error)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.busy:
            self.busy = False
            self.driver.lost(self, f"connection lost: {exc or 'closed by the server'}")


class _Driver:
    """Keeps every connection busy until the budget or the deadline runs out, recording latencies."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.latencies: list[float] = []
        self.errors = 0
        self.first_error = ""
        self.record = False
        self.budget = 0  # requests left to send; negative = unbounded
        self.deadline = 0.0
        self.idle: asyncio.Future[None] | None = None
        self.active = 0

    def start(self, conns: list[_Conn], budget: int, deadline: float, record: bool) -> asyncio.Future[None]:
        self.budget, self.deadline, self.record = budget, deadline, record
        self.idle = asyncio.get_running_loop().create_future()
        self.active = 0
        for c in conns:
            if self._may_send():
                self.active += 1
                c.send()
        if self.active == 0:
            self.idle.set_result(None)
        return self.idle

    def _may_send(self) -> bool:
        if self.budget == 0 or time.perf_counter() >= self.deadline:
            return False
        self.budget -= 1
        return True

    def done(self, conn: Slot, seconds: float, error: str) -> None:
        if error:
            self._error(error)
        elif self.record:
            self.latencies.append(seconds * 1000.0)
        if self._may_send():
            conn.send()
        else:
            self._finish_one()

    def lost(self, conn: Slot, error: str) -> None:
        self._error(error)
        self._finish_one()  # this slot is gone; the others carry on

    def _error(self, error: str) -> None:
        self.errors += 1
        if not self.first_error:
            self.first_error = error

    def _finish_one(self) -> None:
        self.active -= 1
        if self.active <= 0 and self.idle is not None and not self.idle.done():
            self.idle.set_result(None)


async def _http_load(
    host: str,
    port: int,
    request: bytes,
    concurrency: int,
    duration_s: float,
    max_requests: int | None,
    warmup_requests: int,
    timeout_s: float,
) -> tuple[list[float], int, str, float, float]:
    loop = asyncio.get_running_loop()
    driver = _Driver(request)
    conns: list[_Conn] = []
    try:
        for _ in range(concurrency):
            _, conn = await asyncio.wait_for(loop.create_connection(lambda: _Conn(driver), host, port), timeout_s)
            conns.append(conn)
    except (OSError, asyncio.TimeoutError) as exc:
        for c in conns:
            if c.transport is not None:
                c.transport.close()
        return [], 1, f"cannot connect to {host}:{port}: {exc}", 0.0, 0.0
    try:
        if warmup_requests > 0:
            idle = driver.start(conns, warmup_requests, time.perf_counter() + timeout_s, record=False)
            try:
                await asyncio.wait_for(idle, timeout_s + 1.0)
            except asyncio.TimeoutError:
                pending = sum(1 for c in conns if c.busy)
                return [], driver.errors + pending, f"warm-up requests timed out after {timeout_s:g} s", 0.0, 0.0
            if driver.errors >= warmup_requests:  # nothing works: don't hammer a broken endpoint
                return [], driver.errors, driver.first_error, 0.0, 0.0
            driver.errors, driver.first_error = 0, ""
        live = [c for c in conns if c.transport is not None and not c.transport.is_closing()]
        start, cpu0 = time.perf_counter(), time.process_time()
        idle = driver.start(live, -1 if max_requests is None else max_requests, start + duration_s, record=True)
        try:
            # bounded: requests still pending one timeout after the deadline count as errors
            await asyncio.wait_for(idle, duration_s + timeout_s)
        except asyncio.TimeoutError:
            pending = sum(1 for c in live if c.busy)
            driver.errors += pending
            driver.first_error = driver.first_error or f"{pending} requests timed out after {timeout_s:g} s"
        return (
            driver.latencies,
            driver.errors,
            driver.first_error,
            time.perf_counter() - start,
            time.process_time() - cpu0,
        )
    finally:
        for c in conns:
            if c.transport is not None:
                c.transport.close()


# Same load knobs as `loadgen.run_load` (duplicates: a same-shape signature): each is a public entry
# with its own transport-specific extras; the shared part is the LoadResult both return.
def run_http_load(
    host: str,
    port: int,
    request: bytes,
    *,
    concurrency: int = 16,
    duration_s: float = 5.0,
    max_requests: int | None = None,
    warmup_requests: int = 20,
    timeout_s: float = 30.0,
    batch_size: int = 1,
) -> LoadResult:
    """Like `loadgen.run_load`, over HTTP/1.1 keep-alive connections (one per in-flight request).

    `request` comes from `build_http_request`. Non-200 answers count as errors with the server's text.
    """
    lat, n_err, first, elapsed, cpu = run_async(
        _http_load(host, port, request, concurrency, duration_s, max_requests, warmup_requests, timeout_s)
    )
    lat.sort()
    return LoadResult(len(lat), n_err, first, elapsed, tuple(lat), concurrency, batch_size, cpu)
