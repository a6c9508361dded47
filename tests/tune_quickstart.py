"""The quickstart spec copied to a temp dir with free ports and a `tune:` section, and the CLI as a child
(shared by the integration tests under tests/integration/tune/)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "examples" / "quickstart"


def quickstart_spec(tmp_path: Path, ports: list[int], tune: str, *, runtime: str = "local") -> Path:
    """deployer.yaml in `tmp_path` (model files beside it, repository `repo`), `tune` indented under the
    classifier, served on (http, grpc, metrics) = `ports` by `runtime`."""
    for f in ("classifier.onnx", "labels.py"):
        shutil.copy(QUICKSTART / f, tmp_path / f)
    http, grpc, metrics = ports
    text = (QUICKSTART / "deployer.yaml").read_text()
    text = text.replace("repository: ../../model_repository", "repository: repo")
    text = text.replace("http_port: 8000", f"http_port: {http}").replace("grpc_port: 8001", f"grpc_port: {grpc}")
    text = text.replace("metrics_port: 8002", f"metrics_port: {metrics}")
    text = text.replace("  runtime: local ", f"  runtime: {runtime} ")
    text = text.replace("    version_policy: {latest: 1}\n", f"    version_policy: {{latest: 1}}\n{tune}")
    path = tmp_path / "deployer.yaml"
    path.write_text(text)
    return path


def cli(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """`python -m deployer ARGS` from this checkout."""
    return subprocess.run([sys.executable, "-m", "deployer", *args], capture_output=True, text=True,
                          timeout=timeout, check=False, stdin=subprocess.DEVNULL,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"})
