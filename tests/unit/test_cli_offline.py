"""The offline CLI through the real console script: init -> validate -> render -> plan -> publish -> rollback."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import onnx
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from deployer.spec import load_deployment

MODELS = Path(__file__).resolve().parents[1] / "data" / "specs" / "models"
DEPLOYER = Path(sys.executable).parent / "deployer"


def run(*args: str | Path, cwd: Path, code: int = 0) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(DEPLOYER), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == code, f"deployer {args}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def tree(root: Path) -> dict[str, bytes | None]:
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def test_offline_lifecycle(tmp_path: Path) -> None:
    shutil.copyfile(MODELS / "relu.onnx", tmp_path / "relu.onnx")
    repo = tmp_path / "model_repository"

    out = run("init", "relu.onnx", cwd=tmp_path).stdout
    spec = tmp_path / "relu.deployer.yaml"
    assert "wrote" in out and spec.is_file() and "max_batch_size 8" in out
    run("init", "relu.onnx", cwd=tmp_path, code=2)  # refuses to overwrite
    run("init", "relu.onnx", "--force", "--name", "relu", cwd=tmp_path)

    assert "valid (1 model)" in run("validate", spec.name, cwd=tmp_path).stdout

    rendered = run("render", spec.name, cwd=tmp_path).stdout
    assert "# ---- relu/config.pbtxt" in rendered and 'name: "relu"' in rendered
    run("render", spec.name, "-o", "rendered", cwd=tmp_path)
    pbtxt = (tmp_path / "rendered" / "relu" / "config.pbtxt").read_text(encoding="utf-8")
    parsed = text_format.Parse(pbtxt, model_config_pb2.ModelConfig())
    expected = json_format.ParseDict(dict(load_deployment(spec).models[0].config), model_config_pb2.ModelConfig())
    assert parsed == expected

    plan = run("plan", spec.name, cwd=tmp_path).stdout
    assert "create" in plan and "config.pbtxt" in plan
    assert not repo.exists(), "plan must write nothing"

    assert "relu: version 1 new" in run("publish", spec.name, cwd=tmp_path).stdout
    assert (repo / "relu" / "1" / "model.onnx").read_bytes() == (tmp_path / "relu.onnx").read_bytes()
    assert text_format.Parse((repo / "relu" / "config.pbtxt").read_text(encoding="utf-8"),
                             model_config_pb2.ModelConfig()) == expected
    before = tree(repo)
    assert "relu: version 1 unchanged" in run("publish", spec.name, cwd=tmp_path).stdout
    assert tree(repo) == before
    assert "no changes" in run("plan", spec.name, cwd=tmp_path).stdout

    # New weights (same interface) -> version 2; rollback -> version 1 again.
    m = onnx.load(str(tmp_path / "relu.onnx"))
    m.doc_string = "retrained"
    onnx.save(m, str(tmp_path / "relu.onnx"))
    assert "relu: version 2 new" in run("publish", spec.name, cwd=tmp_path).stdout
    assert (repo / "relu" / "2").is_dir()
    out = run("rollback", spec.name, "relu", cwd=tmp_path).stdout
    assert "version 1" in out and "removed [2]" in out
    assert not (repo / "relu" / "2").exists() and (repo / "relu" / "1" / "model.onnx").is_file()
    run("rollback", spec.name, "relu", cwd=tmp_path, code=2)  # nothing older than 1


def test_bad_input_exits_2_without_traceback(tmp_path: Path) -> None:
    err = run("validate", "missing.yaml", cwd=tmp_path, code=2).stderr
    assert "spec file not found" in err
    err = run("validate", "missing.yaml", "--fallback", "tensorrt", cwd=tmp_path, code=2).stderr
    assert "--fallback" in err


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "$ref"] + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def _types(node: Any) -> set[str]:
    if isinstance(node, dict):
        own = node.get("type")
        found = {own} if isinstance(own, str) else set(own) if isinstance(own, list) else set()
        return found.union(*(_types(v) for k, v in node.items() if k not in ("default", "examples", "const")))
    if isinstance(node, list):
        return set().union(*(_types(v) for v in node))
    return set()


def test_schema_is_json_schema(tmp_path: Path) -> None:
    schema = json.loads(run("schema", cwd=tmp_path).stdout)
    assert schema["type"] == "object" and schema["required"] == ["models"]
    assert schema["additionalProperties"] is False  # unknown keys are rejected by editors too
    assert {"repository", "server", "defaults", "models"} <= set(schema["properties"])
    defs = schema["$defs"]
    for ref in _refs(schema):
        assert ref.startswith("#/$defs/") and ref.split("/")[-1] in defs, ref
    assert _types(schema) <= {"object", "array", "string", "integer", "number", "boolean", "null"}
    model = defs["ModelSpec"]
    assert model["additionalProperties"] is False and "max_batch_size" in model["properties"]
    assert model["properties"]["max_batch_size"]["description"]


def test_python_dash_m_help() -> None:
    proc = subprocess.run([sys.executable, "-m", "deployer", "--help"], capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    for command in ("validate", "init", "render", "plan", "publish", "rollback", "schema"):
        assert command in proc.stdout
