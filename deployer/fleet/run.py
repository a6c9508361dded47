"""Start, stop and inspect a fleet: N replicas through the single-server runtime, nginx in front.

The one place the fleet's side effects happen. The record is `<state_dir>/fleet.json` (the balancer's
pid and ports, each replica's state dir); each replica records itself in its own server.json as any
single server does, so `down`/`status` in another process find everything.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deployer.errors import EnvironmentProblem, ServerError
from deployer.fleet.nginx import check_conf, find_nginx, start_nginx, write_conf
from deployer.fleet.plan import FleetPlan, Ports, plan_fleet, replica_name
from deployer.server.base import ServerSettings, ServerState, ServerStatus
from deployer.server.process import is_running, stop_group
from deployer.server.state import load_state

FLEET_FILE = "fleet.json"
_STOP_GRACE_S = 10.0


@dataclass(frozen=True)
class FleetState:
    """A running fleet: the balancer as a ServerState (what clients and smoke talk to) and each replica."""

    balancer: ServerState
    replicas: tuple[ServerState, ...]
    replica_dirs: tuple[Path, ...]
    pinned_models: tuple[str, ...] = ()


@dataclass(frozen=True)
class FleetStatus:
    """`status` of a fleet: the balancer's process and every replica's own status (up/down, models)."""

    balancer_running: bool
    balancer: ServerState | None
    replicas: tuple[tuple[str, ServerStatus], ...]
    pinned_models: tuple[str, ...] = ()

    @property
    def ready(self) -> bool:
        return self.balancer_running and all(s.ready for _, s in self.replicas)


def free_ports(count: int, host: str, avoid: frozenset[int] = frozenset()) -> list[Ports]:
    """`count` port triples free a moment ago (bound together, so distinct), none of them in `avoid`: the
    balancer's own ports are free too until nginx binds them, and the kernel once handed one out."""
    socks: list[socket.socket] = []
    nums: list[int] = []
    try:
        while len(nums) < 3 * count:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)  # held until the end: a port skipped here is not handed out again meanwhile
            if (port := s.getsockname()[1]) not in avoid:
                nums.append(port)
    finally:
        for s in socks:
            s.close()
    return [Ports(*nums[3 * i:3 * i + 3]) for i in range(count)]


def spare_ports(base: ServerSettings, count: int) -> list[Ports]:
    """Replica port triples for a fleet on `base`'s ports (which the balancer takes)."""
    return free_ports(count, base.host, frozenset({base.http_port, base.grpc_port, base.metrics_port}))


def _nginx_running(pid: int | None) -> bool:
    # the balancer is nginx, not tritonserver: checking for the wrong program left nginx running at `down`
    return is_running(pid, b"nginx")


def _fleet_path(state_dir: Path) -> Path:
    return state_dir / FLEET_FILE


def save_fleet(state_dir: Path, st: FleetState) -> None:
    b = st.balancer
    data = {"format": 1, "host": b.host, "http_port": b.http_port, "grpc_port": b.grpc_port,
            "metrics_port": b.metrics_port, "pid": b.pid, "models": list(b.models),
            "log_path": str(b.log_path) if b.log_path else None, "started_at": b.started_at,
            "replica_dirs": [str(d) for d in st.replica_dirs], "pinned_models": list(st.pinned_models),
            "runtime": b.runtime, "project": b.project, "container_id": b.container_id}
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = _fleet_path(state_dir).with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    tmp.replace(_fleet_path(state_dir))


def load_fleet(state_dir: Path) -> FleetState | None:
    """The recorded fleet, if any (replicas whose server.json is gone are left out)."""
    path = _fleet_path(state_dir)
    if not path.is_file():
        return None
    try:
        d: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        balancer = ServerState(runtime=d.get("runtime", "local"), host=str(d["host"]), http_port=int(d["http_port"]),
                               grpc_port=int(d["grpc_port"]), metrics_port=int(d["metrics_port"]),
                               models=tuple(d["models"]), pid=d["pid"],
                               log_path=Path(d["log_path"]) if d["log_path"] else None,
                               started_at=float(d["started_at"]), project=d.get("project"),
                               container_id=d.get("container_id"))
        dirs = tuple(Path(p) for p in d["replica_dirs"])
        pinned = tuple(d.get("pinned_models", ()))
    except (ValueError, KeyError, TypeError) as exc:
        raise EnvironmentProblem(f"{path} is corrupt ({exc})", hint=f"remove {path} after stopping by hand") from None
    replicas = tuple(s for s in (load_state(p) for p in dirs) if s is not None)
    return FleetState(balancer, replicas, dirs, pinned)


def _wait_balancer(state: ServerState, proc: Any, deadline_s: float) -> None:
    url = f"http://{state.http_url}/v2/health/ready"
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerError(f"nginx exited ({proc.returncode}) at start; see {state.log_path}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2.0) as r:
            if r.status == 200:
                return
        time.sleep(0.05)
    raise ServerError(f"the balancer on {state.http_url} was not ready within {deadline_s:.0f} s")


def fleet_up(base: ServerSettings, replicas: int, *, pinned_models: tuple[str, ...] = (),
             runtime: Any) -> FleetState:
    """Start `replicas` servers on `base`'s repository and nginx on `base`'s HTTP/gRPC ports.

    `runtime` is the single-server runtime (deployer.server.from_spec.get_runtime). On any failure everything
    started so far is stopped again before the error propagates.
    """
    from deployer.server.local import check_ports_free

    nginx = find_nginx()  # exit 3 before anything starts
    state_dir = base.state_dir.absolute()
    if (previous := load_fleet(state_dir)) is not None and _nginx_running(previous.balancer.pid):
        raise EnvironmentProblem(f"a fleet started from {state_dir} is running (nginx pid {previous.balancer.pid})",
                                 hint="run `deployer down` first")
    check_ports_free(base.host, {"http_port": base.http_port, "grpc_port": base.grpc_port})
    plan = plan_fleet(base, replicas, spare_ports(base, replicas), pinned_models=pinned_models)
    return _apply(plan, nginx, runtime, state_dir)


def _apply(plan: FleetPlan, nginx: Path, runtime: Any, state_dir: Path) -> FleetState:
    started: list[ServerState] = []
    proc = None
    try:
        for settings in plan.replicas:
            started.append(runtime.up(settings))
        conf = write_conf(plan.balancer)
        _let_workers_write(plan.balancer.state_dir)
        check_conf(nginx, conf)
        proc = start_nginx(nginx, conf)
        first = started[0]
        balancer = ServerState(runtime="local", host=plan.balancer.host, http_port=plan.balancer.http_port,
                               grpc_port=plan.balancer.grpc_port, metrics_port=first.metrics_port,
                               models=first.models, pid=proc.pid, log_path=plan.balancer.state_dir / "error.log",
                               started_at=time.time(), backends=first.backends)
        st = FleetState(balancer, tuple(started), tuple(s.state_dir.absolute() for s in plan.replicas),
                        plan.balancer.pinned_models)
        save_fleet(state_dir, st)
        _wait_balancer(balancer, proc, 30.0)
        return st
    except BaseException:
        if proc is not None:
            stop_group(proc.pid, proc, 5.0)
        for s in started:
            with contextlib.suppress(Exception):
                runtime.down(s)
        with contextlib.suppress(FileNotFoundError):
            _fleet_path(state_dir).unlink()
        raise


def _let_workers_write(balancer_dir: Path) -> None:
    # nginx started as root runs its workers as `nobody`: they buffer request bodies in the temp dirs
    if os.geteuid() == 0:
        import pwd

        with contextlib.suppress(KeyError):
            nobody = pwd.getpwnam("nobody")
            for d in (balancer_dir / "tmp").rglob("*"):
                os.chown(d, nobody.pw_uid, nobody.pw_gid)
            os.chown(balancer_dir / "tmp", nobody.pw_uid, nobody.pw_gid)


def fleet_down(state_dir: Path, runtime_for: Any) -> FleetState | None:
    """Stop the balancer, then every replica (idempotent). `runtime_for(name)` gives a runtime."""
    st = load_fleet(state_dir.absolute())
    if st is None:
        return None
    if st.balancer.pid is not None and _nginx_running(st.balancer.pid):
        stop_group(st.balancer.pid, None, _STOP_GRACE_S)
    errors = []
    for r in st.replicas:
        try:
            runtime_for(r.runtime).down(r)
        except Exception as exc:  # stop the others anyway; report the first
            errors.append(exc)
    _fleet_path(state_dir.absolute()).unlink(missing_ok=True)
    if errors:
        raise errors[0]
    return st


def fleet_status(state_dir: Path, runtime_for: Any) -> FleetStatus | None:
    """Every replica's status (a replica whose server.json is gone is reported down)."""
    st = load_fleet(state_dir.absolute())
    if st is None:
        return None
    recorded = {s.log_path.parent.absolute() if s.log_path else None: s for s in st.replicas}
    rows = []
    for i, d in enumerate(st.replica_dirs):
        s = recorded.get(d)
        if s is None:
            rows.append((replica_name(i), ServerStatus(running=False, ready=False, models={}, state=None)))
        else:
            rows.append((replica_name(i), runtime_for(s.runtime).status(s)))
    return FleetStatus(_nginx_running(st.balancer.pid), st.balancer, tuple(rows), st.pinned_models)
