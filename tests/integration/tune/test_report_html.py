"""The HTML report renders its plots in a real headless Chromium (Debian package), with no console message."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from deployer.smoke.load import Measurement, ServerBreakdown
from deployer.tune.run import Trial, TuneResult
from deployer.tune.space import Candidate


def _m(thr: float, p99: float, queue: float) -> Measurement:
    return Measurement(thr, p99 / 3, p99 / 2, p99 / 1.5, p99, int(thr * 6), 0, True, 3,
                       ServerBreakdown(queue, 100.0, 800.0, 200.0, 9.5, int(thr * 6), int(thr * 6 / 9.5)))


def _result(tmp_path: Path) -> TuneResult:
    trials = (
        Trial(1, Candidate(16, (8, 16), 2000, 1), (_m(5000, 6.0, 600),), 0, True),
        Trial(2, Candidate(32, (16, 32), 2000, 1), (_m(6400, 6.3, 320),), 0, True),
        Trial(3, Candidate(8, (4, 8), 2000, 1), (_m(4800, 7.8, 1200),), 0, False),
        Trial(4, Candidate(64, (32, 64), 2000, 1), error="the server refused the candidate config: <b>x</b>"),
    )
    return TuneResult(model="classifier", spec_path=tmp_path / "deployer.yaml",
                      objective="max_throughput (p99 <= 7 ms)",
                      load="closed loop c=16, batch 1, http", server="local Triton 2.51.0, model on CPU",
                      trials=trials, best=trials[1], original=trials[0], met=True, written=False, dry_run=True,
                      diff="", grid_size=360, budget_trials=20, seconds=42.0, p99_budget_ms=7.0)


def test_html_renders_its_plots_in_headless_chromium(tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("chromium is needed for this test: apt-get install -y chromium")
    from deployer.tune.html import write_html

    page = tmp_path / "report.html"
    write_html(_result(tmp_path), page)
    text = page.read_text()
    assert "<b>x</b>" not in text  # user-facing strings are escaped (the error is not in the page anyway)
    dom, console = _chromium(chromium, page, tmp_path / "profile")
    # plotly drew both figures: its SVG roots exist only after its JS ran
    assert dom.count('class="main-svg"') >= 4, dom[:500]
    assert "throughput vs p99 per trial" in dom and "Pareto front" in dom and "p99 budget 7 ms" in dom
    assert "server-side latency per request" in dom
    assert console == [], console


def _chromium(chromium: str, page: Path, profile: Path) -> tuple[str, list[str]]:
    """The DOM after scripts ran, and every console message (Chromium logs console.error as INFO:CONSOLE)."""
    r = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
                        "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000", "--dump-dom",
                        page.as_uri()], capture_output=True, text=True, timeout=180, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout, [ln for ln in r.stderr.splitlines() if ":CONSOLE" in ln]


def test_the_console_check_sees_errors(tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("chromium is needed for this test: apt-get install -y chromium")
    page = tmp_path / "bad.html"
    page.write_text('<html><body><script>console.error("boom"); throw new Error("kaboom");</script></body></html>')
    _dom, console = _chromium(chromium, page, tmp_path / "profile")
    assert any("boom" in ln for ln in console) and any("Uncaught Error: kaboom" in ln for ln in console)
