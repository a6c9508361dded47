"""Engine cache (content-addressed) and timing cache (per TensorRT version + GPU), safe across processes.

Layout under `cache_dir`:
    engines/<key>.plan, engines/<key>.json     engine bytes and the BuildInfo they were built with
    engines/<key>.lock                         held while one process builds that key
    timing/trt<version>-<gpu>-sm<cc>.cache     TensorRT timing cache, merged on every save
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from deployer._files import atomic_write
from deployer.errors import BuildError, EnvironmentProblem, ModelFileError

from .request import GpuInfo

if TYPE_CHECKING:
    import tensorrt as trt_stub  # type: ignore[import-untyped, unused-ignore]

LOGGER = logging.getLogger(__name__)
_CHUNK = 1 << 20


@contextlib.contextmanager
def file_lock(path: Path, timeout: float = 3600.0) -> Iterator[None]:
    """An inter-process lock on `path` (filelock; plain fcntl where filelock is absent, e.g. NGC images)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        from filelock import FileLock
    except ImportError:  # the container builder runs this module without our dependencies
        import fcntl

        with path.open("a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
        return
    from filelock import Timeout

    lock = FileLock(str(path), timeout=timeout)
    try:
        lock.acquire()
    except Timeout as exc:
        raise EnvironmentProblem(
            f"gave up after {timeout:.0f} s waiting for the lock {path}",
            hint="another build holds it; wait for it or remove a stale lock file",
        ) from exc
    try:
        yield
    finally:
        lock.release()


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def onnx_external_files(onnx_path: Path) -> list[Path]:
    """External-data files an ONNX model references (relative to its directory), sorted, unique."""
    import onnx

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:
        raise ModelFileError(f"cannot read ONNX file {onnx_path}: {exc}") from exc
    locations: set[str] = set()
    tensors = list(model.graph.initializer)
    for node in model.graph.node:
        tensors.extend(a.t for a in node.attribute if a.HasField("t"))
    for tensor in tensors:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            for entry in tensor.external_data:
                if entry.key == "location":
                    locations.add(entry.value)
    return [onnx_path.parent / loc for loc in sorted(locations)]


def onnx_digest(onnx_path: Path) -> str:
    """sha256 over the ONNX file and every external-data file it references (names included)."""
    h = hashlib.sha256()
    h.update(sha256_file(onnx_path).encode())
    for ext in onnx_external_files(onnx_path):
        if not ext.is_file():
            raise ModelFileError(f"ONNX {onnx_path} references external data {ext} which does not exist")
        h.update(b"\0" + ext.name.encode() + b"\0" + sha256_file(ext).encode())
    return h.hexdigest()


def files_digest(paths: tuple[Path, ...]) -> str:
    """sha256 over several files' contents in order (calibration data)."""
    h = hashlib.sha256()
    for p in paths:
        h.update(sha256_file(p).encode() + b"\0")
    return h.hexdigest()


class EngineCache:
    """Content-addressed store of built plans: key -> (plan bytes, build info JSON)."""

    def __init__(self, cache_dir: Path) -> None:
        self.root = cache_dir / "engines"

    def plan_path(self, key: str) -> Path:
        """Where the plan for `key` lives."""
        return self.root / f"{key}.plan"

    def info_path(self, key: str) -> Path:
        """Where the build-info JSON for `key` lives."""
        return self.root / f"{key}.json"

    def lookup(self, key: str) -> tuple[Path, dict[str, object]] | None:
        """The cached plan and its recorded build info, or None (a plan without info is a miss)."""
        plan, info = self.plan_path(key), self.info_path(key)
        if not (plan.is_file() and info.is_file()):
            return None
        try:
            doc = json.loads(info.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            LOGGER.warning("ignoring unreadable engine-cache entry %s", info)
            return None
        if not isinstance(doc, dict) or doc.get("engine_sha256") != sha256_file(plan):
            LOGGER.warning("ignoring engine-cache entry %s: plan bytes do not match the recorded sha256", plan)
            return None
        return plan, doc

    def store(self, key: str, plan_bytes: bytes, info: dict[str, object]) -> Path:
        """Save a plan and its info (plan first, info last: an entry counts only when both exist)."""
        atomic_write(self.plan_path(key), plan_bytes)
        atomic_write(self.info_path(key), json.dumps(info, indent=2, sort_keys=True, default=str).encode())
        return self.plan_path(key)

    @contextlib.contextmanager
    def building(self, key: str) -> Iterator[None]:
        """Hold the per-key lock: a second process building the same key waits, then hits the cache."""
        with file_lock(self.root / f"{key}.lock"):
            yield


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower() or "unknown"


class TimingCacheStore:
    """The timing cache file for one (TensorRT version, GPU); shared by concurrent builds.

    Sharing a timing cache across GPUs needs `ignore_mismatch=True` and yields poor tactics (brief C.4),
    so each GPU model / compute capability gets its own file.
    """

    def __init__(self, cache_dir: Path, trt_version: str, gpu: GpuInfo | None) -> None:
        gpu_part = f"{_slug(gpu.name)}-sm{gpu.compute_capability.replace('.', '')}" if gpu else "unknown-gpu"
        self.path = cache_dir / "timing" / f"trt{_slug(trt_version)}-{gpu_part}.cache"
        self.lock_path = self.path.with_suffix(".lock")
        self.problem: str | None = None  # why the file could not be used (a warning, never the build's error)

    def load(self) -> bytes:
        """Current bytes of the cache file (b"" when none: TensorRT then starts an empty cache)."""
        with file_lock(self.lock_path):
            return self.path.read_bytes() if self.path.is_file() else b""

    def attach(self, config: trt_stub.IBuilderConfig) -> trt_stub.ITimingCache:
        """Create a timing cache from the file and set it on `config` (it must outlive the build).

        A file TensorRT cannot use (corrupt, other device) is not an error: the build starts from an empty
        cache and `problem` says why. TensorRT logs such a failure at ERROR level; the builder only reports
        errors logged after the build started, so this one cannot pose as the build's own error.
        """
        data = self.load()
        try:
            cache = config.create_timing_cache(data)
            accepted = bool(config.set_timing_cache(cache, False))
        except Exception as exc:  # pybind11 raises TypeError/RuntimeError for bytes it cannot read
            LOGGER.debug("timing cache %s: %s", self.path, exc)
            accepted = False
        if not accepted and data:
            self.problem = (
                f"TensorRT could not use the timing cache {self.path} (corrupt or another device); started empty"
            )
            LOGGER.warning("%s", self.problem)
            cache = config.create_timing_cache(b"")
            config.set_timing_cache(cache, False)
        return cache

    def save(self, config: trt_stub.IBuilderConfig) -> None:
        """Merge `config`'s timing cache with whatever another build saved meanwhile, then write it.

        Under the file lock: read the file, `combine` it into ours, serialize, atomic rename — so two
        concurrent builds both keep their entries instead of the last writer winning.
        """
        ours = config.get_timing_cache()
        with file_lock(self.lock_path):
            if self.path.is_file():
                disk = config.create_timing_cache(self.path.read_bytes())
                if not ours.combine(disk, False):
                    LOGGER.warning("could not merge timing cache %s (mismatch); overwriting it", self.path)
            data = bytes(memoryview(ours.serialize()))
            if not data:
                raise BuildError(f"TensorRT returned an empty timing cache for {self.path}")
            atomic_write(self.path, data)
        LOGGER.info("Saved timing cache to %s (%d bytes)", self.path, len(data))


def copy_plan(src: Path, dst: Path) -> None:
    """Copy a cached plan to its output path atomically."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.copyfile(src, tmp)
    tmp.replace(dst)
