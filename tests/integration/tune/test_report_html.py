"""The HTML report renders its plots in a real headless Chromium (Debian package), with no console message."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.tune_results import sample_result


def test_html_renders_its_plots_in_headless_chromium(tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("chromium is needed for this test: apt-get install -y chromium")
    from deployer.tune.html import write_html

    page = tmp_path / "report.html"
    write_html(sample_result(tmp_path), page)
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
