"""The `local` runtime against the REAL tritonserver (nvidia-pytriton wheel or PATH), real tritonclient
and real ONNX Runtime. Configs are written by hand here on purpose (independent of the renderer)."""

from __future__ import annotations

import logging
import re
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from deployer.errors import EnvironmentProblem, ExitCode, PortInUse, ServerError
from deployer.server.base import ServerSettings
from deployer.server.local import LocalRuntime, find_tritonserver, is_running, plan_launch
from deployer.server.process import group_members, proc_state, shm_segments
from deployer.server.state import load_state, state_path
from deployer.smoke import SmokeModel, SmokeOptions, SmokeOutput, SmokeTensor, run_smoke
from tests.triton_stats import wait_for_inferences

MLP_CONFIG = """
name: "mlp"
backend: "onnxruntime"
max_batch_size: 8
input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 3 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
dynamic_batching { max_queue_delay_microseconds: 300000 }
parameters { key: "intra_op_thread_count" value { string_value: "1" } }
"""

# platform instead of backend, batching without a dynamic batcher, five dtypes including STRING
MIXED_CONFIG = """
name: "mixed"
platform: "onnxruntime_onnx"
max_batch_size: 4
input [
  { name: "a" data_type: TYPE_FP16 dims: [ 3 ] },
  { name: "b" data_type: TYPE_INT64 dims: [ 2 ] },
  { name: "c" data_type: TYPE_BOOL dims: [ 3 ] },
  { name: "s" data_type: TYPE_STRING dims: [ 2 ] },
  { name: "u" data_type: TYPE_UINT8 dims: [ 2 ] }
]
output [
  { name: "a2" data_type: TYPE_FP16 dims: [ 3 ] },
  { name: "b2" data_type: TYPE_INT64 dims: [ 2 ] },
  { name: "c2" data_type: TYPE_BOOL dims: [ 3 ] },
  { name: "s2" data_type: TYPE_STRING dims: [ 2 ] },
  { name: "u2" data_type: TYPE_UINT8 dims: [ 2 ] }
]
instance_group [ { kind: KIND_CPU count: 1 } ]
optimization { graph { level: 1 } }
"""

PYTHON_CONFIG = """
name: "double"
backend: "python"
max_batch_size: 0
input [ { name: "a" data_type: TYPE_INT64 dims: [ 3 ] } ]
output [ { name: "b" data_type: TYPE_INT64 dims: [ 3 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
"""

PYTHON_MODEL = """
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        out = []
        for request in requests:
            a = pb_utils.get_input_tensor_by_name(request, "a").as_numpy()
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("b", (a * 2).astype(np.int64))]))
        return out
"""

# Declares INT32 where the ONNX graph has FP32: the load must fail with a reason naming the mismatch.
BAD_CONFIG = MLP_CONFIG.replace('name: "mlp"', 'name: "broken"').replace(
    'name: "x" data_type: TYPE_FP32', 'name: "x" data_type: TYPE_INT32'
)


def _infer(url: str, model: str, inputs: dict[str, Any], dtypes: dict[str, str]) -> Any:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url=url)
    try:
        tensors = []
        for name, array in inputs.items():
            tensor = httpclient.InferInput(name, list(array.shape), dtypes[name])
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        return client.infer(model, tensors)
    finally:
        client.close()


def test_busy_port_is_port_in_use(
    model_repository: Path, make_settings: Callable[..., ServerSettings], local_runtime: LocalRuntime
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        settings = make_settings(model_repository, (), grpc_port=port)
        with pytest.raises(PortInUse) as err:
            local_runtime.up(settings)
    assert f"port {port} (grpc_port)" in err.value.message
    assert err.value.exit_code == ExitCode.ENVIRONMENT
    assert err.value.hint and "grpc_port" in err.value.hint
    assert load_state(settings.state_dir) is None


@pytest.mark.triton
@pytest.mark.parametrize("explicit", [False, True], ids=["discovered", "settings.tritonserver"])
def test_plan_uses_private_backend_dir_and_python_onnxruntime(
    model_repository: Path, make_settings: Callable[..., ServerSettings], explicit: bool
) -> None:
    settings = make_settings(model_repository, ())
    install = find_tritonserver(settings)
    if explicit:  # the same binary named explicitly must be recognised as the same kind of install
        settings = make_settings(model_repository, (), tritonserver=install.binary)
        again = find_tritonserver(settings)
        assert (again.source, again.lib_dir, again.stubs_dir) == ("settings", install.lib_dir, install.stubs_dir)
        install = again
    plan = plan_launch(settings, install)
    assert plan.argv[0] == str(install.binary)
    assert plan.python_onnxruntime_backend is (not install.has_native_onnxruntime)
    if install.stubs_dir is not None:  # the wheel: private dir with the stub for this interpreter
        assert plan.backend_dir is not None and plan.backend_dir.is_relative_to(settings.state_dir)
        assert f"--backend-directory={plan.backend_dir}" in plan.argv
        files = {str(dest.relative_to(plan.backend_dir)) for dest, _ in plan.backend_files}
        assert {"python/triton_python_backend_stub", "python/libtriton_python.so"} <= files
        env = dict(plan.env)
        assert str(install.lib_dir) in env["LD_LIBRARY_PATH"].split(":")
        assert env["PATH"].split(":")[0] == str(Path(sys.executable).parent)


def test_missing_explicit_binary_is_an_environment_problem(
    model_repository: Path, make_settings: Callable[..., ServerSettings], tmp_path: Path
) -> None:
    from deployer.errors import MissingDependency

    settings = make_settings(model_repository, (), tritonserver=tmp_path / "no-such-tritonserver")
    with pytest.raises(MissingDependency, match="no-such-tritonserver") as err:
        find_tritonserver(settings)
    assert err.value.exit_code == ExitCode.ENVIRONMENT


@pytest.mark.triton
@pytest.mark.slow
def test_onnx_string_and_python_models_in_one_server(
    model_repository: Path,
    make_settings: Callable[..., ServerSettings],
    local_runtime: LocalRuntime,
    add_model: Callable[..., Path],
    make_mlp_onnx: Callable[..., Any],
    make_mixed_dtypes_onnx: Callable[[Path], Any],
    processes_mentioning: Callable[[str], list[int]],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    mlp = make_mlp_onnx(tmp_path / "mlp.onnx")
    mixed = make_mixed_dtypes_onnx(tmp_path / "mixed.onnx")
    add_model(model_repository, "mlp", MLP_CONFIG, {"model.onnx": mlp.path})
    add_model(model_repository, "mixed", MIXED_CONFIG, {"model.onnx": mixed.path})
    add_model(model_repository, "double", PYTHON_CONFIG, {"model.py": PYTHON_MODEL})
    settings = make_settings(model_repository, ("mlp", "mixed", "double"))

    with caplog.at_level(logging.INFO, logger="deployer.server"):
        state = local_runtime.up(settings)
    report = local_runtime.last_report
    assert report is not None and [m for m, _ in report.model_load_s] == ["mlp", "mixed", "double"]
    if not find_tritonserver(settings).has_native_onnxruntime:
        assert "Python-based" in caplog.text
    assert is_running(state.pid)
    assert load_state(settings.state_dir) == state

    status = local_runtime.status(state)
    assert status.running and status.ready
    assert {m: status.models[m] for m in settings.models} == dict.fromkeys(settings.models, "READY")

    # batched ONNX model: results equal ONNX Runtime in-process
    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    got = _infer(state.http_url, "mlp", {"x": x}, {"x": "FP32"}).as_numpy("y")
    np.testing.assert_allclose(got, mlp.reference({"x": x})["y"], rtol=1e-5, atol=1e-6)

    # concurrent requests are merged by Triton's dynamic batcher; each gets its own rows back
    _check_dynamic_batching(state.http_url, mlp, served_before=len(x))

    # FP16, INT64, BOOL, BYTES (non-ASCII, empty) and UINT8 through ONNX Runtime
    feeds: dict[str, Any] = {
        "a": np.array([[1.5, -2, 0], [3, 4, 5]], dtype=np.float16),
        "b": np.array([[1, 2], [-3, 2**40]], dtype=np.int64),
        "c": np.array([[True, False, True], [False, False, True]]),
        "s": np.array([[b"triton", b"onnx"], ["\u00e9t\u00e9".encode(), b""]], dtype=np.object_),
        "u": np.array([[0, 255], [7, 8]], dtype=np.uint8),
    }
    result = _infer(state.http_url, "mixed", feeds, dict(mixed.inputs))
    texts = np.array([[v.decode() for v in row] for row in feeds["s"]], dtype=np.object_)
    want = mixed.reference({**feeds, "s": texts})  # in-process ONNX Runtime takes str, not bytes
    for name, array in feeds.items():
        out = result.as_numpy(f"{name}2")
        if name == "s":
            assert out.dtype == np.object_ and out.tolist() == array.tolist()
        else:
            assert out.dtype == array.dtype, name
            np.testing.assert_array_equal(out, want[f"{name}2"])

    # python-backend model, run by the stub with this environment's numpy
    a = np.array([1, 2, 3], dtype=np.int64)
    np.testing.assert_array_equal(_infer(state.http_url, "double", {"a": a}, {"a": "INT64"}).as_numpy("b"), a * 2)

    # the smoke report names what served each model: read from the backend dir the server was given
    native = find_tritonserver(settings).has_native_onnxruntime
    onnx_label = "onnxruntime (native)" if native else "onnxruntime (deployer CPU Python-based backend)"
    assert dict(state.backends)["onnxruntime"] == ("native" if native else "deployer-cpu-python")
    assert dict(state.backends)["python"] == "native"
    targets = [
        SmokeModel("mlp", (SmokeTensor("x", "FP32", (4,)),), (SmokeOutput("y", "FP32", (3,)),), max_batch_size=8),
        SmokeModel("mixed", (SmokeTensor("a", "FP16", (3,)),), (SmokeOutput("a2", "FP16", (3,)),), max_batch_size=4),
        SmokeModel("double", (SmokeTensor("a", "INT64", (3,)),), (SmokeOutput("b", "INT64", (3,)),)),
    ]
    smoke = run_smoke(state, targets, SmokeOptions(checks=frozenset({"ready"})))  # no config check asked for
    assert {m.model: m.served_by for m in smoke.models} == {"mlp": onnx_label, "mixed": onnx_label, "double": "python"}

    assert "tritonserver" in local_runtime.logs(state, tail=500) or local_runtime.logs(state)
    stubs = [pid for pid in group_members(state.pid or 0) if pid != state.pid]
    segments = shm_segments(group_members(state.pid or 0))
    assert len(stubs) == 3 and segments, "one python-backend stub per instance, each with its shm segment"
    local_runtime.down(state)
    # down unloaded every model through the API, then Triton exited on SIGTERM by itself: nothing was
    # left for its own shutdown to unload, nothing had to be killed, no stub or shm segment remains
    stop = local_runtime.last_stop
    assert stop is not None and sorted(stop.unloaded) == ["double", "mixed", "mlp"], stop
    assert not stop.pending and not stop.killed, stop
    assert state.log_path is not None
    log = state.log_path.read_text()
    assert log.rindex("successfully unloaded 'mlp'") < log.index("Signal (15) received")
    assert "Found 0 live models" in log[log.index("Signal (15) received") :]
    assert not is_running(state.pid)
    assert [pid for pid in stubs if Path(f"/proc/{pid}").exists()] == []
    assert [p for p in segments if p.exists()] == []
    assert processes_mentioning(str(model_repository)) == []
    assert not state_path(settings.state_dir).exists()
    local_runtime.down(state)  # idempotent
    assert not local_runtime.status(state).running


def test_quick_down_leaves_no_stub_and_no_shm_segment(
    model_repository: Path,
    make_settings: Callable[..., ServerSettings],
    local_runtime: LocalRuntime,
    add_model: Callable[..., Path],
    make_mlp_onnx: Callable[..., Any],
    processes_mentioning: Callable[[str], list[int]],
) -> None:
    """deploy's own stop (`quick`): no unload, the group is killed at once, and what a graceful exit would
    have removed (stub processes, their /dev/shm segments, the state file) is gone all the same."""
    mlp = make_mlp_onnx(model_repository.parent / "mlp.onnx")
    add_model(model_repository, "mlp", MLP_CONFIG, {"model.onnx": mlp.path})
    add_model(model_repository, "double", PYTHON_CONFIG, {"model.py": PYTHON_MODEL})
    settings = make_settings(model_repository, ("mlp", "double"))
    state = local_runtime.up(settings)
    a = np.array([1, 2, 3], dtype=np.int64)
    np.testing.assert_array_equal(_infer(state.http_url, "double", {"a": a}, {"a": "INT64"}).as_numpy("b"), a * 2)
    stubs = [pid for pid in group_members(state.pid or 0) if pid != state.pid]
    segments = shm_segments(group_members(state.pid or 0))
    assert len(stubs) == 2 and len(segments) >= 2, (stubs, segments)
    local_runtime.down(state, quick=True)
    stop = local_runtime.last_stop
    assert stop is not None and stop.unloaded == () and stop.unload_s == 0.0, stop  # no drain
    assert not is_running(state.pid)
    # killed stubs are reparented to init, which reaps them when it gets to it: dead is the criterion
    assert [pid for pid in stubs if proc_state(pid) not in (None, "Z", "X")] == []
    assert [p for p in segments if p.exists()] == []
    assert processes_mentioning(str(model_repository)) == []
    assert not state_path(settings.state_dir).exists()


def _check_dynamic_batching(url: str, mlp: Any, served_before: int) -> None:
    """`served_before`: inferences mlp ran before; statistics trail the responses, so wait for them."""
    import tritonclient.http as httpclient

    rng = np.random.default_rng(2)
    batches = [rng.standard_normal((n, 4)).astype(np.float32) for n in (1, 2, 3, 1)]
    rows = sum(len(b) for b in batches)
    client = httpclient.InferenceServerClient(url=url, concurrency=len(batches))
    try:
        before = wait_for_inferences(client, "mlp", served_before)
        assert before["inference_count"] == served_before, f"statistics before the requests: {before}"
        pending = []
        for batch in batches:
            tensor = httpclient.InferInput("x", list(batch.shape), "FP32")
            tensor.set_data_from_numpy(batch)
            pending.append(client.async_infer("mlp", [tensor]))
        results = [p.get_result().as_numpy("y") for p in pending]
        after = wait_for_inferences(client, "mlp", served_before + rows)
    finally:
        client.close()
    for batch, got in zip(batches, results, strict=True):
        np.testing.assert_allclose(got, mlp.reference({"x": batch})["y"], rtol=1e-5, atol=1e-6)
    requests = after["inference_count"] - before["inference_count"]
    executions = after["execution_count"] - before["execution_count"]
    assert requests == rows, f"statistics after waiting for the requests: {after}"
    # 300 ms queue delay: the four requests are executed together in fewer model executions
    assert executions < len(batches)


@pytest.mark.triton
@pytest.mark.slow
def test_failing_model_is_named_with_reason_and_no_process_is_left(
    model_repository: Path,
    make_settings: Callable[..., ServerSettings],
    local_runtime: LocalRuntime,
    add_model: Callable[..., Path],
    make_mlp_onnx: Callable[..., Any],
    processes_mentioning: Callable[[str], list[int]],
    tmp_path: Path,
) -> None:
    mlp = make_mlp_onnx(tmp_path / "mlp.onnx")
    add_model(model_repository, "mlp", MLP_CONFIG, {"model.onnx": mlp.path})
    add_model(model_repository, "broken", BAD_CONFIG, {"model.onnx": mlp.path})
    settings = make_settings(model_repository, ("mlp", "broken"))

    with pytest.raises(ServerError) as err:
        local_runtime.up(settings)
    message = err.value.message
    assert "model 'broken' failed to load" in message
    assert "TYPE_INT32" in message and "tensor(float)" in message  # Triton's (our backend's) reason, quoted
    assert err.value.exit_code == ExitCode.CHECKS_FAILED
    assert err.value.details and "server log" in err.value.details
    assert processes_mentioning(str(model_repository)) == []
    assert load_state(settings.state_dir) is None


@pytest.mark.triton
def test_unknown_model_fails_fast_and_cleans_up(
    model_repository: Path,
    make_settings: Callable[..., ServerSettings],
    local_runtime: LocalRuntime,
    processes_mentioning: Callable[[str], list[int]],
) -> None:
    settings = make_settings(model_repository, ("nope",))
    with pytest.raises(ServerError, match="model 'nope' failed to load") as err:
        local_runtime.up(settings)
    assert err.value.hint and "'nope' directory" in err.value.hint
    assert processes_mentioning(str(model_repository)) == []
    assert load_state(settings.state_dir) is None


SLOW_CONFIG = PYTHON_CONFIG.replace('name: "double"', 'name: "slow"')
SLOW_MODEL = """
import time

class TritonPythonModel:
    def initialize(self, args):
        time.sleep(60)  # longer than any deadline used here

    def execute(self, requests):
        return []
"""


@pytest.mark.triton
@pytest.mark.slow
def test_load_deadline_names_the_model_and_cleans_up(
    model_repository: Path,
    make_settings: Callable[..., ServerSettings],
    local_runtime: LocalRuntime,
    add_model: Callable[..., Path],
    processes_mentioning: Callable[[str], list[int]],
) -> None:
    add_model(model_repository, "slow", SLOW_CONFIG, {"model.py": SLOW_MODEL})
    settings = make_settings(model_repository, ("slow",), startup_timeout_s=4.0)
    with pytest.raises(ServerError) as err:
        local_runtime.up(settings)
    assert "model 'slow' did not load within 4 s" in err.value.message
    assert err.value.hint and "startup_timeout_s" in err.value.hint
    assert processes_mentioning(str(model_repository)) == []
    assert load_state(settings.state_dir) is None


@pytest.mark.triton
@pytest.mark.slow
def test_ctrl_c_during_up_stops_the_server(
    model_repository: Path,
    make_settings: Callable[..., ServerSettings],
    local_runtime: LocalRuntime,
    add_model: Callable[..., Path],
    processes_mentioning: Callable[[str], list[int]],
) -> None:
    import _thread
    import threading

    add_model(model_repository, "slow", SLOW_CONFIG, {"model.py": SLOW_MODEL})
    settings = make_settings(model_repository, ("slow",))
    timer = threading.Timer(2.5, _thread.interrupt_main)  # what Ctrl-C does: KeyboardInterrupt in main
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            local_runtime.up(settings)
    finally:
        timer.cancel()
    assert processes_mentioning(str(model_repository)) == []
    assert load_state(settings.state_dir) is None


def test_status_of_a_dead_server_and_stale_state(tmp_path: Path, local_runtime: LocalRuntime) -> None:
    from deployer.server.base import ServerState
    from deployer.server.state import save_state

    dead = ServerState(
        runtime="local",
        host="127.0.0.1",
        http_port=1,
        grpc_port=2,
        metrics_port=3,
        models=("m",),
        log_path=tmp_path / "tritonserver.log",
        pid=2**22 + 1,  # above pid_max's default: never a process
    )
    save_state(tmp_path, dead)
    status = local_runtime.status(dead)
    assert not status.running and not status.ready
    assert status.models == {"m": "NOT RUNNING"}
    local_runtime.down(dead)  # nothing to stop; forgets the stale record
    assert load_state(tmp_path) is None
    assert local_runtime.status(None).state is None


@pytest.mark.triton
def test_server_that_exits_early_is_reported_with_its_log(
    model_repository: Path,
    make_settings: Callable[..., ServerSettings],
    local_runtime: LocalRuntime,
    processes_mentioning: Callable[[str], list[int]],
) -> None:
    # whitelisted flag, value tritonserver rejects at startup
    settings = make_settings(model_repository, (), extra_args=("--model-load-thread-count=many",))
    with pytest.raises(ServerError) as err:
        local_runtime.up(settings)
    assert "exited before it became ready" in err.value.message
    assert err.value.details and "model-load-thread-count" in err.value.details
    assert processes_mentioning(str(model_repository)) == []
    assert load_state(settings.state_dir) is None


def test_missing_repository_is_bad_input(
    tmp_path: Path, make_settings: Callable[..., ServerSettings], local_runtime: LocalRuntime
) -> None:
    from deployer.errors import RepositoryError

    with pytest.raises(RepositoryError, match="does not exist") as err:
        local_runtime.up(make_settings(tmp_path / "nowhere", ()))
    assert err.value.exit_code == ExitCode.BAD_INPUT


@pytest.mark.triton
def test_up_in_one_process_down_in_another(
    model_repository: Path,
    make_settings: Callable[..., ServerSettings],
    processes_mentioning: Callable[[str], list[int]],
) -> None:
    """The CLI flow: `deployer up` exits leaving the server running; `deployer down` finds it by state."""
    import subprocess

    settings = make_settings(model_repository, ())
    script = (
        "import sys; from pathlib import Path; from deployer.server.base import ServerSettings; "
        "from deployer.server.local import LocalRuntime; "
        f"s = ServerSettings(runtime='local', repository=Path({str(model_repository)!r}), models=(), "
        f"state_dir=Path({str(settings.state_dir)!r}), http_port={settings.http_port}, "
        f"grpc_port={settings.grpc_port}, metrics_port={settings.metrics_port}, response_cache_bytes=1048576); "
        "print(LocalRuntime().up(s).pid)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    state = load_state(settings.state_dir)
    try:
        assert done.returncode == 0, done.stderr
        assert state is not None and str(state.pid) == done.stdout.strip()
        runtime = LocalRuntime()  # a fresh process's view: not our child
        status = runtime.status(state)
        assert status.running and status.ready
        log_text = runtime.logs(state, tail=10_000)
        assert re.search(r"cache_enabled\s*\|\s*1", log_text), "response cache flags not honoured"
        with pytest.raises(EnvironmentProblem, match="recorded as running") as err:
            runtime.up(settings)  # a second `deployer up` for the same spec
        assert not isinstance(err.value, PortInUse) and err.value.hint and "deployer down" in err.value.hint
        runtime.down(state)
        assert not is_running(state.pid)
        assert load_state(settings.state_dir) is None
    finally:
        if state is not None and is_running(state.pid):
            LocalRuntime().down(state, grace_s=1.0)
    assert processes_mentioning(str(model_repository)) == []
