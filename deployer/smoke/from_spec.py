"""The smoke stage over a spec: the spec's models as smoke targets (pure), its `smoke:` section as
options, and the suite run against this spec's running server."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from deployer.errors import EnvironmentProblem
from deployer.server.base import ServerState
from deployer.smoke.report import SmokeReport
from deployer.smoke.targets import Sla, SmokeModel, SmokeOptions, SmokeOutput, SmokeTensor
from deployer.spec import Deployment, ResolvedModel

__all__ = ["smoke", "smoke_models", "smoke_options"]


def smoke_models(dep: Deployment) -> list[SmokeModel]:
    """Smoke targets for every model the spec does not exclude (pure)."""
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
            # a fallback deploy serves the fp16/Q/DQ ONNX the engine would be built from: same tolerances
            precision=m.precision if m.requested_backend == "tensorrt" else None,
            golden=dep.resolve_path(ms.golden) if ms is not None and ms.golden else None,
            sla=sla,
        ))
    return out


def _published_config(dep: Deployment, m: ResolvedModel) -> Mapping[str, Any]:
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


def smoke_options(dep: Deployment) -> SmokeOptions:
    """SmokeOptions from the spec's `smoke:` section."""
    s = dep.spec.smoke
    return SmokeOptions(protocols=tuple(s.protocols), concurrency=s.concurrency, duration_s=s.duration,
                        batching_requests=s.batching_requests, timeout_s=s.timeout, seed=s.seed)


def smoke(dep: Deployment, *, state: ServerState | None = None,
          progress: Callable[[str, Any], None] | None = None) -> SmokeReport:
    """Run the smoke suite against this spec's running server."""
    from deployer.server.from_spec import current_state
    from deployer.smoke.runner import run_smoke

    state = state or current_state(dep)
    if state is None:
        raise EnvironmentProblem("no running server recorded for this spec",
                                 hint="run `deployer up SPEC` first, or `deployer deploy SPEC`")
    return run_smoke(state, smoke_models(dep), smoke_options(dep), progress=progress)
