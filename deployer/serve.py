"""Serving glue: a Deployment -> server settings, runtime lifecycle, smoke targets, and `deploy`.

The runtimes (deployer.server.*) and the smoke suite (deployer.smoke) know nothing about specs;
this module maps a validated spec onto their inputs (pure) and sequences the stages.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from deployer.errors import EnvironmentProblem, UserError
from deployer.paths import state_dir, state_dir_for
from deployer.server.base import RuntimeName, ServerSettings, ServerState, ServerStatus
from deployer.spec import Deployment

log = logging.getLogger(__name__)

NGC_IMAGE = "nvcr.io/nvidia/tritonserver:{release}-py3"


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
        image=s.image or NGC_IMAGE.format(release=dep.spec.target.triton),
        gpus=gpus,
        shm_size=s.shm_size,
        log_verbose=s.log_verbose,
        response_cache_bytes=cache_bytes,
        extra_args=tuple(s.args),
        repository_url=dep.remote.triton_url if dep.remote else None,
        # not secrets: which profile/region the server's AWS SDK uses (keys stay in the inherited environment)
        env=_s3_env(dep),
    )


def _s3_env(dep: Deployment) -> tuple[tuple[str, str], ...]:
    if dep.remote is None:
        return ()
    env = (("AWS_DEFAULT_REGION", dep.remote.region), ("AWS_REGION", dep.remote.region))
    return (*env, ("AWS_PROFILE", dep.remote.profile)) if dep.remote.profile else env


def get_runtime(name: RuntimeName) -> Any:
    """The runtime implementation (imported lazily: docker needs the `docker` extra)."""
    if name == "local":
        from deployer.server.local import LocalRuntime

        return LocalRuntime()
    if name == "docker":
        from deployer.server.docker_runtime import DockerRuntime

        return DockerRuntime()
    if name == "compose":
        from deployer.server.compose import ComposeRuntime

        return ComposeRuntime()
    raise UserError(f"unknown runtime {name!r}; use local, docker or compose")


def up(dep: Deployment, *, runtime: RuntimeName | None = None) -> ServerState:
    """Start the server for a published repository and load every model."""
    settings = server_settings(dep, runtime=runtime)
    if dep.remote is not None and settings.runtime != "local":
        raise UserError(f"an s3:// repository is served by the local runtime only, not {settings.runtime!r}",
                        hint="use server.runtime: local (or --runtime local) with repository: s3://...")
    if dep.remote is None and not settings.repository.is_dir():
        raise UserError(f"model repository {settings.repository} does not exist",
                        hint="run `deployer publish SPEC` first (or `deployer deploy SPEC`)")
    return get_runtime(settings.runtime).up(settings)  # type: ignore[no-any-return]


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
    return get_runtime(state.runtime).status(state)  # type: ignore[no-any-return]


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


# --------------------------------------------------------------------------- smoke


def smoke_models(dep: Deployment) -> list[Any]:
    """Smoke targets for every model the spec does not exclude (pure)."""
    from deployer.smoke import Sla, SmokeModel, SmokeOutput, SmokeTensor

    sla_spec = dep.spec.smoke.sla
    sla = Sla(p50_ms=sla_spec.p50_ms, p99_ms=sla_spec.p99_ms, min_throughput=sla_spec.min_throughput) \
        if sla_spec else None
    out = []
    for m in dep.models:
        ms = m.spec.smoke
        if ms is not None and ms.skip:
            continue
        tensors = []
        for t in m.inputs:
            r = m.shapes.get(t.name)
            tensors.append(SmokeTensor(
                name=t.name, dtype=t.dtype, dims=t.dims,
                shapes=r,
                value_range=t.value_range, fixed_value=t.value, reshape=t.reshape,
            ))
        outputs = [SmokeOutput(name=t.name, dtype=t.dtype, dims=t.dims, atol=t.atol, rtol=t.rtol, reshape=t.reshape)
                   for t in m.outputs]
        compare = ms.compare if ms is not None else True
        db = m.spec.dynamic_batching
        out.append(SmokeModel(
            name=m.name,
            inputs=tuple(tensors),
            outputs=tuple(outputs),
            max_batch_size=m.max_batch_size,
            expected_config=_published_config(dep, m),
            onnx_path=m.onnx.path if (m.onnx is not None and compare) else None,
            preferred_batch_sizes=tuple(db.preferred_batch_size) if db and m.max_batch_size > 0 else (),
            dynamic_batching=db is not None and m.max_batch_size > 1,
            precision=m.precision if m.backend == "tensorrt" else None,
            golden=dep.resolve_path(ms.golden) if ms is not None and ms.golden else None,
            sla=sla,
        ))
    return out


def _published_config(dep: Deployment, m: Any) -> Mapping[str, Any]:
    """The spec's config with the served versions the repository pinned (publish and rollback choose
    them), so that smoke checks the pin Triton obeys rather than the spec's `latest`."""
    from deployer.repository import serving_state

    if dep.remote is not None:
        from deployer.repository.s3_apply import s3_serving_state

        remote = s3_serving_state(dep.remote, m.name)
        return dict(m.config) if remote is None else {
            **dict(m.config), "version_policy": {"specific": {"versions": list(remote.served)}}}
    model_dir = dep.repository / m.name
    if not model_dir.is_dir():
        return dict(m.config)
    st = serving_state(model_dir)
    return {**dict(m.config), "version_policy": {"specific": {"versions": list(st.served)}}}


def smoke_options(dep: Deployment) -> Any:
    """SmokeOptions from the spec's `smoke:` section."""
    from deployer.smoke import SmokeOptions

    s = dep.spec.smoke
    return SmokeOptions(protocols=tuple(s.protocols), concurrency=s.concurrency, duration_s=s.duration,
                        batching_requests=s.batching_requests, timeout_s=s.timeout, seed=s.seed)


def smoke(dep: Deployment, *, state: ServerState | None = None,
          progress: Callable[[str, Any], None] | None = None) -> Any:
    """Run the smoke suite against this spec's running server."""
    from deployer.smoke import run_smoke

    state = state or current_state(dep)
    if state is None:
        raise EnvironmentProblem("no running server recorded for this spec",
                                 hint="run `deployer up SPEC` first, or `deployer deploy SPEC`")
    return run_smoke(state, smoke_models(dep), smoke_options(dep), progress=progress)
