"""The `compose` runtime: the container of the docker runtime as a Docker Compose project.

`ComposeRuntime` writes the file (rendered by deployer.server.docker.compose_render) to
`<state_dir>/compose.yaml` and drives `docker compose` (v2 plugin) or `docker-compose` (v1),
whichever exists, then loads the models through the same readiness code.
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
from deployer.server.base import RuntimeName, ServerSettings, ServerState, StopReport
from deployer.server.docker.client import (  # shared by both container runtimes
    container_launched,
    container_logs,
    container_running,
    docker_client,
    engine_allows_memlock,
    refuse_if_running,
    remove_managed,
    require_image,
    save_log,
    unload_before_stop,
)
from deployer.server.docker.compose_render import SERVICE, render_compose
from deployer.server.docker.plan import NVIDIA_ULIMITS, image_of, project_name
from deployer.server.lifecycle import Launched, ServerLifecycle, file_tail, forget
from deployer.server.state import save_state

__all__ = [
    "COMPOSE_FILE", "ComposePlan", "ComposeRuntime", "compose_up", "find_compose", "plan_compose", "teardown_project",
]

log = logging.getLogger(__name__)

COMPOSE_FILE = "compose.yaml"
_COMPOSE_TIMEOUT_S = 300.0
_STOP_TIMEOUT_S = 20  # after SIGTERM (Triton itself gives up after --exit-timeout-secs); then SIGKILL
_ABORT_STOP_TIMEOUT_S = 5  # after a failed `up` nothing is in flight


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


def compose_up(plan: ComposePlan) -> None:
    """Write the plan's file and `up --detach` its project; PortInUse / EnvironmentProblem on failure."""
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


def teardown_project(client: Any, plan: ComposePlan, stop_timeout_s: int = _STOP_TIMEOUT_S) -> None:
    """`compose down` the project (containers, network, volumes), then remove whatever is left by our labels."""
    if plan.file.is_file():
        try:
            proc = _run(plan.argv("down", "--remove-orphans", "--volumes", "--timeout", str(stop_timeout_s)))
        except EnvironmentProblem as exc:  # no compose CLI any more: the labels below still work
            log.warning("compose down for %s failed: %s", plan.project, exc.message)
        else:
            if proc.returncode != 0:
                log.warning("compose down for %s failed: %s", plan.project, (proc.stdout + proc.stderr)[-500:])
    # whatever compose could not remove (or a missing file) is found by our labels
    remove_managed(client, plan.project)


class ComposeRuntime(ServerLifecycle[ComposePlan]):
    """Runtime protocol implementation driving Docker Compose."""

    name: RuntimeName = "compose"

    def __init__(self, client: Any = None, compose: tuple[str, ...] | None = None) -> None:
        super().__init__()
        self._client = client
        self._compose = compose
        self._started: dict[str, ComposePlan] = {}  # project -> plan, for close()

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

    # -- how the project is planned, found and started (the lifecycle is ServerLifecycle.up) ---------

    def _plan(self, settings: ServerSettings) -> ComposePlan:
        return plan_compose(settings, self.compose)

    def _prepare(self, settings: ServerSettings, plan: ComposePlan) -> None:
        refuse_if_running(self.client, settings.state_dir.absolute())
        require_image(self.client, image_of(settings))

    def _launch(self, settings: ServerSettings, plan: ComposePlan, state: ServerState) -> Launched:
        if not engine_allows_memlock(self.client, image_of(settings)):
            plan = plan_compose(settings, self.compose, ulimits=tuple(u for u in NVIDIA_ULIMITS if u[0] != "memlock"))
        state = replace(state, project=plan.project)
        self._started[plan.project] = plan
        try:
            # recorded before `compose up`: a `deployer down` in another shell finds the project by it
            save_state(plan.file.parent, state)
            compose_up(plan)
            container = self._service_container(plan.project)
        except BaseException:  # includes KeyboardInterrupt: never leave the project behind
            self._abort(state)
            raise
        return container_launched(container, replace(state, container_id=str(container.id)),
                                  f"compose project {plan.project}")

    def _abort(self, state: ServerState) -> None:
        self.down(state, stop_timeout_s=_ABORT_STOP_TIMEOUT_S, unload=False)

    def _is_running(self, state: ServerState) -> bool:
        if not state.project:
            return False
        try:
            return container_running(self._service_container(state.project))
        except ServerError:
            return False

    def _service_container(self, project: str) -> Any:
        filters = {"label": [f"com.docker.compose.project={project}", f"com.docker.compose.service={SERVICE}"]}
        found = self.client.containers.list(all=True, filters=filters)
        if not found:
            raise ServerError(f"compose project {project} has no '{SERVICE}' container after `up`")
        return found[0]

    def _teardown(self, plan: ComposePlan, stop_timeout_s: int = _STOP_TIMEOUT_S) -> None:
        teardown_project(self.client, plan, stop_timeout_s)

    def down(self, state: ServerState, *, stop_timeout_s: int = _STOP_TIMEOUT_S, unload: bool = True,
             quick: bool = False) -> None:
        """Unload the models (unless `unload` is False: the abort of a failed `up`), save the log,
        `compose down` the project (labels as a safety net); forget the state. What it did is in `last_stop`."""
        if not state.project:
            return
        if quick:  # see Runtime.down: nothing to drain, so no unload and no stop timeout
            stop_timeout_s, unload = 0, False
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
            save_log(container, state.log_path)
        t0 = time.monotonic()
        self._teardown(plan, stop_timeout_s)
        self.last_stop = replace(report, stop_s=time.monotonic() - t0)
        forget(state, "project")

    def close(self) -> None:
        """Tear down every project this instance started (tests, atexit)."""
        for project in list(self._started):
            plan = self._started.pop(project)
            self._teardown(plan)

    def logs(self, state: ServerState, tail: int = 200) -> str:
        """Last `tail` lines of the service's log (or of the log saved at `down`)."""
        if state.project:
            with contextlib.suppress(ServerError):
                return container_logs(self._service_container(state.project), tail)
        return file_tail(state.log_path, tail)


def _compose_or_none() -> tuple[str, ...] | None:
    try:
        return find_compose()
    except MissingDependency:
        return None
