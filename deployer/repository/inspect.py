"""Read-only inspection: list a model's versions, find everything wrong with a repository."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from deployer.errors import RepositoryError
from deployer.repository import fs, serving
from deployer.repository.lock import lock_is_free
from deployer.repository.records import VersionInfo


def list_versions(repository: Path, model: str, *, verify_hashes: bool = True) -> list[VersionInfo]:
    """Every canonical numeric version dir of `model`, oldest first.

    Args:
        repository: the repository root.
        model: the model (directory) name.
        verify_hashes: re-hash every file against the manifest (slower on big engines); when False,
            completeness checks presence and sizes only.

    Raises:
        RepositoryError: the model dir does not exist (the message lists the models found).
    """
    repo = Path(repository)
    model_dir = repo / model
    if not model_dir.is_dir():
        models = sorted(p.name for p in repo.iterdir() if p.is_dir()) if repo.is_dir() else []
        raise RepositoryError(f"model {model!r} not found in {repo}", details=f"models: {models}")
    out = []
    for number, vdir in sorted(fs.version_dirs(model_dir).items()):
        manifest = fs.read_manifest(vdir)
        problems = tuple(fs.manifest_problems(vdir, manifest, hashes=verify_hashes))
        out.append(VersionInfo(number, vdir, manifest, not problems, problems))
    return out


def verify_repository(repository: Path, *, verify_hashes: bool = True) -> list[str]:
    """Problems that would make Triton misbehave or show an interrupted run; empty = healthy.

    Checks: stray directories at the root (Triton takes every subdir as a model, hidden ones too),
    missing config.pbtxt, config.pbtxt differing from the served version's recorded config (pinned),
    incomplete versions (no manifest, files missing/extra/modified), non-canonical dirs Triton would
    still parse as a version (`2_backup`, `02`), stale temp config files and stale staging.
    """
    repo = Path(repository)
    if not repo.is_dir():
        return [f"{repo}: repository directory does not exist"]
    problems: list[str] = []
    for model_dir in sorted(p for p in repo.iterdir() if p.is_dir()):
        name = model_dir.name
        if name.startswith("."):
            problems.append(f"{name}: hidden directory in the repository; Triton would load it as a model")
            continue
        problems.extend(f"{name}/{msg}" for msg in _model_problems(model_dir, verify_hashes))
    for tmp in fs.stale_config_temps(repo):
        problems.append(f"{tmp.name}: stale file from an interrupted run (the next publish removes it)")
    staging = fs.staging_root(repo.resolve())
    if staging.is_dir() and any(staging.iterdir()) and lock_is_free(repo):
        problems.append(f"{staging}: stale staging left by an interrupted run (the next publish removes it)")
    return problems


def _model_problems(model_dir: Path, verify_hashes: bool) -> list[str]:
    problems: list[str] = []
    config = model_dir / fs.CONFIG_NAME
    config_bytes = config.read_bytes() if config.is_file() else None
    if config_bytes is None:
        problems.append(f"{fs.CONFIG_NAME}: missing")
    for tmp in fs.stale_config_temps(model_dir):
        problems.append(f"{tmp.name}: stale temporary config file from an interrupted run")
    for child in sorted(model_dir.iterdir()):
        if not child.is_dir() or fs.version_number(child.name) is not None:
            continue
        if fs.looks_like_version(child.name):
            problems.append(
                f"{child.name}: Triton parses this directory name as a version (stoll); rename or remove it"
            )
        elif child.name not in fs.TRITON_SPECIAL_SUBDIRS:
            problems.append(f"{child.name}: unexpected directory (not a version)")
    versions = sorted(fs.version_dirs(model_dir).items())
    if not versions:
        problems.append("no version directory")
    for number, vdir in versions:
        if number == 0:
            problems.append("0: version 0 is accepted by Triton but easy to misread; use versions >= 1")
        manifest = fs.read_manifest(vdir)
        found = fs.manifest_problems(vdir, manifest, hashes=verify_hashes)
        problems.extend(f"{number}: {msg}" for msg in found)
    if versions and config_bytes is not None:
        state = serving_state(model_dir)
        vdir = dict(versions)[state.head]
        manifest = fs.read_manifest(vdir)
        recorded = manifest.get("config_text") if manifest else None
        if isinstance(recorded, str):
            # The served set is whatever the live pin says (a version renamed in by a killed publish is
            # not served): the live file must be the head's config with exactly that pin.
            try:
                want = serving.live_config(recorded, state.served, state.head)
            except RepositoryError:
                want = None
            if want is None or want.encode() != config_bytes:
                problems.append(
                    f"{fs.CONFIG_NAME}: differs from the config recorded for served version {state.head} "
                    "(interrupted publish/rollback, or edited by hand); re-publish or roll back to repair"
                )
            missing = [v for v in state.served if v not in dict(versions)]
            if missing:
                problems.append(f"{fs.CONFIG_NAME}: serves versions {missing} that do not exist")
    return problems


@dataclass(frozen=True)
class ServingState:
    """What a model's live config.pbtxt serves: the head, the served set, and kept newer versions."""

    head: int
    served: tuple[int, ...]
    newer_kept: tuple[int, ...]

    @property
    def pinned(self) -> bool:
        """True when newer versions exist that are not served (after a rollback or a lower publish)."""
        return bool(self.newer_kept)


def serving_state(model_dir: Path) -> ServingState:
    """Read the head and served versions from the live config (the newest version for legacy configs)."""
    versions = sorted(fs.version_dirs(model_dir))
    config = model_dir / fs.CONFIG_NAME
    text = config.read_text(encoding="utf-8", errors="replace") if config.is_file() else None
    head = serving.head_of(text)
    if head not in versions:
        head = versions[-1] if versions else 0
    served = serving.pinned_versions(text) or (head,)
    return ServingState(head, served, tuple(v for v in versions if v > head))
