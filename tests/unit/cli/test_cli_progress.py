"""`deployer tune`'s progress: the library's callback drives a rich Progress (terminal) or plain lines."""

from __future__ import annotations

import io

from rich.console import Console
from rich.progress import Task
from rich.text import Text

from deployer.cli_progress import TuneProgress
from deployer.smoke.load import Measurement
from deployer.tune import Candidate, Trial

A = Candidate(8, (4, 8), 500, 1)
B = Candidate(16, (), 0, 2)


def _measurement(rps: float, p99: float) -> Measurement:
    return Measurement(throughput_rps=rps, p50_ms=p99 / 2, p90_ms=p99, p95_ms=p99, p99_ms=p99, requests=100,
                       errors=0, stable=True, windows=3, breakdown=None)


def _shown(task: Task) -> str:
    """The task's description as displayed (markup rendered)."""
    return Text.from_markup(task.description).plain


def _console(terminal: bool) -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=terminal, width=200, color_system=None), buf


def test_the_callback_drives_the_progress_bar() -> None:
    console, buf = _console(terminal=True)
    with TuneProgress(console) as progress:
        assert progress.live and progress.progress.live.is_started
        task = progress.progress.tasks[0]
        progress("start", 1, A, None)
        assert "trial 1: mbs 8 pref [4,8]" in _shown(task) and task.completed == 0
        progress("done", 1, A, Trial(1, A, (_measurement(1234.0, 9.5),), 0, feasible=True))
        assert task.completed == 1 and "1,234 req/s, p99 9.5 ms, meets" in _shown(task)
        assert "(1 of 1 meet the objective)" in _shown(task)
        progress("start", 2, B, None)
        assert "trial 2: mbs 16 pref []" in _shown(task)
        progress("done", 2, B, Trial(2, B, error="the server refused the candidate config"))
        assert task.completed == 2 and "failed: the server refused" in _shown(task)
        assert "(1 of 2 meet the objective)" in _shown(task)
        assert task.total is None  # the search decides when it stops: the bar counts, it does not fill
    assert not progress.progress.live.is_started
    assert task.total == 2 and task.finished  # ends full
    assert "tune" in buf.getvalue() and "2/2" in buf.getvalue()


def test_off_a_terminal_one_line_per_trial_and_no_bar() -> None:
    console, buf = _console(terminal=False)
    with TuneProgress(console) as progress:
        assert not progress.live and not progress.progress.live.is_started
        progress("start", 1, A, None)
        progress("done", 1, A, Trial(1, A, (_measurement(10.0, 1.0),), 0, feasible=False))
        progress("start", 2, B, None)
    assert buf.getvalue().splitlines() == ["» trial 1: mbs 8 pref [4,8] delay 500us x1",
                                           "» trial 2: mbs 16 pref [] delay 0us x2"]


def test_markup_in_a_failure_is_printed_verbatim() -> None:
    console, buf = _console(terminal=True)
    with TuneProgress(console) as progress:
        progress("done", 1, A, Trial(1, A, error="bad [red]value[/]"))
        assert "bad [red]value[/]" in _shown(progress.progress.tasks[0])
    assert "bad [red]value[/]" in buf.getvalue()
