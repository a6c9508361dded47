"""What users install: the distribution name, its console script, the Python versions it claims, and
that every claimed version is tested (3.11: the whole suite; 3.13: the unit tier in a container)."""

from __future__ import annotations

import email.parser
import importlib.util
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import pytest
import tomllib
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[3]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = PYPROJECT["project"]
DIST = "triton-deployer"  # PyPI's `deployer` is an unrelated 2014 project: never publish under it


def _python_versions() -> ModuleType:
    spec = importlib.util.spec_from_file_location("python_versions", ROOT / ".ci" / "python_versions.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("python_versions", module)
    spec.loader.exec_module(module)
    return module


PV = _python_versions()
TESTED = {PV.SUITE_PYTHON, *PV.TARGETS}  # "3.11" (whole suite) and the unit-tier containers' versions


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel `pip wheel .` builds from this checkout (offline when the build backend is installed)."""
    out = tmp_path_factory.mktemp("wheel")
    argv = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-q", "-w", str(out)]
    if importlib.util.find_spec("hatchling") is not None:
        argv.append("--no-build-isolation")  # the 3.13 container has no network
    proc = subprocess.run([*argv, str(ROOT)], capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    wheels = list(out.glob("*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def _metadata(wheel: Path) -> tuple[email.message.Message, str, list[str]]:
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        meta = email.parser.Parser().parsestr(zf.read(info).decode())
        entry_points = zf.read(info.replace("METADATA", "entry_points.txt")).decode()
    return meta, entry_points, names


def test_the_distribution_is_not_named_like_the_unrelated_pypi_project() -> None:
    assert PROJECT["name"] == DIST
    assert PROJECT["scripts"] == {"deployer": "deployer.cli:run"}


def test_the_wheel_is_triton_deployer_with_the_deployer_command(wheel: Path) -> None:
    meta, entry_points, names = _metadata(wheel)
    assert wheel.name.startswith("triton_deployer-" + PROJECT["version"] + "-py3-none-any")
    assert meta["Name"] == DIST
    assert meta["Version"] == PROJECT["version"]
    assert SpecifierSet(meta["Requires-Python"]) == SpecifierSet(PROJECT["requires-python"])
    assert set(meta.get_all("Classifier") or []) == set(PROJECT["classifiers"])
    section = entry_points.split("[console_scripts]", 1)[1].split("[", 1)[0]
    assert [line.strip() for line in section.splitlines() if line.strip()] == ["deployer = deployer.cli:run"]
    # the import package stays `deployer`, with the CPU image recipe and the templates inside
    assert "deployer/__init__.py" in names and "deployer/cli.py" in names
    assert "deployer/docker/Dockerfile" in names and "deployer/templates/config.pbtxt.j2" in names
    assert not any(n.startswith("tests/") for n in names)
    extras = set(meta.get_all("Provides-Extra") or [])
    assert {"local", "docker", "trt", "dev"} <= extras


def test_the_version_output_names_the_distribution() -> None:
    proc = subprocess.run([sys.executable, "-m", "deployer", "--version"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"deployer {PROJECT['version']} ({DIST})"


def test_readme_and_docs_install_the_distribution_name() -> None:
    docs = [ROOT / "README.md", ROOT / "docker" / "README.md", ROOT / "examples" / "ci" / "README.md",
            *sorted((ROOT / "docs").glob("*.md"))]
    lines = [(p.name, line) for p in docs for line in p.read_text(encoding="utf-8").splitlines()]
    installs = [(n, line) for n, line in lines if re.search(r"pip install ['\"]?[A-Za-z]", line)]
    ours = [(n, line) for n, line in installs if re.search(r"pip install ['\"]?(triton-)?deployer\b", line)]
    assert any(n == "README.md" for n, _ in ours), "README.md has no install line"
    for name, line in ours:
        assert f"pip install '{DIST}[" in line or f"pip install {DIST}" in line, f"{name}: {line}"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert re.search(rf"^pip install '{DIST}\[local\]'", readme, re.M), "the quickstart's install line"


def _in(spec: SpecifierSet, version: str) -> bool:
    return spec.contains(version + ".0")


def test_requires_python_claims_exactly_the_tested_versions() -> None:
    spec = SpecifierSet(PROJECT["requires-python"])
    minors = sorted(TESTED, key=lambda v: tuple(map(int, v.split("."))))
    lo, hi = (tuple(map(int, v.split("."))) for v in (minors[0], minors[-1]))
    assert all(_in(spec, v) for v in TESTED), (spec, TESTED)
    assert not _in(spec, f"{lo[0]}.{lo[1] - 1}"), f"{spec} claims a Python below the lowest tested {minors[0]}"
    assert not _in(spec, f"{hi[0]}.{hi[1] + 1}"), f"{spec} claims a Python above the highest tested {minors[-1]}"
    classified = {c.rsplit(" :: ", 1)[1] for c in PROJECT["classifiers"]
                  if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)}
    assert classified == TESTED, "one `Programming Language :: Python :: 3.X` classifier per tested version"


def test_the_full_suite_runs_on_the_python_it_claims() -> None:
    """In CI, the suite (everything but the unit-tier containers) runs on `SUITE_PYTHON`."""
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if os.environ.get("DEPLOYER_UNIT_TIER_PYTHON"):
        assert os.environ["DEPLOYER_UNIT_TIER_PYTHON"] == here  # inside the container: its own version
    elif os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
        assert here == PV.SUITE_PYTHON, f"CI's venv runs Python {here}; .ci/python_versions.py says {PV.SUITE_PYTHON}"
    assert here in TESTED


def test_the_unit_tier_image_needs_only_wheels_of_the_claimed_dependencies() -> None:
    """The container installs the dependencies and the docker/dev extras, never `local` (tritonserver)."""
    reqs, no_deps = PV.requirements()
    assert set(PROJECT["dependencies"]) <= set(reqs)
    assert not set(PROJECT["optional-dependencies"]["local"]) & set(reqs)
    assert no_deps == ["tensorrt-stubs"]
    assert PV.UNIT_MARKERS == "not triton and not docker and not gpu"


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_unit_tier_on_the_other_claimed_pythons(capsys: pytest.CaptureFixture[str]) -> None:
    """`./scripts/test-python-versions`: the unit tier on 3.13 in a Debian trixie container (cached image)."""
    proc = subprocess.run([sys.executable, str(ROOT / ".ci" / "python_versions.py")], cwd=ROOT,
                          capture_output=True, text=True, timeout=3500, check=False)
    summary = [line for line in proc.stderr.splitlines() if line.startswith("python-versions: Python")]
    with capsys.disabled():
        for line in summary:
            sys.stdout.write(f"\n{line}")
    assert proc.returncode == 0, "\n".join((proc.stdout + proc.stderr).splitlines()[-80:])
    assert len(summary) == len(PV.TARGETS) and all(": passed;" in line for line in summary), summary
