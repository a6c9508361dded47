"""Tolerance comparison and default tolerances: it passes when close and fails when not."""

from __future__ import annotations

import numpy as np
import pytest

from deployer.smoke.compare import compare_arrays, default_tolerance


def test_defaults_by_precision() -> None:
    assert default_tolerance("FP32") == (1e-4, 1e-3)
    assert default_tolerance("fp16") == (1e-2, 1e-2)
    assert default_tolerance("INT64") == (0.0, 0.0)
    assert default_tolerance("BOOL") == (0.0, 0.0)
    assert default_tolerance("STRING") == (0.0, 0.0)
    # an FP16 engine behind FP32 I/O gets FP16 tolerances; FP32 precision does not tighten FP16 outputs
    assert default_tolerance("FP32", "fp16") == (1e-2, 1e-2)
    assert default_tolerance("FP16", "fp32") == (1e-2, 1e-2)


def test_close_values_pass_and_report_errors() -> None:
    ref = np.array([1.0, 2.0, -4.0], np.float32)
    got = ref + np.array([5e-5, -1e-4, 0.0], np.float32)
    c = compare_arrays(got, ref, 1e-4, 1e-3)
    assert c.ok and c.mismatched == 0 and c.total == 3
    assert c.max_abs == pytest.approx(1e-4, rel=1e-2)
    assert c.max_rel == pytest.approx(5e-5, rel=1e-2)


def test_out_of_tolerance_fails_with_worst_element() -> None:
    ref = np.zeros((2, 3), np.float32)
    got = ref.copy()
    got[1, 2] = 0.5
    c = compare_arrays(got, ref, 1e-4, 1e-3)
    assert not c.ok and c.mismatched == 1 and c.max_abs == pytest.approx(0.5)
    assert "worst at [1, 2]" in c.message and "served 0.5" in c.message


def test_relative_tolerance_scales_with_reference() -> None:
    ref = np.array([1000.0])
    assert compare_arrays(ref * 1.0005, ref, 0.0, 1e-3).ok
    assert not compare_arrays(ref * 1.002, ref, 0.0, 1e-3).ok


def test_integers_are_exact_and_shape_mismatch_fails() -> None:
    ref = np.arange(6, dtype=np.int64).reshape(2, 3)
    assert compare_arrays(ref.copy(), ref, 0, 0).ok
    off = ref.copy()
    off[0, 0] += 1
    assert not compare_arrays(off, ref, 0, 0).ok
    c = compare_arrays(ref.reshape(3, 2), ref, 1, 1)
    assert not c.ok and "shape [3, 2] != reference shape [2, 3]" in c.message


def test_nan_inf_and_strings() -> None:
    ref = np.array([np.nan, np.inf, 1.0])
    assert compare_arrays(ref.copy(), ref, 1e-6, 0).ok
    assert not compare_arrays(np.array([1.0, np.inf, 1.0]), ref, 1e-6, 0).ok  # NaN vs number
    assert not compare_arrays(np.array([np.nan, -np.inf, 1.0]), ref, 1e-6, 0).ok
    s_ref = np.array(["a", "b"], dtype=object)
    assert compare_arrays(np.array([b"a", b"b"], dtype=object), s_ref, 0, 0).ok
    c = compare_arrays(np.array([b"a", b"x"], dtype=object), s_ref, 0, 0)
    assert not c.ok and c.mismatched == 1


def test_fp16_engine_drift_passes_fp16_defaults_only() -> None:
    ref = np.linspace(-0.5, 0.5, 50, dtype=np.float32)
    served = ref + np.float32(0.004)  # typical FP16-engine accumulation drift
    assert not compare_arrays(served, ref, *default_tolerance("FP32")).ok
    assert compare_arrays(served, ref, *default_tolerance("FP32", "fp16")).ok


def test_lower_precisions_loosen_float_defaults() -> None:
    assert default_tolerance("FP32", "tf32") == default_tolerance("FP16")
    assert default_tolerance("FP32", "int8") == default_tolerance("FP32", "fp8") == (1e-1, 5e-2)
    assert default_tolerance("INT32", "int8") == (0.0, 0.0)  # integer outputs stay exact
    assert default_tolerance("FP32", "unknown-precision") == (1e-4, 1e-3)
