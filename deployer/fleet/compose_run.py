"""Start, stop and inspect a fleet on the compose runtime: one project, N Triton services + the balancer.

The side effects of deployer.fleet.compose_plan: the record is the same `fleet.json` the local fleet
writes (runtime "compose", the project name), and each replica's server.json (runtime "compose", its
container id), written before `compose up` so a `deployer down` in another shell finds the project.
Any failure, Ctrl-C included, tears the whole project down (containers, network, volumes) before it
propagates.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from deployer.errors import MissingDependency, ServerError
from deployer.fleet.compose_plan import BALANCER_SERVICE, plan_compose_fleet
from deployer.fleet.containers import (
    container_fleet_status,
    forget,
    get_container,
    initial_state,
    record,
    save_logs,
    wait_ready,
)
from deployer.fleet.plan import plan_fleet
from deployer.fleet.run import FleetState, FleetStatus, spare_ports
from deployer.server.base import ServerSettings, with_server_defaults
from deployer.server.docker.client import (
    container_running,
    docker_client,
    engine_allows_memlock,
    refuse_if_running,
    require_image,
)
from deployer.server.docker.compose import COMPOSE_FILE, ComposePlan, compose_up, find_compose, teardown_project
from deployer.server.docker.plan import BALANCER_IMAGE, NVIDIA_ULIMITS, image_of
from deployer.server.lifecycle import check_ports_free, check_repository, unload_for_stop

log = logging.getLogger(__name__)

_STOP_TIMEOUT_S = 20


def _service_container(client: Any, project: str, service: str) -> Any:
    filters = {"label": [f"com.docker.compose.project={project}", f"com.docker.compose.service={service}"]}
    found = client.containers.list(all=True, filters=filters)
    if not found:
        raise ServerError(f"compose project {project} has no '{service}' container after `up`")
    return found[0]


def checked_base(base: ServerSettings, client: Any) -> ServerSettings:
    """The checks both container fleets make before anything starts; `base` with an absolute state dir."""
    base = with_server_defaults(replace(base, state_dir=base.state_dir.absolute()))
    check_repository(base.repository)
    refuse_if_running(client, base.state_dir)  # any container of this state dir's project
    require_image(client, image_of(base))
    require_image(client, BALANCER_IMAGE)
    check_ports_free(base.host, {"http_port": base.http_port, "grpc_port": base.grpc_port})
    return base


def engine_ulimits(client: Any, base: ServerSettings) -> tuple[tuple[str, int, int], ...]:
    if engine_allows_memlock(client, image_of(base)):
        return NVIDIA_ULIMITS
    return tuple(u for u in NVIDIA_ULIMITS if u[0] != "memlock")


def compose_fleet_up(base: ServerSettings, replicas: int, *, pinned_models: tuple[str, ...] = ()) -> FleetState:
    """Start `replicas` Triton services and the balancer as one compose project; wait until every replica
    has loaded the models and the balancer answers; return the recorded fleet."""
    client = docker_client()
    compose = find_compose()
    base = checked_base(base, client)
    fleet_plan = plan_fleet(base, replicas, spare_ports(base, replicas), pinned_models=pinned_models)
    plan = plan_compose_fleet(fleet_plan, compose, ulimits=engine_ulimits(client, base))
    state_dir = base.state_dir
    fleet = initial_state(fleet_plan, "compose", plan.compose.project)
    try:
        record(state_dir, fleet)  # before `compose up`: a `deployer down` in another shell finds the project
        compose_up(plan.compose)
        containers = [_service_container(client, plan.compose.project, s) for s in plan.services]
        balancer = _service_container(client, plan.compose.project, BALANCER_SERVICE)
        fleet = wait_ready(state_dir, fleet_plan, fleet, containers, balancer)
    except BaseException:  # includes KeyboardInterrupt: never leave the project behind
        _teardown(client, plan.compose, fleet, stop_timeout_s=5)
        raise
    log.info("compose fleet %s up: %d replicas behind %s", plan.compose.project, replicas, fleet.balancer.http_url)
    return fleet


def _teardown(client: Any, compose: ComposePlan, fleet: FleetState, *, stop_timeout_s: int) -> None:
    save_logs(client, fleet)
    teardown_project(client, compose, stop_timeout_s)
    forget(compose.file.parent, fleet)


def unload_replicas(client: Any, fleet: FleetState) -> None:
    """Unload the models of every running replica (shortens Triton's shutdown; a failure stops nothing)."""
    for r in fleet.replicas:
        container = get_container(client, r.container_id)
        if container is not None and container_running(container):
            with contextlib.suppress(Exception):
                unload_for_stop(r)


def compose_fleet_down(state_dir: Path, fleet: FleetState) -> None:
    """Unload the models of every running replica, then tear the project down (idempotent)."""
    client = docker_client()
    unload_replicas(client, fleet)
    try:
        compose = find_compose()
    except MissingDependency:  # the labels still find and remove everything
        compose = ("docker-compose",)
    plan = ComposePlan(compose, str(fleet.balancer.project), state_dir.absolute() / COMPOSE_FILE, "")
    _teardown(client, plan, fleet, stop_timeout_s=_STOP_TIMEOUT_S)


def compose_fleet_status(fleet: FleetState) -> FleetStatus:
    return container_fleet_status(docker_client(), fleet)
