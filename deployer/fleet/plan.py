"""A fleet as data: N replica ServerSettings derived from the spec's one, and the balancer in front (pure).

Replicas are composed from the outside of the single-server runtimes: each is an ordinary
`ServerSettings` with its own ports and its own state dir (so its server.json, log and backend dir never
collide), all on the same repository. The repository stays an opaque location: whatever the spec's
settings carry is handed to every replica unchanged (a local path today, an S3 URL when that lands).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from deployer.errors import UserError
from deployer.server.base import ServerSettings

REPLICAS_DIR = "replicas"


@dataclass(frozen=True)
class Ports:
    """The three ports of one replica."""

    http: int
    grpc: int
    metrics: int


@dataclass(frozen=True)
class Upstream:
    """One replica as the balancer sees it."""

    name: str  # r0, r1, ...
    host: str
    http_port: int
    grpc_port: int


@dataclass(frozen=True)
class BalancerPlan:
    """What nginx is rendered from: where it listens, where it forwards, which models are pinned.

    `pinned_models` are sequence models: a sequence's requests must reach the replica holding its state,
    so their HTTP location hashes on the client address (no retry elsewhere, which would lose the
    sequence) and, when any exists, the whole gRPC upstream is pinned the same way (gRPC carries the
    model name inside the body, where nginx cannot route on it).
    """

    host: str
    http_port: int
    grpc_port: int
    upstreams: tuple[Upstream, ...]
    state_dir: Path
    pinned_models: tuple[str, ...] = ()
    retries: int = 3  # replicas tried per request (stateless models) before the client sees an error
    connect_timeout_s: float = 2.0
    read_timeout_s: float = 120.0
    fail_timeout_s: float = 2.0  # how long a failed replica is left out before nginx tries it again


@dataclass(frozen=True)
class FleetPlan:
    """Every replica's settings and the balancer."""

    replicas: tuple[ServerSettings, ...]
    balancer: BalancerPlan

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(u.name for u in self.balancer.upstreams)


def replica_name(index: int) -> str:
    return f"r{index}"


def replica_state_dir(state_dir: Path, index: int) -> Path:
    """Each replica's own state dir under the spec's: `<state>/replicas/r<i>`."""
    return state_dir / REPLICAS_DIR / replica_name(index)


def plan_fleet(base: ServerSettings, replicas: int, ports: list[Ports], *,
               pinned_models: tuple[str, ...] = ()) -> FleetPlan:
    """N replica settings from the spec's `base` settings plus the balancer on base's HTTP/gRPC ports.

    `ports` are the replicas' own (picked free by the caller: this function stays pure). Every replica
    gets `DEPLOYER_REPLICA=<i>` in its environment so its logs and backends can tell which one it is.
    """
    if replicas < 1:
        raise UserError(f"server.replicas must be >= 1, not {replicas}")
    if len(ports) != replicas:
        raise UserError(f"{replicas} replicas need {replicas} port triples, got {len(ports)}")
    taken = {base.http_port, base.grpc_port}
    seen: set[int] = set()
    for p in ports:
        for port in (p.http, p.grpc, p.metrics):
            if port in taken or port in seen:
                raise UserError(f"port {port} is used twice in the fleet (balancer {sorted(taken)})")
            seen.add(port)
    settings = tuple(
        replace(base, http_port=p.http, grpc_port=p.grpc, metrics_port=p.metrics,
                state_dir=replica_state_dir(base.state_dir, i),
                env=(*base.env, ("DEPLOYER_REPLICA", str(i))))
        for i, p in enumerate(ports)
    )
    upstreams = tuple(Upstream(replica_name(i), base.host, p.http, p.grpc) for i, p in enumerate(ports))
    balancer = BalancerPlan(host=base.host, http_port=base.http_port, grpc_port=base.grpc_port,
                            upstreams=upstreams, state_dir=base.state_dir / "balancer",
                            pinned_models=pinned_models)
    return FleetPlan(settings, balancer)
