"""Shared fixtures for the engine tests: the FAKE tensorrt module and small real ONNX models."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import onnx
import pytest
from onnx import TensorProto, helper

FAKES = Path(__file__).resolve().parents[2] / "fakes"


def _load(name: str) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, FAKES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def fake_trt() -> Callable[..., ModuleType]:
    """Factory: fake_trt("10.13.0.35", unsupported_ops=..., fp32_fallback=...) -> FAKE tensorrt module."""
    factory: Callable[..., ModuleType] = _load("fake_tensorrt").make_fake_tensorrt
    return factory


def make_onnx(
    path: Path,
    *,
    inputs: Sequence[tuple[str, int, Sequence[int | str]]] = (("x", TensorProto.FLOAT, ("batch", 4)),),
    op: str = "Relu",
    opset: int = 17,
    extra_nodes: Sequence[Any] = (),
    outputs: Sequence[tuple[str, int, Sequence[int | str]]] | None = None,
    initializers: Sequence[Any] = (),
) -> Path:
    """A small valid ONNX model: one unary `op` per input (y_i = op(x_i)), plus optional extra nodes."""
    graph_inputs = [helper.make_tensor_value_info(n, t, list(s)) for n, t, s in inputs]
    nodes = [helper.make_node(op, [n], [f"{n}_out"], name=f"{op.lower()}_{n}") for n, _, _ in inputs]
    nodes += list(extra_nodes)
    outs = outputs if outputs is not None else [(f"{n}_out", t, s) for n, t, s in inputs]
    graph_outputs = [helper.make_tensor_value_info(n, t, list(s)) for n, t, s in outs]
    graph = helper.make_graph(nodes, "g", graph_inputs, graph_outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture
def onnx_factory() -> Callable[..., Path]:
    """`make_onnx` as a fixture (test modules cannot import conftest)."""
    return make_onnx


@pytest.fixture
def onnx_model(tmp_path: Path) -> Path:
    """x[batch, 4] float -> Relu -> x_out."""
    return make_onnx(tmp_path / "model.onnx")
