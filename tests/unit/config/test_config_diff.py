"""Served config vs rendered config: Triton's normalization is not a difference, real changes are."""

from __future__ import annotations

from typing import Any

import pytest

from deployer.config.diff import diff_config, model_metadata_diffs
from deployer.errors import UserError

OURS: dict[str, Any] = {
    "name": "m",
    "backend": "onnxruntime",
    "max_batch_size": 8,
    "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [3, -1]}],
    "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [2]}],
    "instance_group": [{"kind": "KIND_CPU"}],
    "dynamic_batching": {"max_queue_delay_microseconds": 500},
    "parameters": {"intra_op_thread_count": {"string_value": "1"}},
}

# What Triton 2.51 returns for it over HTTP (normalized and auto-completed; int64 as numbers).
SERVED: dict[str, Any] = {
    "name": "m",
    "platform": "onnxruntime_onnx",
    "backend": "onnxruntime",
    "runtime": "",
    "version_policy": {"latest": {"num_versions": 1}},
    "max_batch_size": 8,
    "input": [
        {
            "name": "x",
            "data_type": "TYPE_FP32",
            "format": "FORMAT_NONE",
            "dims": [3, -1],
            "is_shape_tensor": False,
            "allow_ragged_batch": False,
            "optional": False,
        }
    ],
    "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [2], "label_filename": "", "is_shape_tensor": False}],
    "batch_input": [],
    "batch_output": [],
    "optimization": {
        "priority": "PRIORITY_DEFAULT",
        "input_pinned_memory": {"enable": True},
        "output_pinned_memory": {"enable": True},
    },
    "dynamic_batching": {
        "preferred_batch_size": [8],
        "max_queue_delay_microseconds": 500,
        "preserve_ordering": False,
        "priority_levels": 0,
        "default_priority_level": 0,
    },
    "instance_group": [
        {"name": "m_0", "kind": "KIND_CPU", "count": 2, "gpus": [], "profile": [], "passive": False, "host_policy": ""}
    ],
    "default_model_filename": "model.onnx",
    "parameters": {"intra_op_thread_count": {"string_value": "1"}},
    "model_warmup": [],
    "some_future_field": {"x": 1},
}


def _served(**changes: Any) -> dict[str, Any]:
    return {**SERVED, **changes}


def test_normalized_served_config_agrees() -> None:
    assert diff_config(OURS, SERVED) == []
    # gRPC's as_json form: wrapped, int64 as strings
    grpc_form = {"config": _served(max_batch_size="8", dynamic_batching={"max_queue_delay_microseconds": "500"})}
    assert diff_config(OURS, grpc_form) == []


def test_changed_max_batch_size_is_a_difference() -> None:
    diffs = diff_config(OURS, _served(max_batch_size=4))
    assert [d.format() for d in diffs] == ["max_batch_size: expected 8, served 4"]


def test_explicit_zero_is_compared() -> None:
    ours = {**OURS, "max_batch_size": 0, "dynamic_batching": {}}
    diffs = {d.path: d for d in diff_config(ours, _served())}
    assert diffs["max_batch_size"].served == 8


def test_io_field_level_differences_matched_by_name() -> None:
    served = _served(
        input=[{"name": "x", "data_type": "TYPE_FP16", "dims": [3, 4]}],
        output=[{"name": "z", "data_type": "TYPE_FP32", "dims": [2]}],
    )
    got = sorted(d.format() for d in diff_config(OURS, served))
    assert got == [
        "input[x].data_type: expected 'TYPE_FP32', served 'TYPE_FP16'",
        "input[x].dims: expected [3, -1], served [3, 4]",
        "output[y]: expected {'name': 'y', 'data_type': 'TYPE_FP32', 'dims': ['2']}, served None",
    ]


def test_scheduler_instance_and_parameter_changes() -> None:
    served = _served(
        dynamic_batching=None,
        instance_group=[{"name": "m_0", "kind": "KIND_GPU", "count": 1}],
        parameters={"intra_op_thread_count": {"string_value": "4"}},
    )
    del served["dynamic_batching"]
    paths = {d.path for d in diff_config(OURS, served)}
    assert paths == {"dynamic_batching", "instance_group[0].kind", "parameters[intra_op_thread_count]"}


def test_kind_auto_matches_whatever_triton_resolved() -> None:
    ours = {**OURS, "instance_group": [{"kind": "KIND_AUTO", "count": 2}]}
    assert diff_config(ours, SERVED) == []
    assert [d.path for d in diff_config({**ours, "instance_group": [{"count": 3}]}, SERVED)] == [
        "instance_group[0].count"
    ]


def test_invalid_expected_config_is_a_user_error() -> None:
    with pytest.raises(UserError, match="not a valid ModelConfig"):
        diff_config({"max_batch_sise": 8}, SERVED)


def test_metadata_diffs() -> None:
    meta = {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3, -1]}],
        "outputs": [
            {"name": "y", "datatype": "FP16", "shape": [-1, 2]},
            {"name": "extra", "datatype": "FP32", "shape": [1]},
        ],
    }
    exp_in = {"x": ("FP32", (-1, 3, -1))}
    assert model_metadata_diffs(exp_in, {"y": ("FP16", (-1, 2)), "extra": ("FP32", (1,))}, meta) == []
    problems = model_metadata_diffs({"x": ("FP32", (3, -1))}, {"y": ("FP32", (-1, 2))}, meta)
    assert problems == [
        "input 'x' shape: expected [3, -1], served [-1, 3, -1]",
        "output 'y' datatype: expected FP32, served FP16",
        "unexpected served outputs: ['extra']",
    ]
