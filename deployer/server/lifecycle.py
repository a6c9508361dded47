"""The one server lifecycle every runtime shares; a runtime supplies only how its server starts, is
found and stops.

`ServerLifecycle.up` is the sequence local, docker and compose all follow: plan (pure), the
repository check, the runtime's own checks (a server still running for this state dir, the image),
free ports, start, record the state (before readiness, so a `deployer down` in another shell finds
it), wait for readiness and each model, record what serves the models, and on any failure (Ctrl-C
included) stop what was started. The small helpers of `down`, `status` and `logs` are here too.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Generic, Literal, TypeVar

from deployer.errors import EnvironmentProblem, PortInUse, RepositoryError, ServerError
from deployer.server.base import (
    RuntimeName,
    ServerSettings,
    ServerState,
    ServerStatus,
    StopReport,
    with_server_defaults,
)
from deployer.server.readiness import ReadinessReport, query_status, unload_models, wait_until_ready
from deployer.server.state import clear_state, load_state, save_state

__all__ = [
    "LOG_FILE",
    "UNLOAD_TIMEOUT_S",
    "Launched",
    "ServerLifecycle",
    "check_ports_free",
    "check_repository",
    "file_tail",
    "forget",
    "server_ports",
    "unload_for_stop",
]

log = logging.getLogger(__name__)

LOG_FILE = "tritonserver.log"  # in the state dir: the server's log (containers': saved when removed)
UNLOAD_TIMEOUT_S = 10.0  # down: models still finishing in-flight requests get this long to unload
_LOG_TAIL = 60  # lines of the server log quoted when it fails to become ready

PlanT = TypeVar("PlanT")


@dataclass(frozen=True)
class Launched:
    """A server a runtime has just started, as the lifecycle sees it."""

    state: ServerState  # what is recorded: the runtime's ids (pid, container id, project) filled in
    describe: str  # names it in the log line, e.g. "tritonserver (pid 123)"
    alive: Callable[[], bool]
    log_tail: Callable[[int], str]
    backends: Callable[[], tuple[tuple[str, str], ...]]  # what serves the models, read once it is ready
    exit_note: Callable[[], str] = lambda: ""  # how it ended, appended to a readiness failure
    launched_at: float | None = None  # time.monotonic() of the start; None: when the wait begins


def server_ports(settings: ServerSettings) -> dict[str, int]:
    """The three host ports by their settings name (the name error messages and hints use)."""
    return {"http_port": settings.http_port, "grpc_port": settings.grpc_port, "metrics_port": settings.metrics_port}


def check_repository(repository: Path) -> None:
    """`RepositoryError` (bad input) unless the model repository is a directory."""
    if not repository.is_dir():
        raise RepositoryError(
            f"model repository {repository} does not exist or is not a directory",
            hint="publish the repository first (`deployer publish SPEC`) or fix the repository path",
        )


def check_ports_free(host: str, ports: dict[str, int]) -> None:
    """Raise `PortInUse` for the first port something already listens on at `host`."""
    for name, port in ports.items():
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise PortInUse(f"cannot resolve server.host {host!r}: {exc}", hint="use an IP address") from exc
        family, kind, proto, _, addr = infos[0]
        with socket.socket(family, kind, proto) as sock:
            # SO_REUSEADDR: only a live listener conflicts, not TIME_WAIT leftovers (Triton sets it too)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(addr)
            except OSError as exc:
                raise PortInUse(
                    f"port {port} ({name}) on {host} is already in use: {exc.strerror}",
                    hint=f"stop what listens there (`ss -ltnp 'sport = :{port}'` shows it; `deployer down` "
                    f"if it is a server deployer started) or choose another server.{name}",
                ) from exc


def file_tail(path: Path | None, lines: int) -> str:
    """The last `lines` lines of a log file ("" when there is none)."""
    if path is None or not path.is_file():
        return ""
    with path.open("r", encoding="utf-8", errors="replace") as fh:
        return "".join(deque(fh, maxlen=lines))


def unload_for_stop(state: ServerState) -> StopReport:
    """Unload every model through the HTTP port before the server gets SIGTERM: Triton's own shutdown
    polls its unloading models once a second (see `readiness.unload_models`)."""
    done = unload_models(state.http_url, state.models, timeout_s=UNLOAD_TIMEOUT_S)
    if done.pending or done.error:
        log.warning("unloading before the stop: still loaded %s %s", list(done.pending), done.error)
    return StopReport(unload_s=done.seconds, unloaded=done.unloaded, pending=done.pending)


def forget(state: ServerState, key: Literal["pid", "container_id", "project"]) -> None:
    """Clear the state dir's server.json unless it records another server than `state` (compared by
    `key`): a `down` of an old state must not forget a newer server started from the same dir."""
    if state.log_path is None:
        return
    state_dir = state.log_path.parent
    recorded = None
    with contextlib.suppress(EnvironmentProblem):  # a corrupted record is forgotten too
        recorded = load_state(state_dir)
    if recorded is None or getattr(recorded, key) == getattr(state, key):
        clear_state(state_dir)


class ServerLifecycle(ABC, Generic[PlanT]):
    """The `Runtime` protocol's `up` and `status`, shared; subclasses supply the hooks below, `down`
    and `logs`. `last_report` is the readiness report of the last `up`, `last_stop` what the last
    `down` did."""

    name: RuntimeName

    def __init__(self) -> None:
        self.last_report: ReadinessReport | None = None
        self.last_stop: StopReport | None = None

    # -- what a runtime supplies -------------------------------------------------------------------

    @abstractmethod
    def _plan(self, settings: ServerSettings) -> PlanT:
        """What will be started (pure): `UserError` for settings this runtime cannot run."""

    @abstractmethod
    def _prepare(self, settings: ServerSettings, plan: PlanT) -> None:
        """Refuse when a server for this state dir still runs, clear a dead one's leftovers, check what
        the start needs from the environment (an image)."""

    @abstractmethod
    def _launch(self, settings: ServerSettings, plan: PlanT, state: ServerState) -> Launched:
        """Start the server described by `state` (runtime, ports, models, log path filled in); leave
        nothing behind when this raises."""

    @abstractmethod
    def _abort(self, state: ServerState) -> None:
        """Stop a server that never became ready: nothing in flight, so no unload and a short grace."""

    @abstractmethod
    def _is_running(self, state: ServerState) -> bool:
        """Whether the process or container described by `state` is still there."""

    @abstractmethod
    def down(self, state: ServerState, *, quick: bool = False) -> None:
        """Stop the server described by `state` (idempotent); record what it did in `last_stop`.
        `quick`: no unload and no grace period (see `Runtime.down`)."""

    @abstractmethod
    def logs(self, state: ServerState, tail: int = 200) -> str:
        """Last `tail` lines of the server log."""

    # -- the lifecycle -----------------------------------------------------------------------------

    def up(self, settings: ServerSettings) -> ServerState:
        """Start the server, load `settings.models` one by one, wait for readiness, record the state."""
        settings = with_server_defaults(settings)
        plan = self._plan(settings)
        if settings.repository_url is None:  # an s3:// repository is checked by its publish, not here
            check_repository(settings.repository)
        self._prepare(settings, plan)
        check_ports_free(settings.host, server_ports(settings))
        state_dir = settings.state_dir.absolute()
        state = ServerState(
            runtime=self.name,
            host=settings.host,
            http_port=settings.http_port,
            grpc_port=settings.grpc_port,
            metrics_port=settings.metrics_port,
            models=settings.models,
            log_path=state_dir / LOG_FILE,
            started_at=time.time(),
        )
        launched = self._launch(settings, plan, state)
        state = launched.state
        try:
            save_state(state_dir, state)  # before readiness: `deployer down` in another shell must find it
            report = wait_until_ready(
                state.http_url,
                settings.models,
                timeout_s=settings.startup_timeout_s,
                is_alive=launched.alive,
                log_tail=lambda: launched.log_tail(_LOG_TAIL),
                launched_at=launched.launched_at,
            )
            backends = launched.backends()
            if backends != state.backends:
                state = replace(state, backends=backends)
                save_state(state_dir, state)
        except ServerError as exc:
            ended = launched.exit_note()
            self._abort(state)
            raise ServerError(exc.message + ended, hint=exc.hint, details=exc.details) from exc
        except BaseException:  # includes KeyboardInterrupt: never leave the server behind
            self._abort(state)
            raise
        self.last_report = report
        log.info(
            "%s up: ready %.2f s, models %s",
            launched.describe,
            report.server_s,
            ", ".join(f"{m} {s:.2f} s" for m, s in report.model_load_s) or "none",
        )
        return state

    def status(self, state: ServerState | None) -> ServerStatus:
        """Liveness of the process or container plus the server's own view of readiness and of each model."""
        if state is None:
            return ServerStatus(running=False, ready=False, models={}, state=None)
        return query_status(state, running=self._is_running(state))
