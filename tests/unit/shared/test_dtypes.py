"""deployer.dtypes: canonical names and every spelling derived from them, checked against the real
onnx and tritonclient tables rather than restated constants."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tritonclient.utils import np_to_triton_dtype, triton_to_np_dtype

from deployer.dtypes import (
    DTYPES,
    config_dtype,
    from_onnx_elem_type,
    normalize_dtype,
    numpy_dtype,
    supported_by_backend,
    wire_dtype,
)


def test_canonical_names_are_the_triton_enum_without_prefix() -> None:
    from tritonclient.grpc import model_config_pb2

    triton = [n.removeprefix("TYPE_") for n in model_config_pb2.DataType.keys() if n != "TYPE_INVALID"]  # noqa: SIM118
    assert list(DTYPES) == triton


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("FP32", "FP32"),
        ("TYPE_FP32", "FP32"),
        ("fp32", "FP32"),
        ("float32", "FP32"),
        ("float", "FP32"),
        (" type_int64 ", "INT64"),
        ("BYTES", "STRING"),
        ("bytes", "STRING"),
        ("half", "FP16"),
        ("float16", "FP16"),
        ("double", "FP64"),
        ("bfloat16", "BF16"),
        ("bool", "BOOL"),
        ("TensorProto.FLOAT", "FP32"),
        ("kHALF", "FP16"),
    ],
)
def test_normalize_accepts_common_spellings(text: str, expected: str) -> None:
    assert normalize_dtype(text) == expected


@pytest.mark.parametrize("bad", ["", "FP8", "complex64", "TYPE_INVALID", "float33", "INT4"])
def test_normalize_rejects_with_the_valid_names(bad: str) -> None:
    with pytest.raises(ValueError, match=r"valid names: BOOL, UINT8.*BF16") as info:
        normalize_dtype(bad)
    assert repr(bad) in str(info.value)


@given(st.sampled_from(DTYPES), st.booleans(), st.lists(st.booleans(), min_size=8, max_size=8))
def test_normalize_is_case_and_prefix_insensitive(name: str, prefix: bool, upper: list[bool]) -> None:
    text = ("TYPE_" if prefix else "") + name
    mixed = "".join(c.upper() if upper[i % 8] else c.lower() for i, c in enumerate(text))
    assert normalize_dtype(mixed) == name
    assert normalize_dtype(normalize_dtype(mixed)) == name


@pytest.mark.parametrize("d", DTYPES)
def test_config_and_wire_spellings(d: str) -> None:
    assert config_dtype(d) == f"TYPE_{d}"
    assert config_dtype(config_dtype(d)) == f"TYPE_{d}"
    assert wire_dtype(d) == ("BYTES" if d == "STRING" else d)


@pytest.mark.parametrize("d", [d for d in DTYPES if d != "BF16"])
def test_numpy_dtype_agrees_with_tritonclient(d: str) -> None:
    assert np_to_triton_dtype(numpy_dtype(d)) == wire_dtype(d)
    assert np.dtype(triton_to_np_dtype(wire_dtype(d))) == numpy_dtype(d)


def test_bf16_travels_as_float32_and_string_as_object() -> None:
    assert numpy_dtype("BF16") == np.dtype(np.float32)
    assert numpy_dtype("BYTES") == np.dtype(object)


_ONNX_NAMES = {
    "FLOAT": "FP32",
    "FLOAT16": "FP16",
    "DOUBLE": "FP64",
    "BFLOAT16": "BF16",
    "STRING": "STRING",
    "BOOL": "BOOL",
}


@pytest.mark.parametrize("name", [n for n in onnx.TensorProto.DataType.keys() if n != "UNDEFINED"])  # noqa: SIM118
def test_from_onnx_elem_type_covers_every_onnx_type(name: str) -> None:
    value = onnx.TensorProto.DataType.Value(name)
    expected = _ONNX_NAMES.get(name, name)
    if expected in DTYPES:
        assert from_onnx_elem_type(value) == expected
    else:  # complex, float8, int4, ...: Triton has no such type
        with pytest.raises(ValueError, match="no Triton equivalent"):
            from_onnx_elem_type(value)


def test_from_onnx_elem_type_agrees_with_onnx_numpy_mapping() -> None:
    for name in ("FLOAT", "FLOAT16", "DOUBLE", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "BOOL"):
        value = onnx.TensorProto.DataType.Value(name)
        assert numpy_dtype(from_onnx_elem_type(value)) == onnx.helper.tensor_dtype_to_np_dtype(value)


@pytest.mark.parametrize(
    ("d", "trt_major", "ok"),
    [
        ("FP32", 8, True),
        ("FP16", 8, True),
        ("INT8", 8, True),
        ("UINT8", 8, True),
        ("BOOL", 8, True),
        ("INT32", 8, True),
        ("INT64", 8, False),
        ("INT64", 10, True),
        ("BF16", 8, False),
        ("BF16", 10, True),
        ("UINT16", 10, False),
        ("UINT32", 10, False),
        ("UINT64", 10, False),
        ("INT16", 10, False),
        ("FP64", 10, False),
        ("STRING", 10, False),
    ],
)
def test_tensorrt_support(d: str, trt_major: int, ok: bool) -> None:
    assert supported_by_backend(d, "tensorrt", trt_major=trt_major) is ok


def test_onnxruntime_and_python_support() -> None:
    assert all(supported_by_backend(d, "python") for d in DTYPES)
    assert supported_by_backend("STRING", "onnxruntime")
    assert supported_by_backend("FP64", "onnxruntime")
    assert not supported_by_backend("BF16", "onnxruntime")
    with pytest.raises(ValueError, match="unknown backend"):
        supported_by_backend("FP32", "tensorflow")
