"""s3:// repositories on a real SeaweedFS: publish, a real tritonserver loading the bucket itself, rollback,
prune, concurrent publishers serialized by the lock object, and no credential in any file or log."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from deployer import Pipeline
from deployer.repository.s3 import S3Reader, client_for
from deployer.repository.s3_apply import list_versions_s3, serving_state_s3, verify_s3
from tests.integration.conftest import _make_mlp_onnx
from tests.seaweed import Seaweed, running_seaweed

CHECKOUT = Path(__file__).resolve().parents[2]
SECRET = "deployer-test-secret-" + hashlib.sha256(b"never in a file").hexdigest()[:16]
KEY_ID = "DEPLOYERTESTKEYID01"


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seaweed]:
    """One SeaweedFS for the module (4 s to start); each test uses its own bucket."""
    with running_seaweed(tmp_path_factory.mktemp("seaweed")) as weed:
        yield weed


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials only in the environment, as a user sets them (SeaweedFS without identities takes any)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)


def make_bucket(seaweed: Seaweed, name: str) -> None:
    seaweed.client().create_bucket(Bucket=name)


def write_spec(tmp_path: Path, seaweed: Seaweed, bucket: str, ports: list[int], *, keep: int | None = None,
               lease: float = 30.0) -> Path:
    http, grpc, metrics = ports
    keep_line = f"    keep_versions: {keep}\n" if keep else ""
    spec = tmp_path / "deployer.yaml"
    spec.write_text(
        f"""repository: s3://{bucket}/prod/models
repository_s3: {{endpoint: "{seaweed.endpoint}", lock_lease: {lease}}}
server: {{runtime: local, http_port: {http}, grpc_port: {grpc}, metrics_port: {metrics}, startup_timeout: 120}}
smoke: {{concurrency: 2, duration: 0.3, batching_requests: 8, protocols: [http]}}
models:
  - name: mlp
    source: model.onnx
    max_batch_size: 4
{keep_line}"""
    )
    return spec


def infer(http_url: str, x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(http_url.removeprefix("http://"))
    try:
        inp = httpclient.InferInput("x", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        out = client.infer("mlp", [inp]).as_numpy("y")
        assert out is not None
        return out
    finally:
        client.close()


pytestmark = pytest.mark.slow


@pytest.mark.triton
def test_triton_serves_the_bucket_itself_then_rollback_and_prune(
    tmp_path: Path, seaweed: Seaweed, s3_env: None, find_free_ports: Callable[..., list[int]]
) -> None:
    make_bucket(seaweed, "serve-bucket")
    spec = write_spec(tmp_path, seaweed, "serve-bucket", find_free_ports(3), keep=2)
    x = np.random.default_rng(7).standard_normal((3, 4)).astype(np.float32)
    v1 = _make_mlp_onnx(tmp_path / "model.onnx", seed=1)
    want1 = v1.reference({"x": x})["y"]
    p = Pipeline.load(spec)
    plan = p.plan().plan
    assert [r.action for r in plan.rows()] == ["create", "create", "create"]  # model.onnx, manifest, config
    assert [m.version for m in p.publish().models] == [1]
    assert p.publish().models[0].status == "unchanged"  # content-addressed: same bytes, same version

    state = p.up()
    try:
        assert state.http_url
        argv = Path(f"/proc/{state.pid}/cmdline").read_bytes().split(b"\0")
        assert f"--model-repository={p.deployment.remote.triton_url}".encode() in argv  # type: ignore[union-attr]
        assert p.deployment.remote is not None and p.deployment.remote.triton_url.startswith("s3://127.0.0.1:")
        np.testing.assert_allclose(infer(state.http_url, x), want1, rtol=1e-5)
        report = p.smoke(state=state)
        assert report.passed, [c for s in report.suites for c in s.checks if c.status == "fail"]

        from deployer.server.from_spec import reload_model

        want2 = _make_mlp_onnx(tmp_path / "model.onnx", seed=2).reference({"x": x})["y"]
        assert [m.version for m in p.publish().models] == [2]
        assert reload_model(spec, "mlp")  # explicit model control: Triton reads the bucket on load
        np.testing.assert_allclose(infer(state.http_url, x), want2, rtol=1e-5)
        assert p.rollback("mlp", 1).reloaded  # one PUT of config.pbtxt, then the running server reloads
        st = p.repository_status()
        assert st.served["mlp"].served == (1,) and st.served["mlp"].newer_kept == (2,)
        np.testing.assert_allclose(infer(state.http_url, x), want1, rtol=1e-5)
        # new content serves the new version (unpinned); keep_versions=2 prunes the oldest unserved one
        want3 = _make_mlp_onnx(tmp_path / "model.onnx", seed=3).reference({"x": x})["y"]
        res = p.publish()
        assert res.models[0].version == 3 and res.models[0].pruned == (1,)
        assert reload_model(spec, "mlp")
        np.testing.assert_allclose(infer(state.http_url, x), want3, rtol=1e-5)
    finally:
        p.down()
    reader = S3Reader(client_for(p.deployment.remote), p.deployment.remote)  # type: ignore[arg-type]
    assert [v.number for v in list_versions_s3(reader, "mlp")] == [2, 3]
    assert all(v.complete for v in list_versions_s3(reader, "mlp"))
    assert serving_state_s3(reader, "mlp").served == (3,)  # type: ignore[union-attr]
    assert verify_s3(reader, ["mlp"]) == []
    assert ".deployer.lock" not in reader.objects  # released
    _no_secret_anywhere(tmp_path)


def _no_secret_anywhere(tmp_path: Path) -> None:
    """The secret key is in no file deployer or Triton wrote (state, logs, manifests) nor in the bucket."""
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), f"credential written to {path}"


def test_rollback_prune_and_manifest_without_triton(
    tmp_path: Path, seaweed: Seaweed, s3_env: None, find_free_ports: Callable[..., list[int]]
) -> None:
    make_bucket(seaweed, "rollback-bucket")
    spec = write_spec(tmp_path, seaweed, "rollback-bucket", find_free_ports(3))
    shas = []
    for seed in (1, 2, 3):
        _make_mlp_onnx(tmp_path / "model.onnx", seed=seed)
        shas.append(hashlib.sha256((tmp_path / "model.onnx").read_bytes()).hexdigest())
        Pipeline.load(spec).publish()
    p = Pipeline.load(spec)
    out = p.rollback("mlp")  # default: the one below the head
    assert (out.result.version, out.result.kept, out.reloaded) == (2, (3,), False)
    out = p.rollback("mlp", 1, prune=True)
    assert (out.result.version, out.result.removed) == (1, (2, 3))
    reader = S3Reader(client_for(p.deployment.remote), p.deployment.remote)  # type: ignore[arg-type]
    infos = list_versions_s3(reader, "mlp")
    assert [i.number for i in infos] == [1]
    manifest = infos[0].manifest
    assert manifest is not None and manifest["files"]["model.onnx"]["sha256"] == shas[0]
    assert manifest["content_sha256"] and manifest["tool"] == "deployer"
    assert not any(k.startswith(("mlp/2/", "mlp/3/")) for k in reader.objects)
    assert verify_s3(reader, ["mlp"]) == []
    # a tampered object is found by verification (the store's sha256 no longer matches the manifest)
    client = seaweed.client()
    client.put_object(Bucket="rollback-bucket", Key="prod/models/mlp/1/model.onnx", Body=b"tampered")
    problems = verify_s3(S3Reader(client_for(p.deployment.remote), p.deployment.remote), ["mlp"])  # type: ignore[arg-type]
    assert any("model.onnx" in msg for msg in problems), problems
    _no_secret_anywhere(tmp_path)


def test_concurrent_publishers_are_serialized(
    tmp_path: Path, seaweed: Seaweed, s3_env: None, find_free_ports: Callable[..., list[int]]
) -> None:
    """Four real processes publish different content at once: the lock object serializes them, so the
    versions are 1..4, each complete, and each publisher's lock hold does not overlap another's."""
    make_bucket(seaweed, "concurrent-bucket")
    procs = []
    go = tmp_path / "go"
    for i in range(4):
        d = tmp_path / f"p{i}"
        d.mkdir()
        spec = write_spec(d, seaweed, "concurrent-bucket", find_free_ports(3))
        _make_mlp_onnx(d / "model.onnx", seed=10 + i)
        code = (
            "import json,sys,time,pathlib\n"
            "from deployer import Pipeline\n"
            f"p = Pipeline.load({str(spec)!r})\n"
            f"pathlib.Path({str(d / 'ready')!r}).touch()\n"
            f"while not pathlib.Path({str(go)!r}).exists(): time.sleep(0.01)\n"
            "t0 = time.time(); r = p.publish(); t1 = time.time()\n"
            "print(json.dumps({'version': r.models[0].version, 't0': t0, 't1': t1, 'replanned': r.replanned}))\n"
        )
        procs.append(subprocess.Popen([sys.executable, "-c", code], cwd=CHECKOUT, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, env={**os.environ}))
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"p{i}" / "ready").exists() for i in range(4)):
        assert time.monotonic() < deadline, "publishers did not start"
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs if p.poll() is not None]
        time.sleep(0.05)
    go.touch()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert sorted(r["version"] for r in results) == [1, 2, 3, 4]
    assert sum(r["replanned"] for r in results) >= 2  # the losers re-planned under the lock
    loc = Pipeline.load(tmp_path / "p0" / "deployer.yaml").deployment.remote
    assert loc is not None
    reader = S3Reader(client_for(loc), loc)
    assert all(v.complete for v in list_versions_s3(reader, "mlp"))
    assert serving_state_s3(reader, "mlp").head == 4  # type: ignore[union-attr]
    assert verify_s3(reader, ["mlp"]) == []
