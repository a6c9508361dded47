"""Frozen data passed between planning, applying and inspecting a model repository."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, Literal

FileActionKind = Literal["create", "update", "unchanged", "delete"]
VersionStatus = Literal["new", "unchanged", "replace"]


@dataclass(frozen=True)
class ArtifactFile:
    """One file to place in a version dir, from bytes (`data`) or from disk (`source`).

    A `source` that is a directory is copied as a tree, e.g. ONNX with external data kept in
    `model.onnx/` (Triton accepts `model.onnx` as a directory holding `model.onnx` + its data files).
    """

    relpath: str  # POSIX path inside the version dir, e.g. "model.plan" or "model.onnx"
    source: Path | None = None
    data: bytes | None = None


@dataclass(frozen=True)
class ModelArtifact:
    """Everything one model version needs: its files and the model's config.pbtxt text."""

    name: str
    config_text: str
    files: tuple[ArtifactFile, ...]
    version: int | None = None  # None = auto: newest existing + 1, starting at 1
    keep_versions: int | None = None  # prune to the newest N after publish; None = keep all
    # Extra keys merged into the version manifest (spec hash, source sha256, build info ...).
    # Not part of the content hash, so a rebuild with a new timestamp but identical bytes is "unchanged".
    manifest: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FileAction:
    """One planned change on disk; `path` is absolute."""

    action: FileActionKind
    path: PurePath  # a Path for a directory repository, PurePosixPath("/bucket/prefix/...") for S3
    kind: Literal["file", "manifest", "config", "version"]
    size: int | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class PlanRow:
    """A table-friendly line of a plan (what `deployer plan` prints)."""

    model: str
    version: int
    action: FileActionKind
    path: str  # relative to the repository
    detail: str


@dataclass(frozen=True)
class _Entry:
    """One expanded file of a version (a directory source becomes many entries)."""

    relpath: str
    source: Path | None
    data: bytes | None
    sha256: str
    size: int
    mtime_ns: int = 0


@dataclass(frozen=True)
class ModelPlan:
    """What publishing one model will do.

    `status`: "new" = a new version dir is created; "unchanged" = the target version already holds
    identical content (config.pbtxt may still be rewritten if it drifted); "replace" = an explicit,
    existing version is overwritten (only with `force=True`).
    """

    artifact: ModelArtifact
    model_dir: PurePath
    version: int
    status: VersionStatus
    config_action: FileActionKind
    content_sha256: str
    existing_versions: tuple[int, ...]
    prune: tuple[int, ...]
    actions: tuple[FileAction, ...]
    new_model: bool
    entries: tuple[_Entry, ...] = field(repr=False, default=())
    served: tuple[int, ...] = ()  # versions the live config.pbtxt serves after the publish
    live_config_text: str = ""  # the live config.pbtxt to write: the version's config, pinned to `served`
    newer_kept: tuple[int, ...] = ()  # versions above `version`, kept but not served (a pin, as after rollback)

    @property
    def changed(self) -> bool:
        """True when applying this item writes anything."""
        return self.status != "unchanged" or self.config_action != "unchanged" or bool(self.prune)

    @property
    def summary(self) -> str:
        """One line for humans, e.g. `resnet: new version 3; config.pbtxt update; prune [1]`."""
        what = {"new": "new version", "unchanged": "unchanged version", "replace": "replace version"}
        parts = [f"{self.artifact.name}: {what[self.status]} {self.version}"]
        if self.config_action != "unchanged":
            parts.append(f"config.pbtxt {self.config_action}")
        if self.prune:
            parts.append(f"prune {list(self.prune)}")
        if self.newer_kept:
            parts.append(f"pinned: newer versions {list(self.newer_kept)} kept, not served")
        return "; ".join(parts)


@dataclass(frozen=True)
class PublishPlan:
    """The result of `plan_publish`: pure data, nothing written yet."""

    repository: PurePath
    models: tuple[ModelPlan, ...]
    force: bool
    fingerprint: str  # digest of the repository state the plan was computed from

    @property
    def changed(self) -> bool:
        """True when applying the plan writes anything."""
        return any(m.changed for m in self.models)

    def rows(self) -> list[PlanRow]:
        """One row per file action, paths relative to the repository, for printing as a table."""
        rows: list[PlanRow] = []
        for mp in self.models:
            for act in mp.actions:
                if act.kind == "version":
                    detail = "prune old version"
                elif act.kind == "config":
                    detail = "config.pbtxt (written last)"
                elif act.kind == "manifest":
                    detail = "manifest"
                else:
                    detail = f"{act.size} bytes" if act.size is not None else ""
                rows.append(PlanRow(mp.artifact.name, mp.version, act.action, _rel(act.path, self.repository), detail))
        return rows


@dataclass(frozen=True)
class PublishedModel:
    """What `apply_publish` did for one model."""

    name: str
    version: int
    status: VersionStatus
    config_written: bool
    pruned: tuple[int, ...]
    version_dir: PurePath


@dataclass(frozen=True)
class PublishResult:
    """The outcome of `apply_publish`; `plan` is the plan actually applied (re-planned if the repo moved)."""

    repository: PurePath
    models: tuple[PublishedModel, ...]
    replanned: bool
    plan: PublishPlan


@dataclass(frozen=True)
class RollbackResult:
    """The outcome of `rollback`: `version` is served (pinned) with its own config; nothing else changed.

    `kept` are the newer versions still in the repository (not served); `removed` the newer versions
    deleted because `prune=True` was asked for.
    """

    repository: PurePath
    model: str
    version: int
    removed: tuple[int, ...]
    config_restored: bool
    kept: tuple[int, ...] = ()
    served: tuple[int, ...] = ()


@dataclass(frozen=True)
class VersionInfo:
    """One numeric version dir of a model, as found on disk."""

    number: int
    path: PurePath
    manifest: Mapping[str, Any] | None
    complete: bool  # manifest present and every file matches its recorded sha256
    problems: tuple[str, ...] = ()


def _rel(path: PurePath, root: PurePath) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)
