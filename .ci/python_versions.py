"""The unit tier on the claimed Pythons that the venv is not: CPython 3.13 in a Debian trixie container.

The venv (CPython 3.11, Debian bookworm) runs the whole suite through `./scripts/test`. This job runs
`pytest tests/unit -m "not triton and not docker and not gpu"` under every other claimed version:

1. base image `deployer/debian-trixie-minbase:py313`: `debootstrap --variant=minbase trixie` (python3,
   python3-venv) + `docker import`, made only when absent (no registry needed);
2. wheels for the target (cp313, manylinux x86_64) downloaded ON THE HOST with pip: the project's
   dependencies with the `docker` and `dev` extras (not `local`: the unit tier needs no tritonserver),
   the build backend, and tensorrt-stubs (--no-deps, like scripts/_venv.sh);
3. image `deployer/unit-tests:py313`: a venv at /opt/venv with those wheels, installed with
   `--no-index --find-links` in a `docker build --network none`. It is labelled with a SHA-256 of its
   inputs (base image id, requirement lines, pip target, Dockerfile) and reused while they are
   unchanged, so a CI run pays debootstrap and the downloads only when an input changed;
4. a container (`--network none`) with the checkout mounted read-only at /src: it copies it to a
   writable /tmp/src, installs the project there (editable, no deps, no index) and runs the unit tier.
   The third-party test models are fetched on the host first and mounted read-only.

Outside CI a missing Docker engine or debootstrap is a note and exit 0; with CI=true it fails (exit 3),
like the `docker` marker in tests/conftest.py.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import tomllib

from deployer.server.docker.cpu_image import unmount_below

ROOT = Path(__file__).resolve().parent.parent
LABEL_INPUTS = "dev.deployer.unit-image.inputs-sha256"
LABEL_KIND = "dev.deployer.image.kind"
UNIT_MARKERS = "not triton and not docker and not gpu"
EXTRAS = ("docker", "dev")  # `local` (nvidia-pytriton, tritonserver) is for the triton tier only
NO_DEPS = ("tensorrt-stubs",)  # declares a dependency on tensorrt, which PyPI cannot install

DOCKERFILE = """\
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
COPY requirements.txt no-deps.txt /opt/wheels/
COPY wheels /opt/wheels/
RUN python3 -m venv /opt/venv \\
 && /opt/venv/bin/python -m pip install --no-index --find-links /opt/wheels --disable-pip-version-check \\
      --no-cache-dir -q -r /opt/wheels/requirements.txt \\
 && /opt/venv/bin/python -m pip install --no-index --find-links /opt/wheels --disable-pip-version-check \\
      --no-cache-dir -q --no-deps -r /opt/wheels/no-deps.txt \\
 && /opt/venv/bin/python -m pip list --format=freeze > /opt/venv/freeze.txt \\
 && rm -rf /opt/wheels
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1
"""

# Run inside the container: a writable copy of the read-only checkout, the project, the unit tier.
RUN_UNITS = """\
set -eu
mkdir -p /tmp/src
tar -C /src --exclude=./.git --exclude=./.venv --exclude=__pycache__ --exclude=./.mypy_cache \\
    --exclude=./.pytest_cache --exclude=./.ruff_cache --exclude=./.hypothesis --exclude=./.deployer \\
    --exclude=./model_repository --exclude=./reports -cf - . | tar -C /tmp/src -xf -
mkdir -p /tmp/src/model_repository
cd /tmp/src
python -m pip install --no-index --no-deps --no-build-isolation --disable-pip-version-check -q -e .
python -c 'import sys; print("python", sys.version.split()[0], sys.executable)'
exec python -m pytest tests/unit -m "$UNIT_MARKERS" -p no:cacheprovider "$@"
"""


@dataclass(frozen=True)
class Target:
    python: str  # "3.13"
    suite: str  # the Debian release whose python3 is that version
    packages: str  # debootstrap --include

    @property
    def tag(self) -> str:
        return "py" + self.python.replace(".", "")

    @property
    def base_image(self) -> str:
        return f"deployer/debian-{self.suite}-minbase:{self.tag}"

    @property
    def image(self) -> str:
        return f"deployer/unit-tests:{self.tag}"

    def pip_target(self) -> list[str]:
        abi = "cp" + self.python.replace(".", "")
        platforms = [f"manylinux_2_{n}_x86_64" for n in range(41, 16, -1)] + ["manylinux2014_x86_64"]
        out = ["--only-binary=:all:", "--implementation=cp", f"--python-version={self.python}", f"--abi={abi}"]
        return out + [f"--platform={p}" for p in platforms]


# The whole suite runs in the venv, on the machine's python3: Debian bookworm's CPython 3.11 in CI.
SUITE_PYTHON = "3.11"
# The unit tier on the other claimed versions: Debian trixie (13) ships CPython 3.13.
TARGETS = {"3.13": Target("3.13", "trixie", "python3,python3-venv,ca-certificates")}


def log(msg: str) -> None:
    sys.stderr.write(f"python-versions: {msg}\n")
    sys.stderr.flush()


class Unavailable(Exception):
    """The job cannot run on this machine (no engine, no debootstrap, not root)."""


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def _run(argv: list[str], what: str, *, timeout: float = 1800, quiet: bool = True) -> str:
    proc = subprocess.run(argv, capture_output=quiet, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        tail = "\n".join(((proc.stdout or "") + (proc.stderr or "")).splitlines()[-40:])
        raise RuntimeError(f"{what} failed (exit {proc.returncode}): {shlex.join(argv)}\n{tail}")
    return proc.stdout or ""


def cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "deployer" / "python-versions"


def image_info(ref: str) -> dict[str, object] | None:
    proc = subprocess.run(["docker", "image", "inspect", ref], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return None
    data = json.loads(proc.stdout)
    return data[0] if data else None


def requirements(pyproject: Path = ROOT / "pyproject.toml") -> tuple[list[str], list[str]]:
    """(requirement lines, --no-deps lines) the unit tier needs: dependencies, extras, build backend."""
    data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    project = data["project"]
    reqs = list(project["dependencies"])
    for extra in EXTRAS:
        reqs += project["optional-dependencies"][extra]
    # the editable install runs the backend without isolation: what it needs, and what hatchling asks
    # for an editable build (get_requires_for_build_editable)
    reqs += [*data["build-system"]["requires"], "editables"]
    return reqs, list(NO_DEPS)


def inputs_digest(target: Target, base_id: str, reqs: list[str], no_deps: list[str]) -> str:
    h = hashlib.sha256()
    for part in (DOCKERFILE, base_id, *sorted(reqs), "--no-deps", *sorted(no_deps), *target.pip_target()):
        h.update(part.encode() + b"\0")
    return h.hexdigest()


def ensure_base(target: Target, cache: Path) -> tuple[str, bool]:
    """(image id, built?) of the debootstrap base; made when absent."""
    info = image_info(target.base_image)
    if info is not None:
        return str(info["Id"]), False
    debootstrap = shutil.which("debootstrap")
    if debootstrap is None:
        raise Unavailable(f"{target.base_image} is absent and debootstrap is not installed (apt-get install it)")
    if os.geteuid() != 0:
        raise Unavailable(f"{target.base_image} is absent and debootstrap needs root")
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="rootfs-", dir=cache))
    rootfs = tmp / "rootfs"
    try:
        argv = [debootstrap, "--variant=minbase", f"--include={target.packages}", target.suite, str(rootfs)]
        if os.environ.get("DEBIAN_MIRROR"):
            argv.append(os.environ["DEBIAN_MIRROR"])
        log(f"creating {target.base_image} with debootstrap {target.suite} (a few minutes, once)")
        _run(argv, f"debootstrap of Debian {target.suite}", timeout=2400)
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for item in (rootfs / junk).glob("*"):
                if item.is_file():
                    item.unlink()
        tarball = tmp / "rootfs.tar"
        _run(["tar", "--numeric-owner", "--one-file-system", "-C", str(rootfs), "-cf", str(tarball), "."],
             "archiving the root filesystem")
        _run(["docker", "import", "--message", f"debootstrap --variant=minbase {target.suite}", str(tarball),
              target.base_image], "docker import")
    finally:
        unmount_below(rootfs)  # debootstrap mounts /proc and /sys: never let rmtree walk into them
        shutil.rmtree(tmp, ignore_errors=True)
    info = image_info(target.base_image)
    if info is None:
        raise RuntimeError(f"docker import did not create {target.base_image}")
    return str(info["Id"]), True


def download_wheels(target: Target, reqs: list[str], no_deps: list[str], dest: Path) -> int:
    """Fresh wheel set for the target in `dest` (exactly what resolves now); returns the count."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    common = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "-q", *target.pip_target(),
              "-d", str(dest)]
    _run([*common, *reqs], f"pip download of the CPython {target.python} wheels")
    _run([*common, "--no-deps", *no_deps], "pip download of the --no-deps wheels")
    return len(list(dest.glob("*.whl")))


def ensure_image(target: Target, *, rebuild: bool = False) -> dict[str, float | bool | str]:
    """Build the test image when missing or stale; timings of what was done."""
    cache = cache_dir() / target.tag
    t0 = time.monotonic()
    base_id, base_built = ensure_base(target, cache)
    t_base = time.monotonic() - t0
    reqs, no_deps = requirements()
    digest = inputs_digest(target, base_id, reqs, no_deps)
    info = image_info(target.image)
    labels = ((info or {}).get("Config") or {}).get("Labels") or {}  # type: ignore[union-attr]
    if info is not None and not rebuild and labels.get(LABEL_INPUTS) == digest:
        log(f"{target.image} is current (inputs {digest[:12]}); reusing it")
        return {"built": False, "base_built": base_built, "base_s": t_base, "wheels_s": 0.0, "build_s": 0.0}
    t1 = time.monotonic()
    context = cache / "context"
    count = download_wheels(target, reqs, no_deps, context / "wheels")
    (context / "requirements.txt").write_text("\n".join(reqs) + "\n")
    (context / "no-deps.txt").write_text("\n".join(no_deps) + "\n")
    (context / "Dockerfile").write_text(DOCKERFILE)
    t_wheels = time.monotonic() - t1
    log(f"downloaded {count} wheels for CPython {target.python} in {t_wheels:.0f} s; building {target.image}")
    t2 = time.monotonic()
    try:
        _run(["docker", "build", "--network", "none", "--pull=false", "--build-arg", f"BASE_IMAGE={target.base_image}",
              "--label", f"{LABEL_INPUTS}={digest}", "--label", f"{LABEL_KIND}=unit-tests",
              "-t", target.image, str(context)], f"docker build of {target.image}", timeout=1800)
    finally:
        shutil.rmtree(context, ignore_errors=True)
    subprocess.run(["docker", "image", "prune", "-f", "--filter", "dangling=true", "--filter",
                    f"label={LABEL_KIND}=unit-tests"], capture_output=True, check=False)
    t_build = time.monotonic() - t2
    log(f"built {target.image} (inputs {digest[:12]}) in {t_build:.0f} s")
    return {"built": True, "base_built": base_built, "base_s": t_base, "wheels_s": t_wheels, "build_s": t_build}


def prefetch_models() -> Path:
    """The third-party models the unit tier reads, fetched on the host (the container has no network)."""
    sys.path.insert(0, str(ROOT))
    from tests.models import CATALOG, third_party_model
    from tests.models import cache_dir as models_cache

    for key in CATALOG:
        third_party_model(key)
    return models_cache()


def run_units(target: Target, pytest_args: list[str]) -> int:
    models = prefetch_models()
    argv = [
        "docker", "run", "--rm", "--network", "none", "--init",
        "-v", f"{ROOT}:/src:ro", "-v", f"{models}:/models-cache:ro",
        "-e", "DEPLOYER_TEST_CACHE=/models-cache", "-e", f"UNIT_MARKERS={UNIT_MARKERS}",
        "-e", f"CI={os.environ.get('CI', '')}", "-e", "HOME=/root", "-e", f"DEPLOYER_UNIT_TIER_PYTHON={target.python}",
        target.image, "bash", "-c", RUN_UNITS, "run-units", *pytest_args,
    ]  # fmt: skip
    log(f"unit tier on Python {target.python}: pytest tests/unit -m {UNIT_MARKERS!r} {shlex.join(pytest_args)}")
    return subprocess.run(argv, check=False).returncode


def docker_unavailable() -> str | None:
    if shutil.which("docker") is None:
        return "the docker CLI is not installed"
    proc = subprocess.run(["docker", "info"], capture_output=True, text=True, check=False)
    return None if proc.returncode == 0 else "no Docker engine answers (docker info failed)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", action="append", choices=sorted(TARGETS), help="default: all")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the test image even when current")
    parser.add_argument("--build-only", action="store_true", help="make the image, run no test")
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (after --)")
    args = parser.parse_args(argv)
    status = 0
    for version in args.python or sorted(TARGETS):
        target = TARGETS[version]
        t0 = time.monotonic()
        try:
            reason = docker_unavailable()
            if reason:
                raise Unavailable(reason)
            timing = ensure_image(target, rebuild=args.rebuild)
        except Unavailable as exc:
            if _in_ci():
                log(f"Python {version}: cannot run in CI: {exc}")
                return 3
            log(f"note: Python {version} unit tier skipped: {exc}")
            continue
        t_image = time.monotonic() - t0
        rc = 0 if args.build_only else run_units(target, args.pytest_args or ["-q"])
        total = time.monotonic() - t0
        log(
            f"Python {version}: {'passed' if rc == 0 else f'FAILED (pytest exit {rc})'}; "
            f"image {'built' if timing['built'] else 'reused'} in {t_image:.0f} s "
            f"(base {'built' if timing['base_built'] else 'present'} {timing['base_s']:.0f} s, "
            f"wheels {timing['wheels_s']:.0f} s, build {timing['build_s']:.0f} s), "
            f"tests {total - t_image:.0f} s, total {total:.0f} s"
        )
        status = status or rc
    return status


if __name__ == "__main__":
    sys.exit(main())
