"""Start, stop and inspect a fleet on the docker runtime: N Triton containers and the nginx balancer
container on a user-defined network of their own (where Docker's DNS resolves the container names).

Each replica is the docker runtime's container (deployer.server.docker.plan.plan_container: same image,
command, read-only repository, ports on the spec's host) named `<project>-r<i>`; the balancer publishes
the spec's HTTP and gRPC ports. Everything carries the fleet project's labels, so one
`remove_managed(project)` removes every container and the network, on `down` and on any failed `up`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from deployer.errors import EnvironmentProblem
from deployer.fleet.compose_plan import CONF_ENV, balancer_command, container_balancer
from deployer.fleet.compose_run import checked_base, engine_ulimits, unload_replicas
from deployer.fleet.containers import container_fleet_status, forget, initial_state, record, save_logs, wait_ready
from deployer.fleet.nginx import render_nginx_conf
from deployer.fleet.plan import FleetPlan, plan_fleet, replica_name
from deployer.fleet.run import FleetState, FleetStatus, spare_ports
from deployer.server.base import ServerSettings
from deployer.server.docker.client import docker_client, remove_managed
from deployer.server.docker.plan import (
    BALANCER_IMAGE,
    CONTAINER_PORTS,
    NVIDIA_ULIMITS,
    ContainerSpec,
    managed_labels,
    plan_container,
    project_name,
)

log = logging.getLogger(__name__)

_PORTS = dict(CONTAINER_PORTS)


@dataclass(frozen=True)
class DockerFleetPlan:
    """The network, the replica containers and the balancer container's `containers.create` arguments."""

    project: str  # also the network's name
    labels: tuple[tuple[str, str], ...]
    replicas: tuple[ContainerSpec, ...]
    balancer: dict[str, Any]
    conf: str


def plan_docker_fleet(plan: FleetPlan, *, ulimits: tuple[tuple[str, int, int], ...] = NVIDIA_ULIMITS,
                      balancer_image: str = BALANCER_IMAGE) -> DockerFleetPlan:
    """Every container of the fleet (pure); `plan`'s state dirs are absolute."""
    base_dir = plan.balancer.state_dir.parent
    project = project_name(base_dir)
    labels = managed_labels(base_dir, project)
    names = [f"{project}-{replica_name(i)}" for i in range(len(plan.replicas))]
    replicas = tuple(replace(plan_container(s), name=name, labels=labels, ulimits=ulimits)
                     for s, name in zip(plan.replicas, names, strict=True))
    conf = render_nginx_conf(container_balancer(plan, names))
    b = plan.balancer
    balancer = {
        "image": balancer_image,
        "command": balancer_command(),
        "name": f"{project}-balancer",
        "labels": dict(labels),
        "ports": {f"{_PORTS['http_port']}/tcp": (b.host, b.http_port),
                  f"{_PORTS['grpc_port']}/tcp": (b.host, b.grpc_port)},
        "environment": {CONF_ENV: conf},
        "network": project,
        "init": True,
        "detach": True,
    }
    return DockerFleetPlan(project, labels, replicas, balancer, conf)


def docker_fleet_up(base: ServerSettings, replicas: int, *, pinned_models: tuple[str, ...] = ()) -> FleetState:
    """Create the network, start `replicas` Triton containers and the balancer; wait until every replica
    has loaded the models and the balancer answers; return the recorded fleet."""
    client = docker_client()
    base = checked_base(base, client)
    fleet_plan = plan_fleet(base, replicas, spare_ports(base, replicas), pinned_models=pinned_models)
    plan = plan_docker_fleet(fleet_plan, ulimits=engine_ulimits(client, base))
    state_dir = base.state_dir
    fleet = initial_state(fleet_plan, "docker", plan.project)
    try:
        record(state_dir, fleet)  # before the first container: a `deployer down` elsewhere finds them
        containers, balancer = _create(client, plan)
        fleet = wait_ready(state_dir, fleet_plan, fleet, containers, balancer)
    except BaseException:  # includes KeyboardInterrupt: the labels find whatever was created
        _teardown(client, state_dir, fleet)
        raise
    log.info("docker fleet %s up: %d replicas behind %s", plan.project, replicas, fleet.balancer.http_url)
    return fleet


def _create(client: Any, plan: DockerFleetPlan) -> tuple[list[Any], Any]:
    """The network, then each replica, then the balancer (its upstream names must resolve at its start)."""
    from docker.errors import APIError

    what = f"network {plan.project}"
    try:
        client.networks.create(plan.project, driver="bridge", labels=dict(plan.labels))
        containers = []
        for spec in plan.replicas:
            what = f"container {spec.name}"
            c = client.containers.create(**spec.run_kwargs(), network=plan.project)
            c.start()
            containers.append(c)
        what = f"container {plan.balancer['name']}"
        balancer = client.containers.create(**plan.balancer)
        balancer.start()
    except APIError as exc:
        raise EnvironmentProblem(f"Docker could not create {what}: {exc.explanation or exc}",
                                 hint="`docker ps -a` and `docker network ls` show what is in the way") from exc
    return containers, balancer


def _teardown(client: Any, state_dir: Path, fleet: FleetState) -> None:
    save_logs(client, fleet)
    remove_managed(client, fleet.balancer.project)
    forget(state_dir, fleet)


def docker_fleet_down(state_dir: Path, fleet: FleetState) -> None:
    """Unload the models of every running replica, then remove every container and the network."""
    client = docker_client()
    unload_replicas(client, fleet)
    _teardown(client, state_dir.absolute(), fleet)


def docker_fleet_status(fleet: FleetState) -> FleetStatus:
    return container_fleet_status(docker_client(), fleet)
