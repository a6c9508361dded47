"""Tensor data types: one canonical name per type and its spelling in each place we write it.

Canonical names are Triton's `DataType` enum names without the `TYPE_` prefix (`FP32`, `INT64`,
`STRING`, ...). Every other spelling (config, wire, numpy, ONNX element types) is derived from them.
"""

from __future__ import annotations

from typing import Final, Literal

import numpy as np

__all__ = [
    "DTYPES",
    "config_dtype",
    "from_onnx_elem_type",
    "normalize_dtype",
    "numpy_dtype",
    "supported_by_backend",
    "wire_dtype",
]

DTYPES: Final[tuple[str, ...]] = (
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "STRING",
    "BF16",
)

# Aliases accepted from users (after upper-casing): numpy / ONNX / TensorRT / wire spellings.
_ALIASES: Final[dict[str, str]] = {
    "BYTES": "STRING",
    "STR": "STRING",
    "OBJECT": "STRING",
    "FLOAT": "FP32",
    "FLOAT32": "FP32",
    "HALF": "FP16",
    "FLOAT16": "FP16",
    "DOUBLE": "FP64",
    "FLOAT64": "FP64",
    "BFLOAT16": "BF16",
    "BOOLEAN": "BOOL",
    "INT": "INT32",
    "LONG": "INT64",
    "KFLOAT": "FP32",
    "KHALF": "FP16",
    "KBF16": "BF16",
    "KINT8": "INT8",
    "KINT32": "INT32",
    "KINT64": "INT64",
    "KBOOL": "BOOL",
    "KUINT8": "UINT8",
}

# onnx.TensorProto.DataType values -> canonical names (values are stable in the ONNX spec).
_ONNX_ELEM: Final[dict[int, str]] = {
    1: "FP32",  # FLOAT
    2: "UINT8",
    3: "INT8",
    4: "UINT16",
    5: "INT16",
    6: "INT32",
    7: "INT64",
    8: "STRING",
    9: "BOOL",
    10: "FP16",
    11: "FP64",
    12: "UINT32",
    13: "UINT64",
    16: "BF16",
}
_ONNX_UNSUPPORTED: Final[dict[int, str]] = {
    0: "UNDEFINED",
    14: "COMPLEX64",
    15: "COMPLEX128",
    17: "FLOAT8E4M3FN",
    18: "FLOAT8E4M3FNUZ",
    19: "FLOAT8E5M2",
    20: "FLOAT8E5M2FNUZ",
    21: "UINT4",
    22: "INT4",
    23: "FLOAT4E2M1",
}

_NUMPY: Final[dict[str, str]] = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
    "STRING": "object",
    # numpy has no bfloat16; tritonclient takes float32 arrays for BF16 tensors.
    "BF16": "float32",
}

_TRT_UNSUPPORTED: Final[frozenset[str]] = frozenset({"UINT16", "UINT32", "UINT64", "INT16", "FP64", "STRING"})
# ONNX Runtime has no bfloat16 I/O in Triton's onnxruntime backend mapping (brief A.2).
_ORT_UNSUPPORTED: Final[frozenset[str]] = frozenset({"BF16"})

Backend = Literal["tensorrt", "onnxruntime", "python"]


def normalize_dtype(text: str) -> str:
    """Return the canonical name for any accepted spelling (`fp32`, `TYPE_FP32`, `float32`, `BYTES`...).

    Raises ValueError listing the valid names when `text` is not a known data type.
    """
    if not isinstance(text, str):
        raise ValueError(f"data type must be a string, got {text!r}; valid names: {', '.join(DTYPES)}")
    key = text.strip().upper()
    if key.startswith("TYPE_"):
        key = key[len("TYPE_") :]
    elif key.startswith("TENSORPROTO.") or key.startswith("DATATYPE."):
        key = key.split(".", 1)[1]
    if key in DTYPES:
        return key
    if key in _ALIASES:
        return _ALIASES[key]
    raise ValueError(f"unknown data type {text!r}; valid names: {', '.join(DTYPES)}")


def config_dtype(d: str) -> str:
    """`config.pbtxt` spelling: `FP32` -> `TYPE_FP32`."""
    return "TYPE_" + normalize_dtype(d)


def wire_dtype(d: str) -> str:
    """tritonclient / KServe v2 datatype string: `FP32` -> `FP32`, `STRING` -> `BYTES`."""
    canon = normalize_dtype(d)
    return "BYTES" if canon == "STRING" else canon


def numpy_dtype(d: str) -> np.dtype[np.generic]:
    """numpy dtype used to build request arrays (STRING -> object, BF16 -> float32 as tritonclient wants)."""
    return np.dtype(_NUMPY[normalize_dtype(d)])


def from_onnx_elem_type(elem_type: int) -> str:
    """Canonical name for an ONNX `TensorProto.DataType` value; ValueError for types Triton cannot carry."""
    if elem_type in _ONNX_ELEM:
        return _ONNX_ELEM[elem_type]
    name = _ONNX_UNSUPPORTED.get(elem_type, f"element type {elem_type}")
    raise ValueError(
        f"ONNX data type {name} ({elem_type}) has no Triton equivalent; "
        f"supported: {', '.join(_ONNX_ELEM[k] for k in sorted(_ONNX_ELEM))}"
    )


def supported_by_backend(d: str, backend: str, *, trt_major: int = 10) -> bool:
    """Whether `backend` ("tensorrt", "onnxruntime", "python") can carry I/O of type `d`.

    TensorRT has no UINT16/32/64, INT16, FP64 or STRING I/O, and INT64/BF16 only from TensorRT 10.
    """
    canon = normalize_dtype(d)
    b = backend.strip().lower()
    if b in {"tensorrt", "tensorrt_plan", "trt"}:
        if canon in _TRT_UNSUPPORTED:
            return False
        return not (canon in {"INT64", "BF16"} and trt_major < 10)
    if b in {"onnxruntime", "onnxruntime_onnx", "ort"}:
        return canon not in _ORT_UNSUPPORTED
    if b == "python":
        return True
    raise ValueError(f"unknown backend {backend!r}; expected one of: tensorrt, onnxruntime, python")
