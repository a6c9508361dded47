"""Persist a running server's `ServerState` as `<state_dir>/server.json` (atomic writes)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, get_args

from deployer.errors import EnvironmentProblem
from deployer.server.base import RuntimeName, ServerState

__all__ = ["STATE_FILE", "clear_state", "load_state", "save_state", "state_path"]

STATE_FILE = "server.json"
_FORMAT = 1


def state_path(state_dir: Path) -> Path:
    """Where the state of the server started for `state_dir` is recorded."""
    return state_dir / STATE_FILE


def _to_json(state: ServerState) -> dict[str, Any]:
    return {
        "format": _FORMAT,
        "runtime": state.runtime,
        "host": state.host,
        "http_port": state.http_port,
        "grpc_port": state.grpc_port,
        "metrics_port": state.metrics_port,
        "models": list(state.models),
        "log_path": str(state.log_path) if state.log_path is not None else None,
        "pid": state.pid,
        "container_id": state.container_id,
        "project": state.project,
        "started_at": state.started_at,
        "backends": dict(state.backends),
    }


def _opt(data: dict[str, Any], key: str, kind: type) -> Any:
    value = data.get(key)
    if value is not None and not isinstance(value, kind):
        raise TypeError(f"{key} must be {kind.__name__}, got {value!r}")
    return value


def _req(data: dict[str, Any], key: str, kind: type) -> Any:
    value = data[key]
    # bool is an int subclass; a port of `true` is corruption, not a port
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"{key} must be {kind.__name__}, got {value!r}")
    return value


def _from_json(data: Any) -> ServerState:
    if not isinstance(data, dict):
        raise TypeError("top level must be an object")
    runtime = _req(data, "runtime", str)
    if runtime not in get_args(RuntimeName):
        raise ValueError(f"unknown runtime {runtime!r}")
    models = _req(data, "models", list)
    if not all(isinstance(m, str) for m in models):
        raise TypeError("models must be a list of strings")
    log_path = _opt(data, "log_path", str)
    started_at = data.get("started_at", 0.0)
    if not isinstance(started_at, int | float) or isinstance(started_at, bool):
        raise TypeError(f"started_at must be a number, got {started_at!r}")
    backends = data.get("backends") or {}  # absent in files written before deployer recorded it
    if not isinstance(backends, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                 for k, v in backends.items()):
        raise TypeError(f"backends must map backend names to kinds, got {backends!r}")
    return ServerState(
        runtime=runtime,
        host=_req(data, "host", str),
        http_port=_req(data, "http_port", int),
        grpc_port=_req(data, "grpc_port", int),
        metrics_port=_req(data, "metrics_port", int),
        models=tuple(models),
        log_path=Path(log_path) if log_path is not None else None,
        pid=_opt(data, "pid", int),
        container_id=_opt(data, "container_id", str),
        project=_opt(data, "project", str),
        started_at=float(started_at),
        backends=tuple(sorted(backends.items())),
    )


def save_state(state_dir: Path, state: ServerState) -> Path:
    """Write `state` atomically (temp file + `os.replace`) so a reader never sees half a file."""
    state_dir.mkdir(parents=True, exist_ok=True)
    target = state_path(state_dir)
    fd, tmp = tempfile.mkstemp(prefix=".server.", suffix=".json.tmp", dir=state_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(_to_json(state), fh, indent=2, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        Path(tmp).replace(target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def load_state(state_dir: Path) -> ServerState | None:
    """The recorded state, or None when no server was recorded. A corrupted file is an error."""
    path = state_path(state_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        return _from_json(json.loads(text))
    except (ValueError, TypeError, KeyError) as exc:
        raise EnvironmentProblem(
            f"server state file {path} is corrupted: {exc}",
            hint=f"stop any server you started by hand, then delete {path}",
        ) from exc


def clear_state(state_dir: Path) -> None:
    """Forget the recorded server (idempotent)."""
    state_path(state_dir).unlink(missing_ok=True)
