"""Hostile inputs through the real console script: ONNX metadata, templates, symlinks, external data, FIFOs.

Each case must end with the documented exit code, no traceback, in bounded time and memory, with the
repository byte-identical and nothing outside it touched.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from ruamel.yaml import YAML

from tests.measured import Measured, run_deployer

MODELS = Path(__file__).resolve().parents[2] / "data" / "specs" / "models"
MAX_CPU_S = 5.0  # CPU seconds of the child (see tests/measured.py); hangs are killed at 120 s wall
MAX_RSS = 500 * 2**20


def _bounded(r: Measured) -> None:
    assert "Traceback" not in r.output, r.output
    assert r.code != -9, f"killed after {r.wall_s:.1f} s wall (hang)"
    assert r.cpu_s < MAX_CPU_S, f"used {r.cpu_s:.1f} s of CPU ({r.wall_s:.1f} s wall)"
    assert r.peak_rss_bytes < MAX_RSS, f"peak RSS {r.peak_rss_bytes / 2**20:.0f} MiB"


def _tree(root: Path) -> dict[str, bytes | None]:
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() and not p.is_symlink() else None)
            for p in sorted(root.rglob("*"))}


def _spec(tmp_path: Path, body: str = "") -> Path:
    shutil.copyfile(MODELS / "relu.onnx", tmp_path / "relu.onnx")
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"models:\n  - name: relu\n    source: relu.onnx\n{body}", encoding="utf-8")
    return spec


# --------------------------------------------------------------------------- 1. init: metadata is data

@pytest.mark.parametrize("payload", [
    "p\ntemplates: tpl\n#",
    "q\r\nrepository: /tmp/elsewhere",
    "r\u2028server: {runtime: docker, image: evil}",
    'x}\n    config_overrides: {name: evil, backend: "../../../tmp/x"}\n#',
])
def test_init_of_a_hostile_onnx_file_adds_no_keys(tmp_path: Path, payload: str) -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N" + payload, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N" + payload, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8,
                              producer_name=payload, producer_version=payload)
    onnx.save(model, tmp_path / "m.onnx")
    r = run_deployer("init", "m.onnx", cwd=tmp_path)
    _bounded(r)
    assert r.code == 0, r.output
    text = (tmp_path / "m.deployer.yaml").read_text(encoding="utf-8")
    top = [line.split(":")[0] for line in text.splitlines() if line and not line.startswith((" ", "#"))]
    assert top == ["repository", "server", "models"], text
    (model,) = YAML(typ="safe", pure=True).load(text)["models"]
    assert "config_overrides" not in model and "templates" not in model
    v = run_deployer("validate", "m.deployer.yaml", cwd=tmp_path)
    assert v.code == 0, v.output


# --------------------------------------------------------------------------- 2. templates are sandboxed

@pytest.mark.parametrize("payload", [
    "{{ cycler.__init__.__globals__.os.system('touch PWNED') }}",
    "{{ lipsum.__globals__['os'].popen('touch PWNED').read() }}",
    "{% for c in ''.__class__.__base__.__subclasses__() %}{% endfor %}",
])
def test_render_with_a_hostile_template_runs_nothing(tmp_path: Path, payload: str) -> None:
    (tmp_path / "tpl").mkdir()
    (tmp_path / "tpl" / "config.pbtxt.j2").write_text(f'name: "relu"\n{payload}\n', encoding="utf-8")
    spec = _spec(tmp_path)
    spec.write_text("templates: tpl\n" + spec.read_text(encoding="utf-8"), encoding="utf-8")
    r = run_deployer("render", "spec.yaml", "-o", "out", cwd=tmp_path)
    _bounded(r)
    assert r.code == 2, r.output
    assert "sandbox" in r.output or "failed to render" in r.output
    assert not (tmp_path / "PWNED").exists()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.pbtxt"))


# --------------------------------------------------------------------------- 3. symlinks

def _plant_staging(tmp_path: Path, precious: Path) -> None:
    (tmp_path / ".model_repository.deployer-staging").symlink_to(precious, target_is_directory=True)


def _plant_model_dir(tmp_path: Path, precious: Path) -> None:
    (tmp_path / "model_repository").mkdir()
    (tmp_path / "model_repository" / "relu").symlink_to(precious, target_is_directory=True)


def _plant_lock(tmp_path: Path, precious: Path) -> None:
    (tmp_path / "model_repository").mkdir()
    (tmp_path / "model_repository" / ".deployer.lock").symlink_to(precious / "created-by-lock")


@pytest.mark.parametrize("plant", [_plant_staging, _plant_model_dir, _plant_lock])
def test_publish_never_follows_a_planted_symlink(tmp_path: Path, plant: Callable[[Path, Path], None]) -> None:
    precious = tmp_path / "precious"
    (precious / "sub").mkdir(parents=True)
    (precious / "keep.txt").write_text("do not delete")
    _spec(tmp_path)
    plant(tmp_path, precious)
    before = _tree(precious)
    r = run_deployer("publish", "spec.yaml", cwd=tmp_path)
    _bounded(r)
    assert r.code == 2, r.output
    assert "symbolic link" in r.output
    assert _tree(precious) == before


# --------------------------------------------------------------------------- 5. external data

def _external(tmp_path: Path, location: str) -> None:
    w = numpy_helper.from_array(__import__("numpy").ones((4,), "float32"), "w")
    w.data_location = TensorProto.EXTERNAL
    w.ClearField("float_data")
    w.ClearField("raw_data")
    for k, v in (("location", location), ("offset", "0"), ("length", "16")):
        e = w.external_data.add()
        e.key, e.value = k, v
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], initializer=[w],
    )
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "m.onnx").write_bytes(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()
    )
    (tmp_path / "spec.yaml").write_text("models:\n  - name: m\n    source: model/m.onnx\n", encoding="utf-8")


@pytest.mark.parametrize("location", ["/etc/hostname", "../secret.bin", "sub/../../secret.bin", "link/secret.bin"])
def test_external_data_outside_the_model_folder_is_refused_at_validate(tmp_path: Path, location: str) -> None:
    (tmp_path / "secret.bin").write_bytes(b"\0" * 16)
    _external(tmp_path, location)
    (tmp_path / "model" / "sub").mkdir()
    (tmp_path / "model" / "link").symlink_to(tmp_path, target_is_directory=True)
    for command in ("validate", "publish"):
        r = run_deployer(command, "spec.yaml", cwd=tmp_path)
        _bounded(r)
        assert r.code == 2, r.output
        assert "spec.yaml:3:" in r.output and "models[0].source" in r.output, r.output
        assert "outside the model's folder" in " ".join(r.output.split())
    assert not (tmp_path / "model_repository").exists()


def test_external_data_inside_the_model_folder_is_accepted(tmp_path: Path) -> None:
    _external(tmp_path, "weights.bin")
    (tmp_path / "model" / "weights.bin").write_bytes(b"\0" * 16)
    r = run_deployer("validate", "spec.yaml", cwd=tmp_path)
    assert r.code == 0, r.output


# --------------------------------------------------------------------------- 11. files that are not files

@pytest.mark.parametrize("kind", ["fifo", "socket", "device"])
def test_a_special_file_as_source_is_refused_at_once(tmp_path: Path, kind: str) -> None:
    import socket

    target = tmp_path / "relu.onnx"
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "socket":
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(target))
    else:
        target.symlink_to("/dev/zero")
    (tmp_path / "spec.yaml").write_text("models:\n  - name: relu\n    source: relu.onnx\n", encoding="utf-8")
    r = run_deployer("validate", "spec.yaml", cwd=tmp_path, timeout_s=10)
    _bounded(r)
    assert r.code == 2, r.output
    assert "spec.yaml:3:" in r.output and "not a regular file" in " ".join(r.output.split()), r.output
