"""Numeric comparison of served outputs with a reference, with per-precision default tolerances."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from deployer.dtypes import normalize_dtype

__all__ = ["Comparison", "compare_arrays", "default_tolerance"]

# (atol, rtol) per float precision; integers, bools and strings must match exactly.
_FLOAT_TOL: dict[str, tuple[float, float]] = {
    "FP64": (1e-7, 1e-6),
    "FP32": (1e-4, 1e-3),
    "FP16": (1e-2, 1e-2),
    "BF16": (5e-2, 2e-2),
    "INT8": (1e-1, 5e-2),  # an int8-quantized engine behind float I/O
}
_PRECISION_ALIASES = {
    "FP32": "FP32",
    "TF32": "FP16",  # TF32 matmuls keep a 10-bit mantissa, like FP16
    "FP16": "FP16",
    "BF16": "BF16",
    "INT8": "INT8",
    "BEST": "INT8",
    "FP8": "INT8",
}


def default_tolerance(dtype: str, precision: str | None = None) -> tuple[float, float]:
    """(atol, rtol) for an output of `dtype` from an engine built at `precision`.

    The looser of the two applies, so an FP32 output of an FP16 engine gets FP16 tolerances.
    Non-float outputs get (0, 0): exact.
    """
    canon = normalize_dtype(dtype)
    if canon not in _FLOAT_TOL or canon == "INT8":
        return (0.0, 0.0)
    atol, rtol = _FLOAT_TOL[canon]
    if precision:
        key = _PRECISION_ALIASES.get(precision.strip().upper())
        if key is not None:
            patol, prtol = _FLOAT_TOL[key]
            atol, rtol = max(atol, patol), max(rtol, prtol)
    return (atol, rtol)


@dataclass(frozen=True)
class Comparison:
    """Result of comparing one served output with its reference."""

    ok: bool
    max_abs: float  # max |served - ref| (inf when shapes differ)
    max_rel: float  # max |served - ref| / |ref| over elements where ref != 0
    mismatched: int  # elements outside tolerance
    total: int
    message: str  # empty when ok; otherwise the first problem in words


def compare_arrays(
    served: npt.NDArray[np.generic], reference: npt.NDArray[np.generic], atol: float, rtol: float
) -> Comparison:
    """Compare element-wise: ok iff shapes match and `|s - r| <= atol + rtol * |r|` everywhere.

    NaN equals NaN; +-inf must match exactly. Strings and bools compare exactly.
    """
    s, r = np.asarray(served), np.asarray(reference)
    if s.shape != r.shape:
        return Comparison(
            False,
            float("inf"),
            float("inf"),
            max(s.size, r.size),
            max(s.size, r.size),
            f"shape {list(s.shape)} != reference shape {list(r.shape)}",
        )
    total = int(r.size)
    if total == 0:
        return Comparison(True, 0.0, 0.0, 0, 0, "")
    if s.dtype == object or r.dtype == object or s.dtype.kind in "SU" or r.dtype.kind in "SU":
        sb = np.vectorize(_as_bytes, otypes=[object])(s)
        rb = np.vectorize(_as_bytes, otypes=[object])(r)
        bad = int(np.count_nonzero(sb != rb))
        return Comparison(
            bad == 0,
            0.0 if bad == 0 else float("inf"),
            0.0 if bad == 0 else float("inf"),
            bad,
            total,
            "" if bad == 0 else f"{bad}/{total} string elements differ",
        )
    sf, rf = s.astype(np.float64), r.astype(np.float64)
    both_nan = np.isnan(sf) & np.isnan(rf)
    same_inf = np.isinf(sf) & np.isinf(rf) & (sf == rf)
    exact = both_nan | same_inf
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.where(exact, 0.0, np.abs(sf - rf))
        diff = np.where(np.isnan(diff), np.inf, diff)
        nonzero = (rf != 0) & ~exact & np.isfinite(rf)
        rel = np.where(nonzero, diff / np.where(nonzero, np.abs(rf), 1.0), 0.0)
        allowed = atol + rtol * np.abs(np.where(np.isfinite(rf), rf, 0.0))
    bad_mask = diff > allowed
    bad = int(np.count_nonzero(bad_mask))
    max_abs = float(diff.max())
    max_rel = float(rel.max()) if rel.size else 0.0
    message = ""
    if bad:
        worst = np.unravel_index(int(np.argmax(np.where(bad_mask, diff - allowed, -np.inf))), diff.shape)
        message = (
            f"{bad}/{total} elements outside atol={atol:g} rtol={rtol:g}; worst at {list(map(int, worst))}: "
            f"served {sf[worst]:.6g} vs reference {rf[worst]:.6g}"
        )
    return Comparison(bad == 0, max_abs, max_rel, bad, total, message)


def _as_bytes(v: object) -> bytes:
    if isinstance(v, bytes):
        return v
    if isinstance(v, np.bytes_):
        return bytes(v)
    return str(v).encode()
