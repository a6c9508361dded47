"""Pure planning of the Triton container shared by the `docker` and `compose` runtimes.

`plan_container(settings)` computes the whole container as a frozen `ContainerSpec` (unit-tested);
`deployer.server.docker.runtime.DockerRuntime.up` is the one place that applies it, and
`deployer.server.docker.compose.render_compose` writes the same container as a compose service.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from deployer.errors import UserError
from deployer.server.argv import tritonserver_argv
from deployer.server.base import DEFAULT_IMAGE, ServerSettings

__all__ = [
    "CONTAINER_PORTS",
    "CONTAINER_REPOSITORY",
    "LABEL_MANAGED",
    "LABEL_PROJECT",
    "LABEL_STATE_DIR",
    "NVIDIA_ULIMITS",
    "ContainerSpec",
    "GpuRequest",
    "container_command",
    "gpu_request",
    "image_hint",
    "image_of",
    "managed_labels",
    "parse_size",
    "plan_container",
    "project_name",
    "without_memlock",
]

LABEL_MANAGED = "dev.deployer.managed"  # "true" on every container/network deployer creates
LABEL_PROJECT = "dev.deployer.project"  # project_name(state_dir)
LABEL_STATE_DIR = "dev.deployer.state-dir"  # absolute state dir on the host, for humans and `down`
CONTAINER_REPOSITORY = "/models"
# Inside the container Triton always listens on its default ports; the host side is configurable.
CONTAINER_PORTS: tuple[tuple[str, int], ...] = (("http_port", 8000), ("grpc_port", 8001), ("metrics_port", 8002))
# NVIDIA's recommendation for Triton containers (`--ulimit memlock=-1 --ulimit stack=67108864`).
NVIDIA_ULIMITS: tuple[tuple[str, int, int], ...] = (("memlock", -1, -1), ("stack", 67108864, 67108864))


# deployer's registry-free CPU image (built by `deployer image build-cpu`, deployer.server.docker.cpu_image);
# named here, below the image builder, so the runtimes and the builder share one name without a cycle.
CPU_IMAGE_REPOSITORY = "deployer/tritonserver-cpu"
CPU_IMAGE = f"{CPU_IMAGE_REPOSITORY}:2.51-py311"
# nginx in front of N replicas (compose runtime), built by `deployer image build-balancer` on the same base.
BALANCER_IMAGE_REPOSITORY = "deployer/nginx-balancer"
BALANCER_IMAGE = f"{BALANCER_IMAGE_REPOSITORY}:bookworm"


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
    # the state dir is `<project>/.deployer/<spec stem>`: name the project dir (and the spec, unless it is
    # the default `deployer.yaml`), not the hidden dir
    if state_dir.parent.name.startswith("."):
        base = state_dir.parent.parent.name + ("" if state_dir.name == "deployer" else f"-{state_dir.name}")
    else:
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


def image_of(settings: ServerSettings) -> str:
    """`settings.image` without surrounding blanks; `UserError` when that leaves nothing."""
    image = settings.image.strip()
    if not image:
        raise UserError("server.image is empty", hint=f"e.g. {DEFAULT_IMAGE}")
    return image


def plan_container(settings: ServerSettings) -> ContainerSpec:
    """The container for `settings` (pure). Raises `UserError` for values Docker would reject."""
    image = image_of(settings)
    if not settings.repository.is_absolute():
        raise UserError(
            f"the model repository path must be absolute for Docker, got {settings.repository}",
            hint="resolve it against the spec's directory first",
        )
    host_ports = {name: getattr(settings, name) for name, _ in CONTAINER_PORTS}
    state_dir = settings.state_dir.absolute()
    return ContainerSpec(
        name=project_name(state_dir),
        image=image,
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
    if image.split(":", 1)[0] == CPU_IMAGE_REPOSITORY:
        return "build it with `deployer image build-cpu` (no registry needed)"
    if image.split(":", 1)[0] == BALANCER_IMAGE_REPOSITORY:
        return "build it with `deployer image build-balancer` (no container registry needed; apt from Debian)"
    if image.startswith("nvcr.io/"):
        return (
            f"`docker login nvcr.io` (user '$oauthtoken', password: your NGC API key), then "
            f"`docker pull {image}`; on a machine without GPUs use the CPU image from `deployer image build-cpu`"
        )
    return f"`docker pull {image}` (or `docker load` it from a tarball)"


# -- engine access ---------------------------------------------------------------------------------


def without_memlock(spec: ContainerSpec) -> ContainerSpec:
    """`spec` minus the memlock ulimit (for engines that may not raise it)."""
    return replace(spec, ulimits=tuple(u for u in spec.ulimits if u[0] != "memlock"))
