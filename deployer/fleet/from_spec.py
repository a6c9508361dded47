"""A spec with `server.replicas > 1` -> the fleet: up, down, status, smoke (through the balancer and
against each replica). Builds on the single-server mappings (server.from_spec, smoke.from_spec);
knows nothing of nginx."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from deployer.errors import EnvironmentProblem, UserError
from deployer.fleet.run import FleetState, FleetStatus, fleet_down, fleet_status, fleet_up, load_fleet
from deployer.paths import state_dir
from deployer.server.base import RuntimeName
from deployer.spec import Deployment

log = logging.getLogger(__name__)

# Through the balancer each request may land on another replica: statistics and metrics describe one
# replica only, so the batching proof and the metrics check run against each replica instead.
BALANCER_CHECKS = frozenset({"ready", "config", "metadata", "infer", "golden", "perf"})


def replicas_of(dep: Deployment) -> int:
    return int(dep.spec.server.replicas)


def pinned_models(dep: Deployment) -> tuple[str, ...]:
    """Sequence models: their requests must stay on one replica."""
    return tuple(m.name for m in dep.models if "sequence_batching" in m.config)


def up(dep: Deployment, *, runtime: RuntimeName | None = None) -> FleetState:
    from deployer.server.from_spec import get_runtime, server_settings

    settings = server_settings(dep, runtime=runtime)
    if settings.runtime != "local":
        raise UserError(f"server.replicas > 1 runs on the local runtime for now, not {settings.runtime!r}",
                        hint="use runtime: local (compose: `deployer compose` renders the services)")
    if settings.repository_url is None and not settings.repository.is_dir():  # s3://: Triton reads the bucket
        raise UserError(f"model repository {settings.repository} does not exist",
                        hint="run `deployer publish SPEC` first (or `deployer deploy SPEC`)")
    pinned = pinned_models(dep)
    if pinned:
        log.info("sequence models %s are pinned to one replica per client address", ", ".join(pinned))
    return fleet_up(settings, replicas_of(dep), pinned_models=pinned, runtime=get_runtime(settings.runtime))


def down(dep: Deployment) -> FleetState | None:
    from deployer.server.from_spec import get_runtime

    return fleet_down(state_dir(dep), get_runtime)


def status(dep: Deployment) -> FleetStatus:
    from deployer.server.from_spec import get_runtime

    st = fleet_status(state_dir(dep), get_runtime)
    return st if st is not None else FleetStatus(False, None, ())


def current(dep: Deployment) -> FleetState:
    st = load_fleet(state_dir(dep))
    if st is None:
        raise EnvironmentProblem("no running fleet recorded for this spec",
                                 hint="run `deployer up SPEC` first, or `deployer deploy SPEC`")
    return st


def smoke(dep: Deployment, *, fleet: FleetState | None = None, progress: Any = None) -> Any:
    """The smoke suite through the balancer, then against each replica; one SmokeReport whose
    per-replica suites are named `r<i>:<model>` (`r<i>:server` for the server checks)."""
    from deployer.smoke import run_smoke
    from deployer.smoke.from_spec import smoke_models, smoke_options
    from deployer.smoke.report import ModelReport

    fleet = fleet or current(dep)
    models = smoke_models(dep)
    options = smoke_options(dep)
    report = run_smoke(fleet.balancer, models, dataclasses.replace(options, checks=BALANCER_CHECKS),
                       progress=progress)
    extra: list[ModelReport] = []
    for i, replica in enumerate(fleet.replicas):
        # the per-replica pass proves each server; its load test is short (the balancer ran the long one)
        r = run_smoke(replica, models, dataclasses.replace(options, duration_s=min(options.duration_s, 1.0)),
                      progress=progress)
        extra.append(ModelReport(f"r{i}:server", r.server.checks))
        extra += [ModelReport(f"r{i}:{m.model}", m.checks, m.served_by) for m in r.models]
    return dataclasses.replace(report, models=(*report.models, *extra),
                               target=f"fleet of {len(fleet.replicas)} behind nginx {fleet.balancer.http_url}")


def rollout(dep: Deployment, *, publish: Callable[[], Any]) -> Any:
    """`deployer rollout`: `publish()` (the pipeline's), then replica by replica load and smoke; a RolloutResult.
    The repository is reached through the repository API only (serving_state, rollback)."""
    from deployer.fleet.rollout import rollout as roll
    from deployer.fleet.rollout import served_versions
    from deployer.repository import rollback
    from deployer.smoke import run_smoke
    from deployer.smoke.from_spec import smoke_models, smoke_options

    fleet = current(dep)
    names = tuple(m.name for m in dep.models)
    previous = served_versions(dep.repository, names)

    def do_publish() -> dict[str, int]:
        publish()
        return served_versions(dep.repository, names)

    def restore(back: Any) -> None:
        for model, version in back.items():
            rollback(dep.repository, model, version)

    def smoke_replica(state: Any) -> Any:
        options = smoke_options(dep)  # read after the publish: the smoke compares with the new models
        short = dataclasses.replace(options, duration_s=min(options.duration_s, 1.0))
        return run_smoke(state, smoke_models(dep), short)

    return roll(fleet, publish=do_publish, previous=previous, restore=restore, smoke_replica=smoke_replica)
