"""Shared fixtures for integration tests: free ports, tiny ONNX models, hand-written repositories,
a local runtime that cleans up after itself, and a /proc-based process finder.

The tests directories are not packages, so a conftest cannot be imported reliably: every helper is
exposed as a fixture that returns the function (e.g. `def test_x(add_model, make_mlp_onnx): ...`).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from deployer.server.base import ServerSettings
from deployer.server.local import LocalRuntime

# -- ports ---------------------------------------------------------------------------------------------


def _find_free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports that were free a moment ago (bound together, so no duplicates)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@pytest.fixture
def free_ports() -> tuple[int, int, int]:
    """(http, grpc, metrics) ports free on 127.0.0.1."""
    http, grpc, metrics = _find_free_ports(3)
    return http, grpc, metrics


# -- tiny ONNX models ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TinyModel:
    """A generated ONNX file and how to compute its reference output in-process."""

    path: Path
    inputs: tuple[tuple[str, str], ...]  # (name, Triton dtype name, e.g. "FP32")
    outputs: tuple[tuple[str, str], ...]

    def reference(self, feeds: Mapping[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        """Outputs computed by ONNX Runtime in this process."""
        import onnxruntime as ort

        session = ort.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
        names = [o for o, _ in self.outputs]
        return dict(zip(names, session.run(names, dict(feeds)), strict=True))


def _save(model: Any, path: Path) -> None:
    import onnx

    model.ir_version = 8  # loadable by every onnxruntime >= 1.10
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def _make_mlp_onnx(path: Path, in_dim: int = 4, out_dim: int = 3, seed: int = 0) -> TinyModel:
    """`y = relu(x @ W + b)` with a symbolic batch dim: x [N, in_dim] FP32 -> y [N, out_dim] FP32."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = rng.standard_normal((in_dim, out_dim)).astype(np.float32)
    b = rng.standard_normal(out_dim).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["pre"]),
            helper.make_node("Relu", ["pre"], ["y"]),
        ],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", in_dim])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", out_dim])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")],
    )
    _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return TinyModel(path, (("x", "FP32"),), (("y", "FP32"),))


def _make_string_onnx(path: Path) -> TinyModel:
    """Identity on strings: s [N, 2] STRING -> out [N, 2] STRING (exercises BYTES end to end)."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["s"], ["out"])],
        "strid",
        [helper.make_tensor_value_info("s", TensorProto.STRING, ["N", 2])],
        [helper.make_tensor_value_info("out", TensorProto.STRING, ["N", 2])],
    )
    _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return TinyModel(path, (("s", "BYTES"),), (("out", "BYTES"),))


def _make_mixed_dtypes_onnx(path: Path) -> TinyModel:
    """Several dtypes at once, batch dim N: a FP16 [N,3] -> a2 = 2a; b INT64 [N,2] -> b2 = b+1;
    c BOOL [N,3] -> c2 = not c; s STRING [N,2] -> s2 = s; u UINT8 [N,2] -> u2 = u."""
    from onnx import TensorProto, helper, numpy_helper

    two = numpy_helper.from_array(np.array(2, dtype=np.float16), "two")
    one = numpy_helper.from_array(np.array(1, dtype=np.int64), "one")
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["a", "two"], ["a2"]),
            helper.make_node("Add", ["b", "one"], ["b2"]),
            helper.make_node("Not", ["c"], ["c2"]),
            helper.make_node("Identity", ["s"], ["s2"]),
            helper.make_node("Identity", ["u"], ["u2"]),
        ],
        "mixed",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT16, ["N", 3]),
            helper.make_tensor_value_info("b", TensorProto.INT64, ["N", 2]),
            helper.make_tensor_value_info("c", TensorProto.BOOL, ["N", 3]),
            helper.make_tensor_value_info("s", TensorProto.STRING, ["N", 2]),
            helper.make_tensor_value_info("u", TensorProto.UINT8, ["N", 2]),
        ],
        [
            helper.make_tensor_value_info("a2", TensorProto.FLOAT16, ["N", 3]),
            helper.make_tensor_value_info("b2", TensorProto.INT64, ["N", 2]),
            helper.make_tensor_value_info("c2", TensorProto.BOOL, ["N", 3]),
            helper.make_tensor_value_info("s2", TensorProto.STRING, ["N", 2]),
            helper.make_tensor_value_info("u2", TensorProto.UINT8, ["N", 2]),
        ],
        [two, one],
    )
    _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    ins = (("a", "FP16"), ("b", "INT64"), ("c", "BOOL"), ("s", "BYTES"), ("u", "UINT8"))
    return TinyModel(path, ins, tuple((f"{n}2", t) for n, t in ins))


# -- hand-written repositories -------------------------------------------------------------------------


def _add_model(
    repository: Path,
    name: str,
    config_pbtxt: str,
    files: Mapping[str, bytes | str | Path] | None = None,
    version: int = 1,
) -> Path:
    """Write `<repository>/<name>/config.pbtxt` and `<name>/<version>/<file>` for each entry of `files`.

    A `Path` value is copied; `str`/`bytes` are written as is. Returns the model directory.
    """
    model_dir = repository / name
    version_dir = model_dir / str(version)
    version_dir.mkdir(parents=True, exist_ok=True)
    for filename, content in (files or {}).items():
        target = version_dir / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Path):
            target.write_bytes(content.read_bytes())
        elif isinstance(content, str):
            target.write_text(content)
        else:
            target.write_bytes(content)
    (model_dir / "config.pbtxt").write_text(config_pbtxt)  # last, like the real publisher
    return model_dir


@pytest.fixture
def model_repository(tmp_path: Path) -> Path:
    """An empty model repository directory."""
    repo = tmp_path / "model_repository"
    repo.mkdir()
    return repo


# -- servers -------------------------------------------------------------------------------------------


@pytest.fixture
def make_settings(tmp_path: Path, free_ports: tuple[int, int, int]) -> Callable[..., ServerSettings]:
    """Factory: `make_settings(repository, models, **overrides)` with free ports and a tmp state dir."""

    def factory(repository: Path, models: tuple[str, ...], **overrides: Any) -> ServerSettings:
        http, grpc, metrics = free_ports
        base: dict[str, Any] = {
            "runtime": "local",
            "repository": repository,
            "models": models,
            "state_dir": tmp_path / "state",
            "http_port": http,
            "grpc_port": grpc,
            "metrics_port": metrics,
            "startup_timeout_s": 60.0,
        }
        base.update(overrides)
        return ServerSettings(**base)

    return factory


def _processes_mentioning(text: str) -> list[int]:
    """PIDs of live (non-zombie) processes whose command line contains `text` (reads /proc)."""
    found: list[int] = []
    needle = text.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if needle not in (entry / "cmdline").read_bytes():
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            if state not in ("Z", "X"):
                found.append(int(entry.name))
    return found


@pytest.fixture
def local_runtime() -> Iterator[LocalRuntime]:
    """A LocalRuntime whose servers are all stopped at teardown, even when the test failed."""
    runtime = LocalRuntime()
    yield runtime
    runtime.close()


# -- helpers as fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="session")  # a pure function: module-scoped servers use it too
def find_free_ports() -> Callable[..., list[int]]:
    """`find_free_ports(count, host="127.0.0.1") -> list[int]`."""
    return _find_free_ports


@pytest.fixture
def make_mlp_onnx() -> Callable[..., TinyModel]:
    """`make_mlp_onnx(path, in_dim=4, out_dim=3, seed=0) -> TinyModel` (x [N,in] FP32 -> y [N,out] FP32)."""
    return _make_mlp_onnx


@pytest.fixture
def make_string_onnx() -> Callable[[Path], TinyModel]:
    """`make_string_onnx(path) -> TinyModel` (s [N,2] STRING -> out [N,2] STRING)."""
    return _make_string_onnx


@pytest.fixture
def make_mixed_dtypes_onnx() -> Callable[[Path], TinyModel]:
    """`make_mixed_dtypes_onnx(path) -> TinyModel` (FP16, INT64, BOOL, STRING, UINT8 in and out, batch N)."""
    return _make_mixed_dtypes_onnx


@pytest.fixture
def add_model() -> Callable[..., Path]:
    """`add_model(repository, name, config_pbtxt, files=None, version=1) -> model_dir`."""
    return _add_model


@pytest.fixture
def processes_mentioning() -> Callable[[str], list[int]]:
    """`processes_mentioning(text) -> [pid, ...]` of live processes whose cmdline contains `text`."""
    return _processes_mentioning
