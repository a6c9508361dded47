"""Smoke results and their renderings: a rich table, JSON and JUnit XML. Nothing here prints."""

from __future__ import annotations

import io
import json
import math
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from deployer._files import atomic_write
from deployer.errors import CheckFailed, ExitCode

if TYPE_CHECKING:
    from rich.console import RenderableType

__all__ = [
    "CheckResult",
    "ModelReport",
    "SmokeReport",
    "Status",
    "junit_xml",
    "raise_for_failures",
    "render_report",
    "report_text",
    "to_dict",
    "write_json",
    "write_junit",
]

Status = Literal["pass", "fail", "skip"]


@dataclass(frozen=True)
class CheckResult:
    """One named check: its outcome, a one-line message, measured numbers and optional detail lines."""

    name: str  # e.g. "ready", "config", "infer[grpc,max]", "batching", "perf"
    status: Status
    message: str = ""
    numbers: Mapping[str, float] = field(default_factory=dict)
    details: tuple[str, ...] = ()
    duration_s: float = 0.0

    @property
    def passed(self) -> bool:
        """True unless failed (a skip does not fail a run)."""
        return self.status != "fail"


@dataclass(frozen=True)
class ModelReport:
    """All checks of one model, in the order they ran, and what served it.

    `served_by` names the backend implementation that actually ran the model, from the server's
    backend directory (recorded by the runtime) and the served config, e.g.
    "onnxruntime (deployer CPU Python-based backend)", "onnxruntime (native)", "python", "tensorrt";
    "" when unknown (the model was not ready, or this is the server suite).
    """

    model: str
    checks: tuple[CheckResult, ...]
    served_by: str = ""

    @property
    def passed(self) -> bool:
        """True when no check failed."""
        return all(c.passed for c in self.checks)

    def count(self, status: Status) -> int:
        """Number of checks with `status`."""
        return sum(1 for c in self.checks if c.status == status)


@dataclass(frozen=True)
class SmokeReport:
    """The result of `run_smoke`: server-level checks plus one report per model."""

    server: ModelReport  # model == "server": liveness and readiness
    models: tuple[ModelReport, ...]
    target: str = ""  # e.g. "local 127.0.0.1:8000/8001"
    started_at: float = 0.0  # epoch seconds
    duration_s: float = 0.0

    @property
    def suites(self) -> tuple[ModelReport, ...]:
        """Server suite first, then the models."""
        return (self.server, *self.models)

    @property
    def passed(self) -> bool:
        """True when no check anywhere failed."""
        return all(s.passed for s in self.suites)

    @property
    def exit_code(self) -> ExitCode:
        """0 when passed, 1 when any check failed."""
        return ExitCode.OK if self.passed else ExitCode.CHECKS_FAILED

    def failures(self) -> list[tuple[str, CheckResult]]:
        """(suite, check) for every failed check."""
        return [(s.model, c) for s in self.suites for c in s.checks if c.status == "fail"]

    def count(self, status: Status) -> int:
        """Number of checks with `status` over all suites."""
        return sum(s.count(status) for s in self.suites)


def raise_for_failures(report: SmokeReport) -> None:
    """Raise CheckFailed listing every failed check; return quietly when the report passed."""
    failed = report.failures()
    if not failed:
        return
    lines = [f"{suite}: {c.name}: {c.message}" for suite, c in failed]
    raise CheckFailed(
        f"{len(failed)} smoke check{'s' if len(failed) != 1 else ''} failed",
        details="\n".join(lines),
        hint="see the report table (or --json/--junit) for numbers; `deployer logs` shows the server log",
    )


def _fmt_number(value: float) -> str:
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) < 1e15):
        return str(int(value))
    if math.isinf(value) or math.isnan(value):
        return str(value)
    return f"{value:.4g}"


def _numbers_text(numbers: Mapping[str, float], limit: int = 6) -> str:
    items = [f"{k}={_fmt_number(v)}" for k, v in list(numbers.items())[:limit]]
    if len(numbers) > limit:
        items.append(f"(+{len(numbers) - limit})")
    return " ".join(items)


_STYLE = {"pass": "green", "fail": "bold red", "skip": "yellow"}


def render_report(report: SmokeReport) -> RenderableType:
    """A rich renderable: one table row per check, grouped by suite, and a summary line."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(title="deployer smoke" + (f" — {report.target}" if report.target else ""), show_lines=False)
    table.add_column("suite", style="bold", overflow="fold")
    table.add_column("check")
    table.add_column("status")
    table.add_column("message", overflow="fold")
    table.add_column("numbers", overflow="fold")
    for suite in report.suites:
        for i, c in enumerate(suite.checks):
            msg = c.message + ("".join(f"\n  {d}" for d in c.details[:8]) if c.status == "fail" else "")
            # Text(), not str: check names and messages contain "[...]", which rich would eat as markup.
            label = Text(suite.model if i == 0 else "")
            if i == 0 and suite.served_by:
                label.append(f"\nserved by {suite.served_by}", style="dim")
            table.add_row(
                label,
                Text(c.name),
                Text(c.status.upper(), style=_STYLE[c.status]),
                Text(msg),
                Text(_numbers_text(c.numbers)),
            )
        table.add_section()
    n_pass, n_fail, n_skip = report.count("pass"), report.count("fail"), report.count("skip")
    verdict = Text(
        f"{'PASSED' if report.passed else 'FAILED'}: {n_pass} passed, {n_fail} failed, {n_skip} skipped "
        f"in {report.duration_s:.1f} s",
        style="bold green" if report.passed else "bold red",
    )
    return Group(table, verdict)


def report_text(report: SmokeReport, *, width: int = 140, color: bool = False) -> str:
    """The rendered table as a string (ANSI colors only when `color`)."""
    from rich.console import Console

    buf = io.StringIO()
    console = Console(file=buf, width=width, force_terminal=color, color_system="standard" if color else None)
    console.print(render_report(report))
    return buf.getvalue()


def to_dict(report: SmokeReport) -> dict[str, object]:
    """JSON-ready dict: verdict, counts, and every suite with its checks."""
    return {
        "passed": report.passed,
        "exit_code": int(report.exit_code),
        "target": report.target,
        "started_at": report.started_at,
        "duration_s": report.duration_s,
        "counts": {s: report.count(s) for s in ("pass", "fail", "skip")},
        "suites": [
            {
                "name": s.model,
                "served_by": s.served_by,
                "passed": s.passed,
                "checks": [
                    {
                        **asdict(c),
                        "numbers": {k: _json_number(v) for k, v in c.numbers.items()},
                        "details": list(c.details),
                    }
                    for c in s.checks
                ],
            }
            for s in report.suites
        ],
    }


def _json_number(v: float) -> float | str:
    # JSON has no inf/nan; keep them readable rather than emitting invalid JSON.
    return v if math.isfinite(v) else str(v)


def write_json(report: SmokeReport, path: Path) -> None:
    """Write `to_dict(report)` as indented JSON (atomically)."""
    atomic_write(Path(path), (json.dumps(to_dict(report), indent=2, allow_nan=False) + "\n").encode())


def junit_xml(report: SmokeReport) -> ET.Element:
    """`<testsuites>` with one `<testsuite>` per suite (server, then each model), a `<testcase>` per check."""
    root = ET.Element(
        "testsuites",
        name="deployer smoke",
        tests=str(sum(len(s.checks) for s in report.suites)),
        failures=str(report.count("fail")),
        skipped=str(report.count("skip")),
        errors="0",
        time=f"{report.duration_s:.3f}",
    )
    for suite in report.suites:
        ts = ET.SubElement(
            root,
            "testsuite",
            name=suite.model,
            tests=str(len(suite.checks)),
            failures=str(suite.count("fail")),
            skipped=str(suite.count("skip")),
            errors="0",
            time=f"{sum(c.duration_s for c in suite.checks):.3f}",
        )
        if suite.served_by:  # <properties> comes first in a <testsuite> (JUnit XML schema)
            props = ET.SubElement(ts, "properties")
            ET.SubElement(props, "property", name="served_by", value=suite.served_by)
        for c in suite.checks:
            tc = ET.SubElement(
                ts, "testcase", classname=f"smoke.{suite.model}", name=c.name, time=f"{c.duration_s:.3f}"
            )
            body = "\n".join([*c.details, _numbers_text(c.numbers, limit=1000)]).strip()
            if c.status == "fail":
                el = ET.SubElement(tc, "failure", message=c.message, type="SmokeCheckFailed")
                el.text = body
            elif c.status == "skip":
                ET.SubElement(tc, "skipped", message=c.message)
            elif body:
                ET.SubElement(tc, "system-out").text = f"{c.message}\n{body}".strip()
    return root


def write_junit(report: SmokeReport, path: Path) -> None:
    """Write JUnit XML (atomically): testsuite per model, testcase per check, failures with messages."""
    root = junit_xml(report)
    ET.indent(root)
    atomic_write(Path(path), ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n")
