"""Build deployer's CPU Triton image without any registry (`deployer image build-cpu`).

Recipe: `docker/` (Dockerfile, entrypoint, healthcheck, pinned+hashed requirements). Inputs:
a Debian bookworm base (made with `debootstrap` + `docker import` unless a base image is given),
wheels downloaded on the host with pip (the build itself has no PyPI), and deployer's Python-based
onnxruntime backend. The image is labelled with a SHA-256 of all inputs; an existing image with the
same label is reused, so the command is cheap to run in every CI job.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deployer.errors import EnvironmentProblem, MissingDependency
from deployer.server.base import DEFAULT_IMAGE, TRITON_RELEASE
from deployer.server.docker.client import docker_build, docker_client, image_or_none
from deployer.server.docker.plan import CPU_IMAGE, CPU_IMAGE_REPOSITORY

__all__ = [
    "BASE_IMAGE",
    "CPU_IMAGE",
    "CPU_IMAGE_REPOSITORY",
    "LABEL_INPUTS",
    "NGC_IMAGE",
    "TRITON_RELEASE",
    "BuildInputs",
    "ImageBuild",
    "build_cpu_image",
    "cpu_image_inputs",
    "cpu_image_status",
    "default_cache_dir",
    "ensure_base_image",
    "recipe_dir",
]

log = logging.getLogger(__name__)

NGC_IMAGE = DEFAULT_IMAGE  # the NGC image of the same server (Triton 2.51.0)
BASE_IMAGE = "deployer/debian-bookworm-minbase:py311"
LABEL_INPUTS = "dev.deployer.image.inputs-sha256"
LABEL_KIND = "dev.deployer.image.kind"
_STAGE_LABEL = "dev.deployer.build-stage=cpu-image-unpack"  # set in the Dockerfile's first stage (docs)
_RECIPE_FILES = ("Dockerfile", "entrypoint.sh", "healthcheck.py", "requirements.txt")
_BACKEND_MODEL = Path(__file__).parents[1] / "backends" / "onnxruntime" / "model.py"
_DEBOOTSTRAP_PACKAGES = "python3,python3-venv,libpython3.11,ca-certificates"
# The image runs CPython 3.11 on manylinux x86_64, whatever Python runs deployer on the host.
_PIP_TARGET = (
    "--only-binary=:all:",
    "--implementation=cp",
    "--python-version=3.11",
    "--abi=cp311",
    "--platform=manylinux_2_35_x86_64",
    *(f"--platform=manylinux_2_{n}_x86_64" for n in (28, 17)),
    "--platform=manylinux2014_x86_64",
)


@dataclass(frozen=True)
class BuildInputs:
    """The recipe files and the base image id that determine the image (its cache key)."""

    files: tuple[tuple[str, bytes], ...]  # (path inside the build context, content)
    base_image: str
    base_image_id: str

    @property
    def digest(self) -> str:
        """SHA-256 over every input; stored as the image label `LABEL_INPUTS`."""
        h = hashlib.sha256()
        for name, content in sorted(self.files):
            h.update(name.encode() + b"\0" + hashlib.sha256(content).digest())
        h.update(b"base\0" + self.base_image_id.encode())
        return h.hexdigest()

    def file(self, name: str) -> bytes:
        return dict(self.files)[name]


@dataclass(frozen=True)
class ImageBuild:
    """What `build_cpu_image` did."""

    tag: str
    image_id: str
    inputs_digest: str
    built: bool  # False: an image with the same inputs existed and was reused
    base_built: bool
    seconds: float


def recipe_dir() -> Path:
    """The `docker/` recipe: packaged inside the `deployer` package (wheel), or at the source checkout's root."""
    package = Path(__file__).parents[2]  # deployer/server/docker/cpu_image.py -> deployer/
    for candidate in (package / "docker", package.parent / "docker"):
        if (candidate / "Dockerfile").is_file():
            return candidate
    raise MissingDependency(
        "the CPU image recipe (docker/Dockerfile) is not part of this installation",
        hint="run from a deployer source checkout, or reinstall deployer",
    )


def default_cache_dir() -> Path:
    """Where downloaded wheels and build contexts are kept (`$XDG_CACHE_HOME/deployer/cpu-image`)."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "deployer" / "cpu-image"


def cpu_image_inputs(base_image: str, base_image_id: str, *, recipe: Path | None = None) -> BuildInputs:
    """Read the recipe files and the onnxruntime backend (no Docker, no network)."""
    where = recipe or recipe_dir()
    files = [(name, (where / name).read_bytes()) for name in _RECIPE_FILES]
    files.append(("onnxruntime/model.py", _BACKEND_MODEL.read_bytes()))
    return BuildInputs(files=tuple(files), base_image=base_image, base_image_id=base_image_id)


def _requirements(inputs: BuildInputs) -> list[str]:
    """`name==version` of every pinned requirement (for messages)."""
    out = []
    for line in inputs.file("requirements.txt").decode().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(line.split()[0])
    return out


def cpu_image_status(tag: str = CPU_IMAGE, *, base_image: str = BASE_IMAGE) -> str:
    """`"missing"`, `"stale"` (inputs changed) or `"current"` for the CPU image `tag`."""

    client = docker_client()
    image = image_or_none(client, tag)
    if image is None:
        return "missing"
    base = image_or_none(client, base_image)
    if base is None:
        return "stale"
    inputs = cpu_image_inputs(base_image, str(base.id))
    return "current" if (image.labels or {}).get(LABEL_INPUTS) == inputs.digest else "stale"


# -- base image ------------------------------------------------------------------------------------


def _run(argv: list[str], what: str, *, timeout: float) -> None:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EnvironmentProblem(f"{what} failed: {exc}") from exc
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
        raise EnvironmentProblem(f"{what} failed (exit {proc.returncode})", details=tail)


def unmount_below(root: Path) -> None:
    """Unmount whatever is mounted at or below `root` (deepest first); debootstrap mounts /proc, /sys."""
    try:
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines() if line.strip()]
    except OSError:
        return
    prefix = str(root.resolve())
    below = [m for m in mounts if m == prefix or m.startswith(prefix + "/")]
    for mount in sorted(below, key=len, reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True, check=False)


def ensure_base_image(
    client: Any, tag: str = BASE_IMAGE, *, work_dir: Path | None = None, mirror: str | None = None
) -> tuple[str, bool]:
    """(image id, built?) of the Debian bookworm base; created with debootstrap when absent."""
    existing = image_or_none(client, tag)
    if existing is not None:
        return str(existing.id), False
    debootstrap = shutil.which("debootstrap")
    if debootstrap is None or shutil.which("tar") is None:
        raise MissingDependency(
            f"base image {tag} is absent and debootstrap is not installed to create it",
            hint="apt-get install debootstrap (as root), or pass a base image you can pull, "
            "e.g. --base-image debian:bookworm-slim",
        )
    if os.geteuid() != 0:
        raise EnvironmentProblem(
            f"base image {tag} is absent and debootstrap needs root to create it",
            hint="run `deployer image build-cpu` once as root, or pass --base-image debian:bookworm-slim",
        )
    parent = work_dir or default_cache_dir()
    parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="rootfs-", dir=parent)
    rootfs = Path(tmp) / "rootfs"
    try:
        argv = [debootstrap, "--variant=minbase", f"--include={_DEBOOTSTRAP_PACKAGES}", "bookworm", str(rootfs)]
        if mirror:
            argv.append(mirror)
        log.info("creating base image %s with debootstrap (about a minute)", tag)
        _run(argv, "debootstrap of Debian bookworm", timeout=1800)
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for item in (rootfs / junk).glob("*"):
                if item.is_file():
                    item.unlink()
        tarball = Path(tmp) / "rootfs.tar"
        # --one-file-system: never archive a /proc or /sys debootstrap may have left mounted
        _run(
            ["tar", "--numeric-owner", "--one-file-system", "-C", str(rootfs), "-cf", str(tarball), "."],
            "archiving the debootstrap root filesystem",
            timeout=600,
        )
        repository, _, version = tag.rpartition(":")
        client.api.import_image(src=str(tarball), repository=repository, tag=version)
    finally:
        unmount_below(rootfs)  # never let rmtree walk into a /proc or /sys left mounted
        shutil.rmtree(tmp, ignore_errors=True)
    image = image_or_none(client, tag)
    if image is None:
        raise EnvironmentProblem(f"docker import did not create {tag}")
    log.info("base image %s created in %.0f s", tag, time.monotonic() - t0)
    return str(image.id), True


# -- wheels and context ----------------------------------------------------------------------------


def _download_wheels(requirements: Path, dest: Path) -> None:
    """pip-download the pinned, hashed wheels for CPython 3.11 (already present ones are kept)."""
    dest.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes", "--disable-pip-version-check",
        *_PIP_TARGET, "-d", str(dest), "-r", str(requirements),
    ]  # fmt: skip
    log.info("downloading wheels into %s", dest)
    try:
        _run(argv, "pip download of the image's wheels", timeout=1800)
    except EnvironmentProblem as exc:
        raise EnvironmentProblem(
            exc.message,
            hint="the host needs access to PyPI (or a pip index configured in pip.conf / PIP_INDEX_URL)",
            details=exc.details,
        ) from exc


def _assemble_context(inputs: BuildInputs, wheels: Path, context: Path) -> None:
    if context.exists():
        shutil.rmtree(context)
    (context / "wheels").mkdir(parents=True)
    for name, content in inputs.files:
        target = context / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    (context / "entrypoint.sh").chmod(0o755)
    for wheel in sorted(wheels.glob("*.whl")):
        try:
            os.link(wheel, context / "wheels" / wheel.name)
        except OSError:
            shutil.copy2(wheel, context / "wheels" / wheel.name)


def _prune_replaced(client: Any) -> None:
    """Drop CPU images a rebuild untagged. The first build stage (labelled `_STAGE_LABEL`) is kept on
    purpose: it is the layer cache that makes a rebuild after a backend change take seconds."""
    with contextlib.suppress(Exception):
        client.images.prune(filters={"dangling": True, "label": f"{LABEL_KIND}=tritonserver-cpu"})


def build_cpu_image(
    *,
    tag: str = CPU_IMAGE,
    base_image: str | None = None,
    cache_dir: Path | None = None,
    force: bool = False,
    client: Any = None,
) -> ImageBuild:
    """Build (or reuse) deployer's CPU Triton image and return what happened.

    `base_image=None` uses `BASE_IMAGE`, created with debootstrap when absent (root + debootstrap);
    any Debian bookworm image works too (e.g. `debian:bookworm-slim` where Docker Hub is reachable).
    The build is skipped when `tag` exists with the same inputs digest, unless `force`. Concurrent
    calls (two CI jobs on one machine) are serialized by a lock in the cache dir.
    """
    from filelock import FileLock


    t0 = time.monotonic()
    client = client or docker_client()
    cache = cache_dir or default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache / "build.lock"), timeout=3600):
        base_ref, base_id, base_built = _base(client, base_image, cache)
        inputs = cpu_image_inputs(base_ref, base_id)
        digest = inputs.digest
        current = image_or_none(client, tag)
        if current is not None and not force and (current.labels or {}).get(LABEL_INPUTS) == digest:
            log.info("image %s is current (inputs %s); reusing it", tag, digest[:12])
            return ImageBuild(tag, str(current.id), digest, False, base_built, time.monotonic() - t0)
        _download_wheels(recipe_dir() / "requirements.txt", cache / "wheels")
        context = cache / "context"
        _assemble_context(inputs, cache / "wheels", context)
        labels = {
            LABEL_INPUTS: digest,
            LABEL_KIND: "tritonserver-cpu",
            "org.opencontainers.image.title": "Triton Inference Server 2.51 (CPU) for deployer",
            "org.opencontainers.image.description": "tritonserver from nvidia-pytriton, python backend, "
            "ONNX Runtime CPU as a Python-based backend; " + ", ".join(_requirements(inputs)),
        }
        try:
            image_id = docker_build(client, context, tag, base_ref, labels)
        finally:
            _prune_replaced(client)
            shutil.rmtree(context, ignore_errors=True)
    seconds = time.monotonic() - t0
    log.info("built %s (%s) in %.0f s", tag, image_id[:19], seconds)
    return ImageBuild(tag, image_id, digest, True, base_built, seconds)


def _base(client: Any, base_image: str | None, cache: Path) -> tuple[str, str, bool]:
    """(reference, image id, built?) of the base image: ours via debootstrap, or a given one."""
    if base_image is None:
        base_id, built = ensure_base_image(client, BASE_IMAGE, work_dir=cache)
        return BASE_IMAGE, base_id, built
    existing = image_or_none(client, base_image)
    if existing is None:
        try:
            existing = client.images.pull(base_image)
        except Exception as exc:
            raise EnvironmentProblem(
                f"base image {base_image} is not present and cannot be pulled: {exc}",
                hint="pull or load it first, or omit the base image to create one with debootstrap",
            ) from exc
    return base_image, str(existing.id), False
