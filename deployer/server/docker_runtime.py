"""The `docker` runtime: Triton in a container (NGC image with GPUs, or deployer's CPU image).

`plan_container` computes the whole container as a frozen `ContainerSpec` (pure, unit-tested);
`DockerRuntime.up` is the one place that applies it. Containers carry `dev.deployer.*` labels so
`down`/cleanup only ever touch ours; any failure (Ctrl-C included) removes the container it created.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from deployer.errors import EnvironmentProblem, MissingDependency, PortInUse, ServerError, UserError
from deployer.server.argv import tritonserver_argv
from deployer.server.base import RuntimeName, ServerSettings, ServerState, ServerStatus
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

LABEL_MANAGED = "dev.deployer.managed"  # "true" on every container/network deployer creates
LABEL_PROJECT = "dev.deployer.project"  # project_name(state_dir)
LABEL_STATE_DIR = "dev.deployer.state-dir"  # absolute state dir on the host, for humans and `down`
LOG_FILE = "tritonserver.log"  # the container log is saved here when the container goes away
CONTAINER_REPOSITORY = "/models"
# Inside the container Triton always listens on its default ports; the host side is configurable.
CONTAINER_PORTS: tuple[tuple[str, int], ...] = (("http_port", 8000), ("grpc_port", 8001), ("metrics_port", 8002))
# NVIDIA's recommendation for Triton containers (`--ulimit memlock=-1 --ulimit stack=67108864`).
NVIDIA_ULIMITS: tuple[tuple[str, int, int], ...] = (("memlock", -1, -1), ("stack", 67108864, 67108864))
_STOP_TIMEOUT_S = 20  # Triton drains in-flight requests on SIGTERM (exit timeout 30 s by default)
_ABORT_STOP_TIMEOUT_S = 5  # a server that never became ready has nothing in flight worth waiting for
_LOG_TAIL = 60


@dataclass(frozen=True)
class GpuRequest:
    """A Docker device request for NVIDIA GPUs: all of them (`count=-1`) or specific ids."""

    count: int = 0
    device_ids: tuple[str, ...] = ()
    driver: str = "nvidia"
    capabilities: tuple[tuple[str, ...], ...] = (("gpu",),)


@dataclass(frozen=True)
class ContainerSpec:
    """Everything `docker run` needs for one Triton container; computed without side effects."""

    name: str
    image: str
    command: tuple[str, ...]
    labels: tuple[tuple[str, str], ...]
    ports: tuple[tuple[int, str, int], ...]  # (container port, host address, host port), TCP
    repository: Path  # host path, bind-mounted read-only at CONTAINER_REPOSITORY
    shm_size_bytes: int
    ulimits: tuple[tuple[str, int, int], ...]  # (name, soft, hard)
    environment: tuple[tuple[str, str], ...]
    gpus: GpuRequest | None
    init: bool = True  # tini as PID 1 reaps the python-backend stub processes

    def run_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `docker.client.containers.create` (docker SDK types built here)."""
        from docker.types import DeviceRequest, Mount, Ulimit

        kwargs: dict[str, Any] = {
            "image": self.image,
            "command": list(self.command),
            "name": self.name,
            "labels": dict(self.labels),
            "ports": {f"{cport}/tcp": (host, hport) for cport, host, hport in self.ports},
            "mounts": [Mount(target=CONTAINER_REPOSITORY, source=str(self.repository), type="bind", read_only=True)],
            "shm_size": self.shm_size_bytes,
            "ulimits": [Ulimit(name=n, soft=s, hard=h) for n, s, h in self.ulimits],
            "environment": dict(self.environment),
            "init": self.init,
            "detach": True,
        }
        if self.gpus is not None:
            kwargs["device_requests"] = [
                DeviceRequest(
                    driver=self.gpus.driver,
                    count=self.gpus.count,
                    device_ids=list(self.gpus.device_ids),
                    capabilities=[list(c) for c in self.gpus.capabilities],
                )
            ]
        return kwargs


# -- pure planning ---------------------------------------------------------------------------------

_SIZE = re.compile(r"^\s*(\d+)\s*([bkmg]?)b?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_size(text: str) -> int:
    """Docker-style size (`"1g"`, `"512m"`, `"67108864"`) in bytes; `UserError` when malformed."""
    match = _SIZE.match(text)
    if not match or int(match.group(1)) <= 0:
        raise UserError(f"server.shm_size is not a size: {text!r}", hint="write a positive size such as '1g' or '512m'")
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


def project_name(state_dir: Path) -> str:
    """Stable container/compose project name for a state dir: `deployer-<dir name>-<hash8>`.

    The hash (of the path as given; runtimes pass absolute paths) keeps two checkouts with the same
    directory name apart; the name keeps it readable. A relative path gives a machine-independent name.
    """
    # the state dir is usually `<project>/.deployer`: name the project, not the hidden dir
    base = state_dir.parent.name if state_dir.name.startswith(".") else state_dir.name
    slug = re.sub(r"[^a-z0-9]+", "-", base.lower()).strip("-")[:40] or "project"
    digest = hashlib.sha256(str(state_dir).encode()).hexdigest()[:8]
    return f"deployer-{slug}-{digest}"


def gpu_request(gpus: tuple[str, ...] | Literal["all"]) -> GpuRequest | None:
    """`"all"` -> every GPU, `("0", "2")` -> those ids (indexes or UUIDs), `()` -> no GPU."""
    if gpus == "all":
        return GpuRequest(count=-1)
    ids = tuple(str(g).strip() for g in gpus)
    if not ids:
        return None
    if "all" in ids:
        if len(ids) > 1:
            raise UserError(f"server.gpus mixes 'all' with ids: {list(ids)}", hint="use 'all' or a list of ids")
        return GpuRequest(count=-1)
    bad = [g for g in ids if not g or not re.fullmatch(r"[A-Za-z0-9-]+", g)]
    if bad:
        raise UserError(
            f"server.gpus has invalid device ids: {bad}",
            hint="use GPU indexes such as '0' or UUIDs such as 'GPU-6c2f...' (see `nvidia-smi -L`)",
        )
    return GpuRequest(device_ids=ids)


def container_command(settings: ServerSettings) -> tuple[str, ...]:
    """The tritonserver argv inside the container: default ports on all interfaces, repo at /models.

    Backend and cache directories stay Triton's defaults (/opt/tritonserver/...), which both the NGC
    images and deployer's CPU image provide.
    """
    ports = dict(CONTAINER_PORTS)
    inside = replace(
        settings,
        host="0.0.0.0",
        http_port=ports["http_port"],
        grpc_port=ports["grpc_port"],
        metrics_port=ports["metrics_port"],
    )
    return tuple(
        tritonserver_argv(
            inside, binary="tritonserver", repository=CONTAINER_REPOSITORY, backend_dir=None, cache_dir=None
        )
    )


def managed_labels(state_dir: Path, project: str | None = None) -> tuple[tuple[str, str], ...]:
    """The labels that mark a container (or network) as deployer's, for this state dir."""
    labels = [(LABEL_MANAGED, "true"), (LABEL_PROJECT, project or project_name(state_dir))]
    if state_dir.is_absolute():
        labels.append((LABEL_STATE_DIR, str(state_dir)))
    return tuple(labels)


def plan_container(settings: ServerSettings) -> ContainerSpec:
    """The container for `settings` (pure). Raises `UserError` for values Docker would reject."""
    if not settings.image.strip():
        raise UserError("server.image is empty", hint="e.g. nvcr.io/nvidia/tritonserver:24.10-py3")
    if not settings.repository.is_absolute():
        raise UserError(
            f"the model repository path must be absolute for Docker, got {settings.repository}",
            hint="resolve it against the spec's directory first",
        )
    host_ports = {name: getattr(settings, name) for name, _ in CONTAINER_PORTS}
    state_dir = settings.state_dir.absolute()
    return ContainerSpec(
        name=project_name(state_dir),
        image=settings.image.strip(),
        command=container_command(settings),
        labels=managed_labels(state_dir),
        ports=tuple((cport, settings.host, host_ports[name]) for name, cport in CONTAINER_PORTS),
        repository=settings.repository,
        shm_size_bytes=parse_size(settings.shm_size),
        ulimits=NVIDIA_ULIMITS,
        environment=tuple(settings.env),
        gpus=gpu_request(settings.gpus),
    )


def image_hint(image: str) -> str:
    """How a user gets `image` onto this machine."""
    from deployer.image import CPU_IMAGE_REPOSITORY

    if image.split(":", 1)[0] == CPU_IMAGE_REPOSITORY:
        return "build it with `deployer image build-cpu` (no registry needed)"
    if image.startswith("nvcr.io/"):
        return (
            f"`docker login nvcr.io` (user '$oauthtoken', password: your NGC API key), then "
            f"`docker pull {image}`; on a machine without GPUs use the CPU image from `deployer image build-cpu`"
        )
    return f"`docker pull {image}` (or `docker load` it from a tarball)"


# -- engine access ---------------------------------------------------------------------------------


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


def without_memlock(spec: ContainerSpec) -> ContainerSpec:
    """`spec` minus the memlock ulimit (for engines that may not raise it)."""
    return replace(spec, ulimits=tuple(u for u in spec.ulimits if u[0] != "memlock"))


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
                hint="publish the models first (`deployer repo publish SPEC`)",
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


@contextlib.contextmanager
def running_container(settings: ServerSettings, runtime: DockerRuntime | None = None) -> Iterator[ServerState]:
    """`with running_container(settings) as state:` — up, then down even when the body fails."""
    rt = runtime or DockerRuntime()
    state = rt.up(settings)
    try:
        yield state
    finally:
        rt.down(state)


def labels_of(settings: ServerSettings) -> Mapping[str, str]:
    """The labels `up` puts on the container for `settings` (for callers that filter by them)."""
    return dict(managed_labels(settings.state_dir.absolute()))
