"""`mypy --strict deployer/engines` against tensorrt-stubs (10.13): a real check of names and signatures."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
FAKES = ROOT / "tests" / "fakes"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("tensorrt_stubs") is None, reason="tensorrt-stubs not installed"),
    pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy not installed"),
]


def _mypy(stub_dir: Path, *targets: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MYPYPATH": str(stub_dir)}
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", *targets],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.fixture(scope="module")
def stub_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = importlib.util.spec_from_file_location("sanitized_trt_stubs", FAKES / "sanitized_trt_stubs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out: Path = module.write_sanitized_stubs(tmp_path_factory.mktemp("trt_stubs"))
    return out


def test_engines_package_is_mypy_strict_clean_against_the_stubs(stub_dir: Path, tmp_path: Path) -> None:
    # A canary proves the stubs are really used (not silently Any): a wrong member and a wrong argument.
    canary = tmp_path / "canary_trt.py"
    canary.write_text(
        "from deployer.engines.adapters import TrtModule\n"
        "def f(trt: TrtModule) -> None:\n"
        "    trt.BuilderFlag.FP17\n"
        "    trt.Builder(trt.Logger()).create_network('explicit')\n"
    )
    result = _mypy(stub_dir, "deployer/engines", str(canary))
    lines = [ln for ln in result.stdout.splitlines() if ": error:" in ln]
    ours = [ln for ln in lines if not ln.startswith(str(canary))]
    assert not ours, result.stdout
    canary_errors = "\n".join(ln for ln in lines if ln.startswith(str(canary)))
    assert 'has no attribute "FP17"' in canary_errors, result.stdout
    assert '"create_network" of "Builder" has incompatible type "str"' in canary_errors, result.stdout
