"""A spec with `server.replicas > 1` -> the fleet: up, down, status, smoke (through the balancer and
against each replica). Builds on the single-server mappings (server.from_spec, smoke.from_spec);
knows nothing of nginx."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
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
    if settings.runtime != "local" and settings.repository_url is not None:
        raise UserError(f"server.replicas > 1 with an s3:// repository runs on the local runtime, not "
                        f"{settings.runtime!r}", hint="use runtime: local, or a local repository path")
    if settings.repository_url is None and not settings.repository.is_dir():  # s3://: Triton reads the bucket
        raise UserError(f"model repository {settings.repository} does not exist",
                        hint="run `deployer publish SPEC` first (or `deployer deploy SPEC`)")
    pinned = pinned_models(dep)
    if pinned:
        log.info("sequence models %s are pinned to one replica per client address", ", ".join(pinned))
    if settings.runtime == "compose":
        from deployer.fleet.compose_run import compose_fleet_up

        return compose_fleet_up(settings, replicas_of(dep), pinned_models=pinned)
    if settings.runtime == "docker":
        from deployer.fleet.docker_run import docker_fleet_up

        return docker_fleet_up(settings, replicas_of(dep), pinned_models=pinned)
    return fleet_up(settings, replicas_of(dep), pinned_models=pinned, runtime=get_runtime(settings.runtime))


def down(dep: Deployment) -> FleetState | None:
    from deployer.server.from_spec import get_runtime

    recorded = load_fleet(state_dir(dep))
    if recorded is not None and recorded.balancer.runtime == "compose":
        from deployer.fleet.compose_run import compose_fleet_down

        compose_fleet_down(state_dir(dep), recorded)
        return recorded
    if recorded is not None and recorded.balancer.runtime == "docker":
        from deployer.fleet.docker_run import docker_fleet_down

        docker_fleet_down(state_dir(dep), recorded)
        return recorded
    return fleet_down(state_dir(dep), get_runtime)


def status(dep: Deployment) -> FleetStatus:
    from deployer.server.from_spec import get_runtime

    recorded = load_fleet(state_dir(dep))
    if recorded is not None and recorded.balancer.runtime == "compose":
        from deployer.fleet.compose_run import compose_fleet_status

        return compose_fleet_status(recorded)
    if recorded is not None and recorded.balancer.runtime == "docker":
        from deployer.fleet.docker_run import docker_fleet_status

        return docker_fleet_status(recorded)
    st = fleet_status(state_dir(dep), get_runtime)
    return st if st is not None else FleetStatus(False, None, ())


def current(dep: Deployment) -> FleetState:
    st = load_fleet(state_dir(dep))
    if st is None:
        raise EnvironmentProblem("no running fleet recorded for this spec",
                                 hint="run `deployer up SPEC` first, or `deployer deploy SPEC`")
    return st


def compose_file(dep: Deployment, base: Path) -> str:
    """`deployer compose` for a fleet: N replica services (their ports unpublished: only the balancer's
    are) plus the balancer, models loaded at start-up, paths relative to `base`."""
    from deployer.fleet.compose_plan import BALANCER_SERVICE, fleet_compose_document
    from deployer.fleet.plan import Ports, plan_fleet
    from deployer.server.docker.compose_render import dump_compose
    from deployer.server.docker.plan import project_name
    from deployer.server.from_spec import portable_compose_settings

    settings = portable_compose_settings(dep, base)
    n = replicas_of(dep)
    # the replicas' host ports are not published in this file: any distinct numbers satisfy the plan
    first = max(settings.http_port, settings.grpc_port, settings.metrics_port) + 1
    plan = plan_fleet(settings, n, [Ports(first + 3 * i, first + 3 * i + 1, first + 3 * i + 2) for i in range(n)],
                      pinned_models=pinned_models(dep))
    doc = fleet_compose_document(plan, project=project_name(settings.state_dir), load_models=True,
                                 publish_replicas=False)
    return (f"# Generated by deployer: {n} Triton replicas ({settings.image.strip()}) behind nginx "
            f"({BALANCER_SERVICE}); regenerate instead of editing.\n"
            "# Models are loaded at start-up (--load-model): `docker compose up -d` is enough; the balancer\n"
            "# image comes from `deployer image build-balancer`.\n" + dump_compose(doc))


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
        # the replica stays behind the balancer while it is smoked (a rollout under traffic): its
        # statistics and metrics count the users' requests too, so only the checks that hold under
        # shared traffic run, as through the balancer (a batching proof counted 1047 inferences for 64)
        short = dataclasses.replace(options, duration_s=min(options.duration_s, 1.0),
                                    checks=BALANCER_CHECKS & (options.checks or BALANCER_CHECKS))
        return run_smoke(state, smoke_models(dep), short)

    return roll(fleet, publish=do_publish, previous=previous, restore=restore, smoke_replica=smoke_replica)
