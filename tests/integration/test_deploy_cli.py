"""`deployer deploy / up / status / down / smoke` through the real console script and a real tritonserver."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "examples" / "quickstart"
DEPLOYER = [sys.executable, "-m", "deployer"]

pytestmark = [pytest.mark.triton, pytest.mark.slow]


def run(*args: str, cwd: Path | None = None, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DEPLOYER, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd, check=False)


def write_spec(tmp_path: Path, ports: list[int], extra_models: str = "", smoke: str = "") -> Path:
    for name in ("classifier.onnx", "labels.py"):
        shutil.copy(QUICKSTART / name, tmp_path / name)
    http, grpc, metrics = ports
    spec = tmp_path / "deployer.yaml"
    spec.write_text(
        f"""repository: repo
server: {{runtime: local, http_port: {http}, grpc_port: {grpc}, metrics_port: {metrics}, startup_timeout: 90}}
smoke: {{concurrency: 8, duration: 0.5, batching_requests: 32{smoke}}}
models:
  - name: classifier
    source: classifier.onnx
    max_batch_size: 16
    dynamic_batching: {{preferred_batch_size: [8, 16], max_queue_delay_microseconds: 5000}}
  - name: labels
    source: labels.py
    backend: python
    max_batch_size: 16
    inputs: [{{name: logits, dtype: FP32, dims: [4]}}]
    outputs: [{{name: label, dtype: STRING, dims: [1]}}]
{extra_models}"""
    )
    return spec


def test_deploy_passes_and_writes_reports(
    tmp_path: Path, find_free_ports: Callable[..., list[int]], processes_mentioning: Callable[[str], list[int]]
) -> None:
    spec = write_spec(tmp_path, find_free_ports(3))
    result = run("deploy", str(spec), "--json", str(tmp_path / "r.json"), "--junit", str(tmp_path / "r.xml"))
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["passed"] is True
    checks = {(s["name"], c["name"]): c for s in report["suites"] for c in s["checks"]}
    batching = checks[("classifier", "batching")]
    assert batching["status"] == "pass"
    assert batching["numbers"]["execution_count"] < batching["numbers"]["inference_count"]
    infer = [c for (suite, name), c in checks.items() if suite == "classifier" and name.startswith("infer[")]
    assert {c["name"].split(",")[0] for c in infer} == {"infer[http", "infer[grpc"}
    assert len(infer) >= 4 and all(c["status"] == "pass" for c in infer)
    junit = ET.parse(tmp_path / "r.xml").getroot()
    assert int(junit.get("failures", "0")) == 0 and int(junit.get("tests", "0")) >= 10
    assert (tmp_path / "repo" / "classifier" / "1" / "model.onnx").is_file()
    assert processes_mentioning(str(tmp_path / "repo")) == []  # the server was stopped


def test_up_status_smoke_down(tmp_path: Path, find_free_ports: Callable[..., list[int]]) -> None:
    spec = write_spec(tmp_path, find_free_ports(3))
    assert run("publish", str(spec)).returncode == 0
    assert run("status", str(spec)).returncode == 1  # nothing running yet
    up = run("up", str(spec))
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        status = run("status", str(spec))
        assert status.returncode == 0, status.stdout
        assert "classifier" in status.stdout and "READY" in status.stdout
        again = run("up", str(spec))
        assert again.returncode == 3 and "deployer down" in again.stderr
        smoke = run("smoke", str(spec))
        assert smoke.returncode == 0, smoke.stdout + smoke.stderr
    finally:
        down = run("down", str(spec))
    assert down.returncode == 0 and "stopped" in down.stdout
    assert run("status", str(spec)).returncode == 1


def test_model_that_fails_to_load_is_named(
    tmp_path: Path, find_free_ports: Callable[..., list[int]], processes_mentioning: Callable[[str], list[int]]
) -> None:
    (tmp_path / "broken.py").write_text(
        "class TritonPythonModel:\n"
        "    def initialize(self, args):\n"
        "        raise RuntimeError('weights file is corrupt')\n"
    )
    extra = """  - name: broken
    source: broken.py
    backend: python
    max_batch_size: 0
    inputs: [{name: x, dtype: FP32, dims: [2]}]
    outputs: [{name: y, dtype: FP32, dims: [2]}]
"""
    spec = write_spec(tmp_path, find_free_ports(3), extra_models=extra)
    result = run("deploy", str(spec))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "broken" in result.stderr and "weights file is corrupt" in result.stderr
    assert processes_mentioning(str(tmp_path / "repo")) == []


def test_busy_port_is_an_environment_error(tmp_path: Path, find_free_ports: Callable[..., list[int]]) -> None:
    ports = find_free_ports(3)
    spec = write_spec(tmp_path, ports)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", ports[1]))
        busy.listen(1)
        result = run("deploy", str(spec))
    assert result.returncode == 3, result.stdout + result.stderr
    assert str(ports[1]) in result.stderr
    assert "Traceback" not in result.stderr


def test_failed_smoke_exits_1(tmp_path: Path, find_free_ports: Callable[..., list[int]]) -> None:
    # An SLA no server can meet turns the perf check red: exit 1, and the report says why.
    spec = write_spec(tmp_path, find_free_ports(3), smoke=", sla: {p50_ms: 0.0001}")
    result = run("deploy", str(spec), "--json", str(tmp_path / "r.json"))
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    failed = [c["name"] for s in report["suites"] for c in s["checks"] if c["status"] == "fail"]
    assert "perf" in failed


@pytest.mark.docker
@pytest.mark.parametrize("runtime", ["docker", "compose"])
def test_deploy_through_container_runtimes(
    runtime: str, tmp_path: Path, find_free_ports: Callable[..., list[int]]
) -> None:
    """The same smoke suite passes through docker and compose against the CPU image."""
    import importlib

    from deployer.server.docker.cpu_image import CPU_IMAGE

    spec = write_spec(tmp_path, find_free_ports(3))
    spec.write_text(spec.read_text().replace("runtime: local,", f"runtime: local, image: {CPU_IMAGE},"))
    result = run("deploy", str(spec), "--runtime", runtime, "--json", str(tmp_path / "r.json"), timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    checks = {(s["name"], c["name"]): c for s in report["suites"] for c in s["checks"]}
    assert checks[("classifier", "batching")]["status"] == "pass"
    assert report["target"].startswith(runtime)
    docker = importlib.import_module("docker")
    client = docker.from_env()
    try:
        left = client.containers.list(all=True, filters={"label": "dev.deployer.managed=true"})
        assert [c.name for c in left] == []
    finally:
        client.close()


def _retrain(path: Path) -> None:
    """Scale every float initializer: same interface, other answers (a 'retrained' model)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(path))
    for init in m.graph.initializer:
        w = numpy_helper.to_array(init)
        if w.dtype == np.float32:
            init.CopyFrom(numpy_helper.from_array((w * 1.5 + 0.25).astype(np.float32), init.name))
    onnx.save(m, str(path))


def _tree(root: Path) -> dict[str, bytes | None]:
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def test_rollback_pins_the_old_version_in_the_running_server_and_keeps_the_new_one(
    tmp_path: Path, find_free_ports: Callable[..., list[int]]
) -> None:
    import numpy as np
    import onnxruntime as ort
    import tritonclient.http as httpclient

    ports = find_free_ports(3)
    spec = write_spec(tmp_path, ports)
    assert run("publish", str(spec)).returncode == 0
    v1_model = tmp_path / "v1.onnx"
    shutil.copy(tmp_path / "classifier.onnx", v1_model)
    _retrain(tmp_path / "classifier.onnx")
    text = spec.read_text()
    spec.write_text(text.replace("max_queue_delay_microseconds: 5000", "max_queue_delay_microseconds: 7000"))
    published = run("publish", str(spec))
    assert "classifier: version 2 new" in published.stdout, published.stdout
    v2_files = _tree(tmp_path / "repo" / "classifier" / "2")
    x = np.random.default_rng(0).standard_normal((1, 16)).astype(np.float32)

    def expected(model: Path) -> np.ndarray:
        sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        return np.asarray(sess.run(None, {sess.get_inputs()[0].name: x})[0])

    want_v1, want_v2 = expected(v1_model), expected(tmp_path / "classifier.onnx")
    assert not np.allclose(want_v1, want_v2, atol=1e-3), "the retrained model must answer differently"
    assert run("up", str(spec)).returncode == 0
    client = httpclient.InferenceServerClient(f"127.0.0.1:{ports[0]}")

    def served() -> np.ndarray:
        inp = httpclient.InferInput(client.get_model_metadata("classifier")["inputs"][0]["name"], list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        return np.asarray(client.infer("classifier", [inp]).as_numpy(
            client.get_model_metadata("classifier")["outputs"][0]["name"]))

    try:
        delay = client.get_model_config("classifier")["dynamic_batching"]["max_queue_delay_microseconds"]
        assert delay == 7000
        np.testing.assert_allclose(served(), want_v2, rtol=1e-4, atol=1e-5)
        rb = run("rollback", str(spec), "classifier")
        assert rb.returncode == 0, rb.stdout + rb.stderr
        assert "reloaded in the running server" in rb.stdout and "newer versions [2] are kept" in rb.stdout
        assert client.is_model_ready("classifier", "1") and not client.is_model_ready("classifier", "2")
        delay = client.get_model_config("classifier")["dynamic_batching"]["max_queue_delay_microseconds"]
        assert delay == 5000
        np.testing.assert_allclose(served(), want_v1, rtol=1e-4, atol=1e-5)
        assert _tree(tmp_path / "repo" / "classifier" / "2") == v2_files
        # the kept version serves again, without a publish
        rb = run("rollback", str(spec), "classifier", "--to", "2")
        assert rb.returncode == 0, rb.stdout + rb.stderr
        assert client.is_model_ready("classifier", "2") and not client.is_model_ready("classifier", "1")
        np.testing.assert_allclose(served(), want_v2, rtol=1e-4, atol=1e-5)
    finally:
        client.close()
        run("down", str(spec))


def test_tensorrt_spec_without_tensorrt(tmp_path: Path, find_free_ports: Callable[..., list[int]]) -> None:
    """No TensorRT here: build/deploy exit 3 naming the options; --fallback onnxruntime deploys and passes."""
    spec = write_spec(tmp_path, find_free_ports(3))
    text = spec.read_text().replace(
        "    source: classifier.onnx\n",
        "    source: classifier.onnx\n    backend: tensorrt\n    precision: fp16\n"
        "    instance_group: [{kind: GPU, count: 1}]\n",
    )
    spec.write_text(text)
    assert run("validate", str(spec)).returncode == 0
    build = run("build", str(spec))
    assert build.returncode == 3, build.stdout + build.stderr
    assert "--fallback onnxruntime" in build.stderr and "Traceback" not in build.stderr
    deploy = run("deploy", str(spec))
    assert deploy.returncode == 3 and "--fallback onnxruntime" in deploy.stderr
    result = run("deploy", str(spec), "--fallback", "onnxruntime", "--json", str(tmp_path / "r.json"))
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["passed"] is True
    config = (tmp_path / "repo" / "classifier" / "config.pbtxt").read_text()
    assert 'backend: "onnxruntime"' in config and "KIND_GPU" not in config
    manifest = json.loads((tmp_path / "repo" / "classifier" / "1" / "deployer.manifest.json").read_text())
    assert manifest["requested_backend"] == "tensorrt" and manifest["backend"] == "onnxruntime"
