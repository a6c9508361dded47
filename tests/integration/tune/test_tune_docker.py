"""`deployer tune` on the docker and compose runtimes (real Docker engine, deployer's CPU Triton image).

Trials load candidate configs into Triton inside the container through the repository API; the JSON
report says what Triton served after each load. No container, network or volume of the test's project
may survive it, whatever happened (checked, then removed anyway).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from deployer import Pipeline
from deployer.config.diff import diff_config
from deployer.errors import DeployerError
from deployer.paths import state_dir
from deployer.server.docker.client import docker_client, managed_resources, remove_managed
from deployer.server.docker.cpu_image import build_cpu_image
from deployer.server.docker.plan import project_name
from tests.tune_quickstart import cli, quickstart_spec

pytestmark = [pytest.mark.docker, pytest.mark.triton, pytest.mark.slow]

TUNE = ("    tune:\n      p99_ms: 2000\n      budget: {trials: 2}\n"
        "      load: {concurrency: [4], warmup_s: 0.3, window_s: 0.7, max_windows: 3}\n")
KNOBS = ("max_batch_size", "preferred_batch_size", "max_queue_delay_microseconds", "instance_count")


@pytest.fixture(scope="module")
def cpu_image() -> str:
    """deployer's CPU Triton image (reused when current; .ci builds it beforehand)."""
    return build_cpu_image().tag


@pytest.fixture
def make_spec(tmp_path: Path, find_free_ports: Callable[..., list[int]], cpu_image: str) -> Iterator[
        Callable[[str], Path]]:
    """`make_spec(runtime)`: the quickstart on `runtime`; afterwards nothing of its project may be left."""
    specs: list[Path] = []

    def make(runtime: str) -> Path:
        spec = quickstart_spec(tmp_path, find_free_ports(3), TUNE, runtime=runtime)
        text = spec.read_text()
        spec.write_text(text.replace("image: deployer/tritonserver-cpu:2.51-py311", f"image: {cpu_image}"))
        specs.append(spec)
        return spec

    yield make
    client = docker_client(timeout_s=30)
    for spec in specs:
        with contextlib.suppress(DeployerError):
            Pipeline.load(spec).down()
        project = project_name(state_dir(Pipeline.load(spec).deployment).absolute())
        left = managed_resources(client, project)
        remove_managed(client, project)  # never leave one behind, even when the assertion below fails
        assert left == {"containers": [], "networks": [], "volumes": []}, f"left behind: {left}"


def _check_report(path: Path, runtime: str) -> dict[str, Any]:
    data = json.loads(path.read_text())
    assert data["server"].startswith(f"{runtime} Triton "), data["server"]
    trials = data["trials"]
    assert len(trials) == 2, trials
    start = {k: trials[0]["candidate"][k] for k in KNOBS}  # the first trial is the spec's own config
    for tr in trials:
        assert tr["served"] == {k: tr["candidate"][k] for k in KNOBS}, tr  # as Triton reported it
        assert tr["measurements"] and tr["measurements"][0]["requests"] > 0, tr
    assert trials[1]["served"] != start, "no candidate other than the original was ever loaded"
    return data


@pytest.mark.parametrize("runtime", ["docker", "compose"])
def test_tune_starts_its_own_container_and_removes_it(make_spec: Callable[[str], Path], runtime: str,
                                                      tmp_path: Path) -> None:
    spec = make_spec(runtime)
    before = spec.read_bytes()
    r = cli("tune", str(spec), "--dry-run", "--json", str(tmp_path / "tune.json"))
    assert r.returncode in (0, 1), r.stdout + r.stderr  # 1: nothing met the budget on this loaded machine
    _check_report(tmp_path / "tune.json", runtime)
    assert spec.read_bytes() == before
    assert not Pipeline.load(spec).status().running  # the server tune started is stopped again


def test_tune_on_a_running_docker_server_restores_it(make_spec: Callable[[str], Path], tmp_path: Path) -> None:
    import tritonclient.http as httpclient

    spec = make_spec("docker")
    p = Pipeline.load(spec)
    p.publish()
    state = p.up()
    assert state.container_id
    client = httpclient.InferenceServerClient(state.http_url)
    try:
        original = client.get_model_config("classifier")
        r = cli("tune", str(spec), "--json", str(tmp_path / "tune.json"))
        assert r.returncode in (0, 1), r.stdout + r.stderr
        data = _check_report(tmp_path / "tune.json", "docker")
        assert diff_config(original, client.get_model_config("classifier")) == []
        assert client.is_model_ready("classifier")
        after = p.status()
        assert after.running and after.state is not None and after.state.container_id == state.container_id
        assert data["written"] == ("# deployer tune" in spec.read_text())
    finally:
        client.close()
