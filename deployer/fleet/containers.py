"""What the two container fleets (compose and docker runtimes) share: the records written before the
start, waiting for every replica and the balancer, saving logs and forgetting the records at the end,
and `status` from the recorded container ids. The runtimes differ only in how the containers are
created and removed (deployer.fleet.compose_run, deployer.fleet.docker_run)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from deployer.fleet.plan import FleetPlan, replica_name
from deployer.fleet.run import FLEET_FILE, FleetState, FleetStatus, save_fleet
from deployer.server.base import RuntimeName, ServerState, ServerStatus
from deployer.server.docker.client import container_backends, container_logs, container_running, save_log
from deployer.server.lifecycle import LOG_FILE
from deployer.server.readiness import query_status, wait_until_ready
from deployer.server.state import clear_state, save_state

BALANCER_LOG = "balancer.log"
_BALANCER_READY_S = 60.0


def get_container(client: Any, container_id: str | None) -> Any:
    """The container with that id, or None when it is gone (or none was recorded)."""
    from docker.errors import NotFound

    if not container_id:
        return None
    try:
        return client.containers.get(container_id)
    except NotFound:
        return None


def initial_state(plan: FleetPlan, runtime: RuntimeName, project: str) -> FleetState:
    """The fleet as recorded before anything starts (no container ids yet)."""
    reps = tuple(
        ServerState(runtime=runtime, host=s.host, http_port=s.http_port, grpc_port=s.grpc_port,
                    metrics_port=s.metrics_port, models=s.models, log_path=s.state_dir / LOG_FILE,
                    project=project, started_at=time.time())
        for s in plan.replicas
    )
    b = plan.balancer
    balancer = ServerState(runtime=runtime, host=b.host, http_port=b.http_port, grpc_port=b.grpc_port,
                           metrics_port=reps[0].metrics_port, models=reps[0].models,
                           log_path=b.state_dir / BALANCER_LOG, project=project, started_at=time.time())
    return FleetState(balancer, reps, tuple(s.state_dir for s in plan.replicas), b.pinned_models)


def record(state_dir: Path, fleet: FleetState) -> None:
    """fleet.json and every replica's server.json: a `deployer down` in another shell finds them."""
    save_fleet(state_dir, fleet)
    for d, s in zip(fleet.replica_dirs, fleet.replicas, strict=True):
        save_state(d, s)


def wait_ready(state_dir: Path, plan: FleetPlan, fleet: FleetState, replicas: Sequence[Any],
               balancer: Any) -> FleetState:
    """Wait for each replica container to serve its models (loaded through its own port), then for the
    balancer to answer Triton's health endpoint; record the container ids; return the fleet."""
    started: list[ServerState] = []
    for container, s, state in zip(replicas, plan.replicas, fleet.replicas, strict=True):
        state = replace(state, container_id=str(container.id))
        save_state(s.state_dir, state)
        wait_until_ready(state.http_url, s.models, timeout_s=s.startup_timeout_s,
                         is_alive=partial(container_running, container),
                         log_tail=partial(container_logs, container, 60))
        state = replace(state, backends=container_backends(container))
        save_state(s.state_dir, state)
        started.append(state)
    b = replace(fleet.balancer, container_id=str(balancer.id), backends=started[0].backends)
    fleet = replace(fleet, balancer=b, replicas=tuple(started))
    save_fleet(state_dir, fleet)
    # Triton's health endpoint through nginx: the balancer listens and reaches a replica
    wait_until_ready(b.http_url, (), timeout_s=_BALANCER_READY_S, is_alive=partial(container_running, balancer),
                     log_tail=partial(container_logs, balancer, 60))
    return fleet


def save_logs(client: Any, fleet: FleetState) -> None:
    """Each container's log into its state dir, before the containers are removed."""
    for state in (*fleet.replicas, fleet.balancer):
        container = get_container(client, state.container_id)
        if container is not None:
            save_log(container, state.log_path)


def forget(state_dir: Path, fleet: FleetState) -> None:
    for d in fleet.replica_dirs:
        clear_state(d)
    (state_dir / FLEET_FILE).unlink(missing_ok=True)


def container_fleet_status(client: Any, fleet: FleetState) -> FleetStatus:
    """Each replica's container liveness and the server's own view; the balancer container's liveness."""
    recorded = {s.log_path.parent if s.log_path else None: s for s in fleet.replicas}
    rows: list[tuple[str, ServerStatus]] = []
    for i, d in enumerate(fleet.replica_dirs):
        s = recorded.get(d)
        container = get_container(client, s.container_id) if s is not None else None
        if s is None or container is None:
            rows.append((replica_name(i), ServerStatus(running=False, ready=False, models={}, state=s)))
        else:
            rows.append((replica_name(i), query_status(s, running=container_running(container))))
    balancer = get_container(client, fleet.balancer.container_id)
    running = balancer is not None and container_running(balancer)
    return FleetStatus(running, fleet.balancer, tuple(rows), fleet.pinned_models)
