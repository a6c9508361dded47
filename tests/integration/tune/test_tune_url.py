"""`deployer tune SPEC --url HOST:PORT` against a tritonserver it did not start (the quickstart classifier).

The server is started by the library (or, for the server without explicit model control, straight from
the local runtime's launch plan with `--model-control-mode=none`, which deployer itself never uses);
tune must load its candidates there, serve the original config again at the end, and leave the server
running: it did not start it, so it must not stop it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from deployer import Pipeline
from deployer.config.diff import diff_config
from deployer.server.base import ServerState
from deployer.server.from_spec import current_state
from tests.tune_quickstart import cli, quickstart_spec

# Two candidates, the start one pathological: with 4 clients and preferred sizes [8, 16] every batch waits
# the whole 100 ms queue delay, so delay 0 wins by an order of magnitude and the write-back is certain.
TUNE = ("    tune:\n      p99_ms: 2000\n      budget: {trials: 2}\n"
        "      space: {max_batch_size: [16], preferred_batch_size: [[8, 16]], "
        "max_queue_delay_microseconds: [0, 100000], instance_count: [1]}\n"
        "      load: {concurrency: [4], warmup_s: 0.3, window_s: 0.7, max_windows: 3}\n")


def _spec(tmp_path: Path, ports: list[int], tune: str = TUNE) -> Path:
    spec = quickstart_spec(tmp_path, ports, tune)
    text = spec.read_text()
    assert "max_queue_delay_microseconds: 2000\n" in text
    spec.write_text(text.replace("max_queue_delay_microseconds: 2000\n", "max_queue_delay_microseconds: 100000\n"))
    return spec


@pytest.fixture
def served(tmp_path: Path, find_free_ports: Callable[..., list[int]]) -> Iterator[tuple[Path, ServerState]]:
    """The spec, and its server started by the library (stopped after the test, whatever happened)."""
    yield from _serve(_spec(tmp_path, find_free_ports(3)))


def _serve(spec: Path) -> Iterator[tuple[Path, ServerState]]:
    p = Pipeline.load(spec)
    p.publish()
    state = p.up()
    try:
        yield spec, state
    finally:
        p.down()


def _client(url: str) -> Any:
    import tritonclient.http as httpclient

    return httpclient.InferenceServerClient(url)


def _check_trials_served_their_candidates(report: dict[str, Any]) -> None:
    assert report["trials"], report
    for tr in report["trials"]:
        want = {k: tr["candidate"][k] for k in ("max_batch_size", "preferred_batch_size",
                                                "max_queue_delay_microseconds", "instance_count")}
        assert tr["served"] == want, tr  # what Triton reported after loading the candidate


def _assert_untouched(spec: Path, state: ServerState, original: dict[str, Any]) -> None:
    """Same server process (not restarted, not stopped), still ready, serving the original config."""
    now = current_state(Pipeline.load(spec).deployment)
    assert now is not None and now.pid == state.pid and now.started_at == state.started_at
    status = Pipeline.load(spec).status()
    assert status.running and status.ready, status
    client = _client(state.http_url)
    try:
        assert client.is_model_ready("classifier") and client.is_model_ready("labels")
        assert diff_config(original, client.get_model_config("classifier")) == []
    finally:
        client.close()


@pytest.mark.triton
@pytest.mark.slow
def test_tune_by_url_restores_the_config_and_leaves_the_server_running(
    served: tuple[Path, ServerState], tmp_path: Path
) -> None:
    spec, state = served
    url = f"127.0.0.1:{state.http_port}"
    client = _client(state.http_url)
    try:
        original = client.get_model_config("classifier")
    finally:
        client.close()
    assert int(original["dynamic_batching"]["max_queue_delay_microseconds"]) == 100000
    before = spec.read_bytes()

    r = cli("tune", str(spec), "--url", url, "--dry-run", "--json", str(tmp_path / "dry.json"))
    assert r.returncode == 0, r.stdout + r.stderr
    dry = json.loads((tmp_path / "dry.json").read_text())
    assert dry["server"].startswith("url Triton ") and dry["dry_run"] and not dry["written"]
    assert dry["met"] and dry["diff"] and "max_queue_delay_microseconds: 0" in dry["diff"]
    assert spec.read_bytes() == before and "dry run: nothing written" in r.stdout
    _check_trials_served_their_candidates(dry)
    _assert_untouched(spec, state, original)

    r = cli("tune", str(spec), "--url", url, "--json", str(tmp_path / "tune.json"))
    assert r.returncode == 0, r.stdout + r.stderr
    data = json.loads((tmp_path / "tune.json").read_text())
    assert data["met"] and data["written"] and len(data["trials"]) == 2, data
    _check_trials_served_their_candidates(data)
    tuned = Pipeline.load(spec).deployment.model("classifier").spec.dynamic_batching
    assert tuned is not None and tuned.max_queue_delay_microseconds == 0
    assert "# deployer tune" in spec.read_text() and "server: url Triton" in spec.read_text()
    # the spec changed, the server did not: tune restores what it found and never deploys the winner
    _assert_untouched(spec, state, original)


GRPC_TUNE = TUNE.replace("max_windows: 3}", "max_windows: 3, protocol: grpc}")


@pytest.fixture
def served_grpc(tmp_path: Path, find_free_ports: Callable[..., list[int]]) -> Iterator[tuple[Path, ServerState]]:
    yield from _serve(_spec(tmp_path, find_free_ports(3), GRPC_TUNE))


@pytest.mark.triton
@pytest.mark.slow
def test_grpc_load_by_url_is_measured_on_the_grpc_endpoint(served_grpc: tuple[Path, ServerState],
                                                           tmp_path: Path) -> None:
    spec, state = served_grpc
    assert "protocol: grpc" in spec.read_text()
    url, grpc_url = f"127.0.0.1:{state.http_port}", f"grpc://127.0.0.1:{state.grpc_port}"
    before = spec.read_bytes()
    r = cli("tune", str(spec), "--url", url, "--dry-run", "--json", str(tmp_path / "dry.json"))
    assert r.returncode == 2, r.stdout + r.stderr  # the load is gRPC and no gRPC endpoint was given
    assert "--grpc-url" in r.stderr and "Traceback" not in r.stdout + r.stderr, r.stderr

    r = cli("tune", str(spec), "--url", url, "--grpc-url", grpc_url, "--dry-run",
            "--json", str(tmp_path / "dry.json"))
    assert r.returncode == 0, r.stdout + r.stderr
    dry = json.loads((tmp_path / "dry.json").read_text())
    assert dry["met"] and "max_queue_delay_microseconds: 0" in dry["diff"], dry
    assert [ld["protocol"] for ld in dry["loads"]] == ["grpc"], dry["loads"]
    _check_trials_served_their_candidates(dry)
    for tr in dry["trials"]:
        m = tr["measurements"][0]
        assert m["requests"] > 0 and m["errors"] == 0, m
        # Triton counted our gRPC requests too: its statistics breakdown is there for every trial
        assert m["breakdown"]["requests"] > 0 and m["breakdown"]["avg_batch_size"] > 0, m
    assert spec.read_bytes() == before


def test_url_where_nothing_listens_is_an_environment_problem(
    tmp_path: Path, find_free_ports: Callable[..., list[int]]
) -> None:
    ports = find_free_ports(4)
    spec = _spec(tmp_path, ports[:3])
    before = spec.read_bytes()
    r = cli("tune", str(spec), "--url", f"127.0.0.1:{ports[3]}", timeout=120)
    assert r.returncode == 3, r.stdout + r.stderr
    assert f"no Triton server answers at 127.0.0.1:{ports[3]}" in r.stderr, r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    assert spec.read_bytes() == before


@pytest.mark.parametrize("url", ["127.0.0.1:99999", "https://127.0.0.1:8443"])
def test_a_url_that_is_not_host_port_is_bad_input(tmp_path: Path, find_free_ports: Callable[..., list[int]],
                                                  url: str) -> None:
    spec = _spec(tmp_path, find_free_ports(3))
    r = cli("tune", str(spec), "--url", url, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"server URL {url!r}" in r.stderr and "Traceback" not in r.stdout + r.stderr, r.stderr


@contextlib.contextmanager
def _server_without_model_control(spec: Path) -> Iterator[str]:
    """A real tritonserver for the spec's repository with --model-control-mode=none (deployer's runtimes
    always use explicit mode and refuse the flag in server.args), killed with its process group after."""
    from deployer.server.from_spec import server_settings
    from deployer.server.install import find_tritonserver
    from deployer.server.local import LocalRuntime, plan_launch

    dep = Pipeline.load(spec).deployment
    settings = server_settings(dep)
    launch = plan_launch(settings, find_tritonserver(settings))
    LocalRuntime._prepare_files(launch)  # the private backend dir (deployer's Python ONNX Runtime backend)
    argv = ["--model-control-mode=none" if a == "--model-control-mode=explicit" else a for a in launch.argv]
    assert "--model-control-mode=none" in argv
    with launch.log_path.open("wb") as log:
        proc = subprocess.Popen(argv, env={**os.environ, **dict(launch.env)}, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"127.0.0.1:{settings.http_port}"
    try:
        client = _client(url)
        try:
            deadline = time.monotonic() + 180
            while not _ready(client):
                assert proc.poll() is None, launch.log_path.read_text()[-2000:]
                assert time.monotonic() < deadline, "tritonserver never became ready"
                time.sleep(0.2)
        finally:
            client.close()
        yield url
        assert proc.poll() is None, "tune stopped a server it did not start"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def _ready(client: Any) -> bool:
    try:
        return bool(client.is_model_ready("classifier"))
    except Exception:  # not listening yet
        return False


@pytest.mark.triton
@pytest.mark.slow
def test_server_without_explicit_model_control_is_an_environment_problem(
    tmp_path: Path, find_free_ports: Callable[..., list[int]]
) -> None:
    spec = _spec(tmp_path, find_free_ports(3))
    Pipeline.load(spec).publish()
    before = spec.read_bytes()
    with _server_without_model_control(spec) as url:
        client = _client(url)
        try:
            original = client.get_model_config("classifier")
            r = cli("tune", str(spec), "--url", url, timeout=300)
            assert r.returncode == 3, r.stdout + r.stderr
            assert f"the server at {url} does not allow loading models" in r.stderr, r.stderr
            assert "--model-control-mode=explicit" in r.stderr and "Traceback" not in r.stdout + r.stderr
            assert client.is_model_ready("classifier")
            assert diff_config(original, client.get_model_config("classifier")) == []
        finally:
            client.close()
    assert spec.read_bytes() == before
