"""Engine cache (content addressing, tamper check) and the timing cache under two concurrent processes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from deployer.engines.cache import EngineCache, TimingCacheStore, onnx_digest
from deployer.engines.request import GpuInfo

FAKES = Path(__file__).resolve().parents[2] / "fakes"

GPU = GpuInfo(0, "NVIDIA Fake A10", "8.6")


def test_engine_cache_roundtrip_and_tamper_detection(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    assert cache.lookup("k") is None
    import hashlib

    plan = b"plan-bytes"
    cache.store("k", plan, {"engine_sha256": hashlib.sha256(plan).hexdigest(), "model_name": "m"})
    hit = cache.lookup("k")
    assert hit is not None and hit[0].read_bytes() == plan and hit[1]["model_name"] == "m"
    cache.plan_path("k").write_bytes(b"corrupted")
    assert cache.lookup("k") is None


def test_onnx_digest_covers_external_data(tmp_path: Path) -> None:
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 4])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "m.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, location="weights.bin", size_threshold=0)
    before = onnx_digest(path)
    assert before == onnx_digest(path)
    data = bytearray((tmp_path / "weights.bin").read_bytes())
    data[0] ^= 0xFF
    (tmp_path / "weights.bin").write_bytes(bytes(data))
    assert onnx_digest(path) != before


def test_timing_cache_file_is_keyed_by_version_and_gpu(tmp_path: Path) -> None:
    a = TimingCacheStore(tmp_path, "10.13.0.35", GPU).path
    assert a.name == "trt10.13.0.35-nvidia-fake-a10-sm86.cache"
    assert TimingCacheStore(tmp_path, "10.3.0", GPU).path != a
    assert TimingCacheStore(tmp_path, "10.13.0.35", GpuInfo(0, "NVIDIA L4", "8.9")).path != a


WORKER = textwrap.dedent(
    """
    import importlib.util, sys, time
    from pathlib import Path
    spec = importlib.util.spec_from_file_location("fake_tensorrt", Path(sys.argv[1]) / "fake_tensorrt.py")
    fake = importlib.util.module_from_spec(spec); spec.loader.exec_module(fake)
    from deployer.engines.cache import TimingCacheStore
    from deployer.engines.request import GpuInfo
    trt = fake.make_fake_tensorrt("10.13.0.35")
    store = TimingCacheStore(Path(sys.argv[2]), "10.13.0.35", GpuInfo(0, "NVIDIA Fake A10", "8.6"))
    tag = sys.argv[3]
    for i in range(int(sys.argv[4])):
        config = trt.Builder(trt.Logger()).create_builder_config()
        cache = store.attach(config)          # what a build starts from
        cache._entries[f"{tag}-{i}"] = "tactic"  # what that build measured (fake internals)
        time.sleep(0.02)                       # a build takes a while: the other process saves meanwhile
        store.save(config)                    # lock, merge with disk, atomic write
    """
)


def test_timing_cache_concurrent_processes_keep_all_entries(tmp_path: Path) -> None:
    n = 25
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(FAKES), str(tmp_path), tag, str(n)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for tag in ("a", "b")
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    store = TimingCacheStore(tmp_path, "10.13.0.35", GPU)
    entries = json.loads(store.path.read_bytes())["entries"]
    expected = {f"{t}-{i}" for t in "ab" for i in range(n)}
    assert expected <= set(entries), sorted(expected - set(entries))[:5]
    assert not list(store.path.parent.glob(".*"))  # no temp files left behind


def test_timing_cache_merge_keeps_other_builds_entries(tmp_path: Path, fake_trt: Callable[..., ModuleType]) -> None:
    trt = fake_trt("10.13.0.35")
    store = TimingCacheStore(tmp_path, "10.13.0.35", GPU)
    first = trt.Builder(trt.Logger()).create_builder_config()
    second = trt.Builder(trt.Logger()).create_builder_config()
    store.attach(first)._entries["one"] = "t"
    store.attach(second)._entries["two"] = "t"  # both started from the same (empty) file
    store.save(first)
    store.save(second)  # must not drop "one"
    assert set(json.loads(store.path.read_bytes())["entries"]) == {"one", "two"}
