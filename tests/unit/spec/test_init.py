"""`deployer init`: batch decision, names, dtypes, probed shapes; the written spec validates and publishes."""

from __future__ import annotations

import shutil
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from deployer import pipeline
from deployer.errors import ModelFileError, UserError
from deployer.spec import load_deployment
from deployer.spec.init import init_spec, model_name_from

MODELS = Path(__file__).resolve().parents[2] / "data" / "specs" / "models"


def model(tmp_path: Path, name: str, as_name: str | None = None) -> Path:
    """A copy of a test model in tmp_path (init writes its spec next to the model)."""
    dst = tmp_path / (as_name or name)
    shutil.copyfile(MODELS / name, dst)
    return dst


def time_major(tmp_path: Path) -> Path:
    """Batch on axis 1 ([4, T]): the first dim is fixed, so Triton must not batch."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, "T"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, "T"])],
    )
    path = tmp_path / "time_major.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    return path


@pytest.mark.parametrize(
    ("name", "batching", "reason"),
    [
        ("relu.onnx", True, "every input and output has a dynamic first dim"),
        ("static.onnx", False, "static batch of 1"),
        ("scalar.onnx", False, "is a scalar (rank 0)"),  # init once wrote its comment inside `{...}`
        ("batchonly.onnx", True, "dynamic first dim"),
        ("ids.onnx", True, "dynamic first dim"),
    ],
)
def test_batch_decision(tmp_path: Path, name: str, batching: bool, reason: str) -> None:
    result = init_spec(model(tmp_path, name))
    assert result.batching is batching and reason in result.reason
    assert result.max_batch_size == (8 if batching else 0)
    dep = load_deployment(result.spec_path)
    assert dep.models[0].max_batch_size == result.max_batch_size
    assert ("dynamic_batching" in dep.models[0].config) is batching


def test_batch_on_another_axis_is_not_batched(tmp_path: Path) -> None:
    result = init_spec(time_major(tmp_path))
    assert not result.batching and "not on axis 0" in result.reason
    m = load_deployment(result.spec_path).models[0]
    assert m.max_batch_size == 0 and m.inputs[0].dims == (4, -1)
    shapes = m.shapes["x"]  # T was probed: the recorded range runs in ONNX Runtime
    assert shapes.min[0] == 4 and shapes.min[1] <= shapes.opt[1] <= shapes.max[1]


def test_int64_inputs_keep_their_dtype(tmp_path: Path) -> None:
    result = init_spec(model(tmp_path, "ids.onnx"))
    assert 'dtype: INT64, dims: [8]' in result.text
    assert load_deployment(result.spec_path).models[0].config["input"][0]["data_type"] == "TYPE_INT64"


def test_symbolic_image_dims_get_probed_shapes(tmp_path: Path) -> None:
    result = init_spec(model(tmp_path, "image.onnx"))
    assert "shapes:" in result.text and "dims: [3, -1, -1]" in result.text
    shapes = load_deployment(result.spec_path).models[0].shapes["x"]
    assert shapes.min[:2] == (1, 3) and shapes.max[0] == 8
    assert all(a <= b <= c for a, b, c in zip(shapes.min, shapes.opt, shapes.max, strict=True))


def test_names_with_slash_dot_and_colon(tmp_path: Path) -> None:
    path = model(tmp_path, "names.onnx", as_name="det.v2:fp32.onnx")
    result = init_spec(path)
    assert result.model_name == "det.v2_fp32"
    assert result.spec_path.name == "det.v2_fp32.deployer.yaml"
    m = load_deployment(result.spec_path).models[0]
    assert [t.name for t in m.inputs] == ["input/ids:0"] and [t.name for t in m.outputs] == ["out.logits:0"]


@pytest.mark.parametrize(
    ("file", "name"),
    [("model.onnx", "model"), ("a b/c.onnx", "c"), (".hidden.onnx", "hidden"), ("-x.onnx", "m-x"),
     ("ŝpec:1.onnx", "_pec_1")],
)
def test_model_name_from_file(file: str, name: str) -> None:
    assert model_name_from(Path(file)) == name


def test_generated_spec_publishes_and_republishes_unchanged(tmp_path: Path) -> None:
    result = init_spec(model(tmp_path, "relu.onnx"), name="my-relu")
    first = pipeline.publish(load_deployment(result.spec_path))
    assert [(m.name, m.version, m.status) for m in first.models] == [("my-relu", 1, "new")]
    assert (tmp_path / "model_repository" / "my-relu" / "1" / "model.onnx").is_file()
    second = pipeline.publish(load_deployment(result.spec_path))
    assert [m.status for m in second.models] == ["unchanged"]


def test_tensorrt_scaffold_records_profile_and_gpu(tmp_path: Path) -> None:
    result = init_spec(model(tmp_path, "relu.onnx"), backend="tensorrt", max_batch_size=16)
    assert "instance_group: [{kind: GPU, count: 1}]" in result.text and "shapes:" in result.text
    m = load_deployment(result.spec_path).models[0]
    assert m.requested_backend == "tensorrt" and m.max_batch_size == 16
    assert m.shapes["x"].min[0] == 1 and m.shapes["x"].max[0] >= 16


def test_output_elsewhere_uses_a_relative_source(tmp_path: Path) -> None:
    src = model(tmp_path, "relu.onnx")
    out = tmp_path / "deploy" / "specs" / "relu.yaml"
    result = init_spec(src, output=out)
    assert result.spec_path == out and 'source: "../../relu.onnx"' in out.read_text(encoding="utf-8")
    assert load_deployment(out).models[0].source.resolve() == src.resolve()


def test_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    src = model(tmp_path, "relu.onnx")
    spec = tmp_path / "relu.deployer.yaml"
    spec.write_text("# mine\n", encoding="utf-8")
    with pytest.raises(UserError, match="already exists") as info:
        init_spec(src)
    assert "--force" in (info.value.hint or "")
    assert spec.read_text(encoding="utf-8") == "# mine\n"
    init_spec(src, force=True)
    assert spec.read_text(encoding="utf-8").startswith("# deployer spec scaffolded")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["relu.deployer.yaml", "relu.onnx"]  # no temp files


@pytest.mark.parametrize(("kw", "match"), [({"backend": "python"}, "onnxruntime or tensorrt"),
                                           ({"max_batch_size": 0}, "must be >= 1")])
def test_bad_arguments(tmp_path: Path, kw: dict[str, object], match: str) -> None:
    with pytest.raises(UserError, match=match):
        init_spec(model(tmp_path, "relu.onnx"), **kw)  # type: ignore[arg-type]


def test_corrupt_model_is_a_user_error_and_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError):
        init_spec(model(tmp_path, "corrupt.onnx"))
    assert [p.name for p in tmp_path.iterdir()] == ["corrupt.onnx"]


# --------------------------------------------------------------------------- hostile ONNX metadata

_INJECTIONS = [
    "p\ntemplates: tpl\n#",
    "p\r\ntemplates: tpl",
    "p\rtemplates: tpl",
    "p\x85templates: tpl",
    "p\u2028templates: tpl",
    "p\u2029templates: tpl",
    "x}\n    config_overrides: {name: evil, backend: \"../../../tmp/x\"}\n#",
    "\"'\\ # {[ ]} &a *a !!python/object:os.system ---\n...",
    "\x00\x07\x1b[31m\ufeff\ufffe\U0010fffe",
]


def _hostile_model(tmp_path: Path, payload: str, file_name: str = "hostile.onnx") -> Path:
    """A Relu whose producer, symbolic dims and output name carry `payload`."""
    dim = "N" + payload
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y" + payload])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [dim, 4])],
        [helper.make_tensor_value_info("y" + payload, TensorProto.FLOAT, [dim, 4])],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8,
                          producer_name="torch" + payload, producer_version=payload)
    path = tmp_path / file_name
    path.write_bytes(m.SerializeToString())
    return path


@pytest.mark.parametrize("payload", _INJECTIONS)
def test_onnx_metadata_cannot_add_keys_to_the_scaffold(tmp_path: Path, payload: str) -> None:
    from ruamel.yaml import YAML

    from deployer.onnx.info import ShapeRange, batch_dimension, read_onnx
    from deployer.spec.init import scaffold

    info = read_onnx(_hostile_model(tmp_path, payload))
    decision = batch_dimension(info)
    assert payload.split("\n")[0][:3] in decision.reason or decision.batching  # the dim name reaches the reason
    text = scaffold(info, name="m", source="dir\n" + payload + "/hostile.onnx", backend="onnxruntime",
                    max_batch_size=8, batching=decision.batching, reason=decision.reason + payload,
                    shapes={"x": ShapeRange((1, 4), (4, 4), (8, 4))})
    data = YAML(typ="safe", pure=True).load(text)
    assert set(data) == {"repository", "server", "models"}
    (model,) = data["models"]
    assert set(model) <= {"name", "source", "backend", "version", "max_batch_size", "dynamic_batching",
                          "inputs", "outputs", "shapes"}
    assert model["source"] == "dir\n" + payload + "/hostile.onnx"
    assert [o["name"] for o in model["outputs"]] == ["y" + payload]
    for line in text.splitlines():  # every line is a key, a list item or a comment of our own
        assert line == "" or line.lstrip().startswith(("#", "-", *[f"{k}:" for k in (
            "repository", "server", "runtime", "http_port", "grpc_port", "metrics_port", "models", "name",
            "source", "backend", "version", "max_batch_size", "dynamic_batching", "preferred_batch_size",
            "max_queue_delay_microseconds", "inputs", "outputs", "shapes", '"x"')])), line


@pytest.mark.parametrize("payload", ["p\ntemplates: tpl\n#", "x\u2028config_overrides: {backend: ../x}"])
def test_init_on_a_hostile_model_writes_a_spec_with_only_our_keys(tmp_path: Path, payload: str) -> None:
    from ruamel.yaml import YAML

    result = init_spec(_hostile_model(tmp_path, payload))
    data = YAML(typ="safe", pure=True).load(result.spec_path.read_text(encoding="utf-8"))
    assert "templates" not in data and "config_overrides" not in data["models"][0]
    dep = load_deployment(result.spec_path)
    assert dep.models[0].spec.config_overrides is None
    assert [t.name for t in dep.models[0].outputs] == ["y" + payload]
