"""Regenerate the tiny ONNX models used by the spec tests: `python tests/data/specs/models/make_models.py`.

Each model is a few hundred bytes and exercises one trouble: static batch, symbolic H/W, int64 input,
names with '/', '.' and ':', a scalar, a batch-only tensor, two inputs. `corrupt.onnx` is not ONNX.
tests/unit/spec/test_spec_corpus.py checks that the committed files equal what this script writes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import onnx
from onnx import TensorProto, helper

FP32, INT64 = TensorProto.FLOAT, TensorProto.INT64
Shape = list[int | str]


def _unary(op: str, x: tuple[str, int, Shape], y: tuple[str, int, Shape]) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node(op, [x[0]], [y[0]])], "g",
        [helper.make_tensor_value_info(*x)], [helper.make_tensor_value_info(*y)],
    )
    return _model(graph)


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8,
                             producer_name="deployer-tests")


def _two_inputs() -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["sum"])], "g",
        [helper.make_tensor_value_info("a", FP32, ["N", 4]), helper.make_tensor_value_info("b", FP32, ["N", 4])],
        [helper.make_tensor_value_info("sum", FP32, ["N", 4])],
    )
    return _model(graph)


def models() -> dict[str, bytes]:
    """File name -> bytes of every model."""
    built = {
        "relu.onnx": _unary("Relu", ("x", FP32, ["N", 4]), ("y", FP32, ["N", 4])),
        "static.onnx": _unary("Relu", ("x", FP32, [1, 4]), ("y", FP32, [1, 4])),
        "image.onnx": _unary("Relu", ("x", FP32, ["N", 3, "H", "W"]), ("y", FP32, ["N", 3, "H", "W"])),
        "ids.onnx": _unary("Neg", ("ids", INT64, ["N", 8]), ("neg", INT64, ["N", 8])),
        "names.onnx": _unary("Relu", ("input/ids:0", FP32, ["batch", 4]), ("out.logits:0", FP32, ["batch", 4])),
        "scalar.onnx": _unary("Relu", ("s", FP32, []), ("t", FP32, [])),
        "batchonly.onnx": _unary("Relu", ("x", FP32, ["N"]), ("y", FP32, ["N"])),
        "two_in.onnx": _two_inputs(),
    }
    out = {name: m.SerializeToString(deterministic=True) for name, m in built.items()}
    out["corrupt.onnx"] = b"this is not an ONNX protobuf\x00\xff\xfe garbage"
    return out


def write(directory: Path) -> list[Path]:
    """Write every model into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in models().items():
        (directory / name).write_bytes(data)
        written.append(directory / name)
    return written


if __name__ == "__main__":
    for p in write(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent):
        print(p)
