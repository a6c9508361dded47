"""Pure construction of the `tritonserver` command line from `ServerSettings`.

Runtime-agnostic: the local runtime passes host paths, the Docker runtime passes paths inside the
container (and, for the address/ports inside the container, a `dataclasses.replace`d settings object).
Flags checked against the `tritonserver` 2.51 `--help` output.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from deployer.errors import UserError
from deployer.server.base import ServerSettings

__all__ = ["ALLOWED_EXTRA_FLAGS", "MANAGED_FLAGS", "normalize_extra_args", "tritonserver_argv"]

# Flags a user may add through `extra_args`. Value: does the flag take a value?
ALLOWED_EXTRA_FLAGS: dict[str, bool] = {
    "--id": True,
    "--exit-timeout-secs": True,
    "--log-info": True,
    "--log-warning": True,
    "--log-error": True,
    "--log-format": True,
    "--disable-auto-complete-config": False,
    "--model-config-name": True,
    "--model-load-thread-count": True,
    "--model-load-retry-count": True,
    "--model-namespacing": True,
    "--enable-peer-access": True,
    "--reuse-http-port": True,
    "--http-header-forward-pattern": True,
    "--http-thread-count": True,
    "--http-restricted-api": True,
    "--reuse-grpc-port": True,
    "--grpc-header-forward-pattern": True,
    "--grpc-infer-allocation-pool-size": True,
    "--grpc-use-ssl": True,
    "--grpc-use-ssl-mutual": True,
    "--grpc-server-cert": True,
    "--grpc-server-key": True,
    "--grpc-root-cert": True,
    "--grpc-infer-response-compression-level": True,
    "--grpc-keepalive-time": True,
    "--grpc-keepalive-timeout": True,
    "--grpc-keepalive-permit-without-calls": True,
    "--grpc-http2-max-pings-without-data": True,
    "--grpc-http2-min-recv-ping-interval-without-data": True,
    "--grpc-http2-max-ping-strikes": True,
    "--grpc-max-connection-age": True,
    "--grpc-max-connection-age-grace": True,
    "--grpc-restricted-protocol": True,
    "--allow-gpu-metrics": True,
    "--allow-cpu-metrics": True,
    "--metrics-interval-ms": True,
    "--metrics-config": True,
    "--trace-config": True,
    "--repoagent-directory": True,
    "--rate-limit": True,
    "--rate-limit-resource": True,
    "--pinned-memory-pool-byte-size": True,
    "--cuda-memory-pool-byte-size": True,
    "--cuda-virtual-address-size": True,
    "--min-supported-compute-capability": True,
    "--buffer-manager-thread-count": True,
    "--host-policy": True,
    "--model-load-gpu-limit": True,
}

# Flags deployer sets itself (or that would break up/readiness); the value says where to set it instead.
MANAGED_FLAGS: dict[str, str] = {
    "--model-repository": "the spec's repository path",
    "--model-store": "the spec's repository path",
    "--model-control-mode": "nothing: deployer always uses explicit mode and loads models one by one",
    "--load-model": "the spec's model list (models are loaded through the API so each failure is named)",
    "--repository-poll-secs": "nothing: explicit model control is used",
    "--http-port": "server.http_port",
    "--grpc-port": "server.grpc_port",
    "--metrics-port": "server.metrics_port",
    "--http-address": "server.host",
    "--grpc-address": "server.host",
    "--metrics-address": "server.host",
    "--allow-http": "nothing: readiness checks need HTTP",
    "--allow-grpc": "nothing: smoke tests need gRPC",
    "--allow-metrics": "nothing: smoke tests read metrics",
    "--backend-directory": "nothing: the runtime chooses the backend directory",
    "--cache-directory": "nothing: the runtime chooses the cache directory",
    "--backend-config": "server.backend_config",
    "--cache-config": "server.response_cache_bytes",
    "--response-cache-byte-size": "server.response_cache_bytes",
    "--log-verbose": "server.log_verbose",
    "--log-file": "nothing: the runtime captures the log (see `deployer logs`)",
    "--exit-on-error": "nothing: deployer needs the server to stay up to report which model failed",
    "--strict-readiness": "nothing: deployer relies on strict readiness",
    "--strict-model-config": "--disable-auto-complete-config (the non-deprecated flag)",
    "--trace-file": "--trace-config triton,file=<path>",
    "--trace-level": "--trace-config level=<level>",
    "--trace-rate": "--trace-config rate=<n>",
    "--trace-count": "--trace-config count=<n>",
    "--trace-log-frequency": "--trace-config triton,log-frequency=<n>",
    "--help": "nothing",
}

_BACKEND_CONFIG = re.compile(r"^[A-Za-z0-9_.\-]+,[^=,\s][^=\s]*=.*$")


def _check_port(name: str, port: int) -> None:
    if not 1 <= port <= 65535:
        raise UserError(f"server.{name} must be in 1..65535, got {port}", hint="choose a free TCP port")


def normalize_extra_args(args: Sequence[str]) -> list[str]:
    """Validate `extra_args` against the whitelist and return them as `--flag[=value]` tokens.

    Accepts both `--flag=value` and `--flag value`. Raises `UserError` naming the first bad flag.
    """
    out: list[str] = []
    i = 0
    while i < len(args):
        token = args[i]
        if not token.startswith("--"):
            raise UserError(
                f"server.extra_args: {token!r} is not a flag",
                hint="write tritonserver flags as '--flag=value'",
            )
        flag, eq, value = token.partition("=")
        if flag in MANAGED_FLAGS:
            raise UserError(
                f"server.extra_args: tritonserver flag {flag} is managed by deployer",
                hint=f"set {MANAGED_FLAGS[flag]} instead",
            )
        if flag not in ALLOWED_EXTRA_FLAGS:
            raise UserError(
                f"server.extra_args: unknown or unsupported tritonserver flag {flag}",
                hint="allowed flags: " + ", ".join(sorted(ALLOWED_EXTRA_FLAGS)),
            )
        takes_value = ALLOWED_EXTRA_FLAGS[flag]
        if not takes_value:
            if eq:
                raise UserError(
                    f"server.extra_args: {flag} takes no value, got {token!r}", hint=f"write {flag}"
                )
            out.append(flag)
        elif eq:
            out.append(f"{flag}={value}")
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            out.append(f"{flag}={args[i + 1]}")
            i += 1
        else:
            raise UserError(f"server.extra_args: {flag} needs a value", hint=f"write '{flag}=<value>'")
        i += 1
    return out


def tritonserver_argv(
    settings: ServerSettings,
    *,
    binary: str,
    repository: str,
    backend_dir: str | None,
    cache_dir: str | None,
    exit_on_error: bool = False,
) -> list[str]:
    """The full argv (binary first) that starts Triton for `settings`.

    Models are not listed (`--load-model`): the runtime loads them one by one through the repository API.
    `repository`, `backend_dir` and `cache_dir` are paths as the server process sees them; `None` keeps
    Triton's default directory (e.g. /opt/tritonserver/backends inside an NGC image). `exit_on_error` is
    for servers that load their models at startup (Kubernetes pods): there a failed model must fail the pod.
    """
    ports = {
        "http_port": settings.http_port,
        "grpc_port": settings.grpc_port,
        "metrics_port": settings.metrics_port,
    }
    for name, port in ports.items():
        _check_port(name, port)
    if len(set(ports.values())) != len(ports):
        raise UserError(
            f"server ports must differ, got http={settings.http_port} grpc={settings.grpc_port} "
            f"metrics={settings.metrics_port}",
            hint="give HTTP, gRPC and metrics three different ports",
        )
    if not settings.host or any(c.isspace() for c in settings.host):
        raise UserError(f"server.host is not a valid address: {settings.host!r}", hint="e.g. 127.0.0.1")
    if settings.log_verbose < 0:
        raise UserError(f"server.log_verbose must be >= 0, got {settings.log_verbose}")
    if settings.response_cache_bytes < 0:
        raise UserError(f"server.response_cache_bytes must be >= 0, got {settings.response_cache_bytes}")

    argv = [
        binary,
        f"--model-repository={repository}",
        "--model-control-mode=explicit",
        f"--exit-on-error={'true' if exit_on_error else 'false'}",
        "--strict-readiness=true",
        f"--http-address={settings.host}",
        f"--http-port={settings.http_port}",
        f"--grpc-address={settings.host}",
        f"--grpc-port={settings.grpc_port}",
        f"--metrics-address={settings.host}",
        f"--metrics-port={settings.metrics_port}",
        f"--log-verbose={settings.log_verbose}",
    ]
    if backend_dir is not None:
        argv.append(f"--backend-directory={backend_dir}")
    if cache_dir is not None:
        argv.append(f"--cache-directory={cache_dir}")
    if settings.response_cache_bytes > 0:
        argv.append(f"--cache-config=local,size={settings.response_cache_bytes}")
    for value in settings.backend_config:
        if not _BACKEND_CONFIG.match(value):
            raise UserError(
                f"server.backend_config: {value!r} is not '<backend>,<setting>=<value>'",
                hint="e.g. 'python,shm-default-byte-size=16777216'",
            )
        argv.append(f"--backend-config={value}")
    argv.extend(normalize_extra_args(settings.extra_args))
    return argv
