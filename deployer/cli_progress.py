"""The live progress of `deployer tune` (rich, on stderr), fed by the library's progress callback.

The library only calls `progress(kind, index, candidate, trial)` ("start" before a trial, "done" with
its Trial after); this turns those calls into a rich Progress on a terminal, and into one plain line
per trial elsewhere (CI logs, pipes: a redrawn bar would be noise there). Nothing here ranks trials:
the objective's verdict is the Trial's own `feasible`.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Column


class TuneProgress:
    """`with TuneProgress(err) as progress: pipeline.tune(..., progress=progress)`.

    `live` defaults to the console being a terminal. The number of trials is not known in advance
    (the search stops when it converges or its budget is spent), so the bar counts trials done and
    pulses rather than filling up.
    """

    def __init__(self, console: Console, *, live: bool | None = None) -> None:
        self.console = console
        self.live = console.is_terminal if live is None else live
        self.done = 0
        self.meeting = 0
        # the fixed-width columns first and a short bar: on a narrow terminal the long description is
        # what gets cut, not the count or the clock
        self.progress = Progress(
            SpinnerColumn(), TextColumn("[bold]tune[/]"), BarColumn(bar_width=20), MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.description}", table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1)),
            console=console, disable=not self.live, transient=False,
        )
        self.task = self.progress.add_task("starting", total=None)

    def __enter__(self) -> TuneProgress:
        if self.live:
            self.progress.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.live:
            self.progress.update(self.task, total=self.done)  # the bar ends full: the search is over
            self.progress.stop()

    def __call__(self, kind: str, index: int, candidate: Any, trial: Any) -> None:
        label = escape(candidate.label())
        if kind == "start":
            if self.live:
                self.progress.update(self.task, description=f"trial {index}: {label}{self._tally()}")
            else:
                self.console.print(f"[dim]» trial {index}: {label}[/]")
            return
        if kind != "done":
            return
        self.done += 1
        self.meeting += bool(trial is not None and trial.feasible)
        if self.live:
            self.progress.update(self.task, completed=self.done,
                                 description=f"trial {index}: {self._outcome(trial)}{self._tally()}")

    def _tally(self) -> str:
        return f" [dim]({self.meeting} of {self.done} meet the objective)[/]" if self.done else ""

    @staticmethod
    def _outcome(trial: Any) -> str:
        m = trial.measurement if trial is not None else None
        if m is None:
            return "[red]failed[/]" + (f": {escape(trial.error[:60])}" if trial is not None and trial.error else "")
        verdict = "[green]meets[/]" if trial.feasible else "[yellow]misses[/]"
        return f"{m.throughput_rps:,.0f} req/s, p99 {m.p99_ms:.1f} ms, {verdict}"
