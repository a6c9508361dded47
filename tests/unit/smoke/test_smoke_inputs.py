"""Synthetic inputs: shapes per case, values per dtype, determinism, golden files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deployer.dtypes import DTYPES
from deployer.errors import UserError
from deployer.smoke.inputs import load_golden, make_inputs, plan_cases, shape_range, synthesize
from deployer.smoke.targets import ShapeRange, SmokeModel, SmokeOutput, SmokeTensor


def _model(**kw: object) -> SmokeModel:
    base: dict[str, object] = {
        "name": "m",
        "inputs": (SmokeTensor("x", "FP32", (-1, 4)),),
        "outputs": (SmokeOutput("y", "FP32", (3,)),),
        "max_batch_size": 8,
    }
    base.update(kw)
    return SmokeModel(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("dtype", DTYPES)
def test_synthesize_every_dtype_has_shape_dtype_and_range(dtype: str) -> None:
    t = SmokeTensor("x", dtype, (2, 3))
    arr = synthesize(t, (2, 3), np.random.default_rng(0))
    assert arr.shape == (2, 3)
    if dtype == "STRING":
        assert arr.dtype == object and all(isinstance(v, bytes) and v.isdigit() for v in arr.ravel())
    elif dtype == "BOOL":
        assert arr.dtype == np.bool_
    elif dtype == "BF16":
        assert arr.dtype == np.float32
        # bf16-exact: the low 16 bits of every float32 are zero, so any bf16 conversion is lossless
        assert not np.any(arr.view(np.uint32) & 0xFFFF)
    elif dtype.startswith(("INT", "UINT")):
        assert arr.dtype == np.dtype(dtype.lower()) and arr.min() >= 0 and arr.max() < 16
    else:
        assert arr.dtype == np.dtype({"FP16": "float16", "FP32": "float32", "FP64": "float64"}[dtype])
        assert float(arr.min()) >= 0.0 and float(arr.max()) <= 1.0


def test_value_range_fixed_value_and_clipping() -> None:
    rng = np.random.default_rng(1)
    ints = synthesize(SmokeTensor("i", "INT8", (100,), value_range=(-500, 500)), (100,), rng)
    assert ints.min() >= -128 and ints.max() <= 127 and ints.min() < 0  # clipped to int8, still signed
    floats = synthesize(SmokeTensor("f", "FP32", (100,), value_range=(-3.0, -2.0)), (100,), rng)
    assert floats.min() >= -3.0 and floats.max() < -2.0
    ones = synthesize(SmokeTensor("m", "INT64", (2, 2), fixed_value=1), (2, 2), rng)
    assert ones.dtype == np.int64 and (ones == 1).all()
    s = synthesize(SmokeTensor("s", "BYTES", (3,), fixed_value="hi"), (3,), rng)
    assert list(s) == [b"hi"] * 3
    with pytest.raises(UserError, match="empty for UINT8"):
        synthesize(SmokeTensor("u", "UINT8", (2,), value_range=(-10, -1)), (2,), rng)


def test_default_shapes_for_batching_and_non_batching_models() -> None:
    m = _model()
    r = shape_range(m, m.inputs[0])
    assert (r.min, r.opt, r.max) == ((1, 1, 4), (4, 1, 4), (8, 1, 4))
    nb = _model(max_batch_size=0, inputs=(SmokeTensor("x", "FP32", (2, -1)),))
    assert shape_range(nb, nb.inputs[0]).max == (2, 1)


def test_explicit_range_respects_config_dims_and_max_batch() -> None:
    t = SmokeTensor("x", "FP32", (-1, 4), shapes=ShapeRange((1, 2, 9), (4, 8, 9), (32, 16, 9)))
    m = _model(inputs=(t,))
    r = shape_range(m, t)
    assert r.min == (1, 2, 4) and r.opt == (4, 8, 4) and r.max == (8, 16, 4)  # dim fixed, batch clipped
    with pytest.raises(UserError, match="rank 2 != 3"):
        bad = SmokeTensor("x", "FP32", (-1, 4), shapes=ShapeRange((1, 2), (1, 2), (1, 2)))
        shape_range(_model(inputs=(bad,)), bad)


def test_cases_cover_min_opt_max_and_preferred_batches_without_duplicates() -> None:
    m = _model(preferred_batch_sizes=(4, 2))
    cases = plan_cases(m)
    assert [c.label for c in cases] == ["min", "opt/batch4", "max", "batch2"]
    assert [c.batch for c in cases] == [1, 4, 8, 2]
    assert cases[-1].shapes["x"] == (2, 1, 4)
    static = plan_cases(_model(max_batch_size=0, inputs=(SmokeTensor("x", "FP32", (3,)),)))
    assert [(c.label, c.batch) for c in static] == [("min/opt/max", 0)]


def test_all_inputs_of_a_case_share_the_batch_size() -> None:
    a = SmokeTensor("a", "FP32", (4,), shapes=ShapeRange((2, 4), (3, 4), (5, 4)))
    b = SmokeTensor("b", "INT64", (2,))
    cases = plan_cases(_model(inputs=(a, b)))
    for c in cases:
        assert c.shapes["a"][0] == c.shapes["b"][0] == c.batch


def test_inputs_are_deterministic_per_seed_and_differ_across_seeds() -> None:
    m = _model()
    case = plan_cases(m)[2]
    a, b, c = make_inputs(m, case, 7, 2), make_inputs(m, case, 7, 2), make_inputs(m, case, 8, 2)
    assert np.array_equal(a["x"], b["x"]) and not np.array_equal(a["x"], c["x"])


def test_golden_file_roundtrip_and_errors(tmp_path: Path) -> None:
    m = _model()
    good = tmp_path / "g.npz"
    np.savez(good, **{"inputs/x": np.ones((1, 1, 4), np.float32), "outputs/y": np.zeros((1, 3))})
    inputs, outputs = load_golden(good, m)
    assert set(inputs) == {"x"} and set(outputs) == {"y"}
    bad = tmp_path / "b.npz"
    np.savez(bad, **{"outputs/z": np.zeros(3)})
    with pytest.raises(UserError, match=r"missing inputs/x.*unknown outputs \['z'\]"):
        load_golden(bad, m)
    with pytest.raises(UserError, match="cannot read golden file"):
        load_golden(tmp_path / "absent.npz", m)


def test_contract_validation() -> None:
    with pytest.raises(UserError, match="preferred batch sizes \\[16\\]"):
        _model(preferred_batch_sizes=(16,))
    with pytest.raises(UserError, match="1 <= min <= opt <= max"):
        SmokeTensor("x", "FP32", (-1,), shapes=ShapeRange((2,), (1,), (3,)))
    with pytest.raises(UserError, match="1 <= min <= opt <= max"):
        SmokeTensor("x", "FP32", (-1,), shapes=ShapeRange((2,), (1, 1), (3,)))
    with pytest.raises(UserError, match="unknown data type"):
        SmokeTensor("x", "float8", (1,))
    assert SmokeTensor("x", "bytes", (1,)).dtype == "STRING"


def test_value_range_is_inclusive_like_the_spec() -> None:
    rng = np.random.default_rng(2)
    ints = synthesize(SmokeTensor("i", "INT32", (200,), value_range=(0, 2)), (200,), rng)
    assert set(np.unique(ints).tolist()) == {0, 1, 2}
    assert (synthesize(SmokeTensor("i", "INT64", (5,), value_range=(3, 3)), (5,), rng) == 3).all()
    assert (synthesize(SmokeTensor("f", "FP32", (5,), value_range=(2.0, 2.0)), (5,), rng) == 2.0).all()
    with pytest.raises(UserError, match="low <= high"):
        SmokeTensor("x", "FP32", (1,), value_range=(1.0, 0.0))
