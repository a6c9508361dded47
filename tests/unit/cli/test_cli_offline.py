"""The offline CLI through the real console script: init -> validate -> render -> plan -> publish -> rollback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import onnx
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from deployer.spec import load_deployment

MODELS = Path(__file__).resolve().parents[2] / "data" / "specs" / "models"
DEPLOYER = Path(sys.executable).parent / "deployer"


def run(*args: str | Path, cwd: Path, code: int = 0, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(DEPLOYER), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=300,
                          check=False, env=None if env is None else {**os.environ, **env})
    assert proc.returncode == code, f"deployer {args}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def flat(text: str) -> str:
    """Undo rich's line wrapping."""
    return " ".join(text.split())


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
    live = text_format.Parse((repo / "relu" / "config.pbtxt").read_text(encoding="utf-8"),
                             model_config_pb2.ModelConfig())
    assert list(live.version_policy.specific.versions) == [1]  # publish pins the served version
    live.ClearField("version_policy")
    assert live == expected
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
    v2 = tree(repo / "relu" / "2")
    out = flat(run("rollback", spec.name, "relu", cwd=tmp_path).stdout)
    assert "version 1 is served" in out and "newer versions [2] are kept" in out
    assert tree(repo / "relu" / "2") == v2 and (repo / "relu" / "1" / "model.onnx").is_file()
    assert "versions [1, 2]; repository serves [1]; pinned: newer versions [2] kept" in flat(
        run("status", spec.name, cwd=tmp_path, code=1).stdout)
    run("rollback", spec.name, "relu", cwd=tmp_path, code=2)  # nothing older than 1
    out = flat(run("rollback", spec.name, "relu", "--to", "2", cwd=tmp_path).stdout)
    assert "version 2 is served" in out
    out = flat(run("rollback", spec.name, "relu", "--to", "1", "--prune", cwd=tmp_path).stdout)
    assert "removed newer versions [2]" in out and not (repo / "relu" / "2").exists()


def test_bad_input_exits_2_without_traceback(tmp_path: Path) -> None:
    err = run("validate", "missing.yaml", cwd=tmp_path, code=2).stderr
    assert "spec file not found" in err
    err = run("validate", "missing.yaml", "--fallback", "tensorrt", cwd=tmp_path, code=2).stderr
    assert "--fallback" in err


TWO_MODELS = """\
repository: {repository}
models:
  - {{name: first, source: relu.onnx, max_batch_size: 8}}
  - {{name: second, source: relu.onnx, max_batch_size: 8}}
"""


def _two_model_spec(tmp_path: Path, repository: str = "model_repository") -> Path:
    shutil.copyfile(MODELS / "relu.onnx", tmp_path / "relu.onnx")
    spec = tmp_path / "two.yaml"
    spec.write_text(TWO_MODELS.format(repository=repository), encoding="utf-8")
    return spec


def _one_error(proc: subprocess.CompletedProcess[str]) -> str:
    """The CLI's stderr, checked to hold exactly one `error:` report (printed once, no traceback)."""
    assert proc.stderr.count("error:") == 1, proc.stderr
    return proc.stderr


def test_render_output_that_is_not_a_directory_is_bad_input_and_writes_nothing(tmp_path: Path) -> None:
    spec = _two_model_spec(tmp_path)
    afile = tmp_path / "afile"
    afile.write_text("keep me", encoding="utf-8")
    before = tree(tmp_path)

    err = _one_error(run("render", spec.name, "-o", "afile", cwd=tmp_path, code=2))
    assert "render output afile exists and is not a directory" in err
    err = _one_error(run("render", spec.name, "-o", "afile/sub", cwd=tmp_path, code=2))
    assert "afile/sub cannot be created: afile is not a directory" in err
    assert tree(tmp_path) == before, "nothing written, the file untouched"

    # <out>/<model> is a file for the second model: refused before the first model is written
    out = tmp_path / "out"
    out.mkdir()
    (out / "second").write_text("", encoding="utf-8")
    err = _one_error(run("render", spec.name, "-o", "out", cwd=tmp_path, code=2))
    assert f"render output {Path('out') / 'second'} (model 'second') exists and is not a directory" in err
    (out / "second").unlink()
    (out / "second" / "config.pbtxt").mkdir(parents=True)
    err = _one_error(run("render", spec.name, "-o", "out", cwd=tmp_path, code=2))
    assert "out/second/config.pbtxt (model 'second') is a directory" in err
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == ["second", "second/config.pbtxt"]

    # the happy path still works, into a directory created on the way
    done = run("render", spec.name, "-o", "new/deep", cwd=tmp_path).stdout
    assert "wrote new/deep/first/config.pbtxt" in done and "wrote new/deep/second/config.pbtxt" in done
    assert sorted(p.name for p in (tmp_path / "new" / "deep").rglob("*")) == [
        "config.pbtxt", "config.pbtxt", "first", "second"], "no temp files left"


def test_render_output_in_an_unwritable_place_names_it_without_traceback(tmp_path: Path) -> None:
    spec = _two_model_spec(tmp_path)
    target = Path("/sys/deployer-render-test")  # not creatable, even by root (EPERM / EACCES / EROFS)
    proc = run("render", spec.name, "-o", target, cwd=tmp_path, code=3)
    assert f"cannot write the rendered configs to {target}" in _one_error(proc)
    assert not target.exists()


def test_rollback_loads_the_spec_like_every_command(tmp_path: Path) -> None:
    # a list is a spec error located in the file, not "model not found in .../['a', 'b']"
    spec = _two_model_spec(tmp_path, repository="[a, b]")
    err = _one_error(run("rollback", spec.name, "first", cwd=tmp_path, code=2))
    assert "two.yaml:1:" in err and "repository" in err and "not found" not in err

    # `~` is expanded as `publish` expands it
    home = tmp_path / "home"
    home.mkdir()
    spec = _two_model_spec(tmp_path, repository="~/repos/main")
    env = {"HOME": str(home)}
    run("publish", spec.name, cwd=tmp_path, env=env)
    m = onnx.load(str(tmp_path / "relu.onnx"))
    m.doc_string = "retrained"
    onnx.save(m, str(tmp_path / "relu.onnx"))
    assert "first: version 2 new" in run("publish", spec.name, cwd=tmp_path, env=env).stdout
    repo = home / "repos" / "main"
    out = run("rollback", spec.name, "first", cwd=tmp_path, env=env).stdout
    assert "first: version 1 is served (serves [1])" in out
    assert "serves [1]" in (repo / "first" / "config.pbtxt").read_text(encoding="utf-8")
    assert (repo / "first" / "2").is_dir() and (repo / "second" / "2").is_dir()

    # an unknown model lists the models only: no hidden entries (staging, lock), no stray dirs
    (repo / ".hidden").mkdir()
    (repo / "notes").mkdir()
    assert any(p.name.startswith(".") for p in repo.parent.iterdir()), "the staging dir lives next to the repo"
    err = _one_error(run("rollback", spec.name, "nope", cwd=tmp_path, env=env, code=2))
    assert f"model 'nope' not found in {repo}" in err
    assert "models: ['first', 'second']" in err


def test_rollback_in_an_empty_repository_lists_no_models(tmp_path: Path) -> None:
    spec = _two_model_spec(tmp_path, repository="repos/main")
    repo = tmp_path / "repos" / "main"
    run("publish", spec.name, cwd=tmp_path)
    for model in ("first", "second"):
        shutil.rmtree(repo / model)
    (repo / "lost+found").mkdir()
    err = _one_error(run("rollback", spec.name, "first", cwd=tmp_path, code=2))
    assert f"model 'first' not found in {repo}" in err and "models: []" in err


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
