"""The numeric reference: the model's ONNX file run in-process with ONNX Runtime on CPU."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from deployer.errors import ModelFileError

__all__ = ["OnnxReference"]

LOGGER = logging.getLogger(__name__)

# ONNX Runtime type strings -> numpy; a served tensor is cast to the ONNX type before feeding
# (e.g. a TensorRT < 10 engine serves INT32 where the ONNX graph takes INT64).
_ORT_NUMPY: dict[str, Any] = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int8)": np.int8,
    "tensor(int16)": np.int16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(uint8)": np.uint8,
    "tensor(uint16)": np.uint16,
    "tensor(uint32)": np.uint32,
    "tensor(uint64)": np.uint64,
    "tensor(bool)": np.bool_,
    "tensor(string)": np.object_,
}


class OnnxReference:
    """An ONNX Runtime CPU session over one model file, created once and reused for every case."""

    def __init__(self, path: Path) -> None:
        import onnxruntime as ort

        path = Path(path)
        if path.is_dir():  # Triton's "model.onnx directory with external data" layout
            path = path / "model.onnx"
        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # warnings about unused initializers are noise here
        try:
            self._session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own exception types (Fail, InvalidGraph, ...)
            raise ModelFileError(
                f"ONNX Runtime cannot load the reference model {path}: {exc}",
                hint="check the onnx path in the spec, or drop it to skip numeric comparison",
            ) from exc
        self.path = path
        self.input_types = {i.name: i.type for i in self._session.get_inputs()}
        self.output_names = tuple(o.name for o in self._session.get_outputs())

    def unsupported_reason(self) -> str:
        """Why this reference cannot be fed numpy inputs (e.g. bfloat16 inputs), or "" when it can."""
        odd = {n: t for n, t in self.input_types.items() if t not in _ORT_NUMPY}
        if odd:
            return f"ONNX inputs of types ONNX Runtime cannot take from numpy here: {odd}"
        return ""

    def run(self, feeds: Mapping[str, npt.NDArray[Any]], outputs: Sequence[str] = ()) -> dict[str, npt.NDArray[Any]]:
        """Outputs by name for `feeds` (cast to the graph's input types). Raises ModelFileError on failure."""
        missing = sorted(set(self.input_types) - set(feeds))
        if missing:
            raise ModelFileError(
                f"reference model {self.path} needs inputs {missing} that the served model does not have",
                hint="the spec's onnx path must be the model that was deployed",
            )
        cast: dict[str, Any] = {}
        for name, arr in feeds.items():
            if name not in self.input_types:
                continue
            want = _ORT_NUMPY.get(self.input_types[name])
            a = np.asarray(arr)
            if want is np.object_:
                # ORT str()-s bytes objects ("b'12'"); Triton BYTES elements arrive as bytes.
                cast[name] = np.vectorize(_text, otypes=[np.object_])(a) if a.size else a.astype(np.object_)
                continue
            cast[name] = a.astype(want) if want is not None and a.dtype != np.dtype(want) else a
        names = [n for n in (outputs or self.output_names) if n in self.output_names]
        try:
            values = self._session.run(names, cast)
        except Exception as exc:
            raise ModelFileError(f"ONNX Runtime failed to run the reference model {self.path}: {exc}") from exc
        return {n: np.asarray(v) for n, v in zip(names, values, strict=True)}


def _text(v: object) -> str:
    return v.decode("utf-8", errors="replace") if isinstance(v, bytes) else str(v)
