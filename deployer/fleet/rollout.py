"""`deployer rollout SPEC`: publish, then replica by replica load the new versions and smoke that replica.

Triton runs with explicit model control, so publishing changes nothing a replica serves: a replica
moves to the new versions only when it is told to load the model again, and Triton keeps the loaded
version serving until the new one is ready (a load that fails leaves the old one in place). nginx
meanwhile retries a stateless request on another replica, so the fleet keeps answering.

On any failure the rollout stops, the repository serves the previous versions again (the repository
API's rollback, so any repository backend that implements it plugs in) and every replica touched so
far loads them; CheckFailed (exit 1) names the replica and the failed check.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deployer.errors import CheckFailed
from deployer.fleet.plan import replica_name
from deployer.fleet.run import FleetState
from deployer.server.base import ServerState

log = logging.getLogger(__name__)

_LOAD_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class RolloutResult:
    """What a rollout did: the versions before and after per model, and the replicas now serving them."""

    previous: Mapping[str, int]
    current: Mapping[str, int]
    replicas: tuple[str, ...]

    @property
    def changed(self) -> dict[str, tuple[int | None, int]]:
        """model -> (previous version or None when new, current version), for the models that moved."""
        return {m: (self.previous.get(m), v) for m, v in self.current.items() if self.previous.get(m) != v}


def _client(state: ServerState) -> Any:
    import tritonclient.http as httpclient

    return httpclient.InferenceServerClient(state.http_url, network_timeout=_LOAD_TIMEOUT_S,
                                            connection_timeout=_LOAD_TIMEOUT_S)


def load_versions(state: ServerState, versions: Mapping[str, int]) -> None:
    """Load each model again from the repository and check the replica serves `versions` and is ready;
    RuntimeError with what failed (the caller names the replica)."""
    from tritonclient.utils import InferenceServerException

    c = _client(state)
    try:
        for model, version in versions.items():
            try:
                c.load_model(model)
            except InferenceServerException as exc:
                raise RuntimeError(f"load {model} v{version}: {exc.message()}") from None
            if not c.is_model_ready(model, str(version)):
                raise RuntimeError(f"load {model}: version {version} is not ready after the load")
        # the replaced version unloads once its in-flight requests are done; the replica's smoke waits
        # for that instead of failing on it (Triton's strict readiness is not used: a version that
        # failed to load stays listed as failed and keeps the server "not ready" for good)
        deadline = time.monotonic() + _LOAD_TIMEOUT_S
        while (busy := _unsettled(c.get_model_repository_index(), versions)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{busy} {_LOAD_TIMEOUT_S:.0f} s after loading {dict(versions)}")
            time.sleep(0.05)
    finally:
        c.close()


def _unsettled(index: list[dict[str, Any]], versions: Mapping[str, int]) -> str:
    """'' when each model serves exactly its wanted version; else what is still moving."""
    for row in index:
        model, version, state = str(row.get("name")), row.get("version"), row.get("state")
        if model in versions and str(versions[model]) != version and state in ("READY", "LOADING", "UNLOADING"):
            return f"{model} v{version} is still {state}"
    return ""


def rollout(fleet: FleetState, *, publish: Callable[[], Mapping[str, int]], previous: Mapping[str, int],
            restore: Callable[[Mapping[str, int]], None], smoke_replica: Callable[[ServerState], Any]) -> RolloutResult:
    """Publish (`publish` returns the served version per model afterwards), then roll replica by replica.

    `restore(previous)` makes the repository serve `previous` again; `smoke_replica(state)` returns a
    SmokeReport for one replica.
    """
    current = publish()
    changed = {m: v for m, v in current.items() if previous.get(m) != v}
    if not changed:
        log.info("nothing new to roll out: every model serves the published version")
        return RolloutResult(previous, current, tuple(replica_name(i) for i in range(len(fleet.replicas))))
    touched: list[ServerState] = []
    for i, replica in enumerate(fleet.replicas):
        name = replica_name(i)
        touched.append(replica)
        try:
            load_versions(replica, changed)
        except (RuntimeError, OSError) as exc:
            _undo(touched, previous, changed, restore)
            raise CheckFailed(f"rollout stopped at replica {name} ({replica.http_url}): check 'load' failed: {exc}",
                              hint=f"every replica serves the previous versions again {dict(previous)}") from None
        report = smoke_replica(replica)
        if not report.passed:
            failed = "; ".join(f"{suite}:{c.name} ({c.message} {' '.join(c.details)})".replace(" )", ")")
                               for suite, c in report.failures())
            _undo(touched, previous, changed, restore)
            raise CheckFailed(f"rollout stopped at replica {name} ({replica.http_url}): smoke failed: {failed}",
                              hint=f"every replica serves the previous versions again {dict(previous)}")
        log.info("replica %s serves %s", name, changed)
    return RolloutResult(previous, current, tuple(replica_name(i) for i in range(len(fleet.replicas))))


def _undo(touched: list[ServerState], previous: Mapping[str, int], changed: Mapping[str, int],
          restore: Callable[[Mapping[str, int]], None]) -> None:
    back = {m: previous[m] for m in changed if m in previous}
    restore(back)
    for replica in touched:
        try:
            load_versions(replica, back)
        except (RuntimeError, OSError) as exc:  # keep returning the others; the caller reports the first failure
            log.error("replica %s did not return to %s: %s", replica.http_url, back, exc)


def served_versions(repository: Path, models: tuple[str, ...]) -> dict[str, int]:
    """The version each model's live config serves (its head), through the repository API."""
    from deployer.repository import serving_state

    out = {}
    for m in models:
        if (repository / m).is_dir():
            out[m] = serving_state(repository / m).head
    return out

