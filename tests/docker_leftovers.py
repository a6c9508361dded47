"""What this test session left in the Docker engine: deployer-labelled containers, networks and volumes
whose state dir is under this session's base temp dir (or that carry no state dir at all).

Scoped on purpose: another test session on the same engine (a second checkout, a helper's worktree) has
its own resources, and counting them would fail this session for something it did not do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deployer.server.docker.plan import LABEL_MANAGED, LABEL_STATE_DIR

EMPTY: dict[str, list[str]] = {"containers": [], "networks": [], "volumes": []}


def _ours(labels: dict[str, str] | None, root: Path) -> bool:
    state_dir = (labels or {}).get(LABEL_STATE_DIR)
    return state_dir is None or Path(state_dir).resolve().is_relative_to(root)


def session_leftovers(client: Any, basetemp: Path) -> dict[str, list[str]]:
    """Names of the deployer resources of this session still in the engine (EMPTY when none)."""
    root = basetemp.resolve()
    filters = {"label": [f"{LABEL_MANAGED}=true"]}
    return {
        "containers": [c.name for c in client.containers.list(all=True, filters=filters) if _ours(c.labels, root)],
        "networks": [n.name for n in client.networks.list(filters=filters) if _ours(n.attrs.get("Labels"), root)],
        "volumes": [v.name for v in client.volumes.list(filters=filters) if _ours(v.attrs.get("Labels"), root)],
    }
