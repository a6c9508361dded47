"""The server stage over a spec: a Deployment -> ServerSettings (pure), the runtime that runs it, and
up/down/status/reload of this spec's server.

The runtimes (deployer.server.local, deployer.server.docker) know nothing about specs; this module maps
a validated spec onto their input and finds a running server by the spec's state dir.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from deployer.errors import UserError
from deployer.paths import state_dir, state_dir_for
from deployer.server.base import NGC_IMAGE_TEMPLATE, RuntimeName, ServerSettings, ServerState, ServerStatus
from deployer.spec import Deployment

if TYPE_CHECKING:
    from deployer.server.lifecycle import ServerLifecycle

__all__ = [
    "compose_file",
    "current_state",
    "down",
    "get_runtime",
    "reload_model",
    "server_settings",
    "status",
    "up",
]

def server_settings(dep: Deployment, *, runtime: RuntimeName | None = None) -> ServerSettings:
    """ServerSettings for the spec (pure)."""
    from deployer.repository.from_spec import load_order

    s = dep.spec.server
    cache_bytes = s.response_cache_mb * 1024 * 1024 if any(m.spec.response_cache for m in dep.models) else 0
    gpus: tuple[str, ...] | Literal["all"]
    if s.gpus == "all":
        gpus = "all"
    elif s.gpus == "none":
        gpus = ()
    else:
        gpus = tuple(str(g) for g in s.gpus)
    return ServerSettings(
        runtime=runtime or s.runtime,
        repository=dep.repository.resolve(),
        models=load_order(dep.models),
        state_dir=state_dir(dep),
        host=s.host,
        http_port=s.http_port,
        grpc_port=s.grpc_port,
        metrics_port=s.metrics_port,
        startup_timeout_s=s.startup_timeout,
        tritonserver=dep.resolve_path(s.tritonserver) if s.tritonserver else None,
        image=s.image or NGC_IMAGE_TEMPLATE.format(release=dep.spec.target.triton),
        gpus=gpus,
        shm_size=s.shm_size,
        log_verbose=s.log_verbose,
        response_cache_bytes=cache_bytes,
        extra_args=tuple(s.args),
        repository_url=dep.remote.triton_url if dep.remote else None,
        # not secrets: which profile/region the server's AWS SDK uses (keys stay in the inherited environment)
        env=_s3_env(dep),
        backend_config=backend_config(dep),
    )


def _s3_env(dep: Deployment) -> tuple[tuple[str, str], ...]:
    if dep.remote is None:
        return ()
    env = (("AWS_DEFAULT_REGION", dep.remote.region), ("AWS_REGION", dep.remote.region))
    return (*env, ("AWS_PROFILE", dep.remote.profile)) if dep.remote.profile else env


def backend_config(dep: Deployment) -> tuple[str, ...]:
    """`--backend-config` values: the spec's `server.backend_config`, then what the models need. Triton's
    TensorRT backend refuses version-compatible plans (they embed the lean runtime, i.e. host code) unless
    started with `tensorrt,version-compatible=true` (tensorrt_backend PR #74, README "Command line options")."""
    vc = any(m.backend == "tensorrt" and m.spec.engine is not None and m.spec.engine.version_compatible
             for m in dep.models)
    derived = ("tensorrt,version-compatible=true",) if vc else ()
    return tuple(dict.fromkeys((*dep.spec.server.backend_config, *derived)))  # the user's first, no repeats


def get_runtime(name: RuntimeName) -> ServerLifecycle[Any]:
    """The runtime implementation (imported lazily: docker needs the `docker` extra)."""
    if name == "local":
        from deployer.server.local import LocalRuntime

        return LocalRuntime()
    if name == "docker":
        from deployer.server.docker.runtime import DockerRuntime

        return DockerRuntime()
    if name == "compose":
        from deployer.server.docker.compose import ComposeRuntime

        return ComposeRuntime()
    raise UserError(f"unknown runtime {name!r}; use local, docker or compose")


def up(dep: Deployment, *, runtime: RuntimeName | None = None) -> ServerState:
    """Start the server for a published repository and load every model (the runtime checks the
    repository exists)."""
    settings = server_settings(dep, runtime=runtime)
    if dep.remote is not None and settings.runtime != "local":
        raise UserError(f"an s3:// repository is served by the local runtime only, not {settings.runtime!r}",
                        hint="use server.runtime: local (or --runtime local) with repository: s3://...")
    return get_runtime(settings.runtime).up(settings)


def current_state(dep: Deployment) -> ServerState | None:
    """The recorded state of this spec's server, if any."""
    from deployer.server.state import load_state

    return load_state(state_dir(dep))


def down(dep: Deployment) -> ServerState | None:
    """Stop this spec's server (whatever runtime started it). Returns the state that was stopped."""
    state = current_state(dep)
    if state is None:
        return None
    get_runtime(state.runtime).down(state)
    return state


def status(dep: Deployment) -> ServerStatus:
    """Is this spec's server running and ready, and how is each model."""
    state = current_state(dep)
    if state is None:
        return ServerStatus(running=False, ready=False, models={}, state=None)
    return get_runtime(state.runtime).status(state)


def reload_model(spec_path: Path, model: str) -> bool:
    """Ask this spec's running server (if any) to reload `model` after the repository changed.

    With explicit model control Triton only notices repository changes on a load request; a reload
    swaps versions without a gap and keeps the old ones serving if the new load fails.
    Returns False when no server is running for the spec.
    """
    from deployer.server.state import load_state

    state = load_state(state_dir_for(spec_path))
    if state is None:
        return False
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    client = httpclient.InferenceServerClient(state.http_url, connection_timeout=5.0, network_timeout=120.0)
    try:
        if not client.is_server_live():
            return False
        client.load_model(model)
    except InferenceServerException as exc:
        from deployer.errors import ServerError

        raise ServerError(f"the server could not reload {model!r}: {exc.message()}") from None
    except ConnectionError:
        return False
    finally:
        client.close()
    return True


def portable_compose_settings(dep: Deployment, base: Path) -> ServerSettings:
    """The spec's compose settings with the repository and state dir relative to `base` (the directory
    a committed compose file lives in)."""
    settings = server_settings(dep, runtime="compose")

    def rel(p: Path) -> Path:
        return Path(os.path.relpath(p.absolute(), base))

    # Relative paths keep the file usable on any machine that checks the project out; the project name
    # comes from the same function the runtimes use (a relative state dir gives a portable name).
    return replace(settings, repository=rel(settings.repository), state_dir=rel(settings.state_dir))


def compose_file(dep: Deployment, base: Path) -> str:
    """The compose.yaml text for the spec's server, its paths relative to `base` (the directory the
    file will live in)."""
    from deployer.server.docker.compose_render import render_compose
    from deployer.server.docker.plan import project_name

    settings = portable_compose_settings(dep, base)
    return render_compose(settings, project=project_name(settings.state_dir), load_models=True)
