"""Where deployer keeps a spec's own files: `.deployer/<spec-stem>/` beside the spec (server state,
logs, the private backend dir, built engines)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from deployer.spec import Deployment


def state_dir_for(spec_path: Path) -> Path:
    """The state dir from the spec's path alone (for commands that must work on an invalid spec)."""
    spec_path = Path(spec_path).resolve()
    return spec_path.parent / ".deployer" / spec_path.stem


def state_dir(dep: Deployment) -> Path:
    """The state dir of a loaded spec."""
    return state_dir_for(dep.spec_path)
