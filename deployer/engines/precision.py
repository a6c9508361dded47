"""Strongly typed precision: put fp16 / int8 into the ONNX itself, before TensorRT sees it.

TensorRT 11 and TensorRT-RTX have no FP16/INT8 builder flags (and TensorRT 10 rejects them on strongly
typed networks), so the precision must be in the graph:

* fp16: onnxconverter-common `float16.convert_float_to_float16(model, keep_io_types=...)`; I/O stay fp32
  unless the spec declares them FP16.
* int8: ONNX Runtime post-training quantization to Q/DQ, calibrated on the model's calibration samples,
  with the settings TensorRT's parser accepts: symmetric int8 activations and per-channel weights, and
  the bias left in float (`QuantizeBias: False`: an INT32 DequantizeLinear bias is rejected by the
  parser, "input has type Int32 but must have type FP8, FP4, Int4, Int8, or UInt8").

Both outputs are content-addressed files under `<cache_dir>/onnx/` (key: source digest, precision,
converter settings, calibration digest), so an unchanged model is converted once. Both are ordinary ONNX
models that ONNX Runtime runs (accuracy is measured on them, and `--fallback onnxruntime` can serve them).
Heavy dependencies are imported lazily: `onnxconverter-common` is the `precision` extra.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from deployer.errors import BuildError, MissingDependency, UserError

from .cache import file_lock, files_digest, onnx_digest
from .calibration import load_calibration_arrays
from .request import BuildRequest, CalibrationSettings

LOGGER = logging.getLogger(__name__)

# The ONNX Runtime settings of the issue/recipe (verified-recipes.md section 4): Q/DQ format, int8
# activations and weights, per-channel weights, symmetric (TensorRT needs zero points of 0), float bias.
QDQ_EXTRA_OPTIONS: dict[str, Any] = {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False}
MIN_CALIBRATION_SAMPLES = 100  # fewer gives ranges from too few activations; the recipe used 100-500


@dataclass(frozen=True)
class PreparedOnnx:
    """The ONNX a strongly typed build uses for `precision`, and how it was made."""

    path: Path
    digest: str
    precision: str
    method: str  # "onnxconverter-common float16 (keep_io_types=True)" / "onnxruntime quantize_static QDQ ..."
    calibration_samples: int = 0  # int8: samples the quantizer calibrated on
    holdout: int = 0  # int8: trailing calibration samples left out of calibration (used for evaluation)


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def _key(doc: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def _load(source: Path) -> Any:
    import onnx

    return onnx.load(str(source))  # with external data: the converted model is saved self-contained


def _save(model: Any, dst: Path) -> None:
    import onnx

    tmp = dst.with_name(f".{dst.name}.tmp")
    dst.parent.mkdir(parents=True, exist_ok=True)
    if model.ByteSize() > 1_900_000_000:  # protobuf's 2 GB limit: keep the weights beside the graph
        onnx.save_model(model, str(tmp), save_as_external_data=True, location=dst.name + ".data")
    else:
        onnx.save_model(model, str(tmp))
    tmp.replace(dst)


def fp16_onnx(source: Path, cache_dir: Path, *, keep_io_types: bool = True, source_digest: str | None = None) -> Path:
    """The fp16 version of `source` (cached by content); I/O stay fp32 when `keep_io_types`.

    Raises:
        MissingDependency: onnxconverter-common is not installed (exit 3).
        BuildError: the converter fails on this graph (exit 1).
    """
    try:
        from onnxconverter_common import float16  # type: ignore[import-untyped, unused-ignore]
    except ImportError as exc:
        raise MissingDependency(
            "fp16 on a strongly typed TensorRT needs onnxconverter-common to convert the ONNX",
            hint="pip install 'triton-deployer[precision]' (or onnxconverter-common)",
        ) from exc
    digest = source_digest or onnx_digest(source)
    key = _key({"v": 2, "src": digest, "to": "fp16", "keep_io_types": keep_io_types,
                "onnxconverter-common": _version("onnxconverter-common"), "onnx": _version("onnx")})
    dst = cache_dir / "onnx" / f"{key}.fp16.onnx"
    with file_lock(cache_dir / "onnx" / f"{key}.lock"):
        if dst.is_file():
            return dst
        try:
            converted = float16.convert_float_to_float16(_load(source), keep_io_types=keep_io_types)
            if keep_io_types:
                _rewire_output_consumers(converted)
        except Exception as exc:  # the converter raises plain Exceptions/ValueErrors on graphs it cannot handle
            raise BuildError(f"converting {source} to fp16 failed: {exc}",
                             hint="convert it yourself (ModelOpt AutoCast) and point `source` at the result") from exc
        _save(converted, dst)
    LOGGER.info("converted %s to fp16: %s", source.name, dst)
    return dst


def _rewire_output_consumers(model: Any) -> int:
    """Feed nodes that read a graph output the fp16 tensor the output is cast from; returns nodes changed.

    With keep_io_types=True, onnxconverter-common 1.16 casts each graph output back to fp32 but leaves
    its other consumers reading the fp32 name while their outputs stay declared fp16 — ONNX Runtime then
    refuses the model ("Type (tensor(float16)) of output arg ... does not match expected type"), e.g. a
    classifier whose `logits` output also feeds the Softmax of its `probabilities` output.
    """
    outputs = {o.name for o in model.graph.output}
    pre_cast = {n.output[0]: n.input[0] for n in model.graph.node
                if n.op_type == "Cast" and n.output and n.output[0] in outputs and n.input[0].startswith("_cast_to_")}
    changed = 0
    for node in model.graph.node:
        if node.op_type == "Cast" and node.output and node.output[0] in pre_cast:
            continue
        for i, name in enumerate(node.input):
            if name in pre_cast:
                node.input[i] = pre_cast[name]
                changed += 1
    return changed


def unique_unknown_dims_onnx(source: Path, cache_dir: Path) -> Path:
    """`source`, or a copy (cached by content) whose graph I/O dims named "?" get unique names.

    TensorRT takes equal dimension names as equal at runtime; paddle2onnx names every unknown dim "?"
    (PP-OCR's text-direction classifier: H and W both "?"), so the builder sees H == W and fails
    ("contradictory IOptimizationProfile kMIN/kMAX constraints"). A negative dim_value (invalid ONNX,
    also paddle2onnx's) becomes an unnamed dynamic dim.
    """
    import onnx

    model = onnx.load(str(source), load_external_data=False)
    dims = [d for vi in (*model.graph.input, *model.graph.output) for d in vi.type.tensor_type.shape.dim]
    if sum(d.HasField("dim_param") and d.dim_param == "?" for d in dims) < 2:
        return source
    key = _key({"v": 1, "src": onnx_digest(source), "fix": "unique-unknown-dims"})
    dst = cache_dir / "onnx" / f"{key}.dims.onnx"
    with file_lock(cache_dir / "onnx" / f"{key}.lock"):
        if dst.is_file():
            return dst
        model = _load(source)
        count = 0
        for vi in (*model.graph.input, *model.graph.output, *model.graph.value_info):
            for d in vi.type.tensor_type.shape.dim:
                if d.HasField("dim_param") and d.dim_param == "?":
                    d.dim_param = f"unknown_{count}"
                    count += 1
                elif d.HasField("dim_value") and d.dim_value < 0:
                    d.Clear()
        _save(model, dst)
    LOGGER.info("%s: %d unknown dims named '?' renamed apart for TensorRT: %s", source.name, count, dst)
    return dst


class _DropPreprocessAdvice(logging.Filter):
    """Drops ONNX Runtime's "Please consider (to run) pre-processing before quantization" root-logger lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


class _Reader:
    """`onnxruntime.quantization.CalibrationDataReader` over in-memory calibration arrays."""

    def __init__(self, arrays: Mapping[str, npt.NDArray[Any]], batch_size: int) -> None:
        self._arrays = arrays
        self._batch = batch_size
        self._it = self._batches()

    def _batches(self) -> Iterator[dict[str, npt.NDArray[Any]]]:
        n = next(iter(self._arrays.values())).shape[0]
        for lo in range(0, n - self._batch + 1, self._batch):
            yield {k: np.ascontiguousarray(a[lo:lo + self._batch]) for k, a in self._arrays.items()}

    def get_next(self) -> dict[str, npt.NDArray[Any]] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = self._batches()


def model_input_dtypes(source: Path) -> dict[str, str]:
    """Graph input name -> TensorRT DataType name (what the calibration arrays are cast to)."""
    import onnx

    from .preflight import onnx_inputs

    return {i.name: i.dtype for i in onnx_inputs(onnx.load(str(source), load_external_data=False))}


def calibration_split(
    settings: CalibrationSettings, names: Sequence[str], dtypes: Mapping[str, str], holdout: int
) -> tuple[dict[str, npt.NDArray[Any]], dict[str, npt.NDArray[Any]]]:
    """(calibration arrays, held-out evaluation arrays): the last `holdout` samples are never calibrated on."""
    arrays = load_calibration_arrays(settings.data_files, names, dtypes)
    n = next(iter(arrays.values())).shape[0]
    if settings.max_batches is not None:
        n = min(n, settings.max_batches * settings.batch_size + holdout)
    keep = n - holdout
    if keep < settings.batch_size:
        raise UserError(
            f"calibration data has {n} samples: after holding out {holdout} for evaluation, fewer than one "
            f"batch of {settings.batch_size} is left to calibrate on",
            hint="give more calibration samples (100-500), or evaluation samples in `accuracy.data`",
        )
    calib = {k: a[:keep] for k, a in arrays.items()}
    held = {k: a[keep:n] for k, a in arrays.items()}
    return calib, held


def int8_qdq_onnx(
    source: Path,
    cache_dir: Path,
    settings: CalibrationSettings,
    *,
    holdout: int = 0,
    source_digest: str | None = None,
) -> tuple[Path, int]:
    """A Q/DQ int8 ONNX of `source` calibrated on `settings` (cached by content); (path, samples used).

    Raises:
        UserError: calibration data problems (exit 2).
        BuildError: ONNX Runtime's quantizer fails on this graph (exit 1).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    digest = source_digest or onnx_digest(source)
    key = _key({"v": 1, "src": digest, "to": "int8-qdq", "data": files_digest(settings.data_files),
                "batch_size": settings.batch_size, "max_batches": settings.max_batches, "holdout": holdout,
                "options": QDQ_EXTRA_OPTIONS, "onnxruntime": _version("onnxruntime")})
    dst = cache_dir / "onnx" / f"{key}.int8-qdq.onnx"
    dtypes = model_input_dtypes(source)
    with file_lock(cache_dir / "onnx" / f"{key}.lock"):
        calib, _ = calibration_split(settings, list(dtypes), dtypes, holdout)
        samples = next(iter(calib.values())).shape[0]
        if dst.is_file():
            return dst, samples
        if samples < MIN_CALIBRATION_SAMPLES:
            LOGGER.warning("calibrating %s on %d samples; 100-500 representative samples give steadier ranges",
                           source.name, samples)
        tmp = dst.with_name(f".{dst.name}.tmp.onnx")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        root = logging.getLogger()
        hush = _DropPreprocessAdvice()
        root.addFilter(hush)  # ORT logs its pre-processing advice on the root logger, twice per model
        try:
            quantize_static(
                str(source), str(tmp), _Reader(calib, settings.batch_size),
                quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                per_channel=True, calibrate_method=CalibrationMethod.MinMax, extra_options=dict(QDQ_EXTRA_OPTIONS),
            )
        except Exception as exc:  # the quantizer raises whatever its graph passes raise
            tmp.unlink(missing_ok=True)
            raise BuildError(f"int8 Q/DQ quantization of {source} failed: {exc}",
                             hint="quantize it yourself (ModelOpt) and point `source` at the Q/DQ ONNX") from exc
        finally:
            root.removeFilter(hush)
        tmp.replace(dst)
    LOGGER.info("quantized %s to int8 Q/DQ on %d samples: %s", source.name, samples, dst)
    return dst, samples


def prepare_precision_onnx(request: BuildRequest, source_digest: str, *, holdout: int = 0) -> PreparedOnnx:
    """Convert (fp16) or quantize (int8) `request.onnx_path` for a strongly typed build.

    Raises:
        UserError: int8 without calibration data, or a precision deployer cannot put into an ONNX.
    """
    p = request.precision
    if p == "fp16":
        path = fp16_onnx(request.onnx_path, request.cache_dir, keep_io_types=request.keep_io_types,
                         source_digest=source_digest)
        how = f"onnxconverter-common {_version('onnxconverter-common')} float16 (keep_io_types={request.keep_io_types})"
        return PreparedOnnx(path, onnx_digest(path), p, how)
    if p == "int8":
        if request.calibration is None:
            raise UserError(f"model {request.model_name!r}: int8 needs calibration data to quantize the ONNX",
                            hint="add `calibration: {data: [samples.npz]}` with 100-500 representative inputs")
        path, samples = int8_qdq_onnx(request.onnx_path, request.cache_dir, request.calibration,
                                      holdout=holdout, source_digest=source_digest)
        how = (f"onnxruntime {_version('onnxruntime')} quantize_static QDQ int8 per-channel symmetric "
               f"MinMax, bias float, {samples} samples")
        return PreparedOnnx(path, onnx_digest(path), p, how, samples, holdout)
    raise UserError(f"model {request.model_name!r}: deployer cannot put {p} into an ONNX itself",
                    hint="convert with ModelOpt and point `source` at the result")
