"""A locked or unwritable repository: exit 3 naming who holds it or which path, nothing changed."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from deployer.repository import ArtifactFile, ModelArtifact, apply_publish, plan_publish
from tests.measured import run_deployer

MODELS = Path(__file__).resolve().parents[2] / "data" / "specs" / "models"

SPEC = """\
models:
  - {name: first, source: relu.onnx, max_batch_size: 8}
  - {name: second, source: relu.onnx, max_batch_size: 8}
"""


def _tree(root: Path) -> dict[str, bytes | None]:
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def _project(tmp_path: Path) -> Path:
    shutil.copyfile(MODELS / "relu.onnx", tmp_path / "relu.onnx")
    (tmp_path / "spec.yaml").write_text(SPEC, encoding="utf-8")
    r = run_deployer("publish", "spec.yaml", cwd=tmp_path)
    assert r.code == 0, r.output
    (tmp_path / "relu.onnx").write_bytes(_retrained())
    return tmp_path / "model_repository"


def _retrained() -> bytes:
    import onnx

    m = onnx.load(str(MODELS / "relu.onnx"))
    m.doc_string = "retrained"
    return m.SerializeToString()


@contextlib.contextmanager
def _held_lock(repo: Path) -> Iterator[int]:
    """Another process holding the repository lock until the block ends."""
    code = (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(repo / '.deployer.lock')!r}, os.O_RDWR)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "print('held', flush=True)\n"
        "sys.stdin.read()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        yield proc.pid
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=10)


@pytest.mark.parametrize("command", [("publish", "spec.yaml"), ("rollback", "spec.yaml", "first", "--to", "1")])
def test_a_held_lock_names_its_holder_and_exits_3_after_the_deadline(tmp_path: Path, command: tuple[str, ...]) -> None:
    repo = _project(tmp_path)
    assert run_deployer("publish", "spec.yaml", cwd=tmp_path).code == 0  # version 2 of both
    before = _tree(repo)
    with _held_lock(repo) as pid:
        t0 = time.monotonic()
        r = run_deployer(*command, "--lock-timeout", "1", cwd=tmp_path)
        waited = time.monotonic() - t0
    assert r.code == 3, r.output
    flat = " ".join(r.output.split())
    assert f"locked by another deployer run (pid {pid} on" in flat and "gave up after 1 s" in flat, flat
    assert "Traceback" not in r.output
    assert waited >= 1.0  # it waited out its deadline; a hang is killed by run_deployer (code -9)
    assert _tree(repo) == before


def _immutable(path: Path) -> None:
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
        pytest.skip("chattr +i is not available on this filesystem")


def _mutable(path: Path) -> None:
    subprocess.run(["chattr", "-i", str(path)], check=False, capture_output=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="chattr +i needs root")
@pytest.mark.parametrize("which", ["first", "second"])
def test_an_unwritable_model_dir_or_repository_changes_no_model(tmp_path: Path, which: str) -> None:
    """Immutable (chattr +i) stops root too, like a read-only mount: all models or none, exit 3."""
    repo = _project(tmp_path)
    target = (repo / which).resolve()
    before = _tree(repo)
    _immutable(target)
    try:
        r = run_deployer("publish", "spec.yaml", cwd=tmp_path)
        after = _tree(repo)
    finally:
        _mutable(target)
    assert r.code == 3, r.output
    assert "Traceback" not in r.output
    assert f"cannot write to {target}" in " ".join(r.output.split())
    assert after == before


def test_read_only_bind_mount_is_refused_before_any_commit(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    config = 'name: "m"\nbackend: "onnxruntime"\nmax_batch_size: 8\n'
    art = ModelArtifact("m", config, (ArtifactFile("model.onnx", data=b"a"),))
    apply_publish(plan_publish(repo, [art]))
    mount = subprocess.run(["mount", "--bind", "-o", "ro", str(repo / "m"), str(repo / "m")], capture_output=True)
    if mount.returncode:
        pytest.skip(f"cannot make a read-only bind mount here: {mount.stderr.strip()}")
    try:
        from deployer.errors import EnvironmentProblem

        new = ModelArtifact("m", art.config_text, (ArtifactFile("model.onnx", data=b"b"),))
        before = _tree(repo)
        with pytest.raises(EnvironmentProblem, match=r"cannot write to .*/m: Read-only file system"):
            apply_publish(plan_publish(repo, [new]))
        assert _tree(repo) == before
    finally:
        subprocess.run(["umount", str(repo / "m")], check=False)
