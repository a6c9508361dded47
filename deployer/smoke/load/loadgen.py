"""gRPC load generation (asyncio, one pre-serialized request), the threaded baseline, latency math.

Why not `tritonclient.grpc.aio.InferenceServerClient.infer`: it rebuilds the request protobuf from
`InferInput`s and parses every response. Here the `ModelInferRequest` is serialized once and sent as
bytes, responses stay bytes, and `concurrency` calls are kept in flight. gRPC's Python stack still
costs ~350-420 us of client CPU per request on this kind of machine; `httpload` is ~5x cheaper.
Every run is bounded in time and count.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from deployer.dtypes import wire_dtype

__all__ = [
    "LoadResult",
    "build_request",
    "fire_concurrent",
    "percentile",
    "run_async",
    "run_load",
    "run_threaded_load",
    "to_wire_array",
]

T = TypeVar("T")
# Same limits tritonclient sets: large tensors must not hit gRPC's 4 MB default.
_MAX_MSG = 2**31 - 1
_MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
_STREAM_INFER = "/inference.GRPCInferenceService/ModelStreamInfer"
# ModelStreamInferResponse: field 1 (error_message, length-delimited) serializes first when set.
_STREAM_ERROR_TAG = b"\x0a"
_CHANNEL_OPTIONS = [("grpc.max_send_message_length", _MAX_MSG), ("grpc.max_receive_message_length", _MAX_MSG)]


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """q-th percentile (0..100) of ascending `sorted_values`, linear interpolation (numpy's default).

    Returns NaN for an empty sequence.
    """
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be in [0, 100], got {q}")
    n = len(sorted_values)
    if n == 0:
        return math.nan
    pos = (n - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    return float(sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac)


@dataclass(frozen=True)
class LoadResult:
    """What one load run measured. Latencies are per request, client side, in ms, ascending."""

    requests: int  # successful, measured requests
    errors: int
    first_error: str
    elapsed_s: float  # measured window (warm-up excluded)
    latencies_ms: tuple[float, ...]
    concurrency: int
    batch_size: int
    client_cpu_s: float = 0.0  # CPU time the load generator itself used (all its threads/processes)

    @property
    def client_cpu_us_per_request(self) -> float:
        """Client CPU microseconds per request: how cheap the generator is, independent of the server."""
        total = self.requests + self.errors
        return self.client_cpu_s * 1e6 / total if total else math.nan

    @property
    def requests_per_s(self) -> float:
        """Successful requests per second."""
        return self.requests / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def inferences_per_s(self) -> float:
        """Batch elements per second (requests/s x batch size)."""
        return self.requests_per_s * self.batch_size

    def p(self, q: float) -> float:
        """Latency percentile in ms."""
        return percentile(self.latencies_ms, q)

    def numbers(self) -> dict[str, float]:
        """Summary for reports: p50/p90/p99/mean/max latency, throughput, counts."""
        lat = self.latencies_ms
        return {
            "p50_ms": self.p(50),
            "p90_ms": self.p(90),
            "p99_ms": self.p(99),
            "mean_ms": (sum(lat) / len(lat)) if lat else math.nan,
            "max_ms": lat[-1] if lat else math.nan,
            "throughput_infer_s": self.inferences_per_s,
            "requests_s": self.requests_per_s,
            "requests": self.requests,
            "errors": self.errors,
            "concurrency": self.concurrency,
            "batch_size": self.batch_size,
            "elapsed_s": self.elapsed_s,
            "client_cpu_us_per_req": self.client_cpu_us_per_request,
        }


def build_request(
    model: str,
    inputs: Mapping[str, npt.NDArray[Any]],
    outputs: Sequence[str] = (),
    *,
    version: str = "",
    dtypes: Mapping[str, str] | None = None,
) -> Any:
    """A `ModelInferRequest` with raw (binary) tensor contents, built once and reused.

    `dtypes` maps input names to canonical dtypes where numpy cannot tell (BF16 held as float32
    arrays); others are taken from the arrays.
    """
    from tritonclient.grpc import service_pb2
    from tritonclient.utils import np_to_triton_dtype, serialize_byte_tensor

    req = service_pb2.ModelInferRequest(model_name=model, model_version=version)
    for name, arr in inputs.items():
        dt = wire_dtype(dtypes[name]) if dtypes and name in dtypes else np_to_triton_dtype(arr.dtype)
        tensor = req.inputs.add()
        tensor.name, tensor.datatype = name, dt
        tensor.shape.extend(int(d) for d in arr.shape)
        if dt == "BYTES":
            # serialize_byte_tensor returns a 0-d object array wrapping the length-prefixed bytes
            raw = serialize_byte_tensor(arr).item() if arr.size else b""
        elif dt == "BF16":
            import ml_dtypes  # a tritonclient dependency; the wire format is 2-byte bfloat16

            raw = np.asarray(arr).astype(ml_dtypes.bfloat16).tobytes()
        else:
            raw = np.ascontiguousarray(arr).tobytes()
        req.raw_input_contents.append(raw)
    for name in outputs:
        req.outputs.add().name = name
    return req


def to_wire_array(arr: npt.NDArray[Any], dtype: str) -> npt.NDArray[Any]:
    """`arr` as the numpy type tritonclient wants for canonical `dtype`.

    BF16: tritonclient >= 2.6x (r26.06) wants `ml_dtypes.bfloat16` arrays (its own dependency);
    older clients took float32. We keep BF16 data as float32 holding bf16-exact values, so either
    conversion is lossless.
    """
    if dtype != "BF16":
        return arr
    from tritonclient.utils import triton_to_np_dtype

    # Old clients map BF16 to float32; new ones to ml_dtypes.bfloat16.
    return np.asarray(arr).astype(triton_to_np_dtype("BF16"))


def run_async(coro: Coroutine[Any, Any, T], loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None) -> T:
    """Run `coro` on a fresh event loop (from `loop_factory` when given); in a helper thread if this
    thread already runs one."""

    def run() -> T:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            return runner.run(coro)

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return run()
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = run()
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    t = threading.Thread(target=target, name="deployer-smoke-loop")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


def _stream_error(response: bytes) -> str:
    from tritonclient.grpc import service_pb2

    msg = service_pb2.ModelStreamInferResponse.FromString(response)
    return f"stream error: {msg.error_message}"


def _error_text(exc: BaseException) -> str:
    details = getattr(exc, "details", None)
    code = getattr(exc, "code", None)
    if callable(details) and callable(code):
        return f"{code().name}: {details()}"
    return f"{type(exc).__name__}: {exc}"


async def _load(
    url: str,
    request: bytes,
    concurrency: int,
    duration_s: float,
    max_requests: int | None,
    warmup_requests: int,
    timeout_s: float,
    stream: bool = True,
) -> tuple[list[float], int, str, float, float]:
    import grpc  # type: ignore[import-untyped,unused-ignore]

    async with grpc.aio.insecure_channel(url, options=_CHANNEL_OPTIONS) as channel:
        # Bytes in, bytes out: the request is serialized once and responses are never parsed, so
        # the per-request client cost is gRPC's own (the outputs were verified by the infer checks).
        call = channel.unary_unary(_MODEL_INFER, request_serializer=None, response_deserializer=None)
        errors: list[str] = []
        if warmup_requests > 0:
            warm = await asyncio.gather(
                *(call(request, timeout=timeout_s) for _ in range(warmup_requests)), return_exceptions=True
            )
            errors += [_error_text(w) for w in warm if isinstance(w, BaseException)]
            if len(errors) == warmup_requests:  # nothing works: don't hammer a broken endpoint
                return [], len(errors), errors[0], 0.0, 0.0
        latencies: list[float] = []
        cpu0 = time.process_time()
        budget = [max_requests if max_requests is not None else -1]
        n_errors = [0]
        perf = time.perf_counter
        start = perf()
        deadline = start + duration_s

        def failed(text: str) -> None:
            n_errors[0] += 1
            if not errors:
                errors.append(text)

        async def unary_worker() -> None:
            while perf() < deadline:
                if budget[0] == 0:
                    return
                budget[0] -= 1
                t0 = perf()
                try:
                    await call(request, timeout=timeout_s)
                except grpc.aio.AioRpcError as exc:
                    failed(_error_text(exc))
                    continue
                latencies.append((perf() - t0) * 1000.0)

        open_stream = channel.stream_stream(_STREAM_INFER, request_serializer=None, response_deserializer=None)

        async def stream_worker() -> None:
            # One bidirectional stream per worker, one request in flight on it: about half the client
            # CPU of a unary call. The stream's own deadline bounds a stuck request.
            while perf() < deadline and budget[0] != 0:
                stream = open_stream(timeout=duration_s + timeout_s)
                try:
                    while perf() < deadline and budget[0] != 0:
                        budget[0] -= 1
                        t0 = perf()
                        await stream.write(request)
                        response = await stream.read()
                        if response is grpc.aio.EOF:
                            failed("the server closed the inference stream")
                            break
                        if response[:1] == _STREAM_ERROR_TAG:  # error_message (field 1) is set
                            failed(_stream_error(response))
                            continue
                        latencies.append((perf() - t0) * 1000.0)
                except grpc.aio.AioRpcError as exc:
                    failed(_error_text(exc))
                finally:
                    stream.cancel()

        worker = stream_worker if stream else unary_worker
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = perf() - start
        return latencies, n_errors[0], errors[0] if errors else "", elapsed, time.process_time() - cpu0


def run_load(
    url: str,
    request: Any,
    *,
    concurrency: int = 16,
    duration_s: float = 5.0,
    max_requests: int | None = None,
    warmup_requests: int = 20,
    timeout_s: float = 30.0,
    batch_size: int = 1,
    processes: int = 1,
    stream: bool = True,
) -> LoadResult:
    """Keep `concurrency` copies of `request` in flight over gRPC for `duration_s` (or `max_requests`).

    `url` is `host:port` of the gRPC endpoint; `request` a `ModelInferRequest` (or its bytes).
    Errors are counted, not raised; `batch_size` only scales the reported inference throughput.
    `stream` (default) keeps one bidirectional ModelStreamInfer stream per in-flight slot, about half
    the client CPU of unary ModelInfer calls; `stream=False` uses unary calls.
    `processes` > 1 splits the concurrency over that many worker processes (for many-core clients;
    one asyncio loop is enough when client and server share a few cores). Workers are spawned, so a
    calling script needs the usual `if __name__ == "__main__":` guard.
    """
    payload = request.SerializeToString() if hasattr(request, "SerializeToString") else bytes(request)
    procs = max(1, min(processes, concurrency))
    if procs == 1:
        lat, n_err, first, elapsed, cpu = run_async(
            _load(url, payload, concurrency, duration_s, max_requests, warmup_requests, timeout_s, stream)
        )
    else:
        lat, n_err, first, elapsed, cpu = _run_processes(
            url, payload, procs, concurrency, duration_s, max_requests, warmup_requests, timeout_s, stream
        )
    lat.sort()
    return LoadResult(len(lat), n_err, first, elapsed, tuple(lat), concurrency, batch_size, cpu)


def _load_in_process(
    args: tuple[str, bytes, int, float, int | None, int, float, bool],
) -> tuple[list[float], int, str, float, float]:
    return run_async(_load(*args))


def _run_processes(
    url: str,
    payload: bytes,
    procs: int,
    concurrency: int,
    duration_s: float,
    max_requests: int | None,
    warmup_requests: int,
    timeout_s: float,
    stream: bool,
) -> tuple[list[float], int, str, float, float]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    shares = [concurrency // procs + (1 if i < concurrency % procs else 0) for i in range(procs)]
    budgets: list[int | None] = (
        [max_requests // procs + (1 if i < max_requests % procs else 0) for i in range(procs)]
        if max_requests is not None
        else [None] * procs
    )
    jobs = [
        (url, payload, c, duration_s, b, warmup_requests // procs, timeout_s, stream)
        for c, b in zip(shares, budgets, strict=True)
    ]
    # spawn, not fork: gRPC's threads do not survive a fork of a process that already used it
    with ProcessPoolExecutor(procs, mp_context=multiprocessing.get_context("spawn")) as pool:
        parts = list(pool.map(_load_in_process, jobs))
    latencies = [x for part in parts for x in part[0]]
    first = next((p[2] for p in parts if p[2]), "")
    return latencies, sum(p[1] for p in parts), first, max(p[3] for p in parts), sum(p[4] for p in parts)


async def _burst(url: str, request: Any, n: int, timeout_s: float) -> list[BaseException | None]:
    import grpc  # type: ignore[import-untyped,unused-ignore]
    from tritonclient.grpc import service_pb2_grpc

    async with grpc.aio.insecure_channel(url, options=_CHANNEL_OPTIONS) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        await channel.channel_ready()  # connect first so the burst is not serialized behind the handshake
        results = await asyncio.gather(
            *(stub.ModelInfer(request, timeout=timeout_s) for _ in range(n)), return_exceptions=True
        )
    return [r if isinstance(r, BaseException) else None for r in results]


def fire_concurrent(url: str, request: Any, n: int, *, timeout_s: float = 30.0) -> tuple[int, list[str]]:
    """Send `n` copies of `request` all at once (not a loop); return (successes, error texts)."""
    results = run_async(_burst(url, request, n, timeout_s))
    errors = [_error_text(r) for r in results if r is not None]
    return n - len(errors), errors


def run_threaded_load(
    url: str,
    model: str,
    inputs: Mapping[str, npt.NDArray[Any]],
    *,
    concurrency: int = 16,
    duration_s: float = 5.0,
    timeout_s: float = 30.0,
) -> LoadResult:
    """Baseline for comparison: `concurrency` threads, each with its own sync `tritonclient.grpc` client.

    This is the "simple threaded client" of verified-recipes section 6; `run_load` should beat it.
    """
    import tritonclient.grpc as grpcclient

    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    start = time.perf_counter()
    cpu0 = time.process_time()
    deadline = start + duration_s

    def worker() -> None:
        client = grpcclient.InferenceServerClient(url)
        try:
            infer_inputs = []
            for name, arr in inputs.items():
                ii = grpcclient.InferInput(name, list(arr.shape), _np_wire(arr))
                ii.set_data_from_numpy(arr)
                infer_inputs.append(ii)
            local: list[float] = []
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                try:
                    client.infer(model, infer_inputs, client_timeout=timeout_s)
                except Exception as exc:  # counted like run_load does
                    with lock:
                        errors.append(str(exc))
                    continue
                local.append((time.perf_counter() - t0) * 1000.0)
            with lock:
                latencies.extend(local)
        finally:
            client.close()

    threads = [threading.Thread(target=worker, name=f"deployer-load-{i}") for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    latencies.sort()
    return LoadResult(
        len(latencies), len(errors), errors[0] if errors else "", elapsed, tuple(latencies), concurrency, 1, cpu
    )


def _np_wire(arr: npt.NDArray[Any]) -> str:
    from tritonclient.utils import np_to_triton_dtype

    return str(np_to_triton_dtype(arr.dtype))
