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
import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from deployer.errors import ServerError
from deployer.fleet.compose_plan import BALANCER_SERVICE, ComposeFleetPlan, plan_compose_fleet
from deployer.fleet.plan import plan_fleet, replica_name
from deployer.fleet.run import FLEET_FILE, FleetState, FleetStatus, free_ports, save_fleet
from deployer.server.base import ServerSettings, ServerState, ServerStatus, with_server_defaults
from deployer.server.docker.client import (
    container_backends,
    container_logs,
    container_running,
    docker_client,
    engine_allows_memlock,
    refuse_if_running,
    require_image,
    save_log,
)
from deployer.server.docker.compose import COMPOSE_FILE, ComposePlan, compose_up, find_compose, teardown_project
from deployer.server.docker.plan import BALANCER_IMAGE, NVIDIA_ULIMITS, image_of
from deployer.server.lifecycle import LOG_FILE, check_ports_free, check_repository, unload_for_stop
from deployer.server.readiness import query_status, wait_until_ready
from deployer.server.state import clear_state, save_state

log = logging.getLogger(__name__)

BALANCER_LOG = "balancer.log"
_BALANCER_READY_S = 60.0
_STOP_TIMEOUT_S = 20


def _service_container(client: Any, project: str, service: str) -> Any:
    filters = {"label": [f"com.docker.compose.project={project}", f"com.docker.compose.service={service}"]}
    found = client.containers.list(all=True, filters=filters)
    if not found:
        raise ServerError(f"compose project {project} has no '{service}' container after `up`")
    return found[0]


def _container(client: Any, container_id: str | None) -> Any:
    from docker.errors import NotFound

    if not container_id:
        return None
    try:
        return client.containers.get(container_id)
    except NotFound:
        return None


def compose_fleet_up(base: ServerSettings, replicas: int, *, pinned_models: tuple[str, ...] = ()) -> FleetState:
    """Start `replicas` Triton services and the balancer as one compose project; wait until every replica
    has loaded the models and the balancer answers; return the recorded fleet."""
    base = with_server_defaults(replace(base, state_dir=base.state_dir.absolute()))
    state_dir = base.state_dir
    check_repository(base.repository)
    client = docker_client()
    compose = find_compose()
    refuse_if_running(client, state_dir)  # any container of this state dir's project, single server or fleet
    require_image(client, image_of(base))
    require_image(client, BALANCER_IMAGE)
    check_ports_free(base.host, {"http_port": base.http_port, "grpc_port": base.grpc_port})
    fleet_plan = plan_fleet(base, replicas, free_ports(replicas, base.host), pinned_models=pinned_models)
    ulimits = NVIDIA_ULIMITS
    if not engine_allows_memlock(client, image_of(base)):
        ulimits = tuple(u for u in NVIDIA_ULIMITS if u[0] != "memlock")
    plan = plan_compose_fleet(fleet_plan, compose, ulimits=ulimits)
    fleet = _initial_state(plan)
    try:
        _write(plan, fleet)
        compose_up(plan.compose)
        fleet = _wait_ready(client, plan, fleet)
    except BaseException:  # includes KeyboardInterrupt: never leave the project behind
        _teardown(client, plan.compose, fleet, stop_timeout_s=5)
        raise
    log.info("compose fleet %s up: %d replicas behind %s", plan.compose.project, replicas, fleet.balancer.http_url)
    return fleet


def _initial_state(plan: ComposeFleetPlan) -> FleetState:
    project = plan.compose.project
    reps = tuple(
        ServerState(runtime="compose", host=s.host, http_port=s.http_port, grpc_port=s.grpc_port,
                    metrics_port=s.metrics_port, models=s.models, log_path=s.state_dir / LOG_FILE,
                    project=project, started_at=time.time())
        for s in plan.fleet.replicas
    )
    b = plan.fleet.balancer
    balancer = ServerState(runtime="compose", host=b.host, http_port=b.http_port, grpc_port=b.grpc_port,
                           metrics_port=reps[0].metrics_port, models=reps[0].models,
                           log_path=b.state_dir / BALANCER_LOG, project=project, started_at=time.time())
    return FleetState(balancer, reps, tuple(s.state_dir for s in plan.fleet.replicas), b.pinned_models)


def _write(plan: ComposeFleetPlan, fleet: FleetState) -> None:
    # recorded before `compose up`: a `deployer down` in another shell finds the project by it
    save_fleet(plan.compose.file.parent, fleet)
    for d, s in zip(fleet.replica_dirs, fleet.replicas, strict=True):
        save_state(d, s)


def _wait_ready(client: Any, plan: ComposeFleetPlan, fleet: FleetState) -> FleetState:
    project, settings = plan.compose.project, plan.fleet.replicas
    started: list[ServerState] = []
    for service, s, state in zip(plan.services, settings, fleet.replicas, strict=True):
        container = _service_container(client, project, service)
        state = replace(state, container_id=str(container.id))
        save_state(s.state_dir, state)
        wait_until_ready(state.http_url, s.models, timeout_s=s.startup_timeout_s,
                         is_alive=partial(container_running, container),
                         log_tail=partial(container_logs, container, 60))
        state = replace(state, backends=container_backends(container))
        save_state(s.state_dir, state)
        started.append(state)
    balancer = _service_container(client, project, BALANCER_SERVICE)
    b = replace(fleet.balancer, container_id=str(balancer.id), backends=started[0].backends)
    fleet = replace(fleet, balancer=b, replicas=tuple(started))
    save_fleet(plan.compose.file.parent, fleet)
    # Triton's health endpoint through nginx: the balancer listens and reaches a replica
    wait_until_ready(b.http_url, (), timeout_s=_BALANCER_READY_S, is_alive=lambda: container_running(balancer),
                     log_tail=lambda: container_logs(balancer, 60))
    return fleet


def _teardown(client: Any, compose: ComposePlan, fleet: FleetState, *, stop_timeout_s: int) -> None:
    """Save every log, `compose down` the project (labels as a safety net), forget the records."""
    for state in (*fleet.replicas, fleet.balancer):
        container = _container(client, state.container_id)
        if container is not None:
            save_log(container, state.log_path)
    teardown_project(client, compose, stop_timeout_s)
    for d in fleet.replica_dirs:
        clear_state(d)
    (compose.file.parent / FLEET_FILE).unlink(missing_ok=True)


def compose_fleet_down(state_dir: Path, fleet: FleetState) -> None:
    """Unload the models of every running replica, then tear the project down (idempotent)."""
    client = docker_client()
    for r in fleet.replicas:
        container = _container(client, r.container_id)
        if container is not None and container_running(container):
            with contextlib.suppress(Exception):  # stop anyway; the unload only shortens Triton's shutdown
                unload_for_stop(r)
    compose = find_compose_or_default()
    plan = ComposePlan(compose, str(fleet.balancer.project), state_dir.absolute() / COMPOSE_FILE, "")
    _teardown(client, plan, fleet, stop_timeout_s=_STOP_TIMEOUT_S)


def find_compose_or_default() -> tuple[str, ...]:
    from deployer.errors import MissingDependency

    try:
        return find_compose()
    except MissingDependency:  # the labels still find and remove everything
        return ("docker-compose",)


def compose_fleet_status(fleet: FleetState) -> FleetStatus:
    """Each replica's container liveness and the server's own view; the balancer container's liveness."""
    client = docker_client()
    recorded = {s.log_path.parent if s.log_path else None: s for s in fleet.replicas}
    rows: list[tuple[str, ServerStatus]] = []
    for i, d in enumerate(fleet.replica_dirs):
        s = recorded.get(d)
        container = _container(client, s.container_id) if s is not None else None
        if s is None or container is None:
            rows.append((replica_name(i), ServerStatus(running=False, ready=False, models={}, state=s)))
        else:
            rows.append((replica_name(i), query_status(s, running=container_running(container))))
    balancer = _container(client, fleet.balancer.container_id)
    running = balancer is not None and container_running(balancer)
    return FleetStatus(running, fleet.balancer, tuple(rows), fleet.pinned_models)
