"""Report renderings: table text, JSON, JUnit XML (parsed back and counted), exit codes."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from deployer.errors import CheckFailed, ExitCode
from deployer.smoke.report import (
    CheckResult,
    ModelReport,
    SmokeReport,
    raise_for_failures,
    report_text,
    write_json,
    write_junit,
)


def _report(fail: bool) -> SmokeReport:
    server = ModelReport("server", (CheckResult("live", "pass", "server is live"),))
    a = ModelReport(
        "resnet",
        (
            CheckResult("ready", "pass", "model is ready", duration_s=0.01),
            CheckResult(
                "infer[grpc,max]",
                "fail" if fail else "pass",
                "output 'y' vs reference: 3/8 <bad> & \"x\"",
                {"y.max_abs": 0.5, "y.max_rel": math.inf},
                ("detail line",),
                0.2,
            ),
            CheckResult("perf", "pass", "ok", {"p99_ms": 3.25, "requests": 100}),
        ),
    )
    b = ModelReport("static", (CheckResult("batching", "skip", "max_batch_size is 0"),))
    return SmokeReport(server, (a, b), target="local", duration_s=1.5)


def test_verdict_counts_and_exit_code() -> None:
    ok, bad = _report(False), _report(True)
    assert ok.passed and ok.exit_code == ExitCode.OK
    assert not bad.passed and bad.exit_code == ExitCode.CHECKS_FAILED == 1
    assert (bad.count("pass"), bad.count("fail"), bad.count("skip")) == (3, 1, 1)
    assert [(s, c.name) for s, c in bad.failures()] == [("resnet", "infer[grpc,max]")]
    raise_for_failures(ok)
    with pytest.raises(CheckFailed) as exc:
        raise_for_failures(bad)
    assert exc.value.exit_code == 1 and "resnet: infer[grpc,max]" in exc.value.render()


def test_table_text_keeps_brackets_and_shows_verdict() -> None:
    text = report_text(_report(True), width=200)
    assert "infer[grpc,max]" in text  # not eaten as rich markup
    assert "FAIL" in text and "SKIP" in text and "y.max_abs=0.5" in text
    assert "FAILED: 3 passed, 1 failed, 1 skipped" in text
    assert "\x1b[" not in text  # no ANSI unless asked
    assert "\x1b[" in report_text(_report(True), color=True)


def test_json(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "report.json"
    write_json(_report(True), path)
    data = json.loads(path.read_text())
    assert data["passed"] is False and data["exit_code"] == 1
    assert data["counts"] == {"pass": 3, "fail": 1, "skip": 1}
    assert [s["name"] for s in data["suites"]] == ["server", "resnet", "static"]
    check = data["suites"][1]["checks"][1]
    assert check["status"] == "fail" and check["numbers"]["y.max_rel"] == "inf"
    assert check["details"] == ["detail line"]


def test_junit_parses_with_right_counts(tmp_path: Path) -> None:
    path = tmp_path / "junit.xml"
    write_junit(_report(True), path)
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("skipped")) == ("5", "1", "1")
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert list(suites) == ["server", "resnet", "static"]
    resnet = suites["resnet"]
    assert (resnet.get("tests"), resnet.get("failures"), resnet.get("skipped")) == ("3", "1", "0")
    cases = resnet.findall("testcase")
    assert [c.get("name") for c in cases] == ["ready", "infer[grpc,max]", "perf"]
    failure = cases[1].find("failure")
    assert failure is not None
    assert failure.get("message") == "output 'y' vs reference: 3/8 <bad> & \"x\""  # escaped and restored
    assert "detail line" in (failure.text or "") and "y.max_abs=0.5" in (failure.text or "")
    skipped = suites["static"].find("testcase/skipped")
    assert skipped is not None and skipped.get("message") == "max_batch_size is 0"
    assert float(resnet.get("time", "0")) == pytest.approx(0.21, abs=1e-3)


def _served_report() -> SmokeReport:
    server = ModelReport("server", (CheckResult("live", "pass", "server is live"),))
    onnx = ModelReport(
        "classifier",
        (CheckResult("ready", "pass", "model is ready"), CheckResult("config", "pass", "agrees")),
        served_by="onnxruntime (deployer CPU Python-based backend)",
    )
    python = ModelReport("labels", (CheckResult("ready", "pass", "model is ready"),), served_by="python")
    unready = ModelReport("broken", (CheckResult("ready", "fail", "not READY"),))  # nothing served it
    return SmokeReport(server, (onnx, python, unready), target="local")


def test_served_by_in_the_table_under_the_model_name() -> None:
    lines = report_text(_served_report(), width=200).splitlines()
    row = next(i for i, line in enumerate(lines) if "classifier" in line)
    assert "served by onnxruntime (deployer CPU Python-based backend)" in lines[row + 1]  # the cell's 2nd line
    labels = next(i for i, line in enumerate(lines) if "labels" in line)
    assert "served by python" in lines[labels + 1]
    assert sum("served by" in line for line in lines) == 2  # none for the server or the unready model


def test_served_by_in_json_and_junit_properties(tmp_path: Path) -> None:
    write_json(_served_report(), tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert {s["name"]: s["served_by"] for s in data["suites"]} == {
        "server": "",
        "classifier": "onnxruntime (deployer CPU Python-based backend)",
        "labels": "python",
        "broken": "",
    }
    write_junit(_served_report(), tmp_path / "r.xml")
    suites = {s.get("name"): s for s in ET.parse(tmp_path / "r.xml").getroot().findall("testsuite")}
    classifier = suites["classifier"]
    assert classifier[0].tag == "properties"  # first child, as the JUnit schema wants
    props = {p.get("name"): p.get("value") for p in classifier.iter("property")}
    assert props == {"served_by": "onnxruntime (deployer CPU Python-based backend)"}
    assert [p.get("value") for p in suites["labels"].iter("property")] == ["python"]
    assert suites["broken"].find("properties") is None and suites["server"].find("properties") is None
