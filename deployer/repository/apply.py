"""The only code that changes a repository: publish under the lock, and rollback."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import deployer
from deployer.errors import EnvironmentProblem, RepositoryError
from deployer.repository import fs, serving
from deployer.repository.lock import DEFAULT_LOCK_TIMEOUT_S, repository_lock
from deployer.repository.plan import _plan, fingerprint, hash_cache
from deployer.repository.records import ModelPlan, PublishedModel, PublishPlan, PublishResult, RollbackResult
from deployer.repository.store import LocalReader

LOGGER = logging.getLogger(__name__)


def apply_publish(plan: PublishPlan, *, lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S) -> PublishResult:
    """Carry out a publish plan, crash-safely.

    Under an exclusive lock on `<repo>/.deployer.lock`: remove leftovers of killed runs, re-plan if the
    repository changed since `plan` was made, check that every directory to be changed is writable
    (all models or none), stage every new version dir in a scratch area next to the repository (files
    fsynced, manifest written), and only when all models are staged commit them one by one:

    - a new version dir is renamed into `<repo>/<model>/<N>`, where Triton does not see it yet: the
      live config.pbtxt pins the served versions (`version_policy: specific`, see `serving`);
    - then config.pbtxt is replaced atomically: the one switch that changes the served version and
      its config together;
    - replacing an existing version (`force`) swaps the whole model dir (old versions hard-linked,
      the new version and config in place) with one `renameat2(RENAME_EXCHANGE)`;
    - pruning (keep_versions) renames unserved old versions out last.

    A kill at any moment leaves every model either as it was or as published; a version renamed in
    but not yet switched to is reused by the next publish of the same content.

    Args:
        plan: from `plan_publish`.
        lock_timeout_s: how long to wait for another deployer run to release the lock.

    Returns:
        What was done per model, and the plan actually applied.

    Raises:
        RepositoryError: the re-plan fails or a source changed after planning.
        EnvironmentProblem: locked too long, or a directory is not writable (nothing changed then).
    """
    repo = Path(plan.repository)
    try:
        repo.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EnvironmentProblem(f"cannot create the repository {repo}: {exc.strerror}",
                                 hint="pick a writable location for `repository:`") from None
    names = [m.artifact.name for m in plan.models]
    with repository_lock(repo, lock_timeout_s):
        fs.clean_stale(repo, [repo / n for n in names])
        replanned = False
        if fingerprint(LocalReader(repo), names) != plan.fingerprint:
            LOGGER.info("repository %s changed since planning; planning again under the lock", repo)
            plan = _plan(LocalReader(repo), [m.artifact for m in plan.models], plan.force, hash_cache(plan))
            replanned = True
        done: list[PublishedModel] = []
        if not plan.changed:
            done = [_result(m, config_written=False) for m in plan.models]
            return PublishResult(repo, tuple(done), replanned, plan)
        for d in sorted({Path(m.model_dir) if not m.new_model else repo for m in plan.models if m.changed}):
            fs.probe_writable(d)
        op = fs.new_operation_dir(repo)
        try:
            staged = {m.artifact.name: _stage(m, op) for m in plan.models if m.status != "unchanged"}
            for m in plan.models:
                done.append(_commit(m, staged.get(m.artifact.name), op))
        finally:
            fs.remove_tree(op)
    return PublishResult(repo, tuple(done), replanned, plan)


def _result(m: ModelPlan, *, config_written: bool) -> PublishedModel:
    return PublishedModel(m.artifact.name, m.version, m.status, config_written, m.prune, m.model_dir / str(m.version))


def _manifest(m: ModelPlan, files: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    text = m.artifact.config_text
    return {
        **dict(m.artifact.manifest),
        "format": fs.MANIFEST_FORMAT,
        "tool": "deployer",
        "tool_version": deployer.__version__,
        "model": m.artifact.name,
        "version": m.version,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "files": dict(files),
        "config_sha256": fs.sha256_bytes(text.encode()),
        "config_text": text,
        "content_sha256": m.content_sha256,
    }


def _stage(m: ModelPlan, op: Path) -> Path:
    """Build what the commit renames in: the version dir, or a whole model dir (new model, or replace)."""
    if m.new_model or m.status == "replace":
        root = op / f"model-{m.artifact.name}"
        root.mkdir()
        if m.status == "replace":  # every other version that stays, hard-linked: the swap must keep them
            for v in m.existing_versions:
                if v != m.version and v not in m.prune:
                    fs.link_tree(Path(m.model_dir) / str(v), root / str(v))
        _stage_version(m, root / str(m.version))
        fs.write_bytes_durable(root / fs.CONFIG_NAME, m.live_config_text.encode())
        fs.fsync_dir(root)
    else:
        root = op / f"version-{m.artifact.name}-{m.version}"
        _stage_version(m, root)
    fs.fsync_dir(op)
    return root


def _stage_version(m: ModelPlan, vdir: Path) -> None:
    vdir.mkdir(parents=True)
    files: dict[str, dict[str, Any]] = {}
    made_dirs = {vdir}
    for e in m.entries:
        dst = vdir / e.relpath
        if dst.parent not in made_dirs:
            dst.parent.mkdir(parents=True, exist_ok=True)
            made_dirs.add(dst.parent)
        if e.data is not None:
            fs.write_bytes_durable(dst, e.data)
            sha, size = e.sha256, e.size
        else:
            assert e.source is not None
            LOGGER.debug("copying %s -> %s", e.source, dst)
            sha, size = fs.copy_file_durable(e.source, dst)
        if sha != e.sha256:
            raise RepositoryError(
                f"model {m.artifact.name!r}: source {e.source} changed after planning (sha256 differs)",
                hint="re-run the publish; do not modify artifacts while they are being published",
            )
        files[e.relpath] = {"sha256": sha, "size": size}
    # The manifest goes in last: a version dir with a valid manifest is a complete one.
    manifest = json.dumps(_manifest(m, files), indent=2, sort_keys=True) + "\n"
    fs.write_bytes_durable(vdir / fs.MANIFEST_NAME, manifest.encode())
    for d in sorted(made_dirs, key=lambda p: len(p.parts), reverse=True):
        fs.fsync_dir(d)


def _commit(m: ModelPlan, staged: Path | None, op: Path) -> PublishedModel:
    name, model_dir = m.artifact.name, Path(m.model_dir)
    config_written = False
    if staged is not None and m.new_model:
        staged.rename(model_dir)  # the whole model appears at once, config included
        fs.fsync_dir(model_dir.parent)
        config_written = True
        LOGGER.info("published new model %s version %d", name, m.version)
    elif staged is not None and m.status == "replace":
        fs.exchange(staged, model_dir)  # versions, config and prune change in one step
        fs.fsync_dir(model_dir.parent)
        config_written = True
        LOGGER.info("replaced %s version %d (model directory swapped atomically)", name, m.version)
    elif staged is not None:
        staged.rename(model_dir / str(m.version))  # not served yet: the live config pins the old versions
        fs.fsync_dir(model_dir)
        LOGGER.info("published %s version %d (%s)", name, m.version, m.status)
    if not config_written and m.config_action != "unchanged":
        fs.replace_config_atomic(model_dir, m.live_config_text)  # the switch: served version + its config
        config_written = True
        LOGGER.info("wrote %s (serves %s)", model_dir / fs.CONFIG_NAME, list(m.served))
    if m.status != "replace":
        for v in m.prune:
            (model_dir / str(v)).rename(op / f"pruned-{name}-{v}")
            LOGGER.info("pruned %s version %d (keep_versions=%s)", name, v, m.artifact.keep_versions)
        if m.prune:
            fs.fsync_dir(model_dir)
    if m.newer_kept:
        LOGGER.info("%s: version %d is served; newer versions %s are kept, not served", name, m.version,
                    list(m.newer_kept))
    return _result(m, config_written=config_written)


def rollback(
    repository: Path,
    model: str,
    to: int | None = None,
    *,
    prune: bool = False,
    lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
) -> RollbackResult:
    """Serve version `to` (default: the one below the served head) again, deleting nothing.

    The live config.pbtxt is switched, in one atomic replace, to `to`'s own config (from its manifest)
    with the served versions pinned (`version_policy: specific`): under `latest N` the N highest
    versions up to `to`, exactly what was served when `to` was the newest. Newer versions stay in the
    repository, byte-identical, and are reported as kept; `prune=True` deletes them (after the switch).
    A later publish of new content serves the new version (unpins); one whose content equals a kept
    version serves that version again. A polling Triton picks the change up by itself; in explicit
    mode the caller loads the model again.

    Args:
        repository: the repository root.
        model: the model (directory) name.
        to: the version to serve; default the highest version below the current head.
        prune: delete the versions newer than `to`.
        lock_timeout_s: how long to wait for another deployer run to release the lock.

    Returns:
        The version now served, the versions kept and removed, and whether config.pbtxt was rewritten.

    Raises:
        RepositoryError: unknown model or version (the message lists what exists), no previous
            version, `to` is incomplete, or the spec pins versions itself (version_policy.specific).
        EnvironmentProblem: locked too long, or the model directory is not writable.
    """
    fs.check_model_name(model)
    repo = Path(repository).expanduser().resolve()
    model_dir = repo / model
    fs.refuse_symlink(model_dir, "model directory")
    if not model_dir.is_dir():
        entries = repo.iterdir() if repo.is_dir() else ()
        models = sorted(  # model dirs only: not hidden entries (staging, lock), not stray dirs
            p.name
            for p in entries
            if not p.name.startswith(".") and not p.is_symlink()
            and ((p / fs.CONFIG_NAME).is_file() or fs.version_dirs(p))
        )
        raise RepositoryError(f"model {model!r} not found in {repo}", details=f"models: {models}")
    with repository_lock(repo, lock_timeout_s):
        fs.clean_stale(repo, [model_dir])
        versions = sorted(fs.version_dirs(model_dir))
        config_path = model_dir / fs.CONFIG_NAME
        live_now = config_path.read_text(encoding="utf-8") if config_path.is_file() else None
        to = serving.rollback_version(model, versions, live_now, to)
        target = model_dir / str(to)
        manifest = fs.read_manifest(target)
        problems = fs.manifest_problems(target, manifest)
        if problems or manifest is None:
            raise RepositoryError(
                f"model {model!r} version {to} is not complete; refusing to roll back to it",
                details="\n".join(problems),
            )
        config_text = str(manifest["config_text"])
        served, live = serving.rollback_config(model, config_text, versions, to)
        restored = live_now != live
        newer = tuple(v for v in versions if v > to)
        if restored or (prune and newer):
            fs.probe_writable(model_dir)
        if restored:
            fs.replace_config_atomic(model_dir, live)  # the switch: one atomic replace
        removed: tuple[int, ...] = ()
        if prune and newer:
            op = fs.new_operation_dir(repo)
            try:
                for v in sorted(newer, reverse=True):
                    (model_dir / str(v)).rename(op / f"rolledback-{model}-{v}-{time.time_ns()}")
                fs.fsync_dir(model_dir)
            finally:
                fs.remove_tree(op)
            removed = newer
    kept = () if prune else newer
    LOGGER.info("rolled back %s to version %d (serves %s; kept %s; removed %s)", model, to, list(served),
                list(kept), list(removed))
    return RollbackResult(repo, model, to, removed, restored, kept, served)
