"""`deployer smoke` as a library: prove a running deployment model by model and report it.

Entry point: `run_smoke(state, models, options) -> SmokeReport`. Inputs are the frozen dataclasses in
`deployer.smoke.targets`; the report renders with `render_report` / `report_text`, `write_json`,
`write_junit`, and `raise_for_failures` turns failures into `CheckFailed` (exit 1).

The load generators are usable on their own (benchmarks): `build_http_request` + `run_http_load`
(cheapest client), `build_request` + `run_load` (gRPC), `run_threaded_load` (baseline).
"""

from __future__ import annotations

from deployer.smoke.load.httpload import build_http_request, run_http_load
from deployer.smoke.load.loadgen import LoadResult, build_request, percentile, run_load, run_threaded_load
from deployer.smoke.report import (
    CheckResult,
    ModelReport,
    SmokeReport,
    raise_for_failures,
    render_report,
    report_text,
    to_dict,
    write_json,
    write_junit,
)
from deployer.smoke.runner import run_smoke
from deployer.smoke.targets import ShapeRange, Sla, SmokeModel, SmokeOptions, SmokeOutput, SmokeTensor

__all__ = [
    "CheckResult",
    "LoadResult",
    "ModelReport",
    "ShapeRange",
    "Sla",
    "SmokeModel",
    "SmokeOptions",
    "SmokeOutput",
    "SmokeReport",
    "SmokeTensor",
    "build_http_request",
    "build_request",
    "percentile",
    "raise_for_failures",
    "render_report",
    "report_text",
    "run_http_load",
    "run_load",
    "run_smoke",
    "run_threaded_load",
    "to_dict",
    "write_json",
    "write_junit",
]
