"""The cheapest client we have: pre-built HTTP/1.1 binary-tensor requests over raw keep-alive sockets.

Per request the client only writes one pre-built byte string and reads one response (headers plus
Content-Length bytes); nothing is encoded, parsed as JSON or decoded. On a 2-core box that leaves far
more CPU to the server than gRPC's Python stack (see the report for measured client cost per request).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import numpy.typing as npt

from deployer.dtypes import wire_dtype
from deployer.smoke.loadgen import LoadResult, run_async, to_wire_array

__all__ = ["build_http_request", "run_http_load"]


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


class _BadResponse(Exception):
    pass


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> None:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    # "\r\nContent-Length:" so that "Inference-Header-Content-Length:" does not match first
    lower = head.lower()
    i = lower.find(b"\r\ncontent-length:")
    if i < 0:
        raise _BadResponse(f"response without Content-Length: {head[:200]!r}")
    end = head.index(b"\r\n", i + 2)
    body = await reader.readexactly(int(head[i + 17 : end]))
    if not head.startswith(b"HTTP/1.1 200"):
        status = head.split(b"\r\n", 1)[0].decode(errors="replace")
        raise _BadResponse(f"{status}: {body[:300].decode(errors='replace')}")


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
    errors: list[str] = []
    n_errors = [0]
    latencies: list[float] = []
    budget = [max_requests if max_requests is not None else -1]
    warm = [warmup_requests]
    perf = time.perf_counter
    clock: dict[str, float] = {}
    started = asyncio.Event()

    async def worker() -> None:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
        try:
            while warm[0] > 0:  # warm-up shares the connections; not measured
                warm[0] -= 1
                await asyncio.wait_for(_exchange(reader, writer, request), timeout_s)
            if not started.is_set():
                clock["start"], clock["cpu"] = perf(), time.process_time()
                clock["deadline"] = clock["start"] + duration_s
                started.set()
            while perf() < clock["deadline"] and budget[0] != 0:
                budget[0] -= 1
                t0 = perf()
                try:
                    await asyncio.wait_for(_exchange(reader, writer, request), timeout_s)
                except (_BadResponse, OSError, asyncio.IncompleteReadError, asyncio.TimeoutError) as exc:
                    n_errors[0] += 1
                    if not errors:
                        errors.append(f"{type(exc).__name__}: {exc}")
                    if not isinstance(exc, _BadResponse):  # the connection is unusable now: reopen
                        writer.close()
                        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
                    continue
                latencies.append((perf() - t0) * 1000.0)
        finally:
            writer.close()

    results = await asyncio.gather(*(worker() for _ in range(concurrency)), return_exceptions=True)
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed and not errors:
        errors.append(f"{type(failed[0]).__name__}: {failed[0]}")
    if "start" not in clock:
        return [], n_errors[0] + len(failed), errors[0] if errors else "no request completed", 0.0, 0.0
    return (
        latencies,
        n_errors[0] + len(failed),
        errors[0] if errors else "",
        perf() - clock["start"],
        time.process_time() - clock["cpu"],
    )


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
