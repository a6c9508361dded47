"""run_smoke without a server (nothing listening): every failure is data, named and explained."""

from __future__ import annotations

import socket

from deployer.server.base import ServerState
from deployer.smoke import SmokeModel, SmokeOptions, SmokeOutput, SmokeTensor, run_smoke
from deployer.smoke.load.loadchecks import batching_skip_reason


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


MODEL = SmokeModel(
    "m", (SmokeTensor("x", "FP32", (4,)),), (SmokeOutput("y", "FP32", (4,)),), max_batch_size=4, dynamic_batching=True
)


def test_unreachable_server_fails_every_suite_without_raising() -> None:
    port = _closed_port()
    state = ServerState("local", "127.0.0.1", port, port, port, ("m",))
    seen: list[tuple[str, str, str]] = []
    report = run_smoke(
        state, [MODEL], SmokeOptions(timeout_s=2.0), progress=lambda suite, c: seen.append((suite, c.name, c.status))
    )
    assert not report.passed and report.exit_code == 1
    live = report.server.checks[0]
    assert (live.name, live.status) == ("live", "fail") and "error" in live.message
    assert report.server.checks[1].status == "skip"
    (model,) = report.models
    assert [(c.name, c.status) for c in model.checks] == [("ready", "fail")]
    assert "not reachable" in model.checks[0].message
    assert seen == [("server", "live", "fail"), ("server", "ready", "skip"), ("m", "ready", "fail")]


def test_batching_skip_reasons() -> None:
    assert batching_skip_reason(MODEL) == ""
    nb = SmokeModel("n", MODEL.inputs, MODEL.outputs, max_batch_size=0)
    assert "max_batch_size is 0" in batching_skip_reason(nb)
    one = SmokeModel("o", MODEL.inputs, MODEL.outputs, max_batch_size=1, dynamic_batching=True)
    assert "max_batch_size is 1" in batching_skip_reason(one)
    off = SmokeModel("p", MODEL.inputs, MODEL.outputs, max_batch_size=8)
    assert "not configured" in batching_skip_reason(off)


def test_parse_metrics_sums_versions_and_reasons_for_one_model() -> None:
    from deployer.smoke.load.loadchecks import parse_metrics

    text = "\n".join(
        [
            "# HELP nv_inference_request_success Number of successful inference requests",
            "# TYPE nv_inference_request_success counter",
            'nv_inference_request_success{model="m",version="1"} 10',
            'nv_inference_request_success{model="m",version="2"} 5',
            'nv_inference_request_success{model="mm",version="1"} 99',
            'nv_inference_request_failure{model="m",reason="REJECTED",version="1"} 2',
            'nv_inference_request_failure{model="m",reason="BACKEND",version="1"} 1',
            'nv_inference_count{model="m",version="1"} 64',
            'nv_inference_exec_count{model="m",version="1"} 8',
            'nv_inference_queue_duration_us{model="m",version="1"} 1234',
        ]
    )
    assert parse_metrics(text, "m") == {
        "nv_inference_request_success": 15.0,
        "nv_inference_request_failure": 3.0,
        "nv_inference_count": 64.0,
        "nv_inference_exec_count": 8.0,
    }
    assert parse_metrics(text, "absent")["nv_inference_count"] == 0.0
