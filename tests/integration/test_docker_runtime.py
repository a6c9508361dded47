"""The docker runtime against a REAL Docker engine and deployer's CPU Triton image.

Two models (ONNX through the onnxruntime backend, and a python-backend model), inference over HTTP
and gRPC, dynamic batching proven by statistics; then each failure path with its exit code. A
session-scoped check asserts that no container/network/volume labelled as ours survives the session.
"""

from __future__ import annotations

import socket
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
from deployer.server.docker.cpu_image import build_cpu_image
from deployer.server.docker.plan import LABEL_MANAGED, project_name
from deployer.server.docker.runtime import DockerRuntime
from deployer.server.state import load_state
from deployer.smoke import SmokeModel, SmokeOptions, SmokeOutput, SmokeTensor, run_smoke
from tests.docker_leftovers import EMPTY, session_leftovers
from tests.triton_stats import wait_for_inferences

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
BROKEN_CONFIG = """
name: "broken"
backend: "onnxruntime"
max_batch_size: 4
input [{ name: "x" data_type: TYPE_FP32 dims: [4] }]
output [{ name: "y" data_type: TYPE_FP32 dims: [3] }]
"""
BATCH_REQUESTS = 16


@pytest.fixture(scope="session", autouse=True)
def _no_deployer_resources_left_behind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """After the session, no container/network/volume of this session's tests may remain."""
    yield
    try:
        client = docker_client(timeout_s=10)
    except EnvironmentProblem:
        return  # no engine: the docker tests were skipped (or failed) on their own
    left = session_leftovers(client, tmp_path_factory.getbasetemp())
    assert left == EMPTY, f"deployer resources left behind: {left}"


@pytest.fixture(scope="session")
def cpu_image() -> str:
    """deployer's CPU Triton image, built once (reused when current; .ci builds it beforehand)."""
    return build_cpu_image().tag


@pytest.fixture
def docker_runtime() -> Iterator[DockerRuntime]:
    runtime = DockerRuntime()
    yield runtime
    runtime.close()


@pytest.fixture
def two_model_repository(model_repository: Path, add_model: Callable[..., Path], make_mlp_onnx: Any) -> Any:
    """mlp (ONNX, dynamic batching) + pyadd (python backend); returns the TinyModel of mlp."""
    tiny = make_mlp_onnx(model_repository.parent / "mlp.onnx")
    add_model(model_repository, "mlp", MLP_CONFIG, {"model.onnx": tiny.path})
    add_model(model_repository, "pyadd", PYADD_CONFIG, {"model.py": PYADD_MODEL})
    return tiny


def _docker_settings(
    make_settings: Callable[..., ServerSettings], repo: Path, models: tuple[str, ...], **kw: Any
) -> Any:
    kw.setdefault("runtime", "docker")
    return make_settings(repo, models, **kw)


def check_inference_and_batching(state: ServerState, mlp: Any) -> None:
    """HTTP on mlp against ONNX Runtime, gRPC on pyadd, then concurrent gRPC requests batched by Triton."""
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    x = np.arange(8, dtype=np.float32).reshape(2, 4) / 7.0
    with httpclient.InferenceServerClient(url=state.http_url) as http:
        inp = httpclient.InferInput("x", [2, 4], "FP32")
        inp.set_data_from_numpy(x)
        got = http.infer("mlp", [inp]).as_numpy("y")
        np.testing.assert_allclose(got, mlp.reference({"x": x})["y"], rtol=1e-5, atol=1e-6)
        # statistics trail the responses: wait for the 2 rows above before taking the baseline
        before = wait_for_inferences(http, "mlp", len(x))
        assert int(before["inference_count"]) == len(x), f"statistics before the burst: {before}"

    grpc = grpcclient.InferenceServerClient(url=state.grpc_url)
    try:
        ints = np.array([[1, 2]], dtype=np.int32)
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

    with httpclient.InferenceServerClient(url=state.http_url) as http:
        after = wait_for_inferences(http, "mlp", int(before["inference_count"]) + BATCH_REQUESTS)
    inferences = int(after["inference_count"]) - int(before["inference_count"])
    executions = int(after["execution_count"]) - int(before["execution_count"])
    assert inferences == BATCH_REQUESTS, f"statistics after waiting for the burst: {after}"
    assert executions < BATCH_REQUESTS, f"no batching: {executions} executions for {inferences} requests"
    assert any(int(b["batch_size"]) > 1 for b in after["batch_stats"]), after["batch_stats"]


def _leftovers(project: str) -> dict[str, list[str]]:
    return managed_resources(docker_client(), project)


# -- happy path --------------------------------------------------------------------------------------


@pytest.mark.docker
@pytest.mark.slow
def test_serves_two_models_over_http_and_grpc_with_dynamic_batching(
    docker_runtime: DockerRuntime,
    cpu_image: str,
    make_settings: Callable[..., ServerSettings],
    model_repository: Path,
    two_model_repository: Any,
) -> None:
    settings = _docker_settings(make_settings, model_repository, ("mlp", "pyadd"), image=cpu_image)
    state = docker_runtime.up(settings)
    try:
        assert (
            state.runtime == "docker"
            and state.container_id
            and state.project == project_name(settings.state_dir.absolute())
        )
        assert load_state(settings.state_dir) == state, "server.json records the running container"
        container = docker_client().containers.get(state.container_id)
        assert container.labels[LABEL_MANAGED] == "true"
        (mount,) = container.attrs["Mounts"]
        assert mount["Destination"] == "/models" and mount["RW"] is False
        bindings = container.attrs["HostConfig"]["PortBindings"]
        assert bindings["8000/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": str(settings.http_port)}]
        assert bindings["8001/tcp"][0]["HostPort"] == str(settings.grpc_port)
        status = docker_runtime.status(state)
        assert status.running and status.ready and status.models == {"mlp": "READY", "pyadd": "READY"}

        check_inference_and_batching(state, two_model_repository)

        # what served each model, as the smoke report names it: read inside the container from the
        # image's own backend dir (deployer's CPU image carries deployer's onnxruntime/model.py)
        assert dict(state.backends) == {"onnxruntime": "deployer-cpu-python", "python": "native"}
        assert load_state(settings.state_dir) == state
        targets = [
            SmokeModel("mlp", (SmokeTensor("x", "FP32", (4,)),), (SmokeOutput("y", "FP32", (3,)),), max_batch_size=16),
            SmokeModel("pyadd", (SmokeTensor("IN", "INT32", (2,)),), (SmokeOutput("OUT", "INT32", (2,)),),
                       max_batch_size=8),
        ]
        smoke = run_smoke(state, targets, SmokeOptions(checks=frozenset({"ready", "config"})))
        assert {m.model: m.served_by for m in smoke.models} == {
            "mlp": "onnxruntime (deployer CPU Python-based backend)",
            "pyadd": "python",
        }

        # a second `up` for the same state dir, by either container runtime, is refused and kills nothing
        from deployer.server.docker.compose import ComposeRuntime

        for again, runtime_name in ((DockerRuntime(), "docker"), (ComposeRuntime(), "compose")):
            with pytest.raises(EnvironmentProblem, match="already running") as info:
                again.up(
                    _docker_settings(make_settings, model_repository, ("mlp",), image=cpu_image, runtime=runtime_name)
                )
            assert info.value.exit_code == ExitCode.ENVIRONMENT
        assert docker_runtime.status(state).ready
        assert "successfully loaded 'mlp'" in docker_runtime.logs(state)
    finally:
        docker_runtime.down(state)
    assert _leftovers(state.project or "") == {"containers": [], "networks": [], "volumes": []}
    assert load_state(settings.state_dir) is None
    assert state.log_path is not None and "successfully loaded 'pyadd'" in state.log_path.read_text()
    # down unloaded the models through the API before SIGTERM: Triton found nothing left to unload
    stop = docker_runtime.last_stop
    assert stop is not None and sorted(stop.unloaded) == ["mlp", "pyadd"] and not stop.pending, stop
    log = state.log_path.read_text()
    assert "Found 0 live models" in log[log.index("Signal (15) received") :]
    docker_runtime.down(state)  # idempotent


# -- failure paths -----------------------------------------------------------------------------------


@pytest.mark.docker
@pytest.mark.parametrize(
    ("image", "how"),
    [
        ("deployer/tritonserver-cpu:no-such-tag", "deployer image build-cpu"),
        ("nvcr.io/nvidia/tritonserver:00.01-py3", "docker login nvcr.io"),
    ],
)
def test_missing_image_is_an_environment_problem_naming_it(
    docker_runtime: DockerRuntime,
    make_settings: Callable[..., ServerSettings],
    model_repository: Path,
    image: str,
    how: str,
) -> None:
    settings = _docker_settings(make_settings, model_repository, (), image=image)
    with pytest.raises(EnvironmentProblem) as info:
        docker_runtime.up(settings)
    assert info.value.exit_code == ExitCode.ENVIRONMENT
    assert image in info.value.message and how in (info.value.hint or "")
    assert _leftovers(project_name(settings.state_dir.absolute()))["containers"] == []


def test_unreachable_engine_is_an_environment_problem(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, make_settings: Callable[..., ServerSettings]
) -> None:
    pytest.importorskip("docker")
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    repo = tmp_path / "repo"
    repo.mkdir()
    with pytest.raises(EnvironmentProblem) as info:
        DockerRuntime().up(_docker_settings(make_settings, repo, ()))
    assert info.value.exit_code == ExitCode.ENVIRONMENT
    assert "no Docker engine answers" in info.value.message and "no-engine.sock" in info.value.message


@pytest.mark.docker
def test_container_exiting_early_shows_its_log(
    docker_runtime: DockerRuntime, cpu_image: str, make_settings: Callable[..., ServerSettings], model_repository: Path
) -> None:
    settings = _docker_settings(
        make_settings, model_repository, (), image=cpu_image, extra_args=("--rate-limit=bogus",)
    )
    with pytest.raises(ServerError) as info:
        docker_runtime.up(settings)
    assert info.value.exit_code == ExitCode.CHECKS_FAILED
    assert "exited" in info.value.message
    assert "--rate-limit" in (info.value.details or ""), "the container's own error is shown"
    assert _leftovers(project_name(settings.state_dir.absolute()))["containers"] == []


@pytest.mark.docker
def test_model_failing_to_load_is_named_with_tritons_reason(
    docker_runtime: DockerRuntime,
    cpu_image: str,
    make_settings: Callable[..., ServerSettings],
    model_repository: Path,
    add_model: Callable[..., Path],
) -> None:
    add_model(model_repository, "broken", BROKEN_CONFIG, {"model.onnx": b"this is not an ONNX file"})
    settings = _docker_settings(make_settings, model_repository, ("broken",), image=cpu_image)
    with pytest.raises(ServerError) as info:
        docker_runtime.up(settings)
    message = info.value.message
    assert "model 'broken' failed to load" in message
    assert "onnx" in message.lower() or "protobuf" in message.lower(), f"Triton's reason is quoted: {message}"
    assert "server log" in (info.value.details or "")
    assert _leftovers(project_name(settings.state_dir.absolute()))["containers"] == []


@pytest.mark.docker
def test_busy_port_is_port_in_use(
    docker_runtime: DockerRuntime, cpu_image: str, make_settings: Callable[..., ServerSettings], model_repository: Path
) -> None:
    settings = _docker_settings(make_settings, model_repository, (), image=cpu_image)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", settings.grpc_port))
        squatter.listen(1)
        with pytest.raises(PortInUse) as info:
            docker_runtime.up(settings)
    assert info.value.exit_code == ExitCode.ENVIRONMENT
    assert str(settings.grpc_port) in info.value.message
    assert _leftovers(project_name(settings.state_dir.absolute()))["containers"] == []


@pytest.mark.docker
def test_gpu_request_without_nvidia_runtime_is_an_environment_problem(
    docker_runtime: DockerRuntime, cpu_image: str, make_settings: Callable[..., ServerSettings], model_repository: Path
) -> None:
    if "nvidia" in (docker_client().info().get("Runtimes") or {}):
        pytest.skip("this engine has the NVIDIA runtime: GPU requests can succeed here")
    settings = _docker_settings(make_settings, model_repository, (), image=cpu_image, gpus="all")
    with pytest.raises(EnvironmentProblem) as info:
        docker_runtime.up(settings)
    assert "GPU" in info.value.message and "NVIDIA Container Toolkit" in (info.value.hint or "")
    assert _leftovers(project_name(settings.state_dir.absolute()))["containers"] == []


SLOW_MODEL = """
import time


class TritonPythonModel:
    def initialize(self, args):
        time.sleep(120)  # keeps `up` busy loading so the test can interrupt it

    def execute(self, requests):
        return []
"""

UP_SCRIPT = """
import signal
import sys
# inherited SIG_IGN (the suite started in the background) would drop the test's Ctrl-C
signal.signal(signal.SIGINT, signal.default_int_handler)
from pathlib import Path
from deployer.server.base import ServerSettings
from deployer.server.docker.runtime import DockerRuntime

repo, state_dir, image, http, grpc, metrics = sys.argv[1:]
settings = ServerSettings(
    runtime="docker", repository=Path(repo), models=("slow",), state_dir=Path(state_dir), image=image,
    http_port=int(http), grpc_port=int(grpc), metrics_port=int(metrics), startup_timeout_s=300,
)
DockerRuntime().up(settings)
"""


def _wait_for_loading(http_port: int, model: str, deadline: float) -> bool:
    import json
    import urllib.request

    while time.monotonic() < deadline:
        try:
            req = urllib.request.Request(f"http://127.0.0.1:{http_port}/v2/repository/index", data=b"{}")
            with urllib.request.urlopen(req, timeout=2) as resp:
                index = json.load(resp)
            if any(m.get("name") == model and m.get("state") == "LOADING" for m in index):
                return True
        except OSError:
            pass  # the server is not listening yet
        time.sleep(0.2)
    return False


@pytest.mark.docker
@pytest.mark.slow
def test_ctrl_c_during_up_leaves_no_container(
    cpu_image: str,
    tmp_path: Path,
    model_repository: Path,
    add_model: Callable[..., Path],
    find_free_ports: Callable[..., list[int]],
) -> None:
    import signal
    import subprocess
    import sys

    add_model(model_repository, "slow", PYADD_CONFIG.replace("pyadd", "slow"), {"model.py": SLOW_MODEL})
    state_dir = tmp_path / "interrupted" / ".deployer"
    project = project_name(state_dir)
    ports = [str(p) for p in find_free_ports(3)]
    proc = subprocess.Popen(
        [sys.executable, "-c", UP_SCRIPT, str(model_repository), str(state_dir), cpu_image, *ports],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if (state_dir / "server.json").is_file() and _leftovers(project)["containers"]:
                break
            time.sleep(0.5)
        assert proc.poll() is None, proc.communicate()[0].decode()
        # interrupt while the model load is in flight (Triton lists it as LOADING), not before
        assert _wait_for_loading(int(ports[0]), "slow", deadline), "the model never started loading"
        proc.send_signal(signal.SIGINT)
        output = proc.communicate(timeout=120)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0 and "KeyboardInterrupt" in output, output
    assert _leftovers(project) == {"containers": [], "networks": [], "volumes": []}
    assert not (state_dir / "server.json").exists()


@pytest.mark.docker
def test_cpu_image_is_reused_when_its_inputs_are_unchanged(cpu_image: str) -> None:
    from deployer.server.docker.cpu_image import LABEL_INPUTS, cpu_image_status

    again = build_cpu_image()
    assert again.tag == cpu_image and not again.built, "a current image is reused, not rebuilt"
    labels = docker_client().images.get(cpu_image).labels
    assert labels[LABEL_INPUTS] == again.inputs_digest
    assert cpu_image_status() == "current"
