"""What served a model: backend-dir inventory (local dirs and the in-container script) and the label."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from deployer.server.backends import (
    DEPLOYER_CPU,
    INVENTORY_SCRIPT,
    NATIVE,
    PYTHON_BASED,
    inventory,
    parse_inventory,
    served_by,
)
from deployer.server.base import SERVER_DEFAULT_FLAGS, ServerSettings, with_server_defaults

OURS = Path(__file__).parents[3] / "deployer" / "server" / "backends" / "onnxruntime" / "model.py"


def _backend_dir(root: Path) -> Path:
    """A backend dir like the ones deployer meets: native libraries, deployer's model.py, another model.py."""
    (root / "python").mkdir(parents=True)
    (root / "python" / "libtriton_python.so").write_bytes(b"\x7fELF")
    (root / "onnxruntime").mkdir()
    shutil.copyfile(OURS, root / "onnxruntime" / "model.py")  # the file deployer really installs
    (root / "vllm").mkdir()
    (root / "vllm" / "model.py").write_text("class TritonPythonModel: ...\n")
    (root / "tensorrt").mkdir()
    (root / "tensorrt" / "libtriton_tensorrt.so").write_bytes(b"\x7fELF")
    (root / "tensorrt" / "model.py").write_text("# a library wins over model.py, as in Triton\n")
    (root / "empty").mkdir()
    (root / "README").write_text("not a backend\n")
    return root


EXPECTED = (("onnxruntime", DEPLOYER_CPU), ("python", NATIVE), ("tensorrt", NATIVE), ("vllm", PYTHON_BASED))


def test_inventory_of_a_backend_dir(tmp_path: Path) -> None:
    assert inventory(_backend_dir(tmp_path / "backends")) == EXPECTED
    assert inventory(tmp_path / "missing") == () and inventory(None) == ()


@pytest.mark.skipif(shutil.which("sh") is None, reason="no POSIX sh")
def test_the_in_container_script_agrees_with_the_python_inventory(tmp_path: Path) -> None:
    backends = _backend_dir(tmp_path / "backends")
    out = subprocess.run(["sh", "-c", INVENTORY_SCRIPT, "sh", str(backends)], capture_output=True, text=True,
                         check=True, timeout=30).stdout
    assert parse_inventory(out) == EXPECTED
    assert parse_inventory("garbage\nonnxruntime weird-kind\n") == ()


KINDS = dict(EXPECTED)


@pytest.mark.parametrize(
    ("config", "backends", "label"),
    [
        ({"backend": "onnxruntime", "platform": "onnxruntime_onnx"}, KINDS,
         "onnxruntime (deployer CPU Python-based backend)"),
        ({"platform": "onnxruntime_onnx"}, KINDS, "onnxruntime (deployer CPU Python-based backend)"),
        ({"backend": "onnxruntime"}, {"onnxruntime": NATIVE}, "onnxruntime (native)"),
        ({"backend": "onnxruntime"}, {}, "onnxruntime (implementation not recorded)"),
        ({"backend": "python"}, KINDS, "python"),
        ({"backend": "tensorrt", "platform": "tensorrt_plan"}, KINDS, "tensorrt"),
        ({"platform": "tensorrt_plan"}, {}, "tensorrt"),
        ({"backend": "vllm"}, KINDS, "vllm (Python-based backend)"),
        ({"platform": "ensemble", "backend": ""}, KINDS, "ensemble"),
        ({}, KINDS, ""),
    ],
)
def test_served_by_label(config: dict[str, str], backends: dict[str, str], label: str) -> None:
    assert served_by(config, backends) == label


def test_server_default_flags_yield_to_the_users(tmp_path: Path) -> None:
    base = ServerSettings(runtime="local", repository=tmp_path, models=(), state_dir=tmp_path)
    added = with_server_defaults(base).extra_args
    assert added == tuple(f"{flag}={value}" for flag, value in SERVER_DEFAULT_FLAGS)
    mine = with_server_defaults(ServerSettings(runtime="local", repository=tmp_path, models=(), state_dir=tmp_path,
                                               extra_args=("--exit-timeout-secs", "60", "--log-info=true")))
    assert mine.extra_args == ("--metrics-interval-ms=100", "--exit-timeout-secs", "60", "--log-info=true")
    assert with_server_defaults(with_server_defaults(base)) == with_server_defaults(base)  # idempotent
