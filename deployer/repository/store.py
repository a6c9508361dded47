"""What planning reads from a repository, behind one small interface: a local directory or an S3 prefix.

The planner (`plan.py`) only asks these questions, so the same planning (versions, content reuse,
pins, pruning) decides a publish into a directory and into a bucket; only the appliers differ
(`apply.py` renames and fsyncs, `s3_apply.py` uploads, verifies and switches with one PUT).
Locations are `PurePath`s: a real `Path` for a directory, `PurePosixPath("/bucket/prefix")` for S3.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any, Protocol

from deployer.errors import RepositoryError
from deployer.repository import fs


class RepoReader(Protocol):
    """Read-only view of one repository, addressed by model name and version number."""

    @property
    def root(self) -> PurePath:
        """The repository location (plans name paths under it)."""
        ...

    def check_root(self) -> None:
        """Raise RepositoryError when the location cannot be a repository."""

    def model_exists(self, name: str) -> bool:
        """True if anything of the model is there (raises when it is something deployer must not touch)."""

    def versions(self, name: str) -> dict[int, PurePath]:
        """Canonical numeric versions of the model and their locations."""

    def config_text(self, name: str) -> str | None:
        """The live config.pbtxt text (None: none)."""

    def manifest_bytes(self, name: str, version: int) -> bytes | None:
        """The version's manifest as stored (None: missing)."""

    def version_files(self, name: str, version: int) -> list[str]:
        """Relpaths of the version's files, manifest excluded."""

    def problems(self, name: str, version: int, manifest: Mapping[str, Any] | None) -> list[str]:
        """Why the version is not exactly what its manifest records (empty: complete and verified)."""


def parse_manifest(data: bytes | None) -> dict[str, Any] | None:
    """A manifest's JSON object, or None when missing or not an object."""
    import json

    if data is None:
        return None
    try:
        parsed = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return parsed if isinstance(parsed, dict) else None


class LocalReader:
    """A repository directory on this machine (the original, filesystem-backed reads)."""

    def __init__(self, root: Path) -> None:
        self._root = root

    @property
    def root(self) -> Path:
        return self._root

    def check_root(self) -> None:
        if self._root.exists() and not self._root.is_dir():
            raise RepositoryError(f"repository path {self._root} exists and is not a directory")

    def model_exists(self, name: str) -> bool:
        model_dir = self._root / name
        fs.refuse_symlink(model_dir, "model directory")
        if model_dir.exists() and not model_dir.is_dir():
            raise RepositoryError(f"{model_dir} exists and is not a directory", hint="move it away")
        return model_dir.exists()

    def versions(self, name: str) -> dict[int, PurePath]:
        return dict(fs.version_dirs(self._root / name))

    def config_text(self, name: str) -> str | None:
        path = self._root / name / fs.CONFIG_NAME
        try:
            return path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise RepositoryError(f"cannot read {path}: {exc}", hint="fix or remove the file") from exc

    def manifest_bytes(self, name: str, version: int) -> bytes | None:
        try:
            return (self._root / name / str(version) / fs.MANIFEST_NAME).read_bytes()
        except OSError:
            return None

    def version_files(self, name: str, version: int) -> list[str]:
        return sorted(fs.disk_files(self._root / name / str(version)))

    def problems(self, name: str, version: int, manifest: Mapping[str, Any] | None) -> list[str]:
        return fs.manifest_problems(self._root / name / str(version), manifest)
