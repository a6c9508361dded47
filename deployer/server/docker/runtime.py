"""The `docker` runtime: Triton in a container (NGC image with GPUs, or deployer's CPU image).

`deployer.server.docker.plan.plan_container` computes the container as a frozen `ContainerSpec`
(pure); `DockerRuntime._launch`, run by the shared lifecycle of deployer.server.lifecycle, is the
one place that applies it. Containers carry `dev.deployer.*` labels so `down`/cleanup only ever touch
ours; any failure (Ctrl-C included) removes the container it created.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from deployer.errors import EnvironmentProblem, PortInUse
from deployer.server.base import RuntimeName, ServerSettings, ServerState, StopReport
from deployer.server.docker.client import (
    STOP_TIMEOUT_S,
    container_launched,
    container_logs,
    container_running,
    docker_client,
    engine_allows_memlock,
    is_ours,
    refuse_if_running,
    remove_container,
    require_image,
    unload_before_stop,
)
from deployer.server.docker.plan import (
    LABEL_MANAGED,
    ContainerSpec,
    image_hint,
    plan_container,
    without_memlock,
)
from deployer.server.lifecycle import Launched, ServerLifecycle, file_tail, forget

__all__ = ["DockerRuntime"]

log = logging.getLogger(__name__)

_ABORT_STOP_TIMEOUT_S = 5  # a server that never became ready has nothing in flight worth waiting for


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


class DockerRuntime(ServerLifecycle[ContainerSpec]):
    """Runtime protocol implementation for a Triton container on the local Docker engine."""

    name: RuntimeName = "docker"

    def __init__(self, client: Any = None) -> None:
        super().__init__()
        self._client = client
        self._started: dict[str, Path | None] = {}  # container id -> log path, for close()

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = docker_client()
        return self._client

    # -- how the container is planned, found and started (the lifecycle is ServerLifecycle.up) -------

    def _plan(self, settings: ServerSettings) -> ContainerSpec:
        return plan_container(settings)

    def _prepare(self, settings: ServerSettings, plan: ContainerSpec) -> None:
        self._forget_previous(settings.state_dir.absolute(), plan.name)
        require_image(self.client, plan.image)

    def _launch(self, settings: ServerSettings, plan: ContainerSpec, state: ServerState) -> Launched:
        if not engine_allows_memlock(self.client, plan.image):
            plan = without_memlock(plan)
        container = self._create_and_start(plan, state.log_path)
        return container_launched(container, replace(state, container_id=str(container.id), project=plan.name),
                                  f"container {plan.name} ({str(container.id)[:12]})")

    def _abort(self, state: ServerState) -> None:
        self.down(state, stop_timeout_s=_ABORT_STOP_TIMEOUT_S, unload=False)

    def _is_running(self, state: ServerState) -> bool:
        container = self.container(state)
        return container is not None and container_running(container)

    def _forget_previous(self, state_dir: Path, name: str) -> None:
        """Refuse when this state dir's server still runs; clear leftovers of a dead one."""
        from docker.errors import NotFound

        with contextlib.suppress(NotFound):
            squatter = self.client.containers.get(name)
            if not is_ours(squatter):
                raise EnvironmentProblem(
                    f"a container named {squatter.name} exists and was not created by deployer",
                    hint=f"remove or rename it (`docker rm -f {squatter.name}`)",
                )
        refuse_if_running(self.client, state_dir)

    def _create_and_start(self, spec: ContainerSpec, log_path: Path | None) -> Any:
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
                    if is_ours(found):
                        container = found
            if container is not None:
                self._started.pop(str(container.id), None)
                remove_container(container, log_path, stop_timeout=5)
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

    def down(self, state: ServerState, *, stop_timeout_s: int = STOP_TIMEOUT_S, unload: bool = True,
             quick: bool = False) -> None:
        """Unload the models, stop and remove the container (keeping its log in `state.log_path`); forget
        the state. What it did is in `last_stop`.

        Triton gets `stop_timeout_s` after SIGTERM, then it is killed. The models are unloaded first
        (`unload_before_stop`) unless `unload` is False (the abort of a failed `up`: nothing to drain).
        """
        from docker.errors import NotFound

        if quick:  # see Runtime.down: nothing to drain, so no unload and no stop timeout
            stop_timeout_s, unload = 0, False
        report = StopReport()
        for ref in (state.container_id, state.project):
            if not ref:
                continue
            try:
                container = self.client.containers.get(ref)
            except NotFound:
                continue
            if not is_ours(container):
                log.warning("not removing container %s: it has no %s label", ref, LABEL_MANAGED)
                continue
            self._started.pop(str(container.id), None)
            if unload:
                report, unload = unload_before_stop(state, container), False
            t0 = time.monotonic()
            remove_container(container, state.log_path, stop_timeout=stop_timeout_s)
            report = replace(report, stop_s=report.stop_s + time.monotonic() - t0)
        self.last_stop = report
        forget(state, "container_id")

    def close(self) -> None:
        """Remove every container this instance started that still exists (tests, atexit)."""
        from docker.errors import NotFound

        for cid, log_path in list(self._started.items()):
            self._started.pop(cid, None)
            with contextlib.suppress(NotFound):
                remove_container(self.client.containers.get(cid), log_path, stop_timeout=5)

    def container(self, state: ServerState) -> Any | None:
        """The SDK container object for `state`, or None when it is gone."""
        from docker.errors import NotFound

        for ref in (state.container_id, state.project):
            if ref:
                with contextlib.suppress(NotFound):
                    return self.client.containers.get(ref)
        return None

    def logs(self, state: ServerState, tail: int = 200) -> str:
        """Last `tail` lines of the container log (or of the log saved when it was removed)."""
        container = self.container(state)
        if container is not None:
            return container_logs(container, tail)
        return file_tail(state.log_path, tail)
