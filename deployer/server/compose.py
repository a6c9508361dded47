"""The `compose` runtime and the `compose.yaml` generator.

`render_compose(settings)` is pure: one `triton` service with the same container as the docker runtime
(image, command, ports bound to `settings.host`, the repository read-only at /models, shm size,
NVIDIA's ulimits, GPU reservation, labels) plus a healthcheck on Triton's ready endpoint. The
`ComposeRuntime` writes it to `<state_dir>/compose.yaml` and drives `docker compose` (v2 plugin) or
`docker-compose` (v1), whichever exists, then loads the models through the same readiness code.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import subprocess
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from deployer.errors import EnvironmentProblem, MissingDependency, PortInUse, ServerError, UserError
from deployer.server.base import RuntimeName, ServerSettings, ServerState, ServerStatus
from deployer.server.docker_runtime import (  # the helpers are shared by both container runtimes
    CONTAINER_PORTS,
    CONTAINER_REPOSITORY,
    LOG_FILE,
    NVIDIA_ULIMITS,
    _container_logs,
    _exit_note,
    _running,
    container_command,
    docker_client,
    engine_allows_memlock,
    gpu_request,
    managed_labels,
    parse_size,
    project_name,
    refuse_if_running,
    remove_managed,
    require_image,
)
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
SERVICE = "triton"
# python3 is in NGC's images and in deployer's CPU image (curl is not guaranteed); urlopen raises on
# any non-2xx answer, so the exit status is the readiness.
HEALTHCHECK_TEST: tuple[str, ...] = (
    "CMD",
    "python3",
    "-c",
    "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/v2/health/ready', timeout=3)",
)
_COMPOSE_TIMEOUT_S = 300.0
_STOP_TIMEOUT_S = 20  # Triton drains in-flight requests on SIGTERM
_ABORT_STOP_TIMEOUT_S = 5  # after a failed `up` nothing is in flight
_LOG_TAIL = 60


# -- pure rendering --------------------------------------------------------------------------------


def _repository_source(repository: Path) -> str:
    """Absolute paths as they are; relative ones relative to the compose file (`./...`)."""
    if repository.is_absolute():
        return str(repository)
    text = repository.as_posix()
    return text if text.startswith(("./", "../")) else f"./{text}"


def compose_document(
    settings: ServerSettings,
    *,
    project: str | None = None,
    load_models: bool = False,
    ulimits: tuple[tuple[str, int, int], ...] = NVIDIA_ULIMITS,
) -> dict[str, Any]:
    """The compose file as data.

    `load_models=True` adds `--load-model` flags so a plain `docker compose up` serves the models
    without deployer (the quickstart file); deployer itself loads them through the API so a failure
    names the model. With a relative `settings.state_dir` and repository (and an explicit `project`)
    the output does not depend on the machine, as a file committed to git must not.
    """
    if not settings.image.strip():
        raise UserError("server.image is empty", hint="e.g. nvcr.io/nvidia/tritonserver:24.10-py3")
    parse_size(settings.shm_size)  # validate now; compose would fail later and less clearly
    command = list(container_command(settings))
    if load_models:
        command.extend(f"--load-model={m}" for m in settings.models)
    labels = dict(managed_labels(settings.state_dir, project))
    service: dict[str, Any] = {
        "image": settings.image.strip(),
        "command": command,
        "init": True,
        "ports": [f"{settings.host}:{getattr(settings, name)}:{cport}" for name, cport in CONTAINER_PORTS],
        "volumes": [
            {
                "type": "bind",
                "source": _repository_source(settings.repository),
                "target": CONTAINER_REPOSITORY,
                "read_only": True,
            }
        ],
        "shm_size": settings.shm_size.strip(),
        "ulimits": {name: {"soft": soft, "hard": hard} for name, soft, hard in ulimits},
        "labels": labels,
        "healthcheck": {
            "test": list(HEALTHCHECK_TEST),
            "interval": "5s",
            "timeout": "4s",
            "retries": 3,
            "start_period": f"{max(10, int(settings.startup_timeout_s))}s",
        },
    }
    if settings.env:
        service["environment"] = dict(settings.env)
    gpus = gpu_request(settings.gpus)
    if gpus is not None:
        device: dict[str, Any] = {"driver": gpus.driver}
        if gpus.device_ids:
            device["device_ids"] = list(gpus.device_ids)
        else:
            device["count"] = "all"
        device["capabilities"] = list(gpus.capabilities[0])
        service["deploy"] = {"resources": {"reservations": {"devices": [device]}}}
    return {
        "services": {SERVICE: service},
        # labelled so the project's network counts as ours (and is checked for leftovers)
        "networks": {"default": {"labels": dict(labels)}},
    }


def render_compose(
    settings: ServerSettings,
    *,
    project: str | None = None,
    load_models: bool = False,
    ulimits: tuple[tuple[str, int, int], ...] = NVIDIA_ULIMITS,
) -> str:
    """`compose.yaml` text for `settings` (pure; byte-stable for equal inputs).

    The repository path is written as given: absolute, or relative to the compose file's directory.
    """
    from ruamel.yaml import YAML
    from ruamel.yaml.scalarstring import DoubleQuotedScalarString as Quoted

    doc = compose_document(settings, project=project, load_models=load_models, ulimits=ulimits)
    service = doc["services"][SERVICE]
    # Compose v1 reads YAML 1.1: quote what could turn into a number or a boolean there
    service["ports"] = [Quoted(p) for p in service["ports"]]
    service["shm_size"] = Quoted(service["shm_size"])
    for mapping in (service["labels"], doc["networks"]["default"]["labels"], service.get("environment", {})):
        for key in mapping:
            mapping[key] = Quoted(str(mapping[key]))
    yaml = YAML(typ="rt", pure=True)
    yaml.default_flow_style = False
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    buf = io.StringIO()
    yaml.dump(doc, buf)
    gpu_note = "GPUs reserved below" if "deploy" in service else "no GPU requested (server.gpus)"
    header = (
        "# Generated by deployer from the spec's server settings; regenerate instead of editing.\n"
        f"# Triton in {settings.image.strip()}, {gpu_note}.\n"
        + (
            "# Models are loaded at start-up (--load-model): `docker compose up -d` is enough.\n"
            if load_models
            else "# Models are loaded by `deployer up` through Triton's repository API.\n"
        )
    )
    return header + buf.getvalue()


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
        except ServerError as exc:
            exited = _exit_note(container) if container is not None else ""
            self.down(state, stop_timeout_s=_ABORT_STOP_TIMEOUT_S)
            raise ServerError(exc.message + exited, hint=exc.hint, details=exc.details) from exc
        except BaseException:  # includes KeyboardInterrupt: never leave the project behind
            self.down(state, stop_timeout_s=_ABORT_STOP_TIMEOUT_S)
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

    def down(self, state: ServerState, *, stop_timeout_s: int = _STOP_TIMEOUT_S) -> None:
        """Save the log, `compose down` the project (labels as a safety net); forget the state."""
        if not state.project:
            return
        state_dir = state.log_path.parent if state.log_path is not None else None
        plan = self._started.pop(state.project, None)
        if plan is None:
            file = state_dir / COMPOSE_FILE if state_dir is not None else Path(COMPOSE_FILE)
            compose = self._compose or _compose_or_none() or ("docker-compose",)
            plan = ComposePlan(compose=compose, project=state.project, file=file, content="")
        with contextlib.suppress(ServerError):
            container = self._service_container(state.project)
            if state.log_path is not None:
                with contextlib.suppress(OSError):
                    state.log_path.parent.mkdir(parents=True, exist_ok=True)
                    state.log_path.write_text(_container_logs(container, 100_000), encoding="utf-8")
        self._teardown(plan, stop_timeout_s)
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
