"""server.json: roundtrip, absence, corruption."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deployer.errors import EnvironmentProblem, ExitCode
from deployer.server.base import ServerState
from deployer.server.state import clear_state, load_state, save_state, state_path


def _state(**kw: object) -> ServerState:
    fields: dict[str, object] = {
        "runtime": "local",
        "host": "127.0.0.1",
        "http_port": 18000,
        "grpc_port": 18001,
        "metrics_port": 18002,
        "models": ("a", "b"),
        "log_path": Path("/tmp/x/tritonserver.log"),
        "pid": 4242,
        "started_at": 1700000000.5,
    }
    fields.update(kw)
    return ServerState(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "state",
    [
        _state(),
        _state(runtime="docker", pid=None, container_id="abc123", log_path=None, models=()),
        _state(runtime="compose", pid=None, project="proj"),
        _state(backends=(("onnxruntime", "deployer-cpu-python"), ("python", "native"))),
    ],
)
def test_roundtrip(tmp_path: Path, state: ServerState) -> None:
    path = save_state(tmp_path / "st", state)
    assert path == state_path(tmp_path / "st")
    assert load_state(tmp_path / "st") == state
    # no temp files left behind by the atomic write
    assert [p.name for p in (tmp_path / "st").iterdir()] == ["server.json"]


def test_missing_is_none_and_clear_is_idempotent(tmp_path: Path) -> None:
    assert load_state(tmp_path) is None
    clear_state(tmp_path)
    save_state(tmp_path, _state())
    clear_state(tmp_path)
    clear_state(tmp_path)
    assert load_state(tmp_path) is None


def test_overwrite(tmp_path: Path) -> None:
    save_state(tmp_path, _state(pid=1))
    save_state(tmp_path, _state(pid=2))
    loaded = load_state(tmp_path)
    assert loaded is not None and loaded.pid == 2


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "[]",
        json.dumps({"runtime": "local"}),
        json.dumps({"runtime": "k8s", "host": "h"}),
        "",
    ],
)
def test_corrupted_file_is_an_environment_problem(tmp_path: Path, content: str) -> None:
    state_path(tmp_path).write_text(content)
    with pytest.raises(EnvironmentProblem) as err:
        load_state(tmp_path)
    assert str(state_path(tmp_path)) in err.value.message
    assert err.value.exit_code == ExitCode.ENVIRONMENT


def test_wrong_field_types_are_corruption(tmp_path: Path) -> None:
    save_state(tmp_path, _state())
    data = json.loads(state_path(tmp_path).read_text())
    for key, bad in (("http_port", "8000"), ("pid", "12"), ("models", [1]), ("grpc_port", True)):
        state_path(tmp_path).write_text(json.dumps({**data, key: bad}))
        with pytest.raises(EnvironmentProblem, match=key):
            load_state(tmp_path)


def test_state_without_backends_loads_as_not_inspected(tmp_path: Path) -> None:
    """server.json written before deployer recorded the backends (a server started by an older deployer)."""
    save_state(tmp_path, _state())
    data = json.loads(state_path(tmp_path).read_text())
    del data["backends"]
    state_path(tmp_path).write_text(json.dumps(data))
    loaded = load_state(tmp_path)
    assert loaded is not None and loaded.backends == ()
    data["backends"] = {"onnxruntime": 3}
    state_path(tmp_path).write_text(json.dumps(data))
    with pytest.raises(EnvironmentProblem, match="backends"):
        load_state(tmp_path)
