"""The committed top-level compose.yaml is exactly what `deployer compose` renders for the quickstart."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[4]


def test_top_level_compose_yaml_is_in_sync_with_the_generator() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "deployer", "compose", "examples/quickstart/deployer.yaml"],
        cwd=ROOT, capture_output=True, text=True, check=False, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    committed = (ROOT / "compose.yaml").read_text()
    assert result.stdout == committed, (
        "compose.yaml is stale: run `deployer compose examples/quickstart/deployer.yaml -o compose.yaml`"
    )
    assert "source: ./model_repository" in committed and "read_only: true" in committed
    assert '"127.0.0.1:8000:8000"' in committed
