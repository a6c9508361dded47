"""Spec hardening: config_overrides under the typed rules, strict scalars, int64 versions, ensemble cycles.

The invalid corpus (tests/data/invalid/ovr_*.yaml, v10_*.yaml) proves each refusal through the console
script; these tests cover what must keep working and the pieces behind it.
"""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2

from deployer import pipeline
from deployer.errors import SpecError, SpecIssue
from deployer.spec import Deployment, load_deployment
from deployer.spec.overrides import apply_leftovers, relocate
from deployer.spec.schema import Spec
from deployer.spec.schema_base import INT64_MAX

MODELS = Path(__file__).resolve().parents[2] / "data" / "specs" / "models"


def load(tmp_path: Path, text: str, **kw: Any) -> Deployment:
    if not (tmp_path / "models").exists():
        shutil.copytree(MODELS, tmp_path / "models")
    spec = tmp_path / "spec.yaml"
    spec.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return load_deployment(spec, **kw)


def issues(tmp_path: Path, text: str, **kw: Any) -> list[SpecIssue]:
    with pytest.raises(SpecError) as info:
        load(tmp_path, text, **kw)
    return list(info.value.issues)


# --------------------------------------------------------------------------- config_overrides


def test_overrides_of_typed_knobs_become_the_models_own_values(tmp_path: Path) -> None:
    m = load(tmp_path, """
        models:
          - name: relu
            source: models/relu.onnx
            dynamic_batching: {preferred_batch_size: [2]}
            config_overrides:
              max_batch_size: 2
              response_cache: {enable: true}
              dynamic_batching: {max_queue_delay_microseconds: 100}
              instance_group: [{kind: KIND_CPU, count: 2, rate_limiter: {priority: 1}}]
              parameters: {threads: {string_value: "1"}}
    """).models[0]
    # What smoke tests, engines and the server act on agrees with what Triton is given.
    assert m.max_batch_size == 2 and m.shapes["x"].max[0] == 2
    assert m.spec.response_cache is True and m.spec.parameters == {"threads": "1"}
    assert m.config["max_batch_size"] == 2 and m.config["response_cache"] == {"enable": True}
    assert m.config["dynamic_batching"] == {"preferred_batch_size": [2], "max_queue_delay_microseconds": 100}
    # A field the spec does not model (rate_limiter) is kept as written, inside the generated group.
    assert m.config["instance_group"] == [{"kind": "KIND_CPU", "count": 2, "rate_limiter": {"priority": 1}}]
    json_format.ParseDict(m.config, model_config_pb2.ModelConfig())


def test_identity_overrides_that_change_nothing_are_accepted(tmp_path: Path) -> None:
    m = load(tmp_path, """
        models:
          - name: relu
            source: models/relu.onnx
            config_overrides: {name: relu, backend: onnxruntime, platform: onnxruntime_onnx,
                               default_model_filename: model.onnx}
    """).models[0]
    assert (m.config["name"], m.config["backend"], m.config["platform"]) == ("relu", "onnxruntime", "onnxruntime_onnx")


def test_a_platform_override_is_the_models_backend(tmp_path: Path) -> None:
    m = load(tmp_path, """
        models:
          - name: relu
            source: models/relu.onnx
            config_overrides: {platform: tensorrt_plan}
    """, fallback="onnxruntime").models[0]
    # The fallback still applies: the config says onnxruntime, not the overridden platform.
    assert m.requested_backend == "tensorrt" and m.config["backend"] == "onnxruntime"


def test_unmodeled_fields_of_a_group_the_fallback_drops_are_dropped_too(tmp_path: Path) -> None:
    m = load(tmp_path, """
        models:
          - name: relu
            source: models/relu.onnx
            backend: tensorrt
            config_overrides:
              instance_group: [{kind: KIND_GPU, rate_limiter: {priority: 1}}]
    """, fallback="onnxruntime").models[0]
    assert "instance_group" not in m.config


def test_every_override_problem_is_reported_at_once(tmp_path: Path) -> None:
    found = issues(tmp_path, """
        models:
          - name: relu
            source: models/relu.onnx
            config_overrides:
              backend: "../../../tmp/evil"
              name: other
              max_batch_size: -5
    """)
    assert [(i.path, i.line) for i in found] == [("models[0].config_overrides.backend", 5),
                                                 ("models[0].config_overrides.name", 6),
                                                 ("models[0].config_overrides.max_batch_size", 7)]


def test_an_issue_in_the_typed_part_of_a_merged_mapping_stays_at_the_typed_key(tmp_path: Path) -> None:
    (issue,) = issues(tmp_path, """
        models:
          - name: relu
            source: models/relu.onnx
            dynamic_batching: {preferred_batch_size: [16]}
            config_overrides:
              dynamic_batching: {max_queue_delay_microseconds: 5}
    """)
    assert (issue.path, issue.line) == ("models[0].dynamic_batching.preferred_batch_size[0]", 4)


def test_overridden_config_publishes(tmp_path: Path) -> None:
    dep = load(tmp_path, """
        models:
          - name: relu
            source: models/relu.onnx
            config_overrides:
              instance_group: [{kind: KIND_CPU, count: 1, rate_limiter: {priority: 2}}]
              model_transaction_policy: {decoupled: false}
    """)
    pipeline.publish(dep)
    text = (tmp_path / "model_repository" / "relu" / "config.pbtxt").read_text(encoding="utf-8")
    assert "rate_limiter" in text and "model_transaction_policy" in text


def test_relocate_uses_the_longest_lifted_prefix() -> None:
    moves = {("inputs",): ("config_overrides", "input"),
             ("inputs", 0, "dtype"): ("config_overrides", "input", 0, "data_type")}
    assert relocate(moves, ("inputs", 0, "dtype")) == ("config_overrides", "input", 0, "data_type")
    assert relocate(moves, ("inputs", 0, "dims", 1)) == ("config_overrides", "input", 0, "dims", 1)
    assert relocate(moves, ("outputs", 0)) == ("outputs", 0)


def test_apply_leftovers_creates_mappings_but_never_list_items() -> None:
    config: dict[str, Any] = {"instance_group": [{"kind": "KIND_CPU"}]}
    apply_leftovers(config, ((("instance_group", 0, "rate_limiter"), {"priority": 1}),
                             (("instance_group", 1, "rate_limiter"), {"priority": 2}),
                             (("optimization", "cuda", "graph_spec"), []),
                             (("batch_input",), [])))
    assert config == {"instance_group": [{"kind": "KIND_CPU", "rate_limiter": {"priority": 1}}],
                      "optimization": {"cuda": {"graph_spec": []}}, "batch_input": []}


# --------------------------------------------------------------------------- values the schema lets through


def test_float_fields_take_integers_and_anchored_booleans_stay_booleans(tmp_path: Path) -> None:
    dep = load(tmp_path, """
        server: {startup_timeout: 5}
        smoke: {duration: 1, sla: {p99_ms: 100}}
        models:
          - name: relu
            source: models/relu.onnx
            response_cache: &on true
            dynamic_batching: {preserve_ordering: *on}
            inputs: [{name: x, dtype: FP32, dims: [4], value_range: [0, 1], value: *on}]
            outputs: [{name: y, dtype: FP32, dims: [4], tolerance: {atol: 0}}]
    """)
    m = dep.models[0]
    assert dep.spec.server.startup_timeout == 5.0 and m.spec.response_cache is True
    assert m.spec.dynamic_batching is not None and m.spec.dynamic_batching.preserve_ordering is True
    assert m.inputs[0].value is True and m.inputs[0].value_range == (0.0, 1.0)


def test_largest_int64_version_and_latest_step_version_are_accepted(tmp_path: Path) -> None:
    dep = load(tmp_path, f"""
        models:
          - name: relu
            source: models/relu.onnx
            version: {INT64_MAX}
            version_policy: {{specific: [{INT64_MAX}]}}
          - name: pipe
            inputs: [{{name: a, dtype: FP32, dims: [4]}}]
            outputs: [{{name: out, dtype: FP32, dims: [4]}}]
            ensemble: {{steps: [{{model: relu, version: -1, inputs: {{x: a}}, outputs: {{y: out}}}}]}}
    """)
    assert dep.models[0].version == INT64_MAX


def test_an_ensemble_diamond_is_not_a_cycle(tmp_path: Path) -> None:
    ens = "inputs: [{name: x, dtype: FP32, dims: [4]}]\n    outputs: [{name: y, dtype: FP32, dims: [4]}]"
    dep = load(tmp_path, f"""
models:
  - name: relu
    source: models/relu.onnx
  - name: b
    {ens}
    ensemble: {{steps: [{{model: relu, inputs: {{x: x}}, outputs: {{y: y}}}}]}}
  - name: c
    {ens}
    ensemble: {{steps: [{{model: relu, inputs: {{x: x}}, outputs: {{y: y}}}}]}}
  - name: top
    {ens}
    ensemble:
      steps:
        - {{model: b, inputs: {{x: x}}, outputs: {{y: t}}}}
        - {{model: c, inputs: {{x: t}}, outputs: {{y: y}}}}
    """)
    assert [m.name for m in dep.models] == ["relu", "b", "c", "top"]


def test_each_cycle_is_reported_once(tmp_path: Path) -> None:
    ens = "inputs: [{name: x, dtype: FP32, dims: [4]}]\n    outputs: [{name: y, dtype: FP32, dims: [4]}]"
    found = issues(tmp_path, f"""
models:
  - name: a
    {ens}
    ensemble: {{steps: [{{model: b, inputs: {{x: x}}, outputs: {{y: y}}}}]}}
  - name: b
    {ens}
    ensemble: {{steps: [{{model: a, inputs: {{x: x}}, outputs: {{y: y}}}}]}}
    """)
    assert [i.message.split(";")[0] for i in found] == ["ensemble cycle: a -> b -> a"]


def test_the_json_schema_keeps_the_bounds() -> None:
    defs = Spec.model_json_schema()["$defs"]
    mbs = defs["ModelSpec"]["properties"]["max_batch_size"]["anyOf"][0]
    assert (mbs["minimum"], mbs["maximum"]) == (0, 2**31 - 1)
    assert defs["InstanceGroup"]["properties"]["gpus"]["items"]["minimum"] == 0

