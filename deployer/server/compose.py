"""The `compose` runtime (and, re-exported, the `compose.yaml` generator of deployer.server.compose_render).

`ComposeRuntime` writes the file to `<state_dir>/compose.yaml` and drives `docker compose` (v2 plugin)
or `docker-compose` (v1), whichever exists, then loads the models through the same readiness code.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import subprocess
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from deployer.errors import EnvironmentProblem, MissingDependency, PortInUse, ServerError, UserError
from deployer.server.base import (
    RuntimeName,
    ServerSettings,
    ServerState,
    ServerStatus,
    StopReport,
    with_server_defaults,
)
from deployer.server.compose_render import HEALTHCHECK_TEST, SERVICE, compose_document, render_compose
from deployer.server.docker_engine import (  # shared by both container runtimes
    _container_logs,
    _exit_note,
    _running,
    container_backends,
    docker_client,
    engine_allows_memlock,
    refuse_if_running,
    remove_managed,
    require_image,
    unload_before_stop,
)
from deployer.server.docker_plan import CONTAINER_PORTS, NVIDIA_ULIMITS, project_name
from deployer.server.docker_runtime import LOG_FILE
from deployer.server.readiness import ReadinessReport, query_status, wait_until_ready
from deployer.server.state import clear_state, load_state, save_state

__all__ = [
    "COMPOSE_FILE",
    "HEALTHCHECK_TEST",
    "SERVICE",
    "ComposeRuntime",
    "compose_document",
    "find_compose",
    "render_compose",
]

log = logging.getLogger(__name__)

COMPOSE_FILE = "compose.yaml"
_COMPOSE_TIMEOUT_S = 300.0
_STOP_TIMEOUT_S = 20  # after SIGTERM (Triton itself gives up after --exit-timeout-secs); then SIGKILL
_ABORT_STOP_TIMEOUT_S = 5  # after a failed `up` nothing is in flight
_LOG_TAIL = 60


# -- compose CLI discovery -------------------------------------------------------------------------


def find_compose() -> tuple[str, ...]:
    """`("docker", "compose")` when the v2 plugin works, else `("docker-compose",)`."""
    docker = shutil.which("docker")
    if docker is not None:
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            probe = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30, check=False)
            if probe.returncode == 0:
                return (docker, "compose")
    v1 = shutil.which("docker-compose")
    if v1 is not None:
        return (v1,)
    raise MissingDependency(
        "neither `docker compose` (v2 plugin) nor `docker-compose` (v1) is installed",
        hint="install the Compose plugin (apt-get install docker-compose-plugin from Docker's repository) "
        "or `apt-get install docker-compose`",
    )


@dataclass(frozen=True)
class ComposePlan:
    """What `ComposeRuntime.up` writes and runs."""

    compose: tuple[str, ...]  # the compose CLI
    project: str
    file: Path
    content: str

    def argv(self, *args: str) -> list[str]:
        return [*self.compose, "--project-name", self.project, "--file", str(self.file), *args]


def plan_compose(
    settings: ServerSettings,
    compose: tuple[str, ...],
    *,
    ulimits: tuple[tuple[str, int, int], ...] = NVIDIA_ULIMITS,
) -> ComposePlan:
    """The file and project for `settings` (pure apart from nothing: `compose` is given)."""
    if not settings.repository.is_absolute():
        raise UserError(
            f"the model repository path must be absolute, got {settings.repository}",
            hint="resolve it against the spec's directory first",
        )
    state_dir = settings.state_dir.absolute()
    project = project_name(state_dir)
    return ComposePlan(
        compose=compose,
        project=project,
        file=state_dir / COMPOSE_FILE,
        content=render_compose(replace(settings, state_dir=state_dir), project=project, ulimits=ulimits),
    )


# -- the runtime -----------------------------------------------------------------------------------


def _run(argv: list[str], timeout: float = _COMPOSE_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EnvironmentProblem(f"`{' '.join(argv[:2])} ...` failed: {exc}") from exc


class ComposeRuntime:
    """Runtime protocol implementation driving Docker Compose."""

    name: RuntimeName = "compose"

    def __init__(self, client: Any = None, compose: tuple[str, ...] | None = None) -> None:
        self._client = client
        self._compose = compose
        self._started: dict[str, ComposePlan] = {}  # project -> plan, for close()
        self.last_report: ReadinessReport | None = None
        self.last_stop: StopReport | None = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = docker_client()
        return self._client

    @property
    def compose(self) -> tuple[str, ...]:
        if self._compose is None:
            self._compose = find_compose()
        return self._compose

    def up(self, settings: ServerSettings) -> ServerState:
        """Write compose.yaml, `compose up -d`, load `settings.models`, wait for readiness, record."""
        from deployer.server.local import check_ports_free

        settings = with_server_defaults(settings)
        plan = plan_compose(settings, self.compose)
        if not settings.repository.is_dir():
            raise UserError(
                f"model repository {settings.repository} does not exist",
                hint="publish the models first (`deployer publish SPEC`)",
            )
        state_dir = settings.state_dir.absolute()
        log_path = state_dir / LOG_FILE
        refuse_if_running(self.client, state_dir)
        require_image(self.client, settings.image.strip())
        check_ports_free(settings.host, {name: getattr(settings, name) for name, _ in CONTAINER_PORTS})
        if not engine_allows_memlock(self.client, settings.image.strip()):
            plan = plan_compose(settings, self.compose, ulimits=tuple(u for u in NVIDIA_ULIMITS if u[0] != "memlock"))
        state = ServerState(
            runtime="compose",
            host=settings.host,
            http_port=settings.http_port,
            grpc_port=settings.grpc_port,
            metrics_port=settings.metrics_port,
            models=settings.models,
            log_path=log_path,
            project=plan.project,
            started_at=time.time(),
        )
        self._started[plan.project] = plan
        container: Any = None
        try:
            save_state(state_dir, state)
            self._compose_up(plan)
            container = self._service_container(plan.project)
            state = replace(state, container_id=str(container.id))
            save_state(state_dir, state)
            self.last_report = wait_until_ready(
                state.http_url,
                settings.models,
                timeout_s=settings.startup_timeout_s,
                is_alive=lambda: _running(container),
                log_tail=lambda: _container_logs(container, _LOG_TAIL),
            )
            state = replace(state, backends=container_backends(container))
            save_state(state_dir, state)
        except ServerError as exc:
            exited = _exit_note(container) if container is not None else ""
            self.down(state, stop_timeout_s=_ABORT_STOP_TIMEOUT_S, unload=False)
            raise ServerError(exc.message + exited, hint=exc.hint, details=exc.details) from exc
        except BaseException:  # includes KeyboardInterrupt: never leave the project behind
            self.down(state, stop_timeout_s=_ABORT_STOP_TIMEOUT_S, unload=False)
            raise
        log.info(
            "compose project %s up: ready %.2f s, models %s",
            plan.project,
            self.last_report.server_s,
            ", ".join(f"{m} {s:.2f} s" for m, s in self.last_report.model_load_s) or "none",
        )
        return state

    def _compose_up(self, plan: ComposePlan) -> None:
        plan.file.parent.mkdir(parents=True, exist_ok=True)
        plan.file.write_text(plan.content, encoding="utf-8")
        proc = _run(plan.argv("up", "--detach", "--no-build", "--no-color"))
        if proc.returncode == 0:
            return
        output = (proc.stdout + proc.stderr).strip()
        tail = "\n".join(output.splitlines()[-30:])
        if "port is already allocated" in output or "address already in use" in output:
            raise PortInUse(
                f"Docker Compose cannot publish the server ports of project {plan.project}",
                hint="stop what listens there (`ss -ltnp`, `docker ps`) or choose other server ports",
                details=tail,
            )
        raise EnvironmentProblem(
            f"`{' '.join(plan.compose)} up` failed for project {plan.project} (exit {proc.returncode})",
            hint=f"the compose file is {plan.file}",
            details=tail,
        )

    def _service_container(self, project: str) -> Any:
        filters = {"label": [f"com.docker.compose.project={project}", f"com.docker.compose.service={SERVICE}"]}
        found = self.client.containers.list(all=True, filters=filters)
        if not found:
            raise ServerError(f"compose project {project} has no '{SERVICE}' container after `up`")
        return found[0]

    def _teardown(self, plan: ComposePlan, stop_timeout_s: int = _STOP_TIMEOUT_S) -> None:
        if plan.file.is_file():
            try:
                proc = _run(plan.argv("down", "--remove-orphans", "--volumes", "--timeout", str(stop_timeout_s)))
            except EnvironmentProblem as exc:  # no compose CLI any more: the labels below still work
                log.warning("compose down for %s failed: %s", plan.project, exc.message)
            else:
                if proc.returncode != 0:
                    log.warning("compose down for %s failed: %s", plan.project, (proc.stdout + proc.stderr)[-500:])
        # whatever compose could not remove (or a missing file) is found by our labels
        remove_managed(self.client, plan.project)

    def down(self, state: ServerState, *, stop_timeout_s: int = _STOP_TIMEOUT_S, unload: bool = True) -> None:
        """Unload the models (unless `unload` is False: the abort of a failed `up`), save the log,
        `compose down` the project (labels as a safety net); forget the state. What it did is in `last_stop`."""
        if not state.project:
            return
        state_dir = state.log_path.parent if state.log_path is not None else None
        plan = self._started.pop(state.project, None)
        if plan is None:
            file = state_dir / COMPOSE_FILE if state_dir is not None else Path(COMPOSE_FILE)
            compose = self._compose or _compose_or_none() or ("docker-compose",)
            plan = ComposePlan(compose=compose, project=state.project, file=file, content="")
        report = StopReport()
        with contextlib.suppress(ServerError):
            container = self._service_container(state.project)
            if unload:
                report = unload_before_stop(state, container)
            if state.log_path is not None:
                with contextlib.suppress(OSError):
                    state.log_path.parent.mkdir(parents=True, exist_ok=True)
                    state.log_path.write_text(_container_logs(container, 100_000), encoding="utf-8")
        t0 = time.monotonic()
        self._teardown(plan, stop_timeout_s)
        self.last_stop = replace(report, stop_s=time.monotonic() - t0)
        if state_dir is not None:
            recorded = None
            with contextlib.suppress(EnvironmentProblem):
                recorded = load_state(state_dir)
            if recorded is None or recorded.project == state.project:
                clear_state(state_dir)

    def close(self) -> None:
        """Tear down every project this instance started (tests, atexit)."""
        for project in list(self._started):
            plan = self._started.pop(project)
            self._teardown(plan)

    def status(self, state: ServerState | None) -> ServerStatus:
        """Container liveness plus the server's own view of readiness and of each model."""
        if state is None or not state.project:
            return ServerStatus(running=False, ready=False, models={}, state=state)
        try:
            running = _running(self._service_container(state.project))
        except ServerError:
            running = False
        return query_status(state, running=running)

    def logs(self, state: ServerState, tail: int = 200) -> str:
        """Last `tail` lines of the service's log (or of the log saved at `down`)."""
        if state.project:
            with contextlib.suppress(ServerError):
                return _container_logs(self._service_container(state.project), tail)
        if state.log_path is not None and state.log_path.is_file():
            lines = state.log_path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
            return "".join(lines[-tail:])
        return ""


def _compose_or_none() -> tuple[str, ...] | None:
    try:
        return find_compose()
    except MissingDependency:
        return None
