"""Issue 14's version semantics on an s3:// repository, on a real SeaweedFS: rollback pins the chosen
version and deletes nothing (every version byte-identical), `prune` deletes exactly the newer ones, a
publish after a rollback unpins, a publish equal to a kept version reuses it, and version-policy
pruning never deletes the pin. Then the same through the CLI: `plan`, `publish`, `rollback`, `status`
on an s3 spec, with the credential in no output."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deployer.config.render import parse_pbtxt
from deployer.repository import ArtifactFile, ModelArtifact
from deployer.repository.records import RollbackResult
from deployer.repository.s3 import S3Reader, client_for
from deployer.repository.s3_apply import (
    apply_publish_s3,
    list_versions_s3,
    plan_publish_s3,
    rollback_s3,
    serving_state_s3,
    verify_s3,
)
from deployer.repository.serving import pinned_versions
from deployer.spec import S3Location
from tests.integration.conftest import _make_mlp_onnx
from tests.integration.test_s3_repository import SECRET, s3_env, write_spec  # noqa: F401 - s3_env is a fixture
from tests.seaweed import Seaweed, running_seaweed

pytestmark = pytest.mark.slow

DEPLOYER = Path(sys.executable).parent / "deployer"


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seaweed]:
    with running_seaweed(tmp_path_factory.mktemp("seaweed-versions")) as weed:
        yield weed


@pytest.fixture(scope="module")
def bucket(seaweed: Seaweed) -> str:
    seaweed.client().create_bucket(Bucket="versions")
    return "versions"


@pytest.fixture
def loc(seaweed: Seaweed, bucket: str, s3_env: None, request: pytest.FixtureRequest) -> S3Location:  # noqa: F811
    """One bucket, a fresh repository prefix per test."""
    return S3Location(bucket, f"{request.node.name}/models", endpoint=seaweed.endpoint)


def _config(extra: str = "") -> str:
    return f'name: "m"\nbackend: "onnxruntime"\nmax_batch_size: 8\n{extra}'


def _art(payload: bytes, *, extra: str = "", keep_versions: int | None = None) -> ModelArtifact:
    return ModelArtifact("m", _config(extra), (ArtifactFile("model.onnx", data=payload),),
                         keep_versions=keep_versions)


def _publish(loc: S3Location, art: ModelArtifact) -> int:
    return apply_publish_s3(plan_publish_s3(loc, [art]), loc).models[0].version


def _reader(loc: S3Location) -> S3Reader:
    return S3Reader(client_for(loc), loc)


def _versions(loc: S3Location) -> list[int]:
    return [v.number for v in list_versions_s3(_reader(loc), "m")]


def _serves(loc: S3Location) -> tuple[int, ...] | None:
    return pinned_versions(_reader(loc).config_text("m"))


def _objects(loc: S3Location, version: int) -> dict[str, tuple[str, str]]:
    """Every object of a version: relpath -> (sha256 of the downloaded bytes, etag)."""
    reader = _reader(loc)
    out = {}
    for rel, obj in reader.objects.items():
        if rel.startswith(f"m/{version}/"):
            data = reader.get(rel)
            assert data is not None
            out[rel] = (hashlib.sha256(data).hexdigest(), obj.etag)
    assert out, f"version {version} has no objects"
    return out


def _live_is(loc: S3Location, config_text: str) -> bool:
    """The live config is `config_text` (a version's own config) apart from the served-version pin."""
    text = _reader(loc).config_text("m")
    assert text is not None
    live, own = parse_pbtxt(text), parse_pbtxt(config_text)
    live.ClearField("version_policy")
    own.ClearField("version_policy")
    return live == own


def _shape(r: RollbackResult) -> tuple[int, tuple[int, ...], tuple[int, ...]]:
    return r.version, r.removed, r.kept


def test_rollback_keeps_every_version_byte_identical_and_pins_the_chosen_one(loc: S3Location) -> None:
    arts = [_art(bytes([i]), extra=f"dynamic_batching {{ max_queue_delay_microseconds: {i} }}\n") for i in range(4)]
    configs = [a.config_text for a in arts]
    for i, art in enumerate(arts):
        assert _publish(loc, art) == i + 1
    before = {v: _objects(loc, v) for v in (1, 2, 3, 4)}
    assert _shape(rollback_s3(loc, "m")) == (3, (), (4,))
    assert _versions(loc) == [1, 2, 3, 4] and _serves(loc) == (3,) and _live_is(loc, configs[2])
    assert _shape(rollback_s3(loc, "m")) == (2, (), (3, 4))  # the default goes below the served version
    assert _shape(rollback_s3(loc, "m", to=1)) == (1, (), (2, 3, 4))
    assert _serves(loc) == (1,) and _live_is(loc, configs[0])
    assert {v: _objects(loc, v) for v in (1, 2, 3, 4)} == before  # same bytes, same objects (etags)
    state = serving_state_s3(_reader(loc), "m")
    assert state is not None and state.pinned and state.newer_kept == (2, 3, 4)
    assert verify_s3(_reader(loc), ["m"]) == []
    # the plan says a pin is in place; new content takes the next number above every kept version, unpinned
    plan = plan_publish_s3(loc, [arts[0]])
    assert plan.models[0].status == "unchanged" and plan.models[0].newer_kept == (2, 3, 4)
    assert "pinned" in plan.models[0].summary
    plan = plan_publish_s3(loc, [_art(b"new")])
    assert plan.models[0].version == 5 and "pinned" not in plan.models[0].summary
    assert _publish(loc, _art(b"new")) == 5
    assert _serves(loc) == (5,) and _versions(loc) == [1, 2, 3, 4, 5]
    assert {v: _objects(loc, v) for v in (1, 2, 3, 4)} == before


def test_publish_after_rollback_reuses_a_kept_version_with_the_same_content(loc: S3Location) -> None:
    for i in range(3):
        _publish(loc, _art(bytes([i])))
    rollback_s3(loc, "m", to=1)
    kept = _objects(loc, 3)
    plan = plan_publish_s3(loc, [_art(bytes([2]))])
    assert (plan.models[0].status, plan.models[0].version) == ("unchanged", 3)
    assert _publish(loc, _art(bytes([2]))) == 3
    assert _versions(loc) == [1, 2, 3] and _serves(loc) == (3,)
    assert _objects(loc, 3) == kept  # nothing uploaded again: only the config switched back
    assert verify_s3(_reader(loc), ["m"]) == []


def test_rollback_prune_deletes_exactly_the_newer_versions(loc: S3Location) -> None:
    for i in range(4):
        _publish(loc, _art(bytes([i])))
    kept = {v: _objects(loc, v) for v in (1, 2)}
    assert _shape(rollback_s3(loc, "m", to=2, prune=True)) == (2, (3, 4), ())
    assert _versions(loc) == [1, 2] and _serves(loc) == (2,)
    assert {v: _objects(loc, v) for v in (1, 2)} == kept
    assert not any(rel.startswith(("m/3/", "m/4/")) for rel in _reader(loc).objects)
    assert _publish(loc, _art(b"next")) == 3


def test_pruning_never_deletes_the_pinned_version(loc: S3Location) -> None:
    for i in range(4):
        _publish(loc, _art(bytes([i])))
    rollback_s3(loc, "m", to=1)
    plan = plan_publish_s3(loc, [_art(bytes([0]), keep_versions=2)])
    assert (plan.models[0].status, plan.models[0].version, plan.models[0].prune) == ("unchanged", 1, (2,))
    apply_publish_s3(plan, loc)
    assert _versions(loc) == [1, 3, 4] and _serves(loc) == (1,)
    # a new version unpins; keep 2 then keeps the two newest, the old pin is no longer served
    res = apply_publish_s3(plan_publish_s3(loc, [_art(b"five", keep_versions=2)]), loc).models[0]
    assert (res.version, res.pruned) == (5, (1, 3))
    assert _versions(loc) == [4, 5] and _serves(loc) == (5,)


def _cli(*args: str | Path, cwd: Path, code: int = 0) -> str:
    proc = subprocess.run([str(DEPLOYER), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=300,
                          check=False, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == code, f"deployer {args}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    assert SECRET not in proc.stdout + proc.stderr
    return " ".join((proc.stdout + proc.stderr).split())


def test_cli_plan_publish_rollback_status_on_an_s3_spec(tmp_path: Path, seaweed: Seaweed, s3_env: None,  # noqa: F811
                                                         find_free_ports: Any) -> None:
    seaweed.client().create_bucket(Bucket="cli-bucket")
    spec = write_spec(tmp_path, seaweed, "cli-bucket", find_free_ports(3))
    _make_mlp_onnx(tmp_path / "model.onnx", seed=1)
    out = _cli("plan", spec, cwd=tmp_path)
    assert "plan for s3://cli-bucket/prod/models" in out and "mlp/1/model.onnx" in out and "create" in out
    assert _cli("status", spec, cwd=tmp_path, code=1).startswith("mlp: not published")
    assert "mlp: version 1 new" in _cli("publish", spec, cwd=tmp_path)
    assert "no changes" in _cli("plan", spec, cwd=tmp_path)
    _make_mlp_onnx(tmp_path / "model.onnx", seed=2)
    assert "mlp: version 2 new" in _cli("publish", spec, cwd=tmp_path)
    out = _cli("rollback", spec, "mlp", "--to", "1", cwd=tmp_path)
    assert "version 1 is served" in out and "newer versions [2] are kept" in out
    out = _cli("status", spec, cwd=tmp_path, code=1)  # exit 1: no server running
    assert "mlp: versions [1, 2]; repository serves [1]; pinned: newer versions [2] kept, not served" in out
    assert "not running" in out and "repository problem" not in out
    out = _cli("plan", spec, cwd=tmp_path)  # the spec's content is version 2's: re-served, not re-uploaded
    assert "update │ mlp/config.pbtxt" in out and "create" not in out and "unchanged │ mlp/2/model.onnx" in out
    out = _cli("rollback", spec, "mlp", "--to", "1", "--prune", cwd=tmp_path)
    assert "removed newer versions [2]" in out
    assert "mlp: versions [1]; repository serves [1]" in _cli("status", spec, cwd=tmp_path, code=1)
    # a missing bucket is bad input with a clear message (exit 2), not a traceback
    bad = tmp_path / "bad"
    bad.mkdir()
    _make_mlp_onnx(bad / "model.onnx", seed=1)
    out = _cli("plan", write_spec(bad, seaweed, "no-such-bucket", find_free_ports(3)), cwd=bad, code=2)
    assert "bucket 'no-such-bucket'" in out and "does not exist" in out


def test_a_change_committed_while_planning_is_seen_under_the_lock(loc: S3Location,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The S3 planner keeps the fingerprint-before-read order. A rollback by another run (one config PUT,
    the listing unchanged) between this plan reading the model and the end of planning must make the
    publish plan again under the lock; a fingerprint taken after the reads would match the state under
    the lock, and the publish of version 2's content would leave the rollback's version 1 served."""
    import deployer.repository.plan as planning

    _publish(loc, _art(b"a"))
    _publish(loc, _art(b"b"))
    real = planning._plan_model
    calls = []

    def plan_then_other_run_rolls_back(*args: Any) -> Any:
        result = real(*args)
        if not calls:
            calls.append(1)
            rollback_s3(loc, "m", to=1)  # the other run, between reading the model and the end of planning
        return result

    with monkeypatch.context() as patched:  # undo only this (the credentials stay in the environment)
        patched.setattr(planning, "_plan_model", plan_then_other_run_rolls_back)
        racing = plan_publish_s3(loc, [_art(b"b")])
    assert (racing.models[0].status, racing.models[0].config_action) == ("unchanged", "unchanged")
    assert _serves(loc) == (1,)
    result = apply_publish_s3(racing, loc)
    assert result.replanned and result.models[0].version == 2
    assert _versions(loc) == [1, 2] and _serves(loc) == (2,)
    assert verify_s3(_reader(loc), ["m"]) == []
