"""REAL TensorRT on a REAL GPU: build an engine from a small ONNX, load it in a real Triton, check IO.

The `gpu` tests need an NVIDIA GPU, the `tensorrt` package matching the server, and (for the Triton test) a
`tritonserver` with the TensorRT backend on PATH (e.g. inside nvcr.io/nvidia/tritonserver:<YY.MM>-py3 with
tensorrt pip-installed). Skipped otherwise, with the reason.

One `docker` test runs the container builder for real on a CPU machine: the REAL Docker engine runs our
container entry in deployer's CPU image (no TensorRT there), which must fail with exit 3 and a clear
message, leaving the reproduce script behind and no container running.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from deployer.engines import (
    BuildRequest,
    InputShapes,
    Profile,
    build_engine,
    check_engine_matches_target,
    check_triton_config,
    derive_triton_fields,
    inspect_engine,
    tensorrt_available,
)

_TRT_OK, _TRT_WHY = tensorrt_available()
_TRITON = shutil.which("tritonserver")
_TRT_BACKEND = Path("/opt/tritonserver/backends/tensorrt")

needs_gpu = pytest.mark.skipif(not _TRT_OK, reason=f"needs TensorRT and an NVIDIA GPU: {_TRT_WHY}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _onnx(path: Path) -> Path:
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3], np.linspace(-1, 1, 12, dtype=np.float32).tolist())
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"), helper.make_node("Relu", ["h"], ["y"], name="relu")],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [w],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.fixture
def built(tmp_path: Path) -> Iterator[tuple[Path, BuildRequest]]:
    repo = tmp_path / "repo"
    req = BuildRequest(
        model_name="mlp_trt",
        onnx_path=_onnx(tmp_path / "mlp.onnx"),
        profiles=(Profile((InputShapes("x", (1, 4), (4, 4), (8, 4)),)),),
        max_batch_size=8,
        output_path=repo / "mlp_trt" / "1" / "model.plan",
        cache_dir=tmp_path / "cache",
        precision="fp32",
    )
    yield repo, req


@pytest.mark.gpu
@pytest.mark.slow
@needs_gpu
def test_build_inspect_and_cache(built: tuple[Path, BuildRequest]) -> None:
    _, req = built
    first = build_engine(req)
    assert not first.cache_hit and first.info.compute_capability
    check_engine_matches_target(first.info, first.info.trt_version)
    info = inspect_engine(req.output_path.read_bytes())
    fields = derive_triton_fields(info, 8)
    assert [(t.name, t.data_type, t.dims) for t in fields.inputs] == [("x", "TYPE_FP32", (4,))]
    assert [(t.name, t.data_type, t.dims) for t in fields.outputs] == [("y", "TYPE_FP32", (3,))]
    assert build_engine(req).cache_hit


@pytest.mark.gpu
@pytest.mark.slow
@needs_gpu
@pytest.mark.skipif(
    _TRITON is None or not _TRT_BACKEND.is_dir(), reason="needs tritonserver with the TensorRT backend on PATH"
)
def test_engine_loads_and_infers_in_triton(built: tuple[Path, BuildRequest]) -> None:
    import tritonclient.http as httpclient

    repo, req = built
    build_engine(req)
    fields = derive_triton_fields(inspect_engine(req.output_path.read_bytes()), 8)
    assert check_triton_config(inspect_engine(req.output_path.read_bytes()), 8, fields.inputs, fields.outputs) == []
    (repo / "mlp_trt" / "config.pbtxt").write_text(
        'name: "mlp_trt"\nbackend: "tensorrt"\nmax_batch_size: 8\n'
        'input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
        'output [ { name: "y" data_type: TYPE_FP32 dims: [ 3 ] } ]\n'
        "instance_group [ { kind: KIND_GPU count: 1 } ]\n"
    )
    http, grpc, metrics = _free_port(), _free_port(), _free_port()
    assert _TRITON is not None
    proc = subprocess.Popen(
        [
            _TRITON,
            f"--model-repository={repo}",
            f"--http-port={http}",
            f"--grpc-port={grpc}",
            f"--metrics-port={metrics}",
            "--http-address=127.0.0.1",
            "--grpc-address=127.0.0.1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        client = httpclient.InferenceServerClient(url=f"127.0.0.1:{http}")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if client.is_model_ready("mlp_trt"):
                    break
            except Exception:
                pass
            time.sleep(0.5)
        assert client.is_model_ready("mlp_trt"), "model did not become ready"
        meta = client.get_model_metadata("mlp_trt")
        assert [(i["name"], i["datatype"], i["shape"]) for i in meta["inputs"]] == [("x", "FP32", [-1, 4])]
        x = np.arange(8, dtype=np.float32).reshape(2, 4)
        inp = httpclient.InferInput("x", [2, 4], "FP32")
        inp.set_data_from_numpy(x)
        y = client.infer("mlp_trt", [inp]).as_numpy("y")
        w = np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3)
        np.testing.assert_allclose(y, np.maximum(x @ w, 0), rtol=1e-3, atol=1e-3)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


@pytest.mark.docker
@pytest.mark.slow
def test_container_builder_runs_in_docker_and_reports_missing_tensorrt(built: tuple[Path, BuildRequest]) -> None:
    import docker
    from deployer.engines import onnx_facts_for, plan_container_build, run_container_build
    from deployer.errors import BuildError
    from deployer.server.docker.cpu_image import build_cpu_image

    _, req = built
    image = build_cpu_image().tag  # reused when present; has python3 + numpy but no TensorRT
    plan = plan_container_build(req, onnx_facts_for(req, "10.13.0.35"), image=image, gpus="none")
    client = docker.from_env()
    try:
        before = {c.id for c in client.containers.list(all=True)}
        with pytest.raises(BuildError) as exc:
            run_container_build(plan, client=client, timeout_s=300)
        after = {c.id for c in client.containers.list(all=True)}
    finally:
        client.close()
    assert "exited with 3" in exc.value.message
    assert "TensorRT is not available" in (exc.value.details or ""), exc.value.details
    assert after <= before  # the build container was removed
    script = plan.reproduce_file.read_text()
    assert f"{image} python3 -m deployer.engines.container_entry" in script
    assert plan.request_file.is_file() and not req.output_path.exists()
