"""Accuracy of a converted (fp16) or quantized (int8 Q/DQ) ONNX against the fp32 model, on ONNX Runtime CPU.

Measured before any GPU is involved: both models run on the same evaluation samples, which for int8
are disjoint from the calibration samples. Classifiers (an output [N, C], C >= 2) get top-1 agreement
and, with labels, accuracy of both models; every output gets max abs / rel error. `check_budget` turns
an `AccuracyBudget` into a BuildError listing every limit exceeded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from deployer.errors import BuildError, UserError

from .calibration import load_calibration_arrays
from .request import AccuracyBudget, Profile

LOGGER = logging.getLogger(__name__)
Arrays = dict[str, npt.NDArray[Any]]
SYNTHETIC_SAMPLES = 16


@dataclass(frozen=True)
class AccuracyReport:
    """How a converted model agrees with the fp32 one; `as_dict()` goes into the build manifest."""

    precision: str
    samples: int
    data: str  # where the evaluation samples came from
    classifier_output: str | None
    top1_agreement: float | None
    accuracy_fp32: float | None
    accuracy: float | None
    max_abs_error: float
    max_rel_error: float
    per_output: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)

    def summary(self) -> str:
        """One line for logs and the CLI."""
        parts = [f"{self.precision} vs fp32 on {self.samples} samples ({self.data})"]
        if self.top1_agreement is not None:
            parts.append(f"top-1 agreement {self.top1_agreement:.4f}")
        if self.accuracy is not None and self.accuracy_fp32 is not None:
            parts.append(f"accuracy {self.accuracy:.4f} (fp32 {self.accuracy_fp32:.4f})")
        parts.append(f"max abs error {self.max_abs_error:.3g}, max rel error {self.max_rel_error:.3g}")
        return ", ".join(parts)


def _session(path: Path) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # fp16 graphs log a warning per inserted Cast
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def _run(session: Any, feeds: Arrays, chunk: int) -> dict[str, npt.NDArray[Any]]:
    names = [o.name for o in session.get_outputs()]
    n = next(iter(feeds.values())).shape[0]
    parts: dict[str, list[npt.NDArray[Any]]] = {k: [] for k in names}
    for lo in range(0, n - chunk + 1, chunk):
        out = session.run(names, {k: v[lo:lo + chunk] for k, v in feeds.items()})
        for k, v in zip(names, out, strict=True):
            parts[k].append(np.asarray(v))
    return {k: np.concatenate(v, axis=0) for k, v in parts.items() if v}


def _classifier_output(outputs: Mapping[str, npt.NDArray[Any]]) -> str | None:
    for name, arr in outputs.items():
        if arr.ndim == 2 and arr.shape[1] >= 2 and np.issubdtype(arr.dtype, np.floating):
            return name
    return None


def synthetic_feeds(session: Any, profile: Profile | None, seed: int = 0) -> Arrays:
    """Random inputs at profile 0's opt shapes (or the ONNX shapes, dynamic dims as 1), for models with
    no evaluation data: enough to measure numeric error, never accuracy."""
    rng = np.random.default_rng(seed)
    feeds: Arrays = {}
    for i in session.get_inputs():
        shapes = profile.get(i.name) if profile else None
        shape = list(shapes.opt) if shapes else [d if isinstance(d, int) and d > 0 else 1 for d in i.shape]
        shape[0:1] = [shape[0] * SYNTHETIC_SAMPLES] if shape else []
        if "float" in i.type:
            feeds[i.name] = rng.standard_normal(shape).astype(np.float16 if "16" in i.type else np.float32)
        else:
            feeds[i.name] = np.zeros(shape, dtype=np.int64 if "int64" in i.type else np.int32)
    return feeds


def load_eval_feeds(files: Sequence[Path], names: Sequence[str], dtypes: Mapping[str, str], max_samples: int) -> Arrays:
    """Evaluation inputs from .npy/.npz files (the calibration-file format), at most `max_samples`."""
    arrays = load_calibration_arrays(files, names, dtypes)
    return {k: v[:max_samples] for k, v in arrays.items()}


def evaluate(
    reference: Path,
    candidate: Path,
    feeds: Arrays,
    *,
    precision: str,
    data: str,
    labels: npt.NDArray[Any] | None = None,
    chunk: int = 1,
) -> AccuracyReport:
    """Run both ONNX models on `feeds` (ONNX Runtime CPU) and compare their outputs.

    Raises:
        UserError: labels do not match the sample count.
        BuildError: a model does not run on ONNX Runtime (exit 1).
    """
    started = time.monotonic()
    try:
        ref = _run(_session(reference), feeds, chunk)
        got = _run(_session(candidate), feeds, chunk)
    except Exception as exc:  # onnxruntime raises its own exception types (Fail, InvalidArgument, ...)
        raise BuildError(f"cannot run the {precision} model on ONNX Runtime to measure its accuracy: {exc}") from exc
    per: dict[str, dict[str, float]] = {}
    for name, r in ref.items():
        g = got[name].astype(np.float64)
        diff = np.abs(g - r.astype(np.float64))
        scale = float(np.max(np.abs(r))) if r.size else 0.0
        per[name] = {"max_abs_error": float(diff.max(initial=0.0)),
                     "max_rel_error": float(diff.max(initial=0.0) / scale) if scale > 0 else 0.0}
    n = next(iter(ref.values())).shape[0] if ref else 0
    cls = _classifier_output(ref)
    agreement = acc32 = acc = None
    if cls is not None:
        top_ref, top_got = ref[cls].argmax(axis=1), got[cls].argmax(axis=1)
        agreement = float(np.mean(top_ref == top_got))
        if labels is not None:
            if labels.shape[0] < n:
                raise UserError(f"accuracy labels have {labels.shape[0]} entries for {n} evaluation samples")
            lab = labels[:n].astype(np.int64).reshape(-1)
            acc32, acc = float(np.mean(top_ref == lab)), float(np.mean(top_got == lab))
    report = AccuracyReport(
        precision=precision, samples=n, data=data, classifier_output=cls, top1_agreement=agreement,
        accuracy_fp32=acc32, accuracy=acc,
        max_abs_error=max((v["max_abs_error"] for v in per.values()), default=0.0),
        max_rel_error=max((v["max_rel_error"] for v in per.values()), default=0.0),
        per_output=per, seconds=round(time.monotonic() - started, 3),
    )
    LOGGER.info("accuracy: %s", report.summary())
    return report


def budget_violations(report: Mapping[str, Any], budget: AccuracyBudget) -> list[str]:
    """Every limit of `budget` that `report` (an AccuracyReport dict) exceeds."""
    out: list[str] = []
    agreement = report.get("top1_agreement")
    if budget.min_top1_agreement is not None:
        if agreement is None:
            out.append("min_top1_agreement is set but the model has no classifier output [N, C]")
        elif agreement < budget.min_top1_agreement:
            out.append(f"top-1 agreement {agreement:.4f} is below min_top1_agreement {budget.min_top1_agreement}")
    if budget.max_accuracy_drop is not None:
        a32, a = report.get("accuracy_fp32"), report.get("accuracy")
        if a32 is None or a is None:
            out.append("max_accuracy_drop is set but there are no labels (accuracy.labels) for a classifier output")
        elif a32 - a > budget.max_accuracy_drop:
            out.append(f"accuracy dropped {a32 - a:.4f} ({a32:.4f} -> {a:.4f}), over max_accuracy_drop "
                       f"{budget.max_accuracy_drop}")
    for key in ("max_abs_error", "max_rel_error"):
        limit = getattr(budget, key)
        if limit is not None and float(report.get(key, 0.0)) > limit:
            out.append(f"{key.replace('_', ' ')} {float(report[key]):.4g} is over {key} {limit}")
    return out


def check_budget(model: str, report: Mapping[str, Any], budget: AccuracyBudget | None) -> None:
    """Raise BuildError (exit 1) when `report` is over `budget`; nothing when no budget is set."""
    if budget is None:
        return
    problems = budget_violations(report, budget)
    if problems:
        raise BuildError(
            f"model {model!r}: the {report.get('precision')} model is over its accuracy budget",
            details="\n".join(f"- {p}" for p in problems),
            hint="use more representative calibration data, a higher precision, or relax `accuracy` in the spec",
        )


def _chunk(source: Path, request_batch: int, n: int) -> int:
    """Samples per ONNX Runtime call: the model's fixed batch if it has one, else `request_batch`."""
    import onnx

    model = onnx.load(str(source), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    for vi in model.graph.input:
        dims = vi.type.tensor_type.shape.dim
        if vi.name not in inits and dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0:
            return int(dims[0].dim_value)
    return max(1, min(request_batch, n))


def measure(request: Any, prepared: Any) -> AccuracyReport:
    """Evaluate `prepared` (a PreparedOnnx of `request`) against the fp32 source on ONNX Runtime CPU.

    Samples: `accuracy.data`; else (int8) the calibration samples held out of calibration; else (fp16)
    the calibration data; else synthetic inputs (numeric error only). Labels (`accuracy.labels`) align
    with `accuracy.data`, or with the calibration samples for the hold-out.
    """
    from .precision import calibration_split, model_input_dtypes

    budget: AccuracyBudget = request.accuracy or AccuracyBudget()
    dtypes = model_input_dtypes(request.onnx_path)
    names = list(dtypes)
    labels = np.load(budget.labels, allow_pickle=False) if budget.labels else None
    calib = request.calibration
    if budget.data_files:
        feeds, data = load_eval_feeds(budget.data_files, names, dtypes, budget.max_samples), "accuracy.data"
    elif prepared.precision == "int8" and calib is not None and prepared.holdout:
        kept, feeds = calibration_split(calib, names, dtypes, prepared.holdout)
        data = f"calibration samples held out of calibration ({prepared.holdout})"
        if labels is not None:
            start = next(iter(kept.values())).shape[0]
            labels = labels[start:start + prepared.holdout]
    elif calib is not None:
        arrays = load_calibration_arrays(calib.data_files, names, dtypes)
        feeds, data = {k: v[:budget.max_samples] for k, v in arrays.items()}, "calibration data"
    else:
        feeds = synthetic_feeds(_session(request.onnx_path), request.profiles[0] if request.profiles else None)
        data, labels = "synthetic inputs (no evaluation data: numeric error only)", None
    n = next(iter(feeds.values())).shape[0]
    chunk = _chunk(request.onnx_path, calib.batch_size if calib else 8, n)
    n -= n % chunk
    feeds = {k: v[:n] for k, v in feeds.items()}
    if n == 0:
        raise UserError(f"model {request.model_name!r}: no evaluation samples to measure {prepared.precision} accuracy")
    return evaluate(request.onnx_path, prepared.path, feeds, precision=prepared.precision, data=data,
                    labels=labels, chunk=chunk)
