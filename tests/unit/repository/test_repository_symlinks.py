"""Symlinks deployer did not create never redirect a publish, prune, rollback or lock outside the repository."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployer.errors import RepositoryError
from deployer.repository import (
    LOCK_NAME,
    ArtifactFile,
    ModelArtifact,
    apply_publish,
    plan_publish,
    rollback,
    staging_root,
)


def _art(payload: bytes = b"weights-1", keep: int | None = None) -> ModelArtifact:
    return ModelArtifact(
        name="m",
        config_text='name: "m"\nbackend: "onnxruntime"\nmax_batch_size: 8\n',
        files=(ArtifactFile("model.onnx", data=payload),),
        keep_versions=keep,
    )


def _publish(repo: Path, art: ModelArtifact) -> None:
    apply_publish(plan_publish(repo, [art]))


def _tree(root: Path) -> dict[str, bytes | None]:
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


@pytest.fixture
def precious(tmp_path: Path) -> Path:
    d = tmp_path / "precious"
    (d / "sub").mkdir(parents=True)
    (d / "keep.txt").write_text("do not delete")
    (d / "sub" / "more.txt").write_text("nor this")
    return d


def test_planted_staging_symlink_is_refused_and_its_target_kept(tmp_path: Path, precious: Path) -> None:
    repo = tmp_path / "repo"
    _publish(repo, _art())
    staging_root(repo).rmdir()  # planted before deployer made it (e.g. in a shared parent dir)
    staging_root(repo).symlink_to(precious, target_is_directory=True)
    before = _tree(precious)
    with pytest.raises(RepositoryError, match=r"staging directory .* is a symbolic link"):
        _publish(repo, _art(b"weights-2"))
    with pytest.raises(RepositoryError, match=r"symbolic link"):
        rollback(repo, "m")
    assert _tree(precious) == before
    assert sorted(p.name for p in (repo / "m").iterdir()) == ["1", "config.pbtxt"]


def test_planted_staging_dir_of_another_mode_is_refused(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    _publish(repo, _art())
    root = staging_root(repo)
    root.rmdir()
    root.mkdir(mode=0o777)
    root.chmod(0o777)  # world-writable: someone else could plant links inside it
    (root / "op-planted").symlink_to(tmp_path)
    with pytest.raises(RepositoryError, match=r"not private to this user"):
        _publish(repo, _art(b"weights-2"))
    assert (root / "op-planted").is_symlink()


def test_model_dir_symlink_is_refused_for_publish_and_rollback(tmp_path: Path, precious: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "m").symlink_to(precious, target_is_directory=True)
    before = _tree(precious)
    with pytest.raises(RepositoryError, match=r"model directory .*m is a symbolic link"):
        plan_publish(repo, [_art()])
    with pytest.raises(RepositoryError, match=r"symbolic link"):
        rollback(repo, "m", 1)
    assert _tree(precious) == before


def test_version_dir_symlink_is_never_pruned_through(tmp_path: Path, precious: Path) -> None:
    repo = tmp_path / "repo"
    _publish(repo, _art(keep=1))
    (repo / "m" / "7").symlink_to(precious, target_is_directory=True)
    before = _tree(precious)
    with pytest.raises(RepositoryError, match=r"version directory .*7 is a symbolic link"):
        _publish(repo, _art(b"weights-2", keep=1))
    assert _tree(precious) == before


def test_dangling_lock_symlink_creates_nothing_at_its_target(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    _publish(repo, _art())
    target = tmp_path / "elsewhere" / "created-by-lock"
    target.parent.mkdir()
    (repo / LOCK_NAME).unlink()
    (repo / LOCK_NAME).symlink_to(target)
    with pytest.raises(RepositoryError, match=r"lock file .* is a symbolic link"):
        _publish(repo, _art(b"weights-2"))
    with pytest.raises(RepositoryError, match=r"lock file .* is a symbolic link"):
        rollback(repo, "m")
    assert not target.exists()


def test_staging_dir_is_created_private(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    _publish(repo, _art())
    mode = staging_root(repo).stat().st_mode & 0o777
    assert mode == 0o700, oct(mode)
