"""Wait for a Triton server to be live/ready and load models one by one; unload them; report status.

Runtime-agnostic: the caller gives the HTTP `host:port`, a liveness probe for its process or
container, and a log-tail function. On any failure this raises `ServerError`; stopping the server
is the caller's job (it always must, before re-raising).

Talks to Triton's health and repository endpoints with `http.client`, one connection per request
(`Connection: close`): on SIGTERM Triton waits, polling once a second, for every open HTTP
connection to go away, and pooled keep-alive clients (tritonclient.http's) keep theirs open until
they are garbage-collected. It also keeps `up`/`down`/`status` free of tritonclient's gevent import.
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

from deployer.errors import ServerError
from deployer.server.base import ServerState, ServerStatus

__all__ = ["ReadinessReport", "TritonHttp", "UnloadReport", "model_states", "query_status", "unload_models",
           "wait_until_ready"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_REASON_LIMIT = 4000  # Python tracebacks in reasons can be long; keep the message readable
_LOADED = ("READY", "LOADING", "UNLOADING")  # repository index states of a model still holding resources


class TritonError(Exception):
    """Triton answered with an error status; `message` is its `{"error": ...}` text."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class TritonHttp:
    """The few KServe v2 / repository endpoints the runtimes need, one short connection per request.

    Raises `TritonError` when Triton answers with an error, `OSError` (refused, reset, timeout) when it
    does not answer at all.
    """

    def __init__(self, url: str, timeout_s: float) -> None:
        host, _, port = url.rpartition(":")
        self.host, self.port, self.timeout_s = host.strip("[]"), int(port), max(1.0, timeout_s)

    def _request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
        try:
            data = json.dumps(body).encode() if body is not None else None
            headers = {"Connection": "close", **({"Content-Type": "application/json"} if data is not None else {})}
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        except http.client.HTTPException as exc:  # a malformed or cut answer: the server is going away
            raise ConnectionError(f"{type(exc).__name__}: {exc}") from exc
        finally:
            conn.close()
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:
            payload = raw.decode("utf-8", errors="replace")
        if response.status >= 400:
            text = payload.get("error") if isinstance(payload, dict) else payload
            raise TritonError(response.status, str(text or f"HTTP {response.status}"))
        return response.status, payload

    def _ok(self, path: str) -> bool:
        try:
            return self._request("GET", path)[0] == 200
        except TritonError:
            return False

    def is_server_live(self) -> bool:
        return self._ok("/v2/health/live")

    def is_server_ready(self) -> bool:
        return self._ok("/v2/health/ready")

    def is_model_ready(self, model: str) -> bool:
        return self._ok(f"/v2/models/{quote(model, safe='')}/ready")

    def load_model(self, model: str) -> None:
        self._request("POST", f"/v2/repository/models/{quote(model, safe='')}/load", {})

    def unload_model(self, model: str) -> None:
        self._request("POST", f"/v2/repository/models/{quote(model, safe='')}/unload", {})

    def repository_index(self) -> list[dict[str, Any]]:
        payload = self._request("POST", "/v2/repository/index", {})[1]
        return [e for e in payload if isinstance(e, dict)] if isinstance(payload, list) else []


@dataclass(frozen=True)
class ReadinessReport:
    """How long the server took to answer ready, and each model to load (seconds)."""

    server_s: float
    model_load_s: tuple[tuple[str, float], ...]

    @property
    def total_s(self) -> float:
        return self.server_s + sum(s for _, s in self.model_load_s)


def _details(log_tail: Callable[[], str]) -> str:
    try:
        tail = log_tail()
    except Exception as exc:  # the log is a courtesy; never hide the real error behind it
        tail = f"<log unavailable: {exc}>"
    return "server log (tail):\n" + tail if tail else "server log is empty"


def _clip(text: str) -> str:
    text = text.strip()
    return text if len(text) <= _REASON_LIMIT else text[:_REASON_LIMIT] + " …"


def model_states(client: TritonHttp) -> dict[str, str]:
    """`{model: "READY" | "UNAVAILABLE: <reason>" | "NOT LOADED" | ...}` from the repository index."""
    states: dict[str, str] = {}
    for entry in client.repository_index():
        name = str(entry.get("name", ""))
        state = str(entry.get("state", "")) or "NOT LOADED"
        reason = str(entry.get("reason", "") or "")
        if state == "READY" or not reason:
            states[name] = state
        else:
            states[name] = f"{state}: {reason}"
    return states


def _index_reason(client: TritonHttp, model: str) -> str:
    try:
        for entry in client.repository_index():
            if entry.get("name") == model and entry.get("reason"):
                return str(entry["reason"])
    except (OSError, TritonError):
        pass
    return ""


def _wait_server(client: TritonHttp, deadline: float, is_alive: Callable[[], bool], poll_s: float) -> None:
    last_error = "no answer yet"
    wait = min(0.01, poll_s)  # endpoints come up ~0.1 s after spawn: poll often first, then back off
    while True:
        if not is_alive():
            raise ServerError("tritonserver exited before it became ready")
        try:
            if client.is_server_live() and client.is_server_ready():
                return
            last_error = "live/ready endpoints answered false"
        except Exception as exc:
            last_error = f"{type(exc).__name__}: {exc}"
        if time.monotonic() >= deadline:
            raise ServerError(f"tritonserver did not become ready in time (last: {last_error})")
        time.sleep(wait)
        wait = min(poll_s, wait * 1.5)


def _load(client: TritonHttp, model: str, is_alive: Callable[[], bool], timeout_s: float) -> None:
    try:
        client.load_model(model)
    except TritonError as exc:  # Triton answered: the load itself failed
        text = exc.message
        reason = _index_reason(client, model) if is_alive() else ""
        quoted = text if not reason or reason in text else f"{text}\nrepository index reason: {reason}"
        hint = None
        if "failed to poll from model repository" in text:
            hint = f"is there a '{model}' directory with a config.pbtxt in the model repository?"
        raise ServerError(f"model '{model}' failed to load: {_clip(quoted)}", hint=hint) from exc
    except Exception as exc:  # no answer: the server died, or the load outlived the deadline
        if not is_alive():
            raise ServerError(f"tritonserver exited while loading model '{model}'") from exc
        raise ServerError(
            f"model '{model}' did not load within {timeout_s:.0f} s ({type(exc).__name__}: {exc})",
            hint="raise server.startup_timeout_s if the model is just slow to load",
        ) from exc
    if not client.is_model_ready(model):
        reason = _index_reason(client, model) or "not ready after load returned"
        raise ServerError(f"model '{model}' is not ready: {_clip(reason)}")


def wait_until_ready(
    url: str,
    models: Sequence[str],
    *,
    timeout_s: float,
    is_alive: Callable[[], bool],
    log_tail: Callable[[], str],
    poll_s: float = 0.2,
    launched_at: float | None = None,
) -> ReadinessReport:
    """Wait (up to `timeout_s`) for live+ready, then load the models concurrently (up to `timeout_s` each).

    `launched_at` is the `time.monotonic()` at which the server was started (default: now); the
    server deadline and `ReadinessReport.server_s` count from it.

    Raises `ServerError` naming the model and quoting Triton's reason, with the log tail as details.
    The waiting happens in a worker thread so that Ctrl-C (KeyboardInterrupt) reaches the caller at
    once, even while a blocking load request is in flight.
    """
    started = time.monotonic() if launched_at is None else launched_at
    return _interruptible(lambda: _wait_and_load(url, models, timeout_s, is_alive, log_tail, poll_s, started))


def _interruptible(fn: Callable[[], _T]) -> _T:
    """Run `fn` in a daemon thread; the calling thread waits in short, interruptible joins."""
    result: list[_T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            result.append(fn())
        except BaseException as exc:
            error.append(exc)

    worker = threading.Thread(target=run, name="deployer-readiness", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.1)
    if error:
        raise error[0]
    return result[0]


# The parameters of `wait_until_ready` again (the duplicate scan sees the shape): this is its body, run in
# the worker thread of `_interruptible`.
def _wait_and_load(
    url: str,
    models: Sequence[str],
    timeout_s: float,
    is_alive: Callable[[], bool],
    log_tail: Callable[[], str],
    poll_s: float,
    started: float,
) -> ReadinessReport:
    client = TritonHttp(url, timeout_s)
    try:
        _wait_server(client, started + timeout_s, is_alive, poll_s)
    except ServerError as exc:
        raise ServerError(exc.message, details=_details(log_tail)) from exc
    server_s = time.monotonic() - started
    log.info("tritonserver at %s ready after %.2f s", url, server_s)
    loads = _load_all(url, models, timeout_s, is_alive, log_tail)
    return ReadinessReport(server_s=server_s, model_load_s=loads)


def _load_all(
    url: str, models: Sequence[str], timeout_s: float, is_alive: Callable[[], bool], log_tail: Callable[[], str]
) -> tuple[tuple[str, float], ...]:
    """Load the models concurrently (Triton loads them in parallel; each stub start is mostly waiting),
    then report every failure, each naming its model, in the order the models were given."""
    from concurrent.futures import ThreadPoolExecutor

    client = TritonHttp(url, timeout_s)  # no state shared between requests: usable from every thread

    def one(model: str) -> tuple[str, float]:
        t0 = time.monotonic()
        _load(client, model, is_alive, timeout_s)
        elapsed = time.monotonic() - t0
        log.info("model '%s' READY after %.2f s", model, elapsed)
        return model, elapsed

    if not models:
        return ()
    with ThreadPoolExecutor(max_workers=min(4, len(models)), thread_name_prefix="deployer-load") as pool:
        futures = [pool.submit(one, m) for m in models]
    loads: list[tuple[str, float]] = []
    failures: list[ServerError] = []
    for future in futures:
        try:
            loads.append(future.result())
        except ServerError as exc:
            failures.append(exc)
    if failures:
        first = failures[0]
        message = first.message if len(failures) == 1 else "\n".join(f.message for f in failures)
        raise ServerError(message, hint=first.hint, details=_details(log_tail)) from first
    return tuple(loads)


def query_status(state: ServerState, *, running: bool, timeout_s: float = 5.0) -> ServerStatus:
    """Ask the server described by `state` for readiness and per-model states (never raises on I/O)."""
    if not running:
        return ServerStatus(running=False, ready=False, models={m: "NOT RUNNING" for m in state.models}, state=state)
    client = TritonHttp(state.http_url, timeout_s)
    try:
        ready = client.is_server_ready()
        states = model_states(client)
    except (OSError, TritonError) as exc:
        log.debug("status query to %s failed: %s", state.http_url, exc)
        return ServerStatus(
            running=True,
            ready=False,
            models={m: "UNKNOWN: server not answering" for m in state.models},
            state=state,
        )
    models = {m: states.get(m, "NOT IN REPOSITORY") for m in state.models}
    models.update({m: s for m, s in states.items() if m not in models})
    return ServerStatus(running=True, ready=ready, models=models, state=state)


@dataclass(frozen=True)
class UnloadReport:
    """What `unload_models` did: `pending` still held resources at the deadline (or the server stopped
    answering); `seconds` from the first unload request until none was loaded, or the deadline."""

    seconds: float
    unloaded: tuple[str, ...]
    pending: tuple[str, ...]
    error: str = ""


def unload_models(url: str, models: Sequence[str], *, timeout_s: float, poll_s: float = 0.02) -> UnloadReport:
    """Unload `models` and every other model the server has loaded, and wait (up to `timeout_s`) until
    its repository index shows none of them loading, ready or unloading. Never raises.

    Why before SIGTERM: Triton's own shutdown unloads the models too, but checks on them only once a
    second. An unload through the API lets in-flight requests finish (Triton releases a model only
    when its requests are done) and returns at once; polling the index then sees the end within
    `poll_s`. The python backend's own cost stays: it sleeps 1 s per instance while finalizing it
    (`StubLauncher::UpdateHealth`), concurrently for all models.
    """
    client = TritonHttp(url, min(timeout_s, 5.0))
    t0 = time.monotonic()
    deadline = t0 + timeout_s
    try:
        loaded = {str(e.get("name")) for e in client.repository_index() if e.get("state") in _LOADED}
        names = [m for m in models if m in loaded] + sorted(loaded - set(models))
        for name in reversed(names):  # ensembles were loaded last: unload them first
            try:
                client.unload_model(name)
            except TritonError as exc:  # e.g. already unloaded meanwhile: the index below decides
                log.debug("unload of %s: %s", name, exc.message)
        pending = set(names)
        while pending:
            states = [(str(e.get("name")), e.get("state")) for e in client.repository_index()]
            pending = {n for n, st in states if n in pending and st in _LOADED}
            if not pending or time.monotonic() >= deadline:
                break
            time.sleep(poll_s)
    except (OSError, TritonError) as exc:
        return UnloadReport(time.monotonic() - t0, (), tuple(models), f"{type(exc).__name__}: {exc}")
    done = tuple(n for n in names if n not in pending)
    return UnloadReport(time.monotonic() - t0, done, tuple(sorted(pending)))
