"""The compose runtime against a REAL Docker engine, Docker Compose and deployer's CPU Triton image.

Same two-model repository as the docker runtime tests (ONNX + python backend): inference over HTTP
and gRPC, dynamic batching proven by statistics, the healthcheck turning `healthy`; then failure
paths. A session-scoped check asserts that nothing labelled as ours survives the session.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from deployer.errors import EnvironmentProblem, ExitCode, PortInUse, ServerError
from deployer.server.base import ServerSettings, ServerState
from deployer.server.docker.client import docker_client, managed_resources
from deployer.server.docker.compose import COMPOSE_FILE, ComposeRuntime, find_compose
from deployer.server.docker.compose_render import render_compose
from deployer.server.docker.cpu_image import build_cpu_image
from deployer.server.docker.plan import LABEL_MANAGED
from deployer.server.state import load_state
from tests.docker_leftovers import EMPTY, session_leftovers
from tests.triton_stats import wait_for_inferences

pytestmark = pytest.mark.docker

MLP_CONFIG = """
name: "mlp"
backend: "onnxruntime"
max_batch_size: 16
input [{ name: "x" data_type: TYPE_FP32 dims: [4] }]
output [{ name: "y" data_type: TYPE_FP32 dims: [3] }]
instance_group [{ kind: KIND_CPU count: 1 }]
dynamic_batching { max_queue_delay_microseconds: 200000 }
"""
PYADD_CONFIG = """
name: "pyadd"
backend: "python"
max_batch_size: 8
input [{ name: "IN" data_type: TYPE_INT32 dims: [2] }]
output [{ name: "OUT" data_type: TYPE_INT32 dims: [2] }]
"""
PYADD_MODEL = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", (x + 1).astype(np.int32))]))
        return responses
"""
BATCH_REQUESTS = 16


@pytest.fixture(scope="session", autouse=True)
def _no_deployer_resources_left_behind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """After the session, no container/network/volume of this session's tests may remain."""
    yield
    try:
        client = docker_client(timeout_s=10)
    except EnvironmentProblem:
        return
    left = session_leftovers(client, tmp_path_factory.getbasetemp())
    assert left == EMPTY, f"deployer resources left behind: {left}"


@pytest.fixture(scope="session")
def cpu_image() -> str:
    return build_cpu_image().tag


@pytest.fixture
def compose_runtime() -> Iterator[ComposeRuntime]:
    runtime = ComposeRuntime()
    yield runtime
    runtime.close()


def _settings(make_settings: Callable[..., ServerSettings], repo: Path, models: tuple[str, ...], **kw: Any) -> Any:
    return make_settings(repo, models, runtime="compose", **kw)


def _grpc_batch(state: ServerState) -> None:
    import tritonclient.grpc as grpcclient

    grpc = grpcclient.InferenceServerClient(url=state.grpc_url)
    try:
        ints = np.array([[5, 6]], dtype=np.int32)
        inp = grpcclient.InferInput("IN", [1, 2], "INT32")
        inp.set_data_from_numpy(ints)
        np.testing.assert_array_equal(grpc.infer("pyadd", [inp]).as_numpy("OUT"), ints + 1)
        done = threading.Semaphore(0)
        errors: list[Any] = []

        def callback(result: Any, error: Any) -> None:
            if error is not None:
                errors.append(error)
            done.release()

        for i in range(BATCH_REQUESTS):
            one = grpcclient.InferInput("x", [1, 4], "FP32")
            one.set_data_from_numpy(np.full((1, 4), i, dtype=np.float32))
            grpc.async_infer("mlp", [one], callback)
        for _ in range(BATCH_REQUESTS):
            assert done.acquire(timeout=60), "an async request never completed"
        assert not errors, errors
    finally:
        grpc.close()


def _wait_healthy(container: Any, limit_s: float = 60.0) -> str:
    deadline = time.monotonic() + limit_s
    status = ""
    while time.monotonic() < deadline:
        container.reload()
        status = str(container.attrs["State"].get("Health", {}).get("Status", "none"))
        if status in ("healthy", "unhealthy", "none"):
            return status
        time.sleep(1)
    return status


@pytest.mark.slow
def test_serves_two_models_with_batching_and_a_healthy_healthcheck(
    compose_runtime: ComposeRuntime,
    cpu_image: str,
    make_settings: Callable[..., ServerSettings],
    model_repository: Path,
    add_model: Callable[..., Path],
    make_mlp_onnx: Any,
) -> None:
    import tritonclient.http as httpclient

    tiny = make_mlp_onnx(model_repository.parent / "mlp.onnx")
    add_model(model_repository, "mlp", MLP_CONFIG, {"model.onnx": tiny.path})
    add_model(model_repository, "pyadd", PYADD_CONFIG, {"model.py": PYADD_MODEL})
    settings = _settings(make_settings, model_repository, ("mlp", "pyadd"), image=cpu_image)
    state = compose_runtime.up(settings)
    try:
        assert state.runtime == "compose" and state.project and state.container_id
        assert load_state(settings.state_dir) == state
        assert (settings.state_dir / COMPOSE_FILE).is_file()
        client = docker_client()
        container = client.containers.get(state.container_id)
        assert container.labels[LABEL_MANAGED] == "true"
        assert container.attrs["Mounts"][0]["RW"] is False
        assert container.attrs["HostConfig"]["PortBindings"]["8000/tcp"][0]["HostIp"] == "127.0.0.1"
        assert managed_resources(client, state.project)["networks"], "the project network is labelled as ours"

        x = np.ones((3, 4), dtype=np.float32)
        with httpclient.InferenceServerClient(url=state.http_url) as http:
            inp = httpclient.InferInput("x", [3, 4], "FP32")
            inp.set_data_from_numpy(x)
            np.testing.assert_allclose(
                http.infer("mlp", [inp]).as_numpy("y"), tiny.reference({"x": x})["y"], rtol=1e-5, atol=1e-6
            )
            # statistics trail the responses: wait for the 3 rows above, then for the whole burst
            before = wait_for_inferences(http, "mlp", len(x))
            assert int(before["inference_count"]) == len(x), f"statistics before the burst: {before}"
            _grpc_batch(state)
            after = wait_for_inferences(http, "mlp", int(before["inference_count"]) + BATCH_REQUESTS)
        inferences = int(after["inference_count"]) - int(before["inference_count"])
        executions = int(after["execution_count"]) - int(before["execution_count"])
        assert inferences == BATCH_REQUESTS, f"statistics after waiting for the burst: {after}"
        assert executions < BATCH_REQUESTS, f"no batching: {executions} executions for {inferences} requests"

        assert _wait_healthy(container) == "healthy", "the compose healthcheck probes /v2/health/ready"
        assert compose_runtime.status(state).ready
        # the backends found in the service container, which the smoke report names
        assert dict(state.backends) == {"onnxruntime": "deployer-cpu-python", "python": "native"}
    finally:
        compose_runtime.down(state)
    assert managed_resources(docker_client(), state.project) == EMPTY
    assert load_state(settings.state_dir) is None
    assert state.log_path is not None and "successfully loaded 'mlp'" in state.log_path.read_text()
    stop = compose_runtime.last_stop  # the models were unloaded through the API before `compose down`
    assert stop is not None and sorted(stop.unloaded) == ["mlp", "pyadd"] and not stop.pending, stop
    compose_runtime.down(state)  # idempotent


def test_model_failing_to_load_is_named_and_the_project_removed(
    compose_runtime: ComposeRuntime,
    cpu_image: str,
    make_settings: Callable[..., ServerSettings],
    model_repository: Path,
    add_model: Callable[..., Path],
) -> None:
    add_model(model_repository, "pyadd", PYADD_CONFIG, {"model.py": "raise RuntimeError('boom at import')\n"})
    settings = _settings(make_settings, model_repository, ("pyadd",), image=cpu_image)
    with pytest.raises(ServerError) as info:
        compose_runtime.up(settings)
    assert info.value.exit_code == ExitCode.CHECKS_FAILED
    assert "model 'pyadd' failed to load" in info.value.message
    assert "boom at import" in info.value.message, "Triton's reason is quoted"
    from deployer.server.docker.plan import project_name

    assert managed_resources(docker_client(), project_name(settings.state_dir.absolute())) == EMPTY


def test_busy_port_is_port_in_use(
    compose_runtime: ComposeRuntime,
    cpu_image: str,
    make_settings: Callable[..., ServerSettings],
    model_repository: Path,
) -> None:
    settings = _settings(make_settings, model_repository, (), image=cpu_image)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", settings.metrics_port))
        squatter.listen(1)
        with pytest.raises(PortInUse) as info:
            compose_runtime.up(settings)
    assert info.value.exit_code == ExitCode.ENVIRONMENT and str(settings.metrics_port) in info.value.message


def test_missing_image_is_an_environment_problem(
    compose_runtime: ComposeRuntime, make_settings: Callable[..., ServerSettings], model_repository: Path
) -> None:
    settings = _settings(make_settings, model_repository, (), image="deployer/tritonserver-cpu:no-such-tag")
    with pytest.raises(EnvironmentProblem) as info:
        compose_runtime.up(settings)
    assert info.value.exit_code == ExitCode.ENVIRONMENT
    assert "deployer/tritonserver-cpu:no-such-tag" in info.value.message
    assert "deployer image build-cpu" in (info.value.hint or "")


def test_rendered_gpu_quickstart_file_is_valid_for_the_installed_compose(tmp_path: Path) -> None:
    settings = ServerSettings(
        runtime="compose",
        repository=Path("model_repository"),
        models=("a", "b"),
        state_dir=Path(".deployer"),
        gpus="all",
    )
    (tmp_path / "model_repository").mkdir()
    compose_file = tmp_path / "compose.yaml"
    compose_file.write_text(render_compose(settings, project="deployer-quickstart", load_models=True))
    proc = subprocess.run(
        [*find_compose(), "--file", str(compose_file), "config"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "capabilities" in proc.stdout and "read_only: true" in proc.stdout
    assert str(tmp_path / "model_repository") in proc.stdout, "relative to the compose file"


def test_container_exiting_early_shows_its_log(
    compose_runtime: ComposeRuntime,
    cpu_image: str,
    make_settings: Callable[..., ServerSettings],
    model_repository: Path,
) -> None:
    from deployer.server.docker.plan import project_name

    settings = _settings(make_settings, model_repository, (), image=cpu_image, extra_args=("--rate-limit=bogus",))
    with pytest.raises(ServerError) as info:
        compose_runtime.up(settings)
    assert "exited" in info.value.message
    assert "--rate-limit" in (info.value.details or ""), "the container's own error is shown"
    assert managed_resources(docker_client(), project_name(settings.state_dir.absolute())) == EMPTY
