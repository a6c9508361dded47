"""check_outputs: presence, datatype, shape at the batch size, tolerance, reference coverage."""

from __future__ import annotations

import numpy as np

from deployer.smoke.checks import check_outputs
from deployer.smoke.targets import SmokeModel, SmokeOutput, SmokeTensor

MODEL = SmokeModel(
    "m",
    (SmokeTensor("x", "FP32", (4,)),),
    (SmokeOutput("y", "FP32", (-1, 3)), SmokeOutput("k", "INT64", (2,), atol=1)),
    max_batch_size=8,
)


def _served(y: np.ndarray, k: np.ndarray, y_dtype: str = "FP32") -> dict[str, tuple[str, np.ndarray | None]]:
    return {"y": (y_dtype, y), "k": ("INT64", k)}


Y = np.ones((2, 5, 3), np.float32)
K = np.array([[1, 2], [3, 4]], np.int64)


def test_pass_with_numbers() -> None:
    r = check_outputs("infer", MODEL, 2, _served(Y, K), {"y": Y + 1e-6, "k": K + 1})  # k: atol override 1
    assert r.status == "pass", r.details
    assert r.numbers["y.max_abs"] > 0 and r.numbers["k.max_abs"] == 1
    assert "2/2 outputs match" in r.message


def test_each_problem_is_reported() -> None:
    served = {"y": ("FP16", Y[:1]), "k": ("INT64", None)}
    r = check_outputs("infer", MODEL, 2, served, {"y": Y})
    assert r.status == "fail"
    assert "output 'k' missing from the response" in r.details
    assert "output 'y' datatype FP16, expected FP32" in r.details
    assert any("shape [1, 5, 3] does not fit [-1, -1, 3] at batch 2" in d for d in r.details)


def test_tolerance_failure_and_reference_coverage() -> None:
    r = check_outputs("infer", MODEL, 2, _served(Y, K), {"y": Y * 1.5})
    assert r.status == "fail"
    assert "output 'y' vs reference" in r.details[0] and r.numbers["y.max_abs"] == 0.5
    assert "output 'k' is not produced by the reference" in r.details[1]
    golden = check_outputs("golden", MODEL, 2, _served(Y, K), {"y": Y}, what="golden outputs", require_all=False)
    assert golden.status == "pass"


def test_without_reference_only_structure_is_checked() -> None:
    r = check_outputs("infer", MODEL, 2, _served(Y * 100, K), None)
    assert r.status == "pass" and "no numeric reference" in r.message and not r.numbers
