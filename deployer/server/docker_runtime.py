"""The `docker` runtime: Triton in a container (NGC image with GPUs, or deployer's CPU image).

`deployer.server.docker_plan.plan_container` computes the container as a frozen `ContainerSpec`
(pure; re-exported here); `DockerRuntime.up` is the one place that applies it. Containers carry
`dev.deployer.*` labels so `down`/cleanup only ever touch ours; any failure (Ctrl-C included) removes
the container it created.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from deployer.errors import EnvironmentProblem, PortInUse, ServerError, UserError
from deployer.server.base import (
    RuntimeName,
    ServerSettings,
    ServerState,
    ServerStatus,
    StopReport,
    with_server_defaults,
)
from deployer.server.docker_engine import (
    STOP_TIMEOUT_S,
    _container_logs,
    _exit_note,
    _is_ours,
    _remove,
    _running,
    container_backends,
    docker_client,
    engine_allows_memlock,
    managed_resources,
    refuse_if_running,
    remove_managed,
    require_image,
    unload_before_stop,
)
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

_ABORT_STOP_TIMEOUT_S = 5  # a server that never became ready has nothing in flight worth waiting for
_LOG_TAIL = 60


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


# -- the runtime -----------------------------------------------------------------------------------


class DockerRuntime:
    """Runtime protocol implementation for a Triton container on the local Docker engine."""

    name: RuntimeName = "docker"

    def __init__(self, client: Any = None) -> None:
        self._client = client
        self._started: dict[str, Path | None] = {}  # container id -> log path, for close()
        self.last_report: ReadinessReport | None = None
        self.last_stop: StopReport | None = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = docker_client()
        return self._client

    # -- up ----------------------------------------------------------------------------------------

    def up(self, settings: ServerSettings) -> ServerState:
        """Create and start the container, load `settings.models`, wait for readiness, record the state."""
        from deployer.server.local import check_ports_free

        spec = plan_container(with_server_defaults(settings))
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
            state = replace(state, backends=container_backends(container))
            save_state(state_dir, state)
        except ServerError as exc:
            exited = _exit_note(container)
            self.down(state, stop_timeout_s=_ABORT_STOP_TIMEOUT_S, unload=False)
            raise ServerError(exc.message + exited, hint=exc.hint, details=exc.details) from exc
        except BaseException:  # includes KeyboardInterrupt: never leave the container behind
            self.down(state, stop_timeout_s=_ABORT_STOP_TIMEOUT_S, unload=False)
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

    def down(self, state: ServerState, *, stop_timeout_s: int = STOP_TIMEOUT_S, unload: bool = True) -> None:
        """Unload the models, stop and remove the container (keeping its log in `state.log_path`); forget
        the state. What it did is in `last_stop`.

        Triton gets `stop_timeout_s` after SIGTERM, then it is killed. The models are unloaded first
        (`unload_before_stop`) unless `unload` is False (the abort of a failed `up`: nothing to drain).
        """
        from docker.errors import NotFound

        report = StopReport()
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
            if unload:
                report, unload = unload_before_stop(state, container), False
            t0 = time.monotonic()
            _remove(container, state.log_path, stop_timeout=stop_timeout_s)
            report = replace(report, stop_s=report.stop_s + time.monotonic() - t0)
        self.last_stop = report
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


def _file_tail(path: Path | None, lines: int) -> str:
    if path is None or not path.is_file():
        return ""
    text = path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
    return "".join(text[-lines:])
