"""The `docker` runtime: Triton in a container (NGC image with GPUs, or deployer's CPU image).

`deployer.server.docker_plan.plan_container` computes the container as a frozen `ContainerSpec`
(pure; re-exported here); `DockerRuntime.up` is the one place that applies it. Containers carry
`dev.deployer.*` labels so `down`/cleanup only ever touch ours; any failure (Ctrl-C included) removes
the container it created.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Any

from deployer.errors import EnvironmentProblem, MissingDependency, PortInUse, ServerError, UserError
from deployer.server.base import RuntimeName, ServerSettings, ServerState, ServerStatus
from deployer.server.docker_plan import (
    CONTAINER_PORTS,
    CONTAINER_REPOSITORY,
    LABEL_MANAGED,
    LABEL_PROJECT,
    LABEL_STATE_DIR,
    NVIDIA_ULIMITS,
    ContainerSpec,
    GpuRequest,
    container_command,
    gpu_request,
    image_hint,
    managed_labels,
    parse_size,
    plan_container,
    project_name,
    without_memlock,
)
from deployer.server.readiness import ReadinessReport, query_status, wait_until_ready
from deployer.server.state import clear_state, load_state, save_state

__all__ = [
    "CONTAINER_PORTS",
    "CONTAINER_REPOSITORY",
    "LABEL_MANAGED",
    "LABEL_PROJECT",
    "LABEL_STATE_DIR",
    "LOG_FILE",
    "NVIDIA_ULIMITS",
    "ContainerSpec",
    "DockerRuntime",
    "GpuRequest",
    "container_command",
    "docker_client",
    "engine_allows_memlock",
    "gpu_request",
    "image_hint",
    "managed_labels",
    "managed_resources",
    "parse_size",
    "plan_container",
    "project_name",
    "refuse_if_running",
    "remove_managed",
    "require_image",
    "without_memlock",
]

log = logging.getLogger(__name__)

LOG_FILE = "tritonserver.log"  # the container log is saved here when the container goes away

_STOP_TIMEOUT_S = 20  # Triton drains in-flight requests on SIGTERM (exit timeout 30 s by default)
_ABORT_STOP_TIMEOUT_S = 5  # a server that never became ready has nothing in flight worth waiting for
_LOG_TAIL = 60


def docker_client(timeout_s: float = 60.0) -> Any:
    """A docker SDK client that has answered a ping; `EnvironmentProblem` when no engine answers."""
    try:
        from docker.client import DockerClient
    except ImportError as exc:
        raise MissingDependency(
            "the docker runtime needs the docker SDK, which is not installed",
            hint="pip install 'deployer[docker]'",
        ) from exc
    where = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    try:
        client = DockerClient.from_env(timeout=int(timeout_s))
        client.ping()
    except Exception as exc:
        raise EnvironmentProblem(
            f"no Docker engine answers at {where}: {exc}",
            hint="start the Docker daemon (`sudo systemctl start docker`, or `sudo dockerd &`), "
            "or point DOCKER_HOST at a running one",
        ) from exc
    return client


def require_image(client: Any, image: str) -> str:
    """The local image id of `image`; `EnvironmentProblem` naming the image and how to get it."""
    from docker.errors import ImageNotFound

    try:
        return str(client.images.get(image).id)
    except ImageNotFound as exc:
        raise EnvironmentProblem(
            f"Docker image {image} is not present on this machine", hint=image_hint(image)
        ) from exc


def _is_ours(container: Any) -> bool:
    labels = container.labels or {}
    return bool(labels.get(LABEL_MANAGED) == "true")


def _container_logs(container: Any, tail: int) -> str:
    try:
        data = container.logs(stdout=True, stderr=True, tail=tail)
    except Exception as exc:  # the log is a courtesy; never hide the real error behind it
        return f"<container log unavailable: {exc}>"
    return data.decode("utf-8", errors="replace") if isinstance(data, bytes) else str(data)


def _save_log(container: Any, path: Path | None) -> None:
    if path is None:
        return
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_container_logs(container, 100_000), encoding="utf-8")


def _remove(container: Any, log_path: Path | None, *, stop_timeout: int = _STOP_TIMEOUT_S) -> None:
    """Stop (SIGTERM, then SIGKILL after `stop_timeout`), keep the log, remove. Idempotent."""
    from docker.errors import APIError, NotFound

    with contextlib.suppress(NotFound):
        container.reload()
        if container.status in ("running", "restarting", "paused"):
            with contextlib.suppress(APIError):
                container.stop(timeout=stop_timeout)
        _save_log(container, log_path)
        container.remove(force=True, v=True)


def managed_resources(client: Any, project: str | None = None) -> dict[str, list[str]]:
    """Names of containers, networks and volumes labelled as deployer's (optionally one project's)."""
    filters = {"label": [f"{LABEL_MANAGED}=true"] + ([f"{LABEL_PROJECT}={project}"] if project else [])}
    return {
        "containers": [c.name for c in client.containers.list(all=True, filters=filters)],
        "networks": [n.name for n in client.networks.list(filters=filters)],
        "volumes": [v.name for v in client.volumes.list(filters=filters)],
    }


def remove_managed(client: Any, project: str | None = None) -> dict[str, list[str]]:
    """Remove every container, network and volume labelled as ours (optionally one project's)."""
    from docker.errors import APIError, NotFound

    filters = {"label": [f"{LABEL_MANAGED}=true"] + ([f"{LABEL_PROJECT}={project}"] if project else [])}
    removed: dict[str, list[str]] = {"containers": [], "networks": [], "volumes": []}
    for container in client.containers.list(all=True, filters=filters):
        _remove(container, None, stop_timeout=5)
        removed["containers"].append(container.name)
    for kind, collection in (("networks", client.networks), ("volumes", client.volumes)):
        for item in collection.list(filters=filters):
            with contextlib.suppress(NotFound, APIError):
                item.remove()
                removed[kind].append(item.name)
    return removed


def _port_error(exc: Exception, spec: ContainerSpec) -> PortInUse | None:
    text = str(exc)
    if "port is already allocated" not in text and "address already in use" not in text:
        return None
    ports = ", ".join(f"{host}:{hport}" for _, host, hport in spec.ports)
    return PortInUse(
        f"Docker cannot publish the server ports ({ports}): {text}",
        hint="stop what listens there (`ss -ltnp`, `docker ps`) or choose other server ports",
    )


def _gpu_error(exc: Exception, spec: ContainerSpec) -> EnvironmentProblem | None:
    text = str(exc)
    if spec.gpus is None or ("device driver" not in text and "nvidia" not in text.lower()):
        return None
    return EnvironmentProblem(
        f"Docker cannot give the container the requested GPUs: {text}",
        hint="install the NVIDIA driver and the NVIDIA Container Toolkit (`nvidia-ctk runtime configure "
        "--runtime=docker`, restart dockerd), or set server.gpus to [] to run on CPU",
    )


def refuse_if_running(client: Any, state_dir: Path) -> None:
    """`EnvironmentProblem` when a server for `state_dir` still runs (any runtime); otherwise remove the
    stopped leftovers of its project and forget a stale server.json."""
    previous = load_state(state_dir)
    project = project_name(state_dir)
    filters = {"label": [f"{LABEL_MANAGED}=true", f"{LABEL_PROJECT}={project}"]}
    running = client.containers.list(filters=filters)  # running only
    if running:
        raise EnvironmentProblem(
            f"a server started from {state_dir} is already running (container {running[0].name})",
            hint="run `deployer down` first",
        )
    if previous is not None and previous.runtime == "local":
        from deployer.server.local import is_running

        if is_running(previous.pid):
            raise EnvironmentProblem(
                f"a server started from {state_dir} is already running (local runtime, pid {previous.pid})",
                hint="run `deployer down` first",
            )
    remove_managed(client, project)
    if previous is not None:
        clear_state(state_dir)


_MEMLOCK_ALLOWED: dict[str, bool] = {}  # engine id -> may containers get memlock=-1


def engine_allows_memlock(client: Any, image: str) -> bool:
    """Whether this engine can give a container `memlock=-1` (probed once per engine and process).

    Engines without CAP_SYS_RESOURCE (rootless Docker, some sandboxes and CI runners) refuse it at
    container start. It only matters for pinned GPU memory, so deployer then runs with the engine's
    default limit instead of not at all, and says so.
    """
    from docker.errors import APIError, NotFound
    from docker.types import Ulimit

    engine = str(client.info().get("ID", "")) or "default"
    if engine in _MEMLOCK_ALLOWED:
        return _MEMLOCK_ALLOWED[engine]
    allowed = True
    probe = client.containers.create(
        image,
        entrypoint=["true"],
        command=[],
        ulimits=[Ulimit(name="memlock", soft=-1, hard=-1)],
        labels={LABEL_MANAGED: "true", LABEL_PROJECT: "deployer-memlock-probe"},
        network_disabled=True,
    )
    try:
        probe.start()
    except APIError as exc:
        allowed = "rlimit" not in str(exc)  # any other failure shows up again at the real start
    finally:
        with contextlib.suppress(NotFound, APIError):
            probe.remove(force=True)
    if not allowed:
        log.warning("the Docker engine refuses ulimit memlock=-1 (no CAP_SYS_RESOURCE); using its default limit")
    _MEMLOCK_ALLOWED[engine] = allowed
    return allowed


# -- the runtime -----------------------------------------------------------------------------------


class DockerRuntime:
    """Runtime protocol implementation for a Triton container on the local Docker engine."""

    name: RuntimeName = "docker"

    def __init__(self, client: Any = None) -> None:
        self._client = client
        self._started: dict[str, Path | None] = {}  # container id -> log path, for close()
        self.last_report: ReadinessReport | None = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = docker_client()
        return self._client

    # -- up ----------------------------------------------------------------------------------------

    def up(self, settings: ServerSettings) -> ServerState:
        """Create and start the container, load `settings.models`, wait for readiness, record the state."""
        from deployer.server.local import check_ports_free

        spec = plan_container(settings)
        if not settings.repository.is_dir():
            raise UserError(
                f"model repository {settings.repository} does not exist",
                hint="publish the models first (`deployer publish SPEC`)",
            )
        state_dir = settings.state_dir.absolute()
        log_path = state_dir / LOG_FILE
        client = self.client
        self._forget_previous(state_dir, spec.name)
        require_image(client, spec.image)
        check_ports_free(settings.host, {name: getattr(settings, name) for name, _ in CONTAINER_PORTS})
        if not engine_allows_memlock(client, spec.image):
            spec = without_memlock(spec)
        container = self._create_and_start(spec, log_path)
        state = ServerState(
            runtime="docker",
            host=settings.host,
            http_port=settings.http_port,
            grpc_port=settings.grpc_port,
            metrics_port=settings.metrics_port,
            models=settings.models,
            log_path=log_path,
            container_id=str(container.id),
            project=spec.name,
            started_at=time.time(),
        )
        try:
            save_state(state_dir, state)  # before readiness: `deployer down` elsewhere must find it
            self.last_report = wait_until_ready(
                state.http_url,
                settings.models,
                timeout_s=settings.startup_timeout_s,
                is_alive=lambda: _running(container),
                log_tail=lambda: _container_logs(container, _LOG_TAIL),
            )
        except ServerError as exc:
            exited = _exit_note(container)
            self.down(state, stop_timeout_s=_ABORT_STOP_TIMEOUT_S)
            raise ServerError(exc.message + exited, hint=exc.hint, details=exc.details) from exc
        except BaseException:  # includes KeyboardInterrupt: never leave the container behind
            self.down(state, stop_timeout_s=_ABORT_STOP_TIMEOUT_S)
            raise
        log.info(
            "container %s (%s) up: ready %.2f s, models %s",
            spec.name,
            str(container.id)[:12],
            self.last_report.server_s,
            ", ".join(f"{m} {s:.2f} s" for m, s in self.last_report.model_load_s) or "none",
        )
        return state

    def _forget_previous(self, state_dir: Path, name: str) -> None:
        """Refuse when this state dir's server still runs; clear leftovers of a dead one."""
        from docker.errors import NotFound

        with contextlib.suppress(NotFound):
            squatter = self.client.containers.get(name)
            if not _is_ours(squatter):
                raise EnvironmentProblem(
                    f"a container named {squatter.name} exists and was not created by deployer",
                    hint=f"remove or rename it (`docker rm -f {squatter.name}`)",
                )
        refuse_if_running(self.client, state_dir)

    def _create_and_start(self, spec: ContainerSpec, log_path: Path) -> Any:
        from docker.errors import APIError, ImageNotFound, NotFound

        container = None
        try:
            container = self.client.containers.create(**spec.run_kwargs())
            self._started[str(container.id)] = log_path
            container.start()
            return container
        except BaseException as exc:
            # the create may have succeeded before we saw its id (Ctrl-C): find it by its unique name
            if container is None:
                with contextlib.suppress(NotFound, APIError):
                    found = self.client.containers.get(spec.name)
                    if _is_ours(found):
                        container = found
            if container is not None:
                self._started.pop(str(container.id), None)
                _remove(container, log_path, stop_timeout=5)
            if isinstance(exc, ImageNotFound):
                raise EnvironmentProblem(
                    f"Docker image {spec.image} is not present on this machine", hint=image_hint(spec.image)
                ) from exc
            if isinstance(exc, APIError):
                mapped = _port_error(exc, spec) or _gpu_error(exc, spec)
                if mapped is not None:
                    raise mapped from exc
                raise EnvironmentProblem(f"Docker could not start container {spec.name}: {exc}") from exc
            raise

    # -- down / status / logs ----------------------------------------------------------------------

    def down(self, state: ServerState, *, stop_timeout_s: int = _STOP_TIMEOUT_S) -> None:
        """Stop and remove the container (keeping its log in `state.log_path`); forget the state.

        Triton gets `stop_timeout_s` to drain in-flight requests after SIGTERM, then it is killed.
        """
        from docker.errors import NotFound

        for ref in (state.container_id, state.project):
            if not ref:
                continue
            try:
                container = self.client.containers.get(ref)
            except NotFound:
                continue
            if not _is_ours(container):
                log.warning("not removing container %s: it has no %s label", ref, LABEL_MANAGED)
                continue
            self._started.pop(str(container.id), None)
            _remove(container, state.log_path, stop_timeout=stop_timeout_s)
        if state.log_path is not None:
            state_dir = state.log_path.parent
            recorded = None
            with contextlib.suppress(EnvironmentProblem):
                recorded = load_state(state_dir)
            if recorded is None or recorded.container_id == state.container_id:
                clear_state(state_dir)

    def close(self) -> None:
        """Remove every container this instance started that still exists (tests, atexit)."""
        from docker.errors import NotFound

        for cid, log_path in list(self._started.items()):
            self._started.pop(cid, None)
            with contextlib.suppress(NotFound):
                _remove(self.client.containers.get(cid), log_path, stop_timeout=5)

    def container(self, state: ServerState) -> Any | None:
        """The SDK container object for `state`, or None when it is gone."""
        from docker.errors import NotFound

        for ref in (state.container_id, state.project):
            if ref:
                with contextlib.suppress(NotFound):
                    return self.client.containers.get(ref)
        return None

    def status(self, state: ServerState | None) -> ServerStatus:
        """Container liveness plus the server's own view of readiness and of each model."""
        if state is None:
            return ServerStatus(running=False, ready=False, models={}, state=None)
        container = self.container(state)
        return query_status(state, running=container is not None and _running(container))

    def logs(self, state: ServerState, tail: int = 200) -> str:
        """Last `tail` lines of the container log (or of the log saved when it was removed)."""
        container = self.container(state)
        if container is not None:
            return _container_logs(container, tail)
        return _file_tail(state.log_path, tail)


def _running(container: Any) -> bool:
    from docker.errors import NotFound

    try:
        container.reload()
    except NotFound:
        return False
    return bool(container.status in ("created", "running", "restarting"))


def _exit_note(container: Any) -> str:
    from docker.errors import NotFound

    try:
        container.reload()
    except NotFound:
        return ""
    if container.status in ("exited", "dead"):
        code = container.attrs.get("State", {}).get("ExitCode")
        return f" (container {container.name} exited with code {code})"
    return ""


def _file_tail(path: Path | None, lines: int) -> str:
    if path is None or not path.is_file():
        return ""
    text = path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
    return "".join(text[-lines:])
