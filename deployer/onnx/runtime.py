"""The one ONNX Runtime (CPU) session helper and the one synthetic-tensor generator.

`init` probes shapes with them, smoke computes its numeric reference with them: the same session
options, the same input casting and the same random data everywhere.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from deployer.dtypes import numpy_dtype
from deployer.errors import ModelFileError, UserError
from deployer.onnx.info import resolve_model_file

__all__ = ["OrtModel", "ort_model", "random_tensor"]

Array = npt.NDArray[Any]

# ONNX Runtime type strings -> numpy; a tensor is cast to the graph's type before feeding
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

# Defaults keep values small and non-negative: safe for log/sqrt-style ops and for index-like ints
# (token ids, embedding indices).
FLOAT_RANGE = (0.0, 1.0)
INT_RANGE = (0, 15)  # inclusive
STRING_RANGE = (0, 99)


class OrtModel:
    """A CPU ONNX Runtime session over one model file (or Triton's `model.onnx/` directory layout)."""

    def __init__(self, path: Path | str, *, threads: int | None = 2) -> None:
        import onnxruntime as ort

        file = resolve_model_file(path)
        opts = ort.SessionOptions()
        opts.log_severity_level = 4  # fatal only: failed runs are expected (probing) and reported by us
        if threads is not None:  # a small box runs client, server and reference side by side
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(str(file), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own exception types (Fail, InvalidGraph, ...)
            raise ModelFileError(
                f"ONNX Runtime cannot load {file}: {exc}",
                hint="check the opset and custom ops; the model must run on ONNX Runtime's CPU provider",
            ) from exc
        self.path = file
        self.input_types = {i.name: i.type for i in self._session.get_inputs()}
        self.output_names = tuple(o.name for o in self._session.get_outputs())

    def unsupported_reason(self) -> str:
        """Why this model cannot be fed numpy inputs (e.g. bfloat16 inputs), or "" when it can."""
        odd = {n: t for n, t in self.input_types.items() if t not in _ORT_NUMPY}
        if odd:
            return f"ONNX inputs of types ONNX Runtime cannot take from numpy here: {odd}"
        return ""

    def run(self, feeds: Mapping[str, Array], outputs: Sequence[str] = ()) -> dict[str, Array]:
        """Outputs by name for `feeds` (cast to the graph's input types). Raises ModelFileError on failure."""
        missing = sorted(set(self.input_types) - set(feeds))
        if missing:
            raise ModelFileError(
                f"model {self.path} needs inputs {missing} that were not given",
                hint="the spec's model must be the one that was deployed",
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
            shapes = ", ".join(f"{k}{list(np.shape(v))}:{np.asarray(v).dtype}" for k, v in feeds.items())
            raise ModelFileError(f"ONNX Runtime failed to run {self.path} on inputs {shapes}: {exc}") from exc
        return {n: np.asarray(v) for n, v in zip(names, values, strict=True)}


def _text(v: object) -> str:
    return v.decode("utf-8", errors="replace") if isinstance(v, bytes) else str(v)


@functools.lru_cache(maxsize=8)
def _cached(file: str, mtime_ns: int, size: int) -> OrtModel:
    del mtime_ns, size  # only part of the cache key: a rewritten file is loaded again
    return OrtModel(file)


def ort_model(path: Path | str) -> OrtModel:
    """A shared OrtModel for `path`, reused while the file is unchanged (probing runs it many times)."""
    file = resolve_model_file(path)
    st = file.stat()
    return _cached(str(file.resolve()), st.st_mtime_ns, st.st_size)


def random_tensor(
    dtype: str,
    shape: Sequence[int],
    rng: np.random.Generator,
    value_range: tuple[float, float] | None = None,
    fixed_value: Any = None,
    *,
    name: str = "",
) -> Array:
    """A tensor of a canonical dtype and shape: `fixed_value` everywhere, or uniform values in the range.

    Ranges are inclusive for integers and strings (decimal numbers as bytes), [low, high) for floats;
    the defaults are INT_RANGE, FLOAT_RANGE and STRING_RANGE. BF16 values are float32 arrays rounded to
    bfloat16 precision, so a client and a reference agree on them.
    """
    np_dtype = numpy_dtype(dtype)
    size = tuple(int(d) for d in shape)
    if fixed_value is not None:
        if dtype in ("STRING", "BYTES"):
            raw = fixed_value if isinstance(fixed_value, bytes) else str(fixed_value).encode()
            arr: Array = np.empty(size, dtype=object)
            arr.fill(raw)
            return arr
        full = np.full(size, fixed_value, dtype=np_dtype)
        return _bf16_round(full) if dtype == "BF16" else full
    if dtype == "BOOL":
        return rng.integers(0, 2, size=size).astype(np.bool_)
    if dtype in ("STRING", "BYTES"):
        lo, hi = value_range or STRING_RANGE
        ints = rng.integers(int(lo), int(hi), size=size, endpoint=True)
        out: Array = np.empty(size, dtype=object)
        for idx, v in np.ndenumerate(ints):
            out[idx] = str(int(v)).encode()
        return out
    if np.issubdtype(np_dtype, np.integer):
        info = np.iinfo(np_dtype)  # type: ignore[type-var]
        lo, hi = value_range or INT_RANGE
        low = max(int(np.ceil(lo)), int(info.min))
        high = min(int(np.floor(hi)), int(info.max))  # inclusive
        if high < low:
            raise UserError(
                f"input {name!r}: value_range {value_range} is empty for {dtype}",
                hint=f"use a range within [{info.min}, {info.max}]",
            )
        kind = np.int64 if low < 0 else np.uint64
        return rng.integers(low, high, size=size, dtype=kind, endpoint=True).astype(np_dtype)
    lo_f, hi_f = value_range or FLOAT_RANGE
    values = rng.uniform(float(lo_f), float(hi_f), size=size)
    if dtype == "BF16":
        return _bf16_round(values.astype(np.float32))
    return values.astype(np_dtype)


def _bf16_round(values: Array) -> Array:
    """Truncate float32 values to bfloat16 precision, so converting to bfloat16 later is exact."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32) & np.uint32(0xFFFF0000)
    return bits.view(np.float32)
