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
from deployer.errors import RepositoryError
from deployer.repository import _fs
from deployer.repository._plan import _plan, fingerprint, hash_cache
from deployer.repository._types import ModelPlan, PublishedModel, PublishPlan, PublishResult, RollbackResult

LOGGER = logging.getLogger(__name__)


def apply_publish(plan: PublishPlan, *, lock_timeout_s: float = _fs.DEFAULT_LOCK_TIMEOUT_S) -> PublishResult:
    """Carry out a publish plan, crash-safely.

    Under an exclusive lock on `<repo>/.deployer.lock`: remove leftovers of killed runs, re-plan if
    the repository changed since `plan` was made, stage every new version dir in a scratch area next
    to the repository (files fsynced, manifest written), and only when all models are staged commit
    them: `rename()` the version dir into `<repo>/<model>/<N>` (a brand-new model dir is renamed in
    whole, config included), THEN replace `config.pbtxt` atomically, THEN prune versions beyond
    `keep_versions` (renamed out first, deleted afterwards). A reader (or Triton polling) therefore
    only ever sees complete version dirs and a whole old-or-new config.pbtxt.

    Args:
        plan: from `plan_publish`.
        lock_timeout_s: how long to wait for another deployer run to release the lock.

    Returns:
        What was done per model, and the plan actually applied.

    Raises:
        RepositoryError: locked too long, the re-plan fails, a source changed after planning, or the
            staging area is unusable. Until the commit step starts, the repository is left untouched.
    """
    repo = plan.repository
    repo.mkdir(parents=True, exist_ok=True)
    names = [m.artifact.name for m in plan.models]
    with _fs.repository_lock(repo, lock_timeout_s):
        _fs.clean_stale(repo, [repo / n for n in names])
        replanned = False
        if fingerprint(repo, names) != plan.fingerprint:
            LOGGER.info("repository %s changed since planning; planning again under the lock", repo)
            plan = _plan(repo, [m.artifact for m in plan.models], plan.force, hash_cache(plan))
            replanned = True
        done: list[PublishedModel] = []
        if not plan.changed:
            done = [_result(m, config_written=False) for m in plan.models]
            return PublishResult(repo, tuple(done), replanned, plan)
        op = _fs.new_operation_dir(repo)
        try:
            staged = {m.artifact.name: _stage(m, op) for m in plan.models if m.status != "unchanged"}
            for m in plan.models:
                done.append(_commit(m, staged.get(m.artifact.name), op))
        finally:
            _fs.remove_tree(op)
    return PublishResult(repo, tuple(done), replanned, plan)


def _result(m: ModelPlan, *, config_written: bool) -> PublishedModel:
    return PublishedModel(m.artifact.name, m.version, m.status, config_written, m.prune, m.model_dir / str(m.version))


def _manifest(m: ModelPlan, files: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    text = m.artifact.config_text
    return {
        **dict(m.artifact.manifest),
        "format": _fs.MANIFEST_FORMAT,
        "tool": "deployer",
        "tool_version": deployer.__version__,
        "model": m.artifact.name,
        "version": m.version,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "files": dict(files),
        "config_sha256": _fs.sha256_bytes(text.encode()),
        "config_text": text,
        "content_sha256": m.content_sha256,
    }


def _stage(m: ModelPlan, op: Path) -> Path:
    """Build the complete version dir (or, for a new model, the whole model dir) inside `op`."""
    if m.new_model:
        root = op / f"model-{m.artifact.name}"
        vdir = root / str(m.version)
    else:
        root = vdir = op / f"version-{m.artifact.name}-{m.version}"
    vdir.mkdir(parents=True)
    files: dict[str, dict[str, Any]] = {}
    made_dirs = {vdir}
    for e in m.entries:
        dst = vdir / e.relpath
        if dst.parent not in made_dirs:
            dst.parent.mkdir(parents=True, exist_ok=True)
            made_dirs.add(dst.parent)
        if e.data is not None:
            _fs.write_bytes_durable(dst, e.data)
            sha, size = e.sha256, e.size
        else:
            assert e.source is not None
            LOGGER.debug("copying %s -> %s", e.source, dst)
            sha, size = _fs.copy_file_durable(e.source, dst)
        if sha != e.sha256:
            raise RepositoryError(
                f"model {m.artifact.name!r}: source {e.source} changed after planning (sha256 differs)",
                hint="re-run the publish; do not modify artifacts while they are being published",
            )
        files[e.relpath] = {"sha256": sha, "size": size}
    # The manifest goes in last: a version dir with a valid manifest is a complete one.
    manifest = json.dumps(_manifest(m, files), indent=2, sort_keys=True) + "\n"
    _fs.write_bytes_durable(vdir / _fs.MANIFEST_NAME, manifest.encode())
    for d in sorted(made_dirs, key=lambda p: len(p.parts), reverse=True):
        _fs.fsync_dir(d)
    if m.new_model:
        _fs.write_bytes_durable(root / _fs.CONFIG_NAME, m.artifact.config_text.encode())
        _fs.fsync_dir(root)
    _fs.fsync_dir(op)
    return root


def _commit(m: ModelPlan, staged: Path | None, op: Path) -> PublishedModel:
    name, model_dir, target = m.artifact.name, m.model_dir, m.model_dir / str(m.version)
    config_written = False
    if staged is not None and m.new_model:
        staged.rename(model_dir)  # the whole model appears at once, config included
        _fs.fsync_dir(model_dir.parent)
        config_written = True
        LOGGER.info("published new model %s version %d", name, m.version)
    elif staged is not None:
        if m.status == "replace":
            # No atomic directory swap in the stdlib: move the old one aside, then rename the new one in.
            target.rename(op / f"replaced-{name}-{m.version}")
        staged.rename(target)
        _fs.fsync_dir(model_dir)
        LOGGER.info("published %s version %d (%s)", name, m.version, m.status)
    if not config_written and m.config_action != "unchanged":
        _fs.replace_config_atomic(model_dir, m.artifact.config_text)  # config last: files are in place
        config_written = True
        LOGGER.info("wrote %s", model_dir / _fs.CONFIG_NAME)
    for v in m.prune:
        (model_dir / str(v)).rename(op / f"pruned-{name}-{v}")
        LOGGER.info("pruned %s version %d (keep_versions=%s)", name, v, m.artifact.keep_versions)
    if m.prune:
        _fs.fsync_dir(model_dir)
    return _result(m, config_written=config_written)


def rollback(
    repository: Path, model: str, to: int | None = None, *, lock_timeout_s: float = _fs.DEFAULT_LOCK_TIMEOUT_S
) -> RollbackResult:
    """Make version `to` (default: the one before the newest) the served one.

    Semantics: every version newer than `to` is removed (renamed out of the repository, then deleted)
    and `to`'s config.pbtxt is restored from its manifest. `to` is then the newest version, so Triton
    serves it under the default `latest{1}`, and under `latest{N}` it serves exactly the N versions it
    served when `to` was published. (Re-publishing `to` as a new highest number would instead keep
    the bad versions inside a `latest{N>1}` window.) A later auto-versioned publish reuses the freed
    numbers. `to` must be complete (manifest present, all hashes match) before anything is touched.
    A polling Triton picks the change up by itself; in explicit mode the caller must load the model
    again (a load of a loaded model reloads it, and unloads the removed versions once `to` is ready).

    Args:
        repository: the repository root.
        model: the model (directory) name.
        to: the version to serve; default the highest version below the newest.
        lock_timeout_s: how long to wait for another deployer run to release the lock.

    Returns:
        The version now served, the removed versions, and whether config.pbtxt was rewritten.

    Raises:
        RepositoryError: unknown model or version (the message lists what exists), no previous
            version, or `to` is incomplete / lacks a recorded config.
    """
    _fs.check_model_name(model)
    repo = Path(repository).expanduser().resolve()
    model_dir = repo / model
    if not model_dir.is_dir():
        entries = repo.iterdir() if repo.is_dir() else ()
        models = sorted(  # model dirs only: not hidden entries (staging, lock), not stray dirs
            p.name
            for p in entries
            if not p.name.startswith(".") and ((p / _fs.CONFIG_NAME).is_file() or _fs.version_dirs(p))
        )
        raise RepositoryError(f"model {model!r} not found in {repo}", details=f"models: {models}")
    with _fs.repository_lock(repo, lock_timeout_s):
        _fs.clean_stale(repo, [model_dir])
        versions = sorted(_fs.version_dirs(model_dir))
        if to is None:
            if len(versions) < 2:
                raise RepositoryError(
                    f"model {model!r} has no previous version to roll back to",
                    details=f"versions: {versions}",
                )
            to = versions[-2]
        if to not in versions:
            raise RepositoryError(
                f"model {model!r} has no version {to}",
                details=f"versions: {versions}",
                hint="pick one of the listed versions",
            )
        target = model_dir / str(to)
        manifest = _fs.read_manifest(target)
        problems = _fs.manifest_problems(target, manifest)
        if problems or manifest is None:
            raise RepositoryError(
                f"model {model!r} version {to} is not complete; refusing to roll back to it",
                details="\n".join(problems),
            )
        config_text = str(manifest["config_text"])
        newer = [v for v in versions if v > to]
        op = _fs.new_operation_dir(repo)
        try:
            for v in sorted(newer, reverse=True):
                (model_dir / str(v)).rename(op / f"rolledback-{model}-{v}-{time.time_ns()}")
            if newer:
                _fs.fsync_dir(model_dir)
            config_path = model_dir / _fs.CONFIG_NAME
            current = config_path.read_bytes() if config_path.exists() else None
            restored = current != config_text.encode()
            if restored:
                _fs.replace_config_atomic(model_dir, config_text)
        finally:
            _fs.remove_tree(op)
    LOGGER.info("rolled back %s to version %d (removed %s)", model, to, newer)
    return RollbackResult(repo, model, to, tuple(newer), restored)
