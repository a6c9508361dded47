"""gRPC slots for `measure`: one bidirectional `ModelStreamInfer` stream per slot, one request in flight.

A slot has the interface of the HTTP `_Conn` that `measure._Recorder` drives: `send()` stamps `t0`
and writes the pre-serialized request; a reader task reports each response to `driver.done` (or the
stream's end to `driver.lost`). So both protocols share the recorder, the open-loop schedule and the
windows, and differ only in the wire. Why streams and bytes: a stream costs about half the client CPU
of a unary call, and the request is serialized once and responses are never parsed (the infer checks
verified the outputs); the error tag alone tells a failed response (see `loadgen._stream_error`).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from deployer.errors import EnvironmentProblem
from deployer.smoke.load.httpload import _Sink
from deployer.smoke.load.loadgen import _CHANNEL_OPTIONS, _STREAM_ERROR_TAG, _STREAM_INFER, _error_text, _stream_error

__all__ = ["GrpcSlots"]


class _Slot:
    """One stream with at most one request in flight."""

    def __init__(self, driver: _Sink, stream: Any) -> None:
        self.driver = driver
        self.stream = stream
        self.t0 = 0.0
        self.busy = False
        self.closed = False
        self.reader: asyncio.Task[None] | None = None
        self.writes: set[asyncio.Task[None]] = set()  # held so a pending write is not garbage-collected

    def send(self) -> None:
        self.busy = True
        self.t0 = time.perf_counter()
        task = asyncio.ensure_future(self._write())
        self.writes.add(task)
        task.add_done_callback(self.writes.discard)

    async def _write(self) -> None:
        try:
            await self.stream.write(self.driver.request)
        except Exception:  # a dead stream fails its pending read too: the reader reports it once
            return

    async def read(self) -> None:
        import grpc  # type: ignore[import-untyped,unused-ignore]

        perf = time.perf_counter
        try:
            while True:
                response = await self.stream.read()
                if response is grpc.aio.EOF:
                    self._end("the server closed the inference stream")
                    return
                seconds = perf() - self.t0
                self.busy = False
                error = _stream_error(response) if response[:1] == _STREAM_ERROR_TAG else ""
                self.driver.done(self, seconds, error)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # AioRpcError: deadline, reset, server gone
            self._end(_error_text(exc))

    def _end(self, error: str) -> None:
        if self.busy and not self.closed:
            self.busy = False
            self.driver.lost(self, error)

    def close(self) -> None:
        self.closed = True
        self.stream.cancel()
        if self.reader is not None:
            self.reader.cancel()
        for task in list(self.writes):
            task.cancel()


class GrpcSlots:
    """`n` stream slots on one channel (HTTP/2 multiplexes them over one connection, as tritonclient does)."""

    def __init__(self, url: str, driver: _Sink, n: int, stream_timeout_s: float) -> None:
        self.url = url
        self.driver = driver
        self.n = n
        self.stream_timeout_s = stream_timeout_s
        self.channel: Any = None
        self.slots: list[_Slot] = []

    async def open(self, connect_timeout_s: float) -> list[_Slot]:
        import grpc  # type: ignore[import-untyped,unused-ignore]

        self.channel = grpc.aio.insecure_channel(self.url, options=_CHANNEL_OPTIONS)
        try:
            await asyncio.wait_for(self.channel.channel_ready(), connect_timeout_s)
        except asyncio.TimeoutError as exc:
            await self.channel.close()
            raise EnvironmentProblem(f"cannot connect to gRPC {self.url} within {connect_timeout_s:g} s") from exc
        open_stream = self.channel.stream_stream(_STREAM_INFER, request_serializer=None, response_deserializer=None)
        for _ in range(self.n):
            slot = _Slot(self.driver, open_stream(timeout=self.stream_timeout_s))
            slot.reader = asyncio.ensure_future(slot.read())
            self.slots.append(slot)
        return self.slots

    async def close(self) -> None:
        for slot in self.slots:
            slot.close()
        readers = [s.reader for s in self.slots if s.reader is not None]
        await asyncio.gather(*readers, return_exceptions=True)
        if self.channel is not None:
            await self.channel.close()
