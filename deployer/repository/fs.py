"""Filesystem primitives: names Triton would misread, hashing, fsync, atomic writes, lock, staging."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from deployer.errors import EnvironmentProblem, RepositoryError

LOGGER = logging.getLogger(__name__)

MANIFEST_NAME = "deployer.manifest.json"
CONFIG_NAME = "config.pbtxt"
MANIFEST_FORMAT = 1
# Model-dir subdirs Triton never treats as versions (core model_lifecycle.cc VersionsToLoad).
TRITON_SPECIAL_SUBDIRS = frozenset({"configs", "warmup", "initial_state"})
_CONFIG_TMP_PREFIX = ".config.pbtxt."
_CONFIG_TMP_SUFFIX = ".deployer-tmp"
_CHUNK = 1 << 20
# Triton parses version dir names with std::stoll: leading blanks, a sign and digits are enough for a
# name such as "2_backup" or " 3" to count as a version. Any such name that is not canonical is a hazard.
_STOLL_PREFIX = re.compile(r"^\s*[+-]?\d")
_MODEL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")  # fullmatch: `$` would accept a final "\n"
MAX_VERSION = 2**63 - 1  # Triton parses version dir names as int64


def version_number(name: str) -> int | None:
    """The version a dir name stands for, or None when it is not a canonical version name."""
    if name.isascii() and name.isdigit() and (name == "0" or not name.startswith("0")):
        return int(name)
    return None


def looks_like_version(name: str) -> bool:
    """True if Triton's stoll would read a version from this name (canonical or not)."""
    return bool(_STOLL_PREFIX.match(name))


def check_model_name(name: str) -> None:
    """Reject names that are not a single, visible directory name."""
    if not _MODEL_NAME.fullmatch(name) or name in {".", ".."}:
        raise RepositoryError(
            f"invalid model name {name!r}",
            hint="use letters, digits, '_', '-' or '.', not starting with '.' or '-' "
            "(the name becomes a directory name)",
        )


def check_relpath(relpath: str) -> str:
    """Normalize and validate a POSIX path inside a version dir."""
    parts = relpath.split("/")
    if not relpath or relpath.startswith("/") or any(p in {"", ".", ".."} for p in parts):
        raise RepositoryError(
            f"invalid artifact path {relpath!r}",
            hint="use a relative POSIX path inside the version dir, e.g. 'model.plan' or 'model.onnx'",
        )
    if parts[0] == MANIFEST_NAME:
        raise RepositoryError(f"artifact path {relpath!r} is reserved for the deployer manifest")
    return relpath


def refuse_symlink(path: Path, what: str) -> None:
    """Refuse a symlink where deployer writes, prunes or deletes: it would act on the link's target.

    Someone else's symlink (planted in a shared parent, or left in the repository) must never redirect
    a publish outside the repository, so only the repository root itself, which the user names in the
    spec, is resolved; every path below it must be what it says.
    """
    if path.is_symlink():
        raise RepositoryError(
            f"{what} {path} is a symbolic link (to {str(path.readlink())!r}); deployer does not follow links "
            "where it writes or deletes",
            hint="remove the link (or replace it by a real directory); to keep the repository elsewhere, "
            "point `repository:` in the spec at the real path",
        )


def version_dirs(model_dir: Path) -> dict[int, Path]:
    """Canonical numeric version dirs of a model dir (empty if the dir does not exist).

    Symlinked version dirs are refused: prune and rollback would otherwise act on their targets.
    """
    found: dict[int, Path] = {}
    refuse_symlink(model_dir, "model directory")
    if not model_dir.is_dir():
        return found
    for child in model_dir.iterdir():
        number = version_number(child.name)
        if number is not None:
            refuse_symlink(child, "version directory")
            if child.is_dir():
                found[number] = child
    return found


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> tuple[str, int]:
    """sha256 hex digest and size of a file."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def content_sha256(files: Mapping[str, str], config_sha: str) -> str:
    """Identity of a version: its files' hashes and the config text hash (not the free-form manifest)."""
    canon = json.dumps({"files": dict(sorted(files.items())), "config": config_sha}, sort_keys=True)
    return sha256_bytes(canon.encode())


def fsync_dir(path: Path) -> None:
    """Persist a directory entry change (rename, create) so it survives a power loss."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes_durable(path: Path, data: bytes) -> None:
    """Write a new file and fsync it (the caller fsyncs the directory)."""
    with path.open("xb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def copy_file_durable(src: Path, dst: Path) -> tuple[str, int]:
    """Copy src to a new file dst, fsync it, and return the sha256/size of the bytes actually written."""
    digest = hashlib.sha256()
    size = 0
    with src.open("rb") as fin, dst.open("xb") as fout:
        while chunk := fin.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
            fout.write(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    return digest.hexdigest(), size


def replace_config_atomic(model_dir: Path, text: str) -> None:
    """Write `<model_dir>/config.pbtxt` via temp file + fsync + os.replace, so readers see old or new only.

    The temp name is a hidden *file*: Triton only lists sub*directories* as versions, and stale temp
    files from a killed run are removed by `clean_stale`.
    """
    tmp = model_dir / f"{_CONFIG_TMP_PREFIX}{secrets.token_hex(6)}{_CONFIG_TMP_SUFFIX}"
    try:
        write_bytes_durable(tmp, text.encode())
        tmp.replace(model_dir / CONFIG_NAME)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(model_dir)


_PROBE_PREFIX = ".deployer-probe-"


def stale_config_temps(model_dir: Path) -> list[Path]:
    """Temp config files and writability probes left behind by a killed publish or rollback."""
    if not model_dir.is_dir():
        return []
    return sorted(
        p for p in model_dir.iterdir()
        if (p.name.startswith(_CONFIG_TMP_PREFIX) and p.name.endswith(_CONFIG_TMP_SUFFIX))
        or (p.name.startswith(_PROBE_PREFIX) and p.is_file() and not p.is_symlink())
    )


def read_manifest(version_dir: Path) -> dict[str, Any] | None:
    """The parsed manifest of a version dir, or None when missing or unreadable."""
    try:
        data = json.loads((version_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def disk_files(directory: Path, *, source: bool = False) -> dict[str, Path]:
    """Every file below a directory, keyed by POSIX relpath.

    For a version dir (`source=False`) the top-level manifest and `__pycache__` dirs are excluded: Triton's
    python-backend stub writes `model.*.pyc` next to a served model.py (PYTHONDONTWRITEBYTECODE does not
    reach it), which is not content and must not make the version look modified. For an artifact source
    tree (`source=True`) nothing is excluded and symlinked dirs are followed, so the copy holds real files.
    """
    out: dict[str, Path] = {}
    for root, dirs, files in os.walk(directory, followlinks=source):
        if not source:
            dirs[:] = [d for d in dirs if d != "__pycache__"]
        dirs.sort()
        for name in sorted(files):
            path = Path(root) / name
            rel = path.relative_to(directory).as_posix()
            if source or rel != MANIFEST_NAME:
                out[rel] = path
    return out


def manifest_problems(version_dir: Path, manifest: Mapping[str, Any] | None, *, hashes: bool = True) -> list[str]:
    """Why a version dir is not exactly what its manifest records (empty list = complete)."""
    if manifest is None:
        return [f"{MANIFEST_NAME} missing or unreadable (incomplete version or not made by deployer)"]
    files = manifest.get("files")
    if not isinstance(files, dict) or not isinstance(manifest.get("config_text"), str):
        return [f"{MANIFEST_NAME} lacks 'files' or 'config_text'"]
    problems: list[str] = []
    on_disk = disk_files(version_dir)
    for rel in sorted(set(on_disk) - set(files)):
        problems.append(f"file {rel!r} is not in the manifest")
    for rel, meta in sorted(files.items()):
        path = on_disk.get(rel)
        if path is None:
            problems.append(f"file {rel!r} listed in the manifest is missing")
            continue
        want = meta.get("sha256") if isinstance(meta, dict) else None
        want_size = meta.get("size") if isinstance(meta, dict) else None
        if want_size is not None and path.stat().st_size != want_size:
            problems.append(f"file {rel!r} has size {path.stat().st_size}, manifest says {want_size}")
        elif hashes and sha256_file(path)[0] != want:
            problems.append(f"file {rel!r} does not match its sha256 in the manifest")
    return problems


# --- staging -------------------------------------------------------------------------------------


def staging_root(repository: Path) -> Path:
    """Scratch area next to (not inside) the repository: `<parent>/.<repo-name>.deployer-staging`.

    Not inside the repository because Triton (poll/none mode) takes every subdirectory there as a model,
    and not inside a model dir because that can be read as a version or trigger reloads. A sibling is on
    the same filesystem unless the repository itself is a mount point (checked: rename needs one fs).
    """
    return repository.parent / f".{repository.name}.deployer-staging"


def _check_staging_root(root: Path) -> bool:
    """True if the staging dir exists and is ours; raises if it is anything else (e.g. a planted symlink).

    Its name is predictable, so in a shared parent directory another user could create it first, as a
    link to a directory of ours (publish would empty it) or as a directory they control.
    """
    try:
        st = root.lstat()
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(st.st_mode):
        refuse_symlink(root, "staging directory")
    if not stat.S_ISDIR(st.st_mode):
        raise RepositoryError(f"staging path {root} exists and is not a directory", hint="move it away")
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise RepositoryError(
            f"staging directory {root} is not private to this user (owner uid {st.st_uid}, "
            f"mode {stat.S_IMODE(st.st_mode):o})",
            hint="remove it; deployer re-creates it with mode 700 (someone else may have planted it)",
        )
    return True


def new_operation_dir(repository: Path) -> Path:
    """A fresh, private scratch dir for one publish/rollback (caller holds the repository lock)."""
    root = staging_root(repository)
    try:
        if not _check_staging_root(root):
            root.mkdir(mode=0o700)  # not exist_ok: a racing creator makes this fail, then we check again
    except FileExistsError:
        _check_staging_root(root)
    except OSError as exc:
        raise RepositoryError(
            f"cannot create the staging dir {root}: {exc.strerror}",
            hint="the repository's parent directory must be writable (staging lives next to the repository)",
        ) from exc
    if root.stat().st_dev != repository.stat().st_dev:
        raise RepositoryError(
            f"staging dir {root} is on another filesystem than the repository {repository}",
            hint="atomic publish needs rename() within one filesystem; "
            "mount the repository's parent directory rather than the repository itself",
        )
    op = root / f"op-{os.getpid()}-{secrets.token_hex(4)}"
    op.mkdir()
    return op


def remove_tree(path: Path) -> None:
    """Delete a file or tree; missing is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def clean_stale(repository: Path, model_dirs: list[Path]) -> list[Path]:
    """Remove leftovers of killed runs. Only safe while holding the repository lock."""
    removed: list[Path] = []
    root = staging_root(repository)
    if _check_staging_root(root):
        for child in root.iterdir():
            remove_tree(child)
            removed.append(child)
    for model_dir in [repository, *model_dirs]:  # a probe for a new model is made in the repository root
        if model_dir != repository:
            refuse_symlink(model_dir, "model directory")
        for tmp in stale_config_temps(model_dir):
            remove_tree(tmp)
            removed.append(tmp)
    if removed:
        LOGGER.info(
            "removed %d leftover(s) of an interrupted run: %s",
            len(removed),
            [str(p) for p in removed],
        )
    return removed


# --- atomic swaps, hard links, writability ---------------------------------------------------------

_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def exchange(a: Path, b: Path) -> None:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE): readers see one or the other, whole.

    Raises:
        EnvironmentProblem: the kernel or filesystem cannot swap atomically (e.g. NFS, old kernels).
    """
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    fn = getattr(libc, "renameat2", None)
    if fn is None:
        raise EnvironmentProblem("this C library has no renameat2(); an atomic directory swap is not possible",
                                 hint="publish a new version instead of replacing one with --force")
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise EnvironmentProblem(
                f"the filesystem of {b} cannot swap directories atomically (renameat2: {os.strerror(err)})",
                hint="publish a new version instead of replacing one with --force",
            )
        raise OSError(err, os.strerror(err), str(a), None, str(b))


def link_tree(src: Path, dst: Path) -> None:
    """Recreate the tree `src` at `dst` with hard links (files are never modified in place, so sharing
    inodes is safe); falls back to a durable copy where links are not allowed."""
    dst.mkdir()
    for root, dirs, files in os.walk(src):
        rel = Path(root).relative_to(src)
        for d in dirs:
            (dst / rel / d).mkdir()
        for f in files:
            try:
                os.link(Path(root) / f, dst / rel / f, follow_symlinks=False)
            except OSError:
                copy_file_durable(Path(root) / f, dst / rel / f)


def probe_writable(directory: Path) -> None:
    """Create and remove a hidden file in `directory`: the only test that sees read-only mounts,
    immutable flags and permissions alike (os.access ignores the first two for root).

    Raises:
        EnvironmentProblem: naming the directory (exit 3).
    """
    probe = directory / f"{_PROBE_PREFIX}{secrets.token_hex(4)}"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o600)
        os.close(fd)
        probe.unlink()
    except OSError as exc:
        raise EnvironmentProblem(
            f"cannot write to {directory}: {exc.strerror}",
            hint="the repository (and each model directory in it) must be writable by this user; "
            "nothing was changed",
        ) from None
