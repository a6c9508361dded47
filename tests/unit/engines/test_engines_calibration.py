"""INT8 calibration: .npz/.npy loading, batching, max_batches, cache reuse keyed by the data (FAKE tensorrt)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from deployer.engines import BuildRequest, CalibrationSettings, GpuInfo, InputShapes, Profile, build_engine
from deployer.engines.adapters import load_tensorrt
from deployer.engines.calibration import (
    CalibrationBatches,
    calibration_cache_for,
    check_batch_shapes,
    load_calibration_arrays,
    make_calibrator,
)
from deployer.errors import MissingDependency, UserError

GPU = GpuInfo(0, "NVIDIA Fake A10", "8.6")


class RecordingUploader:
    """Stands in for GPU memory: hands out increasing 'pointers' and records what was copied."""

    def __init__(self) -> None:
        self.uploads: list[tuple[str, tuple[int, ...]]] = []
        self.freed = 0

    def upload(self, name: str, array: Any) -> int:
        self.uploads.append((name, tuple(array.shape)))
        return 0x1000 + len(self.uploads)

    def free(self) -> None:
        self.freed += 1


def _npz(path: Path, n: int, **extra: Any) -> Path:
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.random((n, 4), dtype=np.float32), **extra)
    return path


def test_batches_drop_partial_and_respect_max_batches(tmp_path: Path) -> None:
    arrays = load_calibration_arrays([_npz(tmp_path / "a.npz", 6), _npz(tmp_path / "b.npz", 4)], ["x"])
    assert arrays["x"].shape == (10, 4)
    batches = CalibrationBatches(arrays, batch_size=4, max_batches=None)
    got = list(batches)
    assert batches.num_batches == 2 and [b["x"].shape for b in got] == [(4, 4), (4, 4)]
    np.testing.assert_array_equal(got[1]["x"], arrays["x"][4:8])
    assert len(list(CalibrationBatches(arrays, 4, max_batches=1))) == 1
    with pytest.raises(UserError, match="fewer than one batch"):
        CalibrationBatches(arrays, 11, None)


def test_multi_input_npz_npy_and_errors(tmp_path: Path) -> None:
    two = tmp_path / "two.npz"
    np.savez(two, ids=np.arange(12, dtype=np.int64).reshape(6, 2), x=np.zeros((6, 4), np.float32))
    arrays = load_calibration_arrays([two], ["x", "ids"], {"ids": "INT32"})
    assert arrays["ids"].dtype == np.int32  # cast to the engine input type (INT64 -> INT32 below TRT 10)
    npy = tmp_path / "x.npy"
    np.save(npy, np.zeros((3, 4), np.float32))
    assert load_calibration_arrays([npy], ["x"])["x"].shape == (3, 4)
    with pytest.raises(UserError, match=re.escape(".npy file but the network has 2 inputs")):
        load_calibration_arrays([npy], ["x", "ids"])
    with pytest.raises(UserError, match="no array for input 'mask'"):
        load_calibration_arrays([two], ["x", "mask"])
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((5, 4), np.float32), ids=np.zeros((4, 2), np.int64))
    with pytest.raises(UserError, match="different sample counts"):
        load_calibration_arrays([bad], ["x", "ids"])
    with pytest.raises(UserError, match="not found"):
        load_calibration_arrays([tmp_path / "missing.npz"], ["x"])


def test_batch_shapes_must_match_profile_opt(tmp_path: Path) -> None:
    batches = CalibrationBatches(load_calibration_arrays([_npz(tmp_path / "a.npz", 8)], ["x"]), 4, None)
    check_batch_shapes(batches, {"x": (4, 4)})
    with pytest.raises(UserError, match="opt shapes"):
        check_batch_shapes(batches, {"x": (8, 4)})


def test_calibration_cache_key_follows_data_and_settings(tmp_path: Path) -> None:
    data = _npz(tmp_path / "a.npz", 8)
    s = CalibrationSettings((data,), batch_size=4)
    cache, digest = calibration_cache_for(s, tmp_path, "m", ["x"])
    cache.write(b"table")
    again, digest2 = calibration_cache_for(s, tmp_path, "m", ["x"])
    assert (again.read(), digest2) == (b"table", digest)
    other_batching, _ = calibration_cache_for(CalibrationSettings((data,), batch_size=2), tmp_path, "m", ["x"])
    assert other_batching.read() is None
    _npz(data, 8, extra=np.ones(1))  # same name, different content
    changed, digest3 = calibration_cache_for(s, tmp_path, "m", ["x"])
    assert digest3 != digest and changed.read() is None
    fixed = CalibrationSettings((data,), batch_size=4, cache_path=tmp_path / "mine.cache")
    c1, _ = calibration_cache_for(fixed, tmp_path, "m", ["x"])
    c1.write(b"t1")
    _npz(data, 8)  # user-chosen path: reused only while the key matches
    c2, _ = calibration_cache_for(fixed, tmp_path, "m", ["x"])
    assert c2.path == c1.path and c2.read() is None


def test_calibrator_feeds_batches_then_signals_end(tmp_path: Path, fake_trt: Callable[..., ModuleType]) -> None:
    trt = load_tensorrt(fake_trt("10.13.0.35"))
    batches = CalibrationBatches(load_calibration_arrays([_npz(tmp_path / "a.npz", 10)], ["x"]), 4, None)
    cache, _ = calibration_cache_for(CalibrationSettings((tmp_path / "a.npz",), 4), tmp_path, "m", ["x"])
    up = RecordingUploader()
    calib: Any = make_calibrator(trt, batches, cache, up)
    assert isinstance(calib, fake_trt_cls(trt, "IInt8EntropyCalibrator2"))
    assert calib.get_batch_size() == 4
    assert calib.get_batch(["x"]) == [0x1001]
    assert calib.get_batch(["x"]) == [0x1002]
    assert calib.get_batch(["x"]) == [] and up.freed == 1
    assert calib.read_calibration_cache() is None
    calib.write_calibration_cache(b"abc")
    assert calib.read_calibration_cache() == b"abc"


def fake_trt_cls(trt: Any, name: str) -> type:
    cls: type = getattr(trt, name)
    return cls


def _int8_request(tmp_path: Path, onnx_model: Path, data: Path, max_batches: int | None = None) -> BuildRequest:
    p = Profile((InputShapes("x", (1, 4), (4, 4), (8, 4)),))
    return BuildRequest(
        model_name="m",
        onnx_path=onnx_model,
        profiles=(p,),
        max_batch_size=8,
        output_path=tmp_path / "repo" / "m" / "1" / "model.plan",
        cache_dir=tmp_path / "cache",
        precision="int8",
        calibration=CalibrationSettings((data,), batch_size=4, max_batches=max_batches),
    )


def test_int8_build_calibrates_once_and_reuses_the_cache(
    tmp_path: Path, onnx_model: Path, fake_trt: Callable[..., ModuleType]
) -> None:
    trt = fake_trt("10.13.0.35")
    data = _npz(tmp_path / "calib.npz", 14)
    request = _int8_request(tmp_path, onnx_model, data, max_batches=2)
    up = RecordingUploader()
    res = build_engine(request, trt_module=trt, gpu=GPU, calibration_uploader=up)
    assert up.uploads == [("x", (4, 4)), ("x", (4, 4))]  # 14 samples / 4 = 3 batches, capped at 2
    assert "INT8" in res.info.flags and res.info.precision_verified is None  # the fake claims no precision
    tables = list((tmp_path / "cache" / "calibration").glob("*.cache"))
    assert len(tables) == 1 and tables[0].read_bytes() == b"fake-calibration-table batches=2"
    up2 = RecordingUploader()
    build_engine(request, trt_module=trt, gpu=GPU, calibration_uploader=up2, use_cache=False)
    assert up2.uploads == []  # same data + settings: TensorRT read the table instead of calibrating
    _npz(data, 14, other=np.zeros(1))
    up3 = RecordingUploader()
    build_engine(request, trt_module=trt, gpu=GPU, calibration_uploader=up3, use_cache=False)
    assert len(up3.uploads) == 2  # data changed: recalibrated


def test_int8_calibration_without_cuda_python_is_an_environment_error(
    tmp_path: Path, onnx_model: Path, fake_trt: Callable[..., ModuleType]
) -> None:
    request = _int8_request(tmp_path, onnx_model, _npz(tmp_path / "calib.npz", 8))
    with pytest.raises(MissingDependency, match="cuda-python") as exc:
        build_engine(request, trt_module=fake_trt("10.13.0.35"), gpu=GPU)
    assert exc.value.exit_code == 3
