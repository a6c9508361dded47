"""What every runtime takes and records. Runtimes are thin; the data here is the contract between them.

`ServerSettings` is computed from the spec (pure); a runtime's `up()` applies it and returns a
`ServerState` that is persisted to `<state_dir>/server.json` so `down`/`status` in another process find it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, Protocol

RuntimeName = Literal["local", "docker", "compose"]

# NVIDIA's Triton images by NGC release; TRITON_RELEASE is the one whose server (Triton 2.51.0) the
# nvidia-pytriton 0.7.0 wheel ships: the local runtime's server and deployer's CPU image.
NGC_IMAGE_TEMPLATE = "nvcr.io/nvidia/tritonserver:{release}-py3"
TRITON_RELEASE = "24.10"
DEFAULT_IMAGE = NGC_IMAGE_TEMPLATE.format(release=TRITON_RELEASE)

# tritonserver flags every runtime adds unless `extra_args` (the spec's server.args) sets them.
# --exit-timeout-secs: after SIGTERM Triton waits this long for in-flight requests, open HTTP
#   connections and unloading models before it exits on its own (default 30 s); `down` unloads the
#   models first, so this only bounds what another client still holds.
# --metrics-interval-ms: Triton's CPU/GPU metrics thread sleeps half of this between polls and is
#   joined at exit, so the default 2000 ms adds up to 1 s to every shutdown; gauges refresh faster too.
SERVER_DEFAULT_FLAGS: tuple[tuple[str, str], ...] = (("--exit-timeout-secs", "5"), ("--metrics-interval-ms", "100"))


@dataclass(frozen=True)
class ServerSettings:
    """Everything needed to start one Triton server for one spec."""

    runtime: RuntimeName
    repository: Path  # absolute path of the model repository on the host
    models: tuple[str, ...]  # loaded explicitly (model-control-mode=explicit), in this order
    state_dir: Path  # where server.json, logs and the private backend dir live
    host: str = "127.0.0.1"  # address the ports bind to
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    startup_timeout_s: float = 120.0  # deadline for the server and then each model to be ready
    tritonserver: Path | None = None  # local: explicit binary; None = PATH, then the nvidia-pytriton wheel
    image: str = DEFAULT_IMAGE  # docker/compose
    gpus: tuple[str, ...] | Literal["all"] = ()  # docker/compose: () = no GPU
    shm_size: str = "1g"
    log_verbose: int = 0
    response_cache_bytes: int = 0  # >0 adds --cache-config local,size=N
    backend_config: tuple[str, ...] = ()  # --backend-config values, e.g. "python,shm-default-byte-size=..."
    extra_args: tuple[str, ...] = ()  # further tritonserver flags, validated against a whitelist
    env: tuple[tuple[str, str], ...] = field(default=())  # extra environment for the server process
    # local runtime: `--model-repository` is this URL (s3://host:port/bucket/prefix) instead of `repository`;
    # credentials reach the server only through its inherited environment, never through settings.
    repository_url: str | None = None


def with_server_defaults(settings: ServerSettings) -> ServerSettings:
    """`settings` with SERVER_DEFAULT_FLAGS prepended to `extra_args` (those the user did not set)."""
    given = {a.split("=", 1)[0] for a in settings.extra_args}
    added = tuple(f"{flag}={value}" for flag, value in SERVER_DEFAULT_FLAGS if flag not in given)
    return replace(settings, extra_args=added + settings.extra_args) if added else settings


@dataclass(frozen=True)
class ServerState:
    """A running server as recorded on disk."""

    runtime: RuntimeName
    host: str
    http_port: int
    grpc_port: int
    metrics_port: int
    models: tuple[str, ...]
    log_path: Path | None = None
    pid: int | None = None  # local
    container_id: str | None = None  # docker
    project: str | None = None  # compose project name
    started_at: float = 0.0
    # Backend implementations in the server's backend directory, found by the runtime that started it:
    # (backend name, kind), kind one of deployer.server.backends.KINDS; () when not inspected.
    backends: tuple[tuple[str, str], ...] = ()

    @property
    def http_url(self) -> str:
        """`host:port` as tritonclient.http expects it (no scheme)."""
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        """`host:port` as tritonclient.grpc expects it."""
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        """Prometheus endpoint."""
        return f"http://{self.host}:{self.metrics_port}/metrics"


@dataclass(frozen=True)
class StopReport:
    """What a runtime's `down` did (seconds): unloading the models through the repository API, then
    stopping the process or container; `killed` when it had to be killed after the grace period."""

    unload_s: float = 0.0
    stop_s: float = 0.0
    unloaded: tuple[str, ...] = ()
    pending: tuple[str, ...] = ()  # models still loaded when the unload gave up
    killed: bool = False


@dataclass(frozen=True)
class ServerStatus:
    """What `deployer status` reports."""

    running: bool
    ready: bool
    models: dict[str, str]  # model -> state (READY, UNAVAILABLE: reason, ...)
    state: ServerState | None


class Runtime(Protocol):
    """A way to run Triton. Implementations must leave no process/container behind on any failure."""

    name: RuntimeName

    def up(self, settings: ServerSettings) -> ServerState:
        """Start the server, load `settings.models`, wait for readiness; record and return the state."""
        ...

    def down(self, state: ServerState, *, quick: bool = False) -> None:
        """Stop the server described by `state` (idempotent). `quick`: nothing is in flight and nothing
        needs finalizing (deploy's own server after its smoke): skip the drain and stop at once."""
        ...

    def logs(self, state: ServerState, tail: int = 200) -> str:
        """Last `tail` lines of the server log."""
        ...
