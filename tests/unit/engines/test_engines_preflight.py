"""CPU preflight on real ONNX models built with onnx.helper."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import onnx
from onnx import TensorProto, helper

from deployer.engines.preflight import check_onnx_carries_precision, preflight


def test_valid_model(onnx_model: Path) -> None:
    r = preflight(onnx_model, "10.13.0.35")
    assert r.ok and r.opset == 17 and r.op_counts == {"Relu": 1}
    assert [(i.name, i.shape, i.dtype) for i in r.inputs] == [("x", (-1, 4), "FLOAT")]
    assert r.outputs == ("x_out",) and not r.has_qdq and r.float_types == {"FLOAT"}


def test_unsupported_op_fails_on_documented_versions_and_warns_on_11(
    tmp_path: Path, onnx_factory: Callable[..., Path]
) -> None:
    # `Unique` is marked unsupported in TensorRT's ONNX operator table.
    path = onnx_factory(
        tmp_path / "u.onnx",
        op="Relu",
        extra_nodes=[helper.make_node("Unique", ["x_out"], ["uniq"], name="unique_0")],
        outputs=[("uniq", TensorProto.FLOAT, ["n"])],
    )
    r10 = preflight(path, "10.13.0.35")
    assert not r10.ok and any("operator Unique" in e for e in r10.errors)
    r11 = preflight(path, "11.1.0.106")
    assert r11.ok and any("Unique" in w and "may have added it" in w for w in r11.warnings)
    r8 = preflight(path, "8.6.1.6")
    assert r8.ok and any("Unique" in w for w in r8.warnings)


def test_custom_domain_and_unknown_op_warn(tmp_path: Path) -> None:
    node = helper.make_node("MyPluginOp", ["x"], ["y"], domain="com.acme", name="plugin_0")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.acme", 1)])
    path = tmp_path / "custom.onnx"
    onnx.save(model, str(path))
    r = preflight(path, "10.13")
    assert any("com.acme" in w and "plugin" in w for w in r.warnings)


def test_checker_failure_is_an_error(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["nope"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    path = tmp_path / "broken.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    r = preflight(path, "10.13")
    assert not r.ok and any("onnx.checker" in e for e in r.errors)


def test_opset_and_int64_rules(tmp_path: Path, onnx_factory: Callable[..., Path]) -> None:
    path = onnx_factory(tmp_path / "ids.onnx", inputs=(("ids", TensorProto.INT64, ("b", 8)),), op="Identity", opset=18)
    r8 = preflight(path, "8.6.1.6")
    assert r8.inputs[0].dtype == "INT32"  # TensorRT < 10 casts INT64 IO down
    assert any("above 17" in w for w in r8.warnings) and any("INT64 inputs become INT32" in w for w in r8.warnings)
    assert preflight(path, "10.13").inputs[0].dtype == "INT64"


def test_precision_carried_by_the_onnx(tmp_path: Path, onnx_factory: Callable[..., Path]) -> None:
    fp32 = preflight(onnx_factory(tmp_path / "a.onnx"), "11.1")
    assert check_onnx_carries_precision(fp32, "fp16") is not None
    assert check_onnx_carries_precision(fp32, "int8") is not None
    assert check_onnx_carries_precision(fp32, "fp32") is None
    half = preflight(onnx_factory(tmp_path / "h.onnx", inputs=(("x", TensorProto.FLOAT16, ("b", 4)),)), "11.1")
    assert check_onnx_carries_precision(half, "fp16") is None
    scale = helper.make_tensor("s", TensorProto.FLOAT, [], [0.1])
    zp = helper.make_tensor("z", TensorProto.INT8, [], [0])
    qdq = [
        helper.make_node("QuantizeLinear", ["x_out", "s", "z"], ["q"], name="q0"),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"], name="dq0"),
    ]
    q = preflight(
        onnx_factory(
            tmp_path / "q.onnx",
            extra_nodes=qdq,
            outputs=[("dq", TensorProto.FLOAT, ["b", 4])],
            initializers=[scale, zp],
        ),
        "11.1",
    )
    assert q.has_qdq and check_onnx_carries_precision(q, "int8") is None
