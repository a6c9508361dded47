"""`deployer tune` on a real tritonserver with the quickstart classifier (short windows: 2 shared cores)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from deployer import Pipeline
from tests.tune_quickstart import cli, quickstart_spec

ROOT = Path(__file__).resolve().parents[3]

pytestmark = [pytest.mark.triton, pytest.mark.slow]


def test_tune_writes_a_spec_that_deploys_and_meets_the_budget(
    tmp_path: Path, find_free_ports: Callable[..., list[int]]
) -> None:
    tune = ("    tune:\n      p99_ms: 400\n      budget: {trials: 4}\n"
            "      load: {concurrency: [8], warmup_s: 0.3, window_s: 1.0, max_windows: 3}\n")
    spec = quickstart_spec(tmp_path, find_free_ports(3), tune)
    before = spec.read_text()
    report = tmp_path / "tune.json"
    r = cli("tune", str(spec), "--json", str(report))
    assert r.returncode == 0, r.stdout + r.stderr
    data = json.loads(report.read_text())
    assert data["met"] and 1 <= len(data["trials"]) <= 4
    after = spec.read_text()
    if data["written"]:
        assert after != before and "# deployer tune" in after and data["diff"]
        # only lines of the classifier's tuned keys (and the comment block) changed
        keys = ("max_batch_size:", "preferred_batch_size:", "max_queue_delay_microseconds:", "instance_group:",
                "dynamic_batching:", "# deployer tune")
        changed = [ln[1:].strip() for ln in data["diff"].splitlines()
                   if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]
        assert changed and all(ln.startswith(keys) for ln in changed), changed
    else:
        assert after == before
    best = data["trials"][data["best"] - 1]
    result = Pipeline.load(spec).deploy()
    assert result.report.passed, [c for s in result.report.suites for c in s.checks if c.status == "fail"]
    assert best["measurements"][best["chosen"]]["p99_ms"] <= 400


def test_impossible_budget_exits_1_and_writes_nothing(
    tmp_path: Path, find_free_ports: Callable[..., list[int]]
) -> None:
    tune = ("    tune:\n      p99_ms: 0.001\n      budget: {trials: 2}\n"
            "      load: {concurrency: [4], warmup_s: 0.2, window_s: 0.5, max_windows: 3}\n")
    spec = quickstart_spec(tmp_path, find_free_ports(3), tune)
    before = spec.read_bytes()
    r = cli("tune", str(spec))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "no candidate met" in r.stderr
    assert spec.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if ".tune-" in p.name]  # no temp copy left
    assert not Pipeline.load(spec).status().running  # the server it started is stopped


def test_sigint_during_a_trial_restores_the_original_config(
    tmp_path: Path, find_free_ports: Callable[..., list[int]]
) -> None:
    import tritonclient.http as httpclient

    from deployer.config.diff import diff_config

    tune = ("    tune:\n      budget: {trials: 20}\n"
            "      load: {concurrency: [4], warmup_s: 0.3, window_s: 1.0, max_windows: 20}\n")
    spec = quickstart_spec(tmp_path, find_free_ports(3), tune)
    before = spec.read_bytes()
    p = Pipeline.load(spec)
    p.publish()
    state = p.up()
    client = httpclient.InferenceServerClient(state.http_url)
    try:
        original = client.get_model_config("classifier")
        proc = subprocess.Popen([sys.executable, "-m", "deployer", "tune", str(spec)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        deadline = time.monotonic() + 300
        changed = False
        while time.monotonic() < deadline and proc.poll() is None:  # wait until a candidate is served
            if diff_config(original, client.get_model_config("classifier")):
                changed = True
                break
            time.sleep(0.2)
        assert changed, "no candidate was ever served"
        time.sleep(1.0)  # inside that trial's measurement
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=300)
        assert proc.returncode == 130, err
        assert diff_config(original, client.get_model_config("classifier")) == []
        assert spec.read_bytes() == before
        assert client.is_model_ready("classifier")
    finally:
        client.close()
        p.down()
