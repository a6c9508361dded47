"""Pure planning: read the repository and the artifacts, decide versions and file actions, write nothing."""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePath

from deployer.errors import RepositoryError
from deployer.repository import fs, serving
from deployer.repository.records import (
    FileAction,
    FileActionKind,
    ModelArtifact,
    ModelPlan,
    PublishPlan,
    _Entry,
)
from deployer.repository.store import LocalReader, RepoReader, parse_manifest

LOGGER = logging.getLogger(__name__)

# Manifest keys deployer writes itself; an artifact's extra manifest may not override them.
RESERVED_MANIFEST_KEYS = frozenset(
    [
        "format",
        "tool",
        "tool_version",
        "model",
        "version",
        "created",
        "files",
        "config_sha256",
        "config_text",
        "content_sha256",
    ]
)
_HashCache = Mapping[tuple[str, int, int], str]


def plan_publish(repository: Path, artifacts: Sequence[ModelArtifact], *, force: bool = False) -> PublishPlan:
    """Decide what publishing `artifacts` into `repository` would do. Reads the disk, writes nothing.

    Per model: auto version (`version=None`) = newest existing + 1, starting at 1, unless the content
    (every file's sha256 plus the config text) equals the newest version, which is then reused and
    nothing is created. A config-only change is a new version: each version's manifest records its
    config.pbtxt so `rollback` restores the config too. An explicit version that exists with other
    content is an error unless `force=True` (then it is replaced).

    Args:
        repository: the model repository root (need not exist yet).
        artifacts: one entry per model; names must be unique.
        force: allow replacing an existing explicit version whose content differs.

    Returns:
        A `PublishPlan` whose `rows()` lists every create/update/unchanged/delete.

    Raises:
        RepositoryError: invalid names/paths, missing sources, version conflicts, bad keep_versions.
    """
    return plan_with(LocalReader(_fs_abs(repository)), artifacts, force=force)


def plan_with(reader: RepoReader, artifacts: Sequence[ModelArtifact], *, force: bool = False,
              cache: _HashCache | None = None) -> PublishPlan:
    """`plan_publish` against any repository view (a directory, an S3 prefix): one planner for all."""
    return _plan(reader, artifacts, force, cache or {})


def _fs_abs(repository: Path) -> Path:
    # resolve(): the staging area is a sibling of the real directory, which must share its filesystem.
    return Path(repository).expanduser().resolve()


def _plan(reader: RepoReader, artifacts: Sequence[ModelArtifact], force: bool, cache: _HashCache) -> PublishPlan:
    reader.check_root()
    seen: set[str] = set()
    for art in artifacts:
        fs.check_model_name(art.name)
        if art.name in seen:
            raise RepositoryError(f"model {art.name!r} appears twice in one publish")
        seen.add(art.name)
    # The fingerprint is taken before the models are read: another run committing while this one plans
    # then always differs from the state seen under the lock, so the plan is made again there. Taken
    # after, it would describe the other run's result while the models were planned from the state
    # before it, and two publishes would pick the same version number.
    before = fingerprint(reader, [a.name for a in artifacts])
    models = tuple(_plan_model(reader, art, force, cache) for art in artifacts)
    return PublishPlan(reader.root, models, force, before)


def fingerprint(reader: RepoReader, names: Sequence[str]) -> str:
    """Digest of the state a plan depends on: version listing, manifests and config of each model."""
    state: dict[str, object] = {}
    for name in sorted(names):
        if not reader.model_exists(name):
            state[name] = None
            continue
        versions = {}
        for number in sorted(reader.versions(name)):
            data = reader.manifest_bytes(name, number)
            versions[str(number)] = (fs.sha256_bytes(data) if data is not None
                                     else "no-manifest:" + ",".join(reader.version_files(name, number)))
        config = reader.config_text(name)
        state[name] = {"versions": versions, "config": None if config is None else fs.sha256_bytes(config.encode())}
    return fs.sha256_bytes(json.dumps(state, sort_keys=True).encode())


def expand_entries(art: ModelArtifact, cache: _HashCache) -> tuple[_Entry, ...]:
    """Every file of the artifact (directory sources expanded), hashed, sorted by relpath."""
    entries: dict[str, _Entry] = {}
    for item in art.files:
        rel = fs.check_relpath(item.relpath)
        if (item.source is None) == (item.data is None):
            raise RepositoryError(f"model {art.name!r}: artifact file {rel!r} needs one of source or data")
        if item.data is not None:
            _add(entries, art.name, _Entry(rel, None, item.data, fs.sha256_bytes(item.data), len(item.data)))
            continue
        assert item.source is not None
        src = Path(item.source)
        if src.is_dir():
            files = fs.disk_files(src, source=True)
            if not files:
                raise RepositoryError(f"model {art.name!r}: source directory {src} for {rel!r} has no files")
            for sub, path in files.items():
                _add(entries, art.name, _hash_entry(f"{rel}/{sub}", path, cache))
        elif src.is_file():
            _add(entries, art.name, _hash_entry(rel, src, cache))
        else:
            raise RepositoryError(
                f"model {art.name!r}: source {src} for {rel!r} does not exist",
                hint="build or download the artifact first, or fix the path in the spec",
            )
    names = sorted(entries)
    for a, b in itertools.pairwise(names):
        if b.startswith(a + "/"):
            raise RepositoryError(f"model {art.name!r}: {a!r} is both a file and a directory")
    return tuple(entries[n] for n in names)


def _add(entries: dict[str, _Entry], model: str, entry: _Entry) -> None:
    if entry.relpath in entries:
        raise RepositoryError(f"model {model!r}: file {entry.relpath!r} is given twice")
    entries[entry.relpath] = entry


def _hash_entry(rel: str, path: Path, cache: _HashCache) -> _Entry:
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    sha = cache.get(key)
    if sha is None:
        sha, _size = fs.sha256_file(path)
    return _Entry(rel, path, None, sha, st.st_size, st.st_mtime_ns)


def hash_cache(plan: PublishPlan) -> dict[tuple[str, int, int], str]:
    """Source hashes of a plan, reusable by a re-plan while the files are unchanged (size + mtime)."""
    entries = [e for m in plan.models for e in m.entries if e.source is not None]
    return {(str(e.source), e.size, e.mtime_ns): e.sha256 for e in entries}


def _check_artifact(art: ModelArtifact) -> None:
    if art.version is not None and (isinstance(art.version, bool) or not 1 <= art.version <= fs.MAX_VERSION):
        raise RepositoryError(
            f"model {art.name!r}: version {art.version!r} is not allowed",
            hint="use an integer in 1..2**63-1 (Triton reads versions as int64; avoid 0) or leave it unset",
        )
    if art.keep_versions is not None and art.keep_versions < 1:
        raise RepositoryError(f"model {art.name!r}: keep_versions={art.keep_versions} must be >= 1 or unset")
    bad = sorted(RESERVED_MANIFEST_KEYS & set(art.manifest))
    if bad:
        raise RepositoryError(f"model {art.name!r}: manifest keys {bad} are reserved by deployer")
    try:
        json.dumps(dict(art.manifest), sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise RepositoryError(f"model {art.name!r}: manifest is not JSON-serializable: {exc}") from exc


def _matches(reader: RepoReader, name: str, version: int, content: str) -> bool:
    """True if an existing version holds exactly `content` (manifest says so AND the storage agrees)."""
    manifest = parse_manifest(reader.manifest_bytes(name, version))
    if manifest is None or manifest.get("content_sha256") != content:
        return False
    problems = reader.problems(name, version, manifest)
    if problems:
        LOGGER.warning("%s/%d: manifest matches but the storage does not (%s); publishing anew", name, version,
                       problems[0])
    return not problems


def _plan_model(reader: RepoReader, art: ModelArtifact, force: bool, cache: _HashCache) -> ModelPlan:
    _check_artifact(art)
    entries = expand_entries(art, cache)
    config_sha = fs.sha256_bytes(art.config_text.encode())
    content = fs.content_sha256({e.relpath: e.sha256 for e in entries}, config_sha)
    model_dir = reader.root / art.name
    exists = reader.model_exists(art.name)
    existing = reader.versions(art.name)
    numbers = tuple(sorted(existing))
    config_path = model_dir / fs.CONFIG_NAME
    live_now = reader.config_text(art.name)
    head = serving.head_of(live_now)
    if head not in existing:
        head = numbers[-1] if numbers else None
    version, status = _choose_version(reader, art, numbers, head, content, force)
    after = sorted(set(numbers) | {version}, reverse=True)
    served = serving.served_versions(serving.policy_of(art.config_text), after, version)
    prune = _prune(after, served, art.keep_versions)
    live = serving.live_config(art.config_text, served, version)
    live_sha = fs.sha256_bytes(live.encode())
    current_config = None if live_now is None else fs.sha256_bytes(live_now.encode())
    config_action: FileActionKind = (
        "create" if current_config is None else "unchanged" if current_config == live_sha else "update"
    )
    actions = _file_actions(reader, art.name, model_dir, version, status, entries)
    config_size = len(live.encode())
    actions.append(FileAction(config_action, config_path, "config", config_size, live_sha))
    actions.extend(FileAction("delete", existing[v], "version") for v in prune)
    return ModelPlan(
        artifact=art,
        model_dir=model_dir,
        version=version,
        status=status,  # type: ignore[arg-type]  # narrowed literals above
        config_action=config_action,
        content_sha256=content,
        existing_versions=numbers,
        prune=prune,
        actions=tuple(actions),
        new_model=not exists,
        entries=entries,
        served=served,
        live_config_text=live,
        newer_kept=tuple(v for v in sorted(after) if v > version and v not in prune),
    )


def _choose_version(
    reader: RepoReader, art: ModelArtifact, numbers: tuple[int, ...], head: int | None, content: str, force: bool,
) -> tuple[int, str]:
    """Auto: reuse the head or a kept newer version holding this very content, else newest + 1."""
    if art.version is None:
        candidates = [head] if head is not None else []
        candidates += [v for v in sorted(numbers, reverse=True) if head is None or v > head]
        for v in candidates:
            if v is not None and _matches(reader, art.name, v, content):
                return v, "unchanged"
        nxt = (numbers[-1] if numbers else 0) + 1
        if nxt > fs.MAX_VERSION:
            raise RepositoryError(f"model {art.name!r}: the next version would exceed Triton's int64 limit",
                                  hint="publish an explicit lower version, or prune the highest one")
        return nxt, "new"
    version = art.version
    if version not in numbers:
        if numbers and version < numbers[-1]:
            LOGGER.info("model %r: version %d < newest %d; newer versions are kept but not served",
                        art.name, version, numbers[-1])
        return version, "new"
    if _matches(reader, art.name, version, content):
        return version, "unchanged"
    if force:
        return version, "replace"
    raise RepositoryError(
        f"model {art.name!r}: version {version} already exists with different content",
        hint="leave the version unset to publish a new one, or force=True / --force to replace it",
        details=f"existing versions: {list(numbers)}",
    )


def _prune(after: list[int], served: tuple[int, ...], keep: int | None) -> tuple[int, ...]:
    """keep_versions N: the N newest stay, and so does every served version (a pin is never pruned)."""
    if keep is None:
        return ()
    return tuple(sorted(v for v in after[keep:] if v not in served))


def _file_actions(
    reader: RepoReader, name: str, model_dir: PurePath, version: int, status: str, entries: tuple[_Entry, ...]
) -> list[FileAction]:
    vdir = model_dir / str(version)
    manifest_path = vdir / fs.MANIFEST_NAME
    if status == "new":
        acts = [FileAction("create", vdir / e.relpath, "file", e.size, e.sha256) for e in entries]
        return [*acts, FileAction("create", manifest_path, "manifest")]
    if status == "unchanged":
        acts = [FileAction("unchanged", vdir / e.relpath, "file", e.size, e.sha256) for e in entries]
        return [*acts, FileAction("unchanged", manifest_path, "manifest")]
    # replace: compare with what the old version holds
    old_bytes = reader.manifest_bytes(name, version)
    old_manifest = parse_manifest(old_bytes) or {}
    old_files = old_manifest.get("files") if isinstance(old_manifest.get("files"), dict) else {}
    assert isinstance(old_files, dict)
    on_disk = set(reader.version_files(name, version))
    acts = []
    for e in entries:
        meta = old_files.get(e.relpath)
        old_sha = meta.get("sha256") if isinstance(meta, dict) else None
        kind: FileActionKind = (
            "create" if e.relpath not in on_disk else "unchanged" if old_sha == e.sha256 else "update"
        )
        acts.append(FileAction(kind, vdir / e.relpath, "file", e.size, e.sha256))
    new_rels = {e.relpath for e in entries}
    acts.extend(FileAction("delete", vdir / rel, "file") for rel in sorted(set(on_disk) - new_rels))
    had_manifest = old_bytes is not None
    acts.append(FileAction("update" if had_manifest else "create", manifest_path, "manifest"))
    return acts
