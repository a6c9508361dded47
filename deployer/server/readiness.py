"""Wait for a Triton server to be live/ready and load models one by one; report status.

Runtime-agnostic: the caller gives the HTTP `host:port`, a liveness probe for its process or
container, and a log-tail function. On any failure this raises `ServerError`; stopping the server
is the caller's job (it always must, before re-raising).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from deployer.errors import MissingDependency, ServerError
from deployer.server.base import ServerState, ServerStatus

__all__ = ["ReadinessReport", "model_states", "query_status", "wait_until_ready"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_REASON_LIMIT = 4000  # Python tracebacks in reasons can be long; keep the message readable


@dataclass(frozen=True)
class ReadinessReport:
    """How long the server took to answer ready, and each model to load (seconds)."""

    server_s: float
    model_load_s: tuple[tuple[str, float], ...]

    @property
    def total_s(self) -> float:
        return self.server_s + sum(s for _, s in self.model_load_s)


def _client(url: str, timeout_s: float) -> Any:
    try:
        import tritonclient.http as httpclient
    except ImportError as exc:  # pragma: no cover - a core dependency
        raise MissingDependency("tritonclient[http] is not installed", hint="pip install 'tritonclient[http]'") from exc
    timeout = max(1.0, timeout_s)
    return httpclient.InferenceServerClient(url=url, connection_timeout=timeout, network_timeout=timeout)


def _details(log_tail: Callable[[], str]) -> str:
    try:
        tail = log_tail()
    except Exception as exc:  # the log is a courtesy; never hide the real error behind it
        tail = f"<log unavailable: {exc}>"
    return "server log (tail):\n" + tail if tail else "server log is empty"


def _clip(text: str) -> str:
    text = text.strip()
    return text if len(text) <= _REASON_LIMIT else text[:_REASON_LIMIT] + " …"


def model_states(client: Any) -> dict[str, str]:
    """`{model: "READY" | "UNAVAILABLE: <reason>" | "NOT LOADED" | ...}` from the repository index."""
    states: dict[str, str] = {}
    for entry in client.get_model_repository_index():
        name = str(entry.get("name", ""))
        state = str(entry.get("state", "")) or "NOT LOADED"
        reason = str(entry.get("reason", "") or "")
        if state == "READY" or not reason:
            states[name] = state
        else:
            states[name] = f"{state}: {reason}"
    return states


def _index_reason(client: Any, model: str) -> str:
    try:
        for entry in client.get_model_repository_index():
            if entry.get("name") == model and entry.get("reason"):
                return str(entry["reason"])
    except Exception:
        pass
    return ""


def _wait_server(client: Any, deadline: float, is_alive: Callable[[], bool], poll_s: float) -> None:
    last_error = "no answer yet"
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
        time.sleep(poll_s)


def _load(client: Any, model: str, is_alive: Callable[[], bool], timeout_s: float) -> None:
    from tritonclient.utils import InferenceServerException

    try:
        client.load_model(model)
    except InferenceServerException as exc:  # Triton answered: the load itself failed
        text = str(exc.message() or exc)
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


def _wait_and_load(
    url: str,
    models: Sequence[str],
    timeout_s: float,
    is_alive: Callable[[], bool],
    log_tail: Callable[[], str],
    poll_s: float,
    started: float,
) -> ReadinessReport:
    client = _client(url, timeout_s)  # created in the thread that uses it (tritonclient is gevent-based)
    try:
        try:
            _wait_server(client, started + timeout_s, is_alive, poll_s)
        except ServerError as exc:
            raise ServerError(exc.message, details=_details(log_tail)) from exc
        server_s = time.monotonic() - started
        log.info("tritonserver at %s ready after %.2f s", url, server_s)
        loads = _load_all(url, models, timeout_s, is_alive, log_tail)
        return ReadinessReport(server_s=server_s, model_load_s=loads)
    finally:
        client.close()


def _load_all(
    url: str, models: Sequence[str], timeout_s: float, is_alive: Callable[[], bool], log_tail: Callable[[], str]
) -> tuple[tuple[str, float], ...]:
    """Load the models concurrently (Triton loads them in parallel; each stub start is mostly waiting),
    then report every failure, each naming its model, in the order the models were given."""
    from concurrent.futures import ThreadPoolExecutor

    def one(model: str) -> tuple[str, float]:
        client = _client(url, timeout_s)  # one client per thread: tritonclient.http is not thread-safe
        try:
            t0 = time.monotonic()
            _load(client, model, is_alive, timeout_s)
            elapsed = time.monotonic() - t0
            log.info("model '%s' READY after %.2f s", model, elapsed)
            return model, elapsed
        finally:
            client.close()

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
    client = _client(state.http_url, timeout_s)
    try:
        try:
            ready = bool(client.is_server_ready())
            states = model_states(client)
        except Exception as exc:
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
    finally:
        client.close()
