"""`deployer smoke` as a library: prove a running deployment model by model and report it.

Entry point: `run_smoke(state, models, options) -> SmokeReport`. Inputs are the frozen dataclasses in
`deployer.smoke.targets`; outputs render with `render_report` / `report_text`, `write_json`, `write_junit`.
"""

from __future__ import annotations

from deployer.smoke.report import (
    CheckResult,
    ModelReport,
    SmokeReport,
    raise_for_failures,
    render_report,
    report_text,
    write_json,
    write_junit,
)
from deployer.smoke.runner import run_smoke
from deployer.smoke.targets import ShapeRange, Sla, SmokeModel, SmokeOptions, SmokeOutput, SmokeTensor

__all__ = [
    "CheckResult",
    "ModelReport",
    "ShapeRange",
    "Sla",
    "SmokeModel",
    "SmokeOptions",
    "SmokeOutput",
    "SmokeReport",
    "SmokeTensor",
    "raise_for_failures",
    "render_report",
    "report_text",
    "run_smoke",
    "write_json",
    "write_junit",
]
