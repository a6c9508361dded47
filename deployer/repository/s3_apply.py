"""The only code that changes an S3 repository: publish, rollback and pruning, under the lock object.

S3 has one atomic step: a single-object PUT. So a version becomes loadable only through
`<model>/config.pbtxt`, whose `version_policy { specific }` pin names the served versions (the same
switch as the local repository, `serving.py`):

1. every object of every new version is uploaded with its sha256 (the store refuses other bytes) and
   checked with a HEAD (size + stored checksum); the version's manifest is uploaded last;
2. only then, per model, one PUT of config.pbtxt switches Triton to the new version (a polling or
   reloading Triton sees the old pin or the new one, never a mix: old versions are untouched);
3. pruned versions are deleted after the switch, manifest first (a half-deleted version is
   unserved and incomplete, and the next publish removes it).

A model that has no config.pbtxt yet first gets a fence config that pins no version, so a Triton
asked to load it while its files are arriving refuses (no versions) instead of auto-completing a
config around a half-uploaded version. A publish killed at any moment leaves every model served as
before or as published; its unserved leftovers (incomplete versions) are removed by the next run.
Replacing an existing version (`force`) is refused: S3 cannot swap a version's objects atomically.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from deployer.errors import RepositoryError
from deployer.repository import fs, serving
from deployer.repository.apply import _manifest, _result
from deployer.repository.inspect import ServingState
from deployer.repository.lock import DEFAULT_LOCK_TIMEOUT_S
from deployer.repository.plan import _plan, fingerprint, hash_cache, plan_with
from deployer.repository.records import (
    ModelArtifact,
    ModelPlan,
    PublishedModel,
    PublishPlan,
    PublishResult,
    RollbackResult,
    VersionInfo,
)
from deployer.repository.s3 import S3Reader, client_for, delete_keys, put_verified
from deployer.repository.s3_lock import S3Lock, s3_repository_lock
from deployer.repository.store import parse_manifest
from deployer.spec.model import S3Location

LOGGER = logging.getLogger(__name__)


def plan_publish_s3(loc: S3Location, artifacts: Sequence[ModelArtifact], *, force: bool = False) -> PublishPlan:
    """`plan_publish` for an S3 repository: the same planner, reading the bucket; writes nothing."""
    return plan_with(S3Reader(client_for(loc), loc), artifacts, force=force)


def _refuse_replace(plan: PublishPlan) -> None:
    replaced = [m.artifact.name for m in plan.models if m.status == "replace"]
    if replaced:
        raise RepositoryError(
            f"replacing an existing version (--force) is not possible on S3: {replaced}",
            hint="S3 cannot swap a version's objects atomically; leave `version` unset to publish a new version",
        )


def clean_stale(client: Any, loc: S3Location, reader: S3Reader, names: Sequence[str]) -> list[str]:
    """Delete versions a killed run left incomplete (no manifest, or objects missing/other) that are not
    served. Only under the lock: a live publisher's half-uploaded version looks the same."""
    doomed: list[str] = []
    for name in names:
        served = set(serving.pinned_versions(reader.config_text(name)) or ())
        for number in reader.versions(name):
            if number in served:
                continue
            if reader.problems(name, number, parse_manifest(reader.manifest_bytes(name, number))):
                doomed.extend(rel for rel in reader.objects if rel.startswith(f"{name}/{number}/"))
    if doomed:
        LOGGER.info("removing %d object(s) of interrupted publishes from %s", len(doomed), loc.url)
        delete_keys(client, loc, sorted(doomed, key=lambda r: not r.endswith(fs.MANIFEST_NAME)))
    return doomed


def apply_publish_s3(plan: PublishPlan, loc: S3Location, *,
                     lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S) -> PublishResult:
    """Carry out a publish plan on S3, crash-safely (see the module doc).

    Raises:
        RepositoryError: a re-plan fails, a source changed after planning, or `force` would replace.
        EnvironmentProblem: the store fails or is unreachable, the lock is held too long or was lost.
    """
    client = client_for(loc)
    names = [m.artifact.name for m in plan.models]
    with s3_repository_lock(client, loc, lock_timeout_s) as lock:
        reader = S3Reader(client, loc)
        if clean_stale(client, loc, reader, names):
            reader = S3Reader(client, loc)
        replanned = False
        if fingerprint(reader, names) != plan.fingerprint:
            LOGGER.info("repository %s changed since planning; planning again under the lock", loc.url)
            plan = _plan(reader, [m.artifact for m in plan.models], plan.force, hash_cache(plan))
            replanned = True
        _refuse_replace(plan)
        if not plan.changed:
            return PublishResult(plan.repository, tuple(_result(m, config_written=False) for m in plan.models),
                                 replanned, plan)
        for m in plan.models:  # everything uploaded and verified before any switch
            if m.status == "new":
                if reader.config_text(m.artifact.name) is None:
                    _put_config(client, loc, lock, m.artifact.name, _fence(m))
                _upload_version(client, loc, lock, m)
        done = tuple(_commit(client, loc, lock, m) for m in plan.models)
    return PublishResult(plan.repository, done, replanned, plan)


def _fence(m: ModelPlan) -> str:
    """The model's config pinned to no version: loading it fails cleanly until the real switch."""
    return serving.live_config(m.artifact.config_text, (), 0)


def _put_config(client: Any, loc: S3Location, lock: S3Lock, name: str, text: str) -> None:
    lock.check()  # a publisher that lost its lock must not switch anything
    data = text.encode()
    put_verified(client, loc, f"{name}/{fs.CONFIG_NAME}", fs.sha256_bytes(data), len(data), data=data)


def _upload_version(client: Any, loc: S3Location, lock: S3Lock, m: ModelPlan) -> None:
    base = f"{m.artifact.name}/{m.version}"
    files: dict[str, dict[str, Any]] = {}
    for e in m.entries:
        lock.check()
        LOGGER.debug("uploading %s/%s", base, e.relpath)
        put_verified(client, loc, f"{base}/{e.relpath}", e.sha256, e.size, data=e.data, source=e.source)
        files[e.relpath] = {"sha256": e.sha256, "size": e.size}
    manifest = (json.dumps(_manifest(m, files), indent=2, sort_keys=True) + "\n").encode()
    lock.check()
    put_verified(client, loc, f"{base}/{fs.MANIFEST_NAME}", fs.sha256_bytes(manifest), len(manifest), data=manifest)
    LOGGER.info("uploaded and verified %s version %d (%d files), not served yet", m.artifact.name, m.version,
                len(files))


def _commit(client: Any, loc: S3Location, lock: S3Lock, m: ModelPlan) -> PublishedModel:
    name = m.artifact.name
    written = m.config_action != "unchanged" or m.status == "new"
    if written:
        _put_config(client, loc, lock, name, m.live_config_text)  # the switch
        LOGGER.info("wrote %s/%s/config.pbtxt (serves %s)", loc.url, name, list(m.served))
    if m.prune:
        _delete_versions(client, loc, lock, name, m.prune)
        LOGGER.info("pruned %s versions %s (keep_versions=%s)", name, list(m.prune), m.artifact.keep_versions)
    return _result(m, config_written=written)


def _delete_versions(client: Any, loc: S3Location, lock: S3Lock, name: str, versions: Sequence[int]) -> None:
    reader = S3Reader(client, loc)
    for v in versions:
        rels = [rel for rel in reader.objects if rel.startswith(f"{name}/{v}/")]
        lock.check()
        delete_keys(client, loc, sorted(rels, key=lambda r: not r.endswith(fs.MANIFEST_NAME)))


def rollback_s3(loc: S3Location, model: str, to: int | None = None, *, prune: bool = False,
                lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S) -> RollbackResult:
    """`rollback` on S3: one PUT of config.pbtxt serves `to` again with its own config; nothing is deleted
    unless `prune` (then the newer versions, after the switch). Same rules and errors as the local one."""
    fs.check_model_name(model)
    client = client_for(loc)
    with s3_repository_lock(client, loc, lock_timeout_s) as lock:
        reader = S3Reader(client, loc)
        if not reader.model_exists(model):
            models = sorted({rel.split("/")[0] for rel in reader.objects if rel.endswith("/" + fs.CONFIG_NAME)})
            raise RepositoryError(f"model {model!r} not found in {loc.url}", details=f"models: {models}")
        versions = sorted(reader.versions(model))
        live_now = reader.config_text(model)
        to = serving.rollback_version(model, versions, live_now, to)
        manifest = parse_manifest(reader.manifest_bytes(model, to))
        problems = reader.problems(model, to, manifest)
        if problems or manifest is None:
            raise RepositoryError(f"model {model!r} version {to} is not complete; refusing to roll back to it",
                                  details="\n".join(problems))
        config_text = str(manifest["config_text"])
        served, live = serving.rollback_config(model, config_text, versions, to)
        restored = live_now != live
        if restored:
            _put_config(client, loc, lock, model, live)
        newer = tuple(v for v in versions if v > to)
        if prune and newer:
            _delete_versions(client, loc, lock, model, newer)
    removed = newer if prune else ()
    kept = () if prune else newer
    LOGGER.info("rolled back %s to version %d on %s (serves %s; kept %s; removed %s)", model, to, loc.url,
                list(served), list(kept), list(removed))
    return RollbackResult(reader.root, model, to, removed, restored, kept, served)


# --- read-only inspection ---------------------------------------------------------------------------


def s3_serving_state(loc: S3Location, model: str) -> ServingState | None:
    """`serving_state_s3` from a fresh listing of the bucket."""
    return serving_state_s3(S3Reader(client_for(loc), loc), model)


def serving_state_s3(reader: S3Reader, model: str) -> ServingState | None:
    """What the model's live config serves (None: the model is not in the bucket)."""
    if not reader.model_exists(model):
        return None
    versions = sorted(reader.versions(model))
    text = reader.config_text(model)
    head = serving.head_of(text)
    if head not in versions:
        head = versions[-1] if versions else 0
    served = serving.pinned_versions(text) or (head,)
    return ServingState(head, served, tuple(v for v in versions if v > head))


def list_versions_s3(reader: S3Reader, model: str) -> list[VersionInfo]:
    """Every version of `model` in the bucket, oldest first, checked against its manifest (stored sha256)."""
    out = []
    for number, path in sorted(reader.versions(model).items()):
        manifest = parse_manifest(reader.manifest_bytes(model, number))
        problems = tuple(reader.problems(model, number, manifest))
        out.append(VersionInfo(number, path, manifest, not problems, problems))
    return out


def verify_s3(reader: S3Reader, models: Sequence[str]) -> list[str]:
    """What would make Triton misbehave: a missing config, served versions missing or incomplete, a live
    config that is not the head's recorded config with its pin; incomplete unserved versions are reported too."""
    problems: list[str] = []
    for name in models:
        state = serving_state_s3(reader, name)
        if state is None:
            continue
        text = reader.config_text(name)
        if text is None:
            problems.append(f"{name}/{fs.CONFIG_NAME}: missing")
            continue
        infos = {i.number: i for i in list_versions_s3(reader, name)}
        for number, info in sorted(infos.items()):
            problems.extend(f"{name}/{number}: {p}" for p in info.problems)
        missing = [v for v in state.served if v not in infos]
        if missing:
            problems.append(f"{name}/{fs.CONFIG_NAME}: serves versions {missing} that do not exist")
        head = infos.get(state.head)
        recorded = head.manifest.get("config_text") if head is not None and head.manifest else None
        if isinstance(recorded, str) and serving.live_config(recorded, state.served, state.head) != text:
            problems.append(f"{name}/{fs.CONFIG_NAME}: differs from the config recorded for served version "
                            f"{state.head}")
    return problems
