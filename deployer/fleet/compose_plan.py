"""A fleet as one Docker Compose project (pure): N Triton services and the nginx balancer service.

Each replica is the compose runtime's own `triton` service (same image, command, read-only repository,
healthcheck) renamed `triton-r<i>`, with its ports published on the spec's host (127.0.0.1) so deployer
can load models, smoke and report each replica (not in the file `deployer compose` writes); the balancer
publishes the spec's HTTP and gRPC ports and reaches the replicas by their compose DNS names on the
project's network. Its nginx.conf is the local fleet's (deployer.fleet.nginx), rendered for the paths
and ports inside the balancer container.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from deployer.fleet.nginx import render_nginx_conf
from deployer.fleet.plan import BalancerPlan, FleetPlan, Upstream
from deployer.server.docker.compose import COMPOSE_FILE, ComposePlan
from deployer.server.docker.compose_render import SERVICE, compose_document, dump_compose
from deployer.server.docker.plan import BALANCER_IMAGE, CONTAINER_PORTS, NVIDIA_ULIMITS, managed_labels, project_name

BALANCER_SERVICE = "balancer"
# inside the balancer image (docker/balancer/Dockerfile): nginx's prefix with its temp dirs, and the conf
BALANCER_PREFIX = Path("/var/lib/deployer-balancer")
BALANCER_CONF = "/etc/deployer/nginx.conf"
CONF_ENV = "DEPLOYER_NGINX_CONF"
_PORTS = dict(CONTAINER_PORTS)


@dataclass(frozen=True)
class ComposeFleetPlan:
    """What the compose fleet writes (the compose file and the balancer's conf) and runs."""

    fleet: FleetPlan
    compose: ComposePlan  # project, file and its content
    conf: str  # the balancer's nginx.conf (also inside the compose file)
    services: tuple[str, ...]  # the replicas' service names, in replica order


def replica_service(index: int) -> str:
    return f"{SERVICE}-r{index}"


def container_balancer(plan: FleetPlan, hosts: Sequence[str] | None = None) -> BalancerPlan:
    """The balancer as nginx sees it inside its container: Triton's default ports on every replica
    (`hosts`: their names on the container network, default the compose service names), listening on
    all interfaces of the container (the host side is bound by the published ports)."""
    names = list(hosts) if hosts is not None else [replica_service(i) for i in range(len(plan.replicas))]
    ups = tuple(Upstream(u.name, names[i], _PORTS["http_port"], _PORTS["grpc_port"])
                for i, u in enumerate(plan.balancer.upstreams))
    return replace(plan.balancer, host="0.0.0.0", http_port=_PORTS["http_port"], grpc_port=_PORTS["grpc_port"],
                   upstreams=ups, state_dir=BALANCER_PREFIX)


def balancer_command(dollar: str = "$") -> list[str]:
    """The balancer container's command: write the conf from the environment, then run nginx in front.
    `dollar` is how `$` is written where it is read (compose interpolates `$`: `$$` there)."""
    script = (f'printf "%s" "{dollar}{CONF_ENV}" > {BALANCER_CONF} && '
              f"exec nginx -p {BALANCER_PREFIX} -c {BALANCER_CONF}")
    return ["sh", "-c", script]


def fleet_compose_document(plan: FleetPlan, *, project: str, balancer_image: str = BALANCER_IMAGE,
                           load_models: bool = False, publish_replicas: bool = True,
                           ulimits: tuple[tuple[str, int, int], ...] = NVIDIA_ULIMITS) -> dict[str, Any]:
    """The compose document: `triton-r<i>` for each replica plus `balancer` (pure).

    `publish_replicas=False` (the file `deployer compose` writes) publishes the balancer's ports only.
    The balancer's nginx.conf travels inside the document (an environment variable the command writes
    to the conf path), so the file is complete by itself, for `docker compose` and `docker-compose` alike.
    """
    base_dir = plan.balancer.state_dir.parent
    services: dict[str, Any] = {}
    for i, settings in enumerate(plan.replicas):
        service = compose_document(settings, project=project, load_models=load_models,
                                   ulimits=ulimits)["services"][SERVICE]
        if not publish_replicas:
            del service["ports"]
        services[replica_service(i)] = service
    labels = dict(managed_labels(base_dir, project))
    b = plan.balancer
    # `$$` is compose's escape of `$` (interpolation), in the command and in nginx's own variables alike
    conf = render_nginx_conf(container_balancer(plan)).replace("$", "$$")
    services[BALANCER_SERVICE] = {
        "image": balancer_image,
        "command": balancer_command("$$"),
        "init": True,
        "ports": [f"{b.host}:{b.http_port}:{_PORTS['http_port']}", f"{b.host}:{b.grpc_port}:{_PORTS['grpc_port']}"],
        "environment": {CONF_ENV: conf},
        # nginx resolves the upstream names once, at start: the replica containers must exist by then
        "depends_on": list(services),
        "labels": labels,
    }
    return {"services": services, "networks": {"default": {"labels": dict(labels)}}}


def plan_compose_fleet(plan: FleetPlan, compose: tuple[str, ...], *,
                       ulimits: tuple[tuple[str, int, int], ...] = NVIDIA_ULIMITS) -> ComposeFleetPlan:
    """The whole project for `plan` (whose state dirs are absolute), under the base state dir."""
    base_dir = plan.balancer.state_dir.parent
    project = project_name(base_dir)
    doc = fleet_compose_document(plan, project=project, ulimits=ulimits)
    header = (f"# Generated by deployer: {len(plan.replicas)} Triton replicas behind nginx "
              f"({BALANCER_SERVICE}); regenerate instead of editing.\n")
    content = header + dump_compose(doc)
    return ComposeFleetPlan(fleet=plan, compose=ComposePlan(compose, project, base_dir / COMPOSE_FILE, content),
                            conf=render_nginx_conf(container_balancer(plan)),
                            services=tuple(replica_service(i) for i in range(len(plan.replicas))))
