"""Percentile math, load summaries, and the pre-built gRPC request."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from deployer.smoke.load.loadgen import LoadResult, build_request, percentile


@given(st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=200), st.floats(0, 100))
def test_percentile_matches_numpy_linear(values: list[float], q: float) -> None:
    s = sorted(values)
    assert percentile(s, q) == pytest.approx(float(np.percentile(s, q)), rel=1e-9, abs=1e-9)


def test_percentile_edges() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0], 0) == 1.0 and percentile([1.0, 2.0, 3.0, 4.0], 100) == 4.0
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_load_result_numbers() -> None:
    lat = tuple(float(i) for i in range(1, 101))  # 1..100 ms
    r = LoadResult(100, 2, "UNAVAILABLE", 2.0, lat, concurrency=4, batch_size=8)
    n = r.numbers()
    assert n["requests_s"] == 50.0 and n["throughput_infer_s"] == 400.0
    assert n["p50_ms"] == pytest.approx(50.5) and n["p99_ms"] == pytest.approx(99.01)
    assert n["max_ms"] == 100.0 and n["errors"] == 2
    empty = LoadResult(0, 0, "", 0.0, (), 1, 1)
    assert empty.requests_per_s == 0.0 and math.isnan(empty.numbers()["p50_ms"])


def test_build_request_raw_contents_per_dtype() -> None:
    from tritonclient.utils import deserialize_bytes_tensor

    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    s = np.array([[b"ab"], [b"c"]], dtype=object)
    bf = np.array([[1.5, -2.0]], dtype=np.float32)
    req = build_request("m", {"x": x, "s": s, "h": bf}, ["y"], version="2", dtypes={"h": "BF16"})
    assert req.model_name == "m" and req.model_version == "2" and [o.name for o in req.outputs] == ["y"]
    tx, ts, th = req.inputs
    assert (tx.datatype, list(tx.shape)) == ("FP32", [2, 3])
    assert np.array_equal(np.frombuffer(req.raw_input_contents[0], np.float32).reshape(2, 3), x)
    assert (ts.datatype, list(ts.shape)) == ("BYTES", [2, 1])
    assert list(deserialize_bytes_tensor(req.raw_input_contents[1])) == [b"ab", b"c"]
    assert th.datatype == "BF16" and len(req.raw_input_contents[2]) == 4  # 2 bytes per element
    # bf16 bits are the top half of the float32 bits
    assert np.array_equal(
        np.frombuffer(req.raw_input_contents[2], np.uint16), (bf.view(np.uint32) >> 16).astype(np.uint16).ravel()
    )


def test_bf16_inputs_are_accepted_by_both_tritonclient_protocols() -> None:
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    from deployer.smoke.inputs import synthesize
    from deployer.smoke.load.loadgen import to_wire_array
    from deployer.smoke.targets import SmokeTensor

    values = synthesize(SmokeTensor("h", "BF16", (2, 3)), (2, 3), np.random.default_rng(0))
    wire = to_wire_array(values, "BF16")
    assert np.array_equal(wire.astype(np.float32), values)  # lossless: values are bf16-exact
    h = httpclient.InferInput("h", [2, 3], "BF16")
    h.set_data_from_numpy(wire, binary_data=True)  # brief D.3 #21: HTTP needs binary data for BF16
    g = grpcclient.InferInput("h", [2, 3], "BF16")
    g.set_data_from_numpy(wire)
    assert len(g._get_content()) == 12  # 2 bytes per element on the wire
    assert to_wire_array(values, "FP32") is values


def test_load_generators_against_a_closed_port_report_errors_quickly() -> None:
    import socket

    from deployer.smoke.load.httpload import build_http_request, run_http_load
    from deployer.smoke.load.loadgen import run_load

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    x = np.zeros((1, 4), np.float32)
    raw = build_http_request("127.0.0.1", "m", {"x": x}, ("y",), version="3")
    assert raw.startswith(b"POST /v2/models/m/versions/3/infer HTTP/1.1\r\n")
    res = run_http_load("127.0.0.1", port, raw, concurrency=2, duration_s=30, timeout_s=5)
    assert res.requests == 0 and res.errors >= 1 and "cannot connect" in res.first_error
    g = run_load(
        f"127.0.0.1:{port}", build_request("m", {"x": x}), concurrency=2, duration_s=30, warmup_requests=3, timeout_s=5
    )
    assert g.requests == 0 and g.errors == 3 and "UNAVAILABLE" in g.first_error
