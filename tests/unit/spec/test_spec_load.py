"""Spec stage in-process: defaults merge, locations, tensors from ONNX, fallback, the config dict."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2

from deployer.errors import SpecError, SpecIssue
from deployer.spec import Deployment, load_deployment
from deployer.spec.loader import ENSEMBLE_SKIPS_DEFAULTS, deep_merge, defaults_for, format_path, read_yaml

DATA = Path(__file__).resolve().parents[2] / "data" / "specs"


def write_spec(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    """A spec in tmp_path next to a copy of the test models (`models/*.onnx`)."""
    if not (tmp_path / "models").exists():
        shutil.copytree(DATA / "models", tmp_path / "models")
    spec = tmp_path / name
    spec.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return spec


def load(tmp_path: Path, text: str, **kw: Any) -> Deployment:
    return load_deployment(write_spec(tmp_path, text), **kw)


def issues(tmp_path: Path, text: str, **kw: Any) -> list[SpecIssue]:
    with pytest.raises(SpecError) as info:
        load(tmp_path, text, **kw)
    return list(info.value.issues)


def test_example_specs_validate() -> None:
    for spec in sorted(DATA.glob("*.yaml")):
        dep = load_deployment(spec, fallback="onnxruntime")
        assert dep.models, spec


def test_defaults_merge_mappings_and_model_keys_win(tmp_path: Path) -> None:
    dep = load(tmp_path, """
        defaults:
          max_batch_size: 4
          dynamic_batching: {max_queue_delay_microseconds: 100, preferred_batch_size: [2]}
          parameters: {a: "1", b: "2"}
        models:
          - name: relu
            source: models/relu.onnx
            dynamic_batching: {preferred_batch_size: [4]}
            parameters: {b: "3"}
          - name: ids
            source: models/ids.onnx
            max_batch_size: 2
    """)
    relu, ids = dep.models
    assert relu.max_batch_size == 4 and ids.max_batch_size == 2
    assert relu.config["dynamic_batching"] == {"preferred_batch_size": [4], "max_queue_delay_microseconds": 100}
    assert relu.config["parameters"] == {"a": {"string_value": "1"}, "b": {"string_value": "3"}}
    assert ids.config["dynamic_batching"] == {"preferred_batch_size": [2], "max_queue_delay_microseconds": 100}


def test_defaults_skip_keys_an_ensemble_must_not_have(tmp_path: Path) -> None:
    dep = load_deployment(DATA / "full.yaml")
    pipe = dep.model("pipe")
    assert "instance_group" not in pipe.config and "dynamic_batching" not in pipe.config
    assert dep.model("relu").config["instance_group"] == [{"kind": "KIND_CPU", "count": 1}]


def test_error_from_defaults_points_at_defaults(tmp_path: Path) -> None:
    found = issues(tmp_path, """
        defaults:
          dynamic_batching:
            preferred_batch_size: [16]
        models:
          - name: relu
            source: models/relu.onnx
          - name: ids
            source: models/ids.onnx
            dynamic_batching: {preferred_batch_size: [32]}
    """)
    by_path = {(i.path, i.line) for i in found}
    assert ("models[0].dynamic_batching.preferred_batch_size[0]", 3) in by_path  # in defaults
    assert ("models[1].dynamic_batching.preferred_batch_size[0]", 9) in by_path  # the model's own value


def test_unknown_key_in_defaults_is_located_with_did_you_mean(tmp_path: Path) -> None:
    (issue,) = issues(tmp_path, """
        defaults:
          dynamic_batching:
            max_queue_delay_microsecond: 5
        models:
          - {name: relu, source: models/relu.onnx}
    """)
    assert issue.path == "defaults.dynamic_batching.max_queue_delay_microsecond"
    assert (issue.line, issue.column) == (3, 5)
    assert "did you mean 'max_queue_delay_microseconds'" in issue.format()


def test_issue_format_and_order(tmp_path: Path) -> None:
    found = issues(tmp_path, """
        models:
          - name: relu
            source: models/relu.onnx
            version: 0
            max_batch_size: 4
            dynamic_batching: {preferred_batch_size: [8]}
    """)
    assert [i.line for i in found] == sorted(i.line for i in found)
    text = found[0].format()
    assert text.startswith(f"{tmp_path / 'spec.yaml'}:4:14: models[0].version: value 0: version must be >= 1")
    assert " — " in text


def test_missing_spec_file_and_non_mapping(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="spec file not found"):
        load_deployment(tmp_path / "nope.yaml")
    spec = tmp_path / "list.yaml"
    spec.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(SpecError, match="must be a mapping"):
        load_deployment(spec)


def test_tensors_default_from_onnx_scalar_and_batch_only(tmp_path: Path) -> None:
    dep = load(tmp_path, """
        models:
          - {name: scalar, source: models/scalar.onnx}
          - {name: batchonly, source: models/batchonly.onnx}
          - {name: ids, source: models/ids.onnx}
          - {name: static, source: models/static.onnx}
    """)
    scalar, batchonly, ids, static = dep.models
    assert scalar.max_batch_size == 0 and scalar.config["input"] == [
        {"name": "s", "data_type": "TYPE_FP32", "dims": [1]}
    ]
    assert batchonly.max_batch_size == 8
    assert batchonly.config["input"][0] == {"name": "x", "data_type": "TYPE_FP32", "dims": [1],
                                            "reshape": {"shape": []}}
    assert ids.inputs[0].dtype == "INT64" and ids.inputs[0].dims == (8,)
    assert static.max_batch_size == 0 and static.inputs[0].dims == (1, 4)
    # fixed shapes get a derived profile: batch 1..max for batching models, the shape itself otherwise
    assert ids.shapes["ids"].min == (1, 8) and ids.shapes["ids"].max == (8, 8)
    assert static.shapes["x"].min == static.shapes["x"].max == (1, 4)


def test_names_with_slash_dot_colon(tmp_path: Path) -> None:
    dep = load(tmp_path, """
        models:
          - name: names.v1
            source: models/names.onnx
            shapes:
              "input/ids:0": {min: [1, 4], opt: [2, 4], max: [8, 4]}
    """)
    m = dep.models[0]
    assert [t.name for t in m.inputs] == ["input/ids:0"] and [t.name for t in m.outputs] == ["out.logits:0"]
    assert m.shapes["input/ids:0"].opt == (2, 4)


def test_tensorrt_falls_back_to_onnxruntime(tmp_path: Path) -> None:
    text = """
        models:
          - name: trt
            source: models/relu.onnx
            backend: tensorrt
            instance_group: [{kind: GPU, count: 2}]
            optimization: {cuda: {graphs: true}}
    """
    trt = load(tmp_path, text).models[0]
    assert trt.backend == "tensorrt" and trt.config["platform"] == "tensorrt_plan"
    assert trt.config["instance_group"] == [{"kind": "KIND_GPU", "count": 2}]
    assert trt.config["optimization"] == {"cuda": {"graphs": True}}
    ort = load(tmp_path, text, fallback="onnxruntime").models[0]
    assert (ort.backend, ort.requested_backend) == ("onnxruntime", "tensorrt")
    assert ort.config["backend"] == "onnxruntime" and ort.config["platform"] == "onnxruntime_onnx"
    assert "instance_group" not in ort.config and "optimization" not in ort.config
    spec_fallback = load(tmp_path, "fallback: onnxruntime\n" + textwrap.dedent(text).lstrip("\n")).models[0]
    assert spec_fallback.backend == "onnxruntime"


def test_tensorrt_default_instance_group_is_gpu(tmp_path: Path) -> None:
    m = load(tmp_path, "models: [{name: t, source: models/relu.onnx, backend: tensorrt}]").models[0]
    assert m.config["instance_group"] == [{"kind": "KIND_GPU", "count": 1}]


def test_config_dict_contents_parse_as_model_config() -> None:
    dep = load_deployment(DATA / "full.yaml")
    relu = dep.model("relu")
    assert relu.config["max_batch_size"] == 8
    assert relu.config["version_policy"] == {"latest": {"num_versions": 2}}
    assert relu.config["model_warmup"] == [{"name": "zeros", "batch_size": 2, "count": 1, "inputs": {
        "x": {"data_type": "TYPE_FP32", "dims": [4], "zero_data": True}}}]
    assert relu.keep_versions == 3
    assert dep.model("add").config["response_cache"] == {"enable": True}
    pipe = dep.model("pipe").config
    assert pipe["platform"] == "ensemble" and "backend" not in pipe
    assert pipe["ensemble_scheduling"]["step"][1] == {"model_name": "relu", "model_version": -1,
                                                      "input_map": {"x": "s"}, "output_map": {"y": "out"}}
    assert dep.model("image").shapes["x"].max == (4, 3, 32, 32)
    for m in dep.models:
        json_format.ParseDict(m.config, model_config_pb2.ModelConfig())


def test_config_overrides_merge_last(tmp_path: Path) -> None:
    m = load(tmp_path, """
        models:
          - name: relu
            source: models/relu.onnx
            config_overrides: {max_batch_size: 2, model_transaction_policy: {decoupled: false}}
    """).models[0]
    assert m.config["max_batch_size"] == 2 and m.config["model_transaction_policy"] == {"decoupled": False}


def test_relative_repository_resolves_against_spec(tmp_path: Path) -> None:
    dep = load(tmp_path, "repository: out/repo\nmodels: [{name: r, source: models/relu.onnx}]")
    assert dep.repository == tmp_path.resolve() / "out" / "repo"
    assert len(dep.spec_sha256) == 64


def test_templates_directory_must_exist(tmp_path: Path) -> None:
    (issue,) = issues(tmp_path, "templates: mytemplates\nmodels: [{name: r, source: models/relu.onnx}]")
    assert issue.path == "templates" and issue.line == 1


@pytest.mark.parametrize(
    ("path", "text"),
    [
        (("models", 2, "dims", 0), "models[2].dims[0]"),
        (("shapes", "a/b:0", "min"), "shapes['a/b:0'].min"),
        ((), ""),
    ],
)
def test_format_path(path: tuple[str | int, ...], text: str) -> None:
    assert format_path(path) == text


def test_deep_merge_does_not_mutate_inputs() -> None:
    base = {"a": {"b": 1, "c": [1]}}
    merged = deep_merge(base, {"a": {"b": 2}, "d": 3})
    assert merged == {"a": {"b": 2, "c": [1]}, "d": 3}
    assert base == {"a": {"b": 1, "c": [1]}}


def test_yaml_positions_are_kept(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "models:\n  - name: r\n    source: models/relu.onnx\n")
    raw = read_yaml(spec)
    assert raw.data["models"][0].lc.line == 1


def test_defaults_for_ensembles_drop_scheduling_keys() -> None:
    defaults = {"max_batch_size": 4, "dynamic_batching": {}, "instance_group": [], "parameters": {"a": "b"}}
    assert defaults_for({"name": "m", "source": "m.onnx"}, defaults) == defaults
    for ensemble in ({"name": "e", "ensemble": {}}, {"name": "e", "backend": "ensemble"}):
        kept = defaults_for(ensemble, defaults)
        assert kept == {"max_batch_size": 4, "parameters": {"a": "b"}}
        assert not set(kept) & set(ENSEMBLE_SKIPS_DEFAULTS)


@pytest.mark.parametrize(
    ("yaml_value", "hint"),
    [("server: {runtime: kube}", "check the spelling"), ("server: {http_port: x}", "whole number"),
     ("server: {http_port: 0}", "use a value >= 1"), ("target: {triton: '24.1'}", "match the pattern"),
     ("server: {args: 3}", "YAML list"), ("server: {runtime: [a]}", "")],
)
def test_type_errors_say_how_to_fix(tmp_path: Path, yaml_value: str, hint: str) -> None:
    found = issues(tmp_path, yaml_value + "\nmodels: [{name: r, source: models/relu.onnx}]")
    assert found and all(i.hint for i in found) and hint in found[0].hint
    assert found[0].line == 1


def test_sequence_control_inputs_are_not_request_inputs(tmp_path: Path) -> None:
    m = load_deployment(DATA / "sequence.yaml").models[0]
    assert [t.name for t in m.inputs] == ["a"]
    assert m.config["sequence_batching"]["control_input"] == [
        {"name": "b", "control": [{"kind": "CONTROL_SEQUENCE_START", "fp32_false_true": [0.0, 1.0]}]}]
    # Inputs read from the ONNX file leave out what Triton feeds itself (control inputs, state).
    spec = tmp_path / "seq.yaml"
    shutil.copytree(DATA / "models", tmp_path / "models", dirs_exist_ok=True)
    spec.write_text(textwrap.dedent("""
        models:
          - name: seq
            source: models/two_in.onnx
            sequence_batching:
              control_input: [{name: b, control: [{kind: CONTROL_SEQUENCE_START, fp32_false_true: [0, 1]}]}]
    """))
    assert [t.name for t in load_deployment(spec).models[0].inputs] == ["a"]


def test_a_spec_with_thousands_of_issues_prints_a_bounded_message(tmp_path: Path) -> None:
    from deployer.errors import SpecError
    from deployer.spec import load_deployment

    bad = "".join(f"bogus_{i}: 1\n" for i in range(1000))
    (tmp_path / "s.yaml").write_text(bad + "models: [{name: m, source: x.onnx}]\n")
    with pytest.raises(SpecError) as exc:
        load_deployment(tmp_path / "s.yaml")
    assert len(exc.value.issues) >= 1000
    lines = exc.value.render().splitlines()
    assert len(lines) <= SpecError.MAX_SHOWN + 2 and "more (fix these first" in lines[-1]
