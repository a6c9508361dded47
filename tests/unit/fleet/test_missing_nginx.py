"""No nginx on the machine: `deployer up` of a replicas spec is exit 3 with how to get nginx, before any
tritonserver starts (nothing to clean up, no traceback)."""

from __future__ import annotations

import contextlib
import io
import shutil
import sys
from pathlib import Path

import pytest

from deployer import Pipeline

QUICKSTART = Path(__file__).resolve().parents[3] / "examples" / "quickstart"


def test_missing_nginx_is_exit_3_with_the_install_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(QUICKSTART / "classifier.onnx", tmp_path / "classifier.onnx")
    spec = tmp_path / "deployer.yaml"
    spec.write_text("repository: repo\nserver: {runtime: local, replicas: 2}\n"
                    "models:\n  - {name: classifier, source: classifier.onnx, max_batch_size: 8}\n")
    Pipeline.load(spec).publish()
    real_which = shutil.which
    # this machine has nginx: hide it from the lookup only (PATH and the /usr/sbin fallback alike)
    monkeypatch.setattr("deployer.fleet.nginx.shutil.which",
                        lambda cmd, *a, **k: None if cmd == "nginx" else real_which(cmd, *a, **k))
    from deployer.cli import main

    out = io.StringIO()
    monkeypatch.setattr(sys, "argv", ["deployer", "up", str(spec)])
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out), pytest.raises(SystemExit) as exc:
        main()
    text = out.getvalue()
    assert exc.value.code == 3, text
    assert "nginx" in text and "apt-get install" in text and "Traceback" not in text
    state = tmp_path / ".deployer"
    started = [p for p in state.rglob("*.json") if p.name in ("fleet.json", "server.json")]
    assert started == [], started  # no replica and no balancer was started
