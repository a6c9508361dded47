"""Versioned model repository: planning, publish, pruning, rollback, verification (real filesystem)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from deployer.config.render import parse_pbtxt
from deployer.errors import RepositoryError
from deployer.repository import (
    LOCK_NAME,
    MANIFEST_NAME,
    ArtifactFile,
    ModelArtifact,
    apply_publish,
    list_versions,
    plan_publish,
    rollback,
    staging_root,
    verify_repository,
)
from deployer.repository.serving import pinned_versions


def _config(name: str, extra: str = "") -> str:
    return f'name: "{name}"\nbackend: "onnxruntime"\nmax_batch_size: 8\n{extra}'


def _art(name: str = "m", payload: bytes = b"weights-1", config_extra: str = "", **kw: object) -> ModelArtifact:
    return ModelArtifact(
        name=name,
        config_text=_config(name, config_extra),
        files=(ArtifactFile("model.onnx", data=payload),),
        **kw,  # type: ignore[arg-type]
    )


def _publish(repo: Path, *arts: ModelArtifact, force: bool = False) -> dict[str, int]:
    result = apply_publish(plan_publish(repo, arts, force=force))
    return {m.name: m.version for m in result.models}


def _snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path below root (and the staging sibling) with its bytes; dirs map to None."""
    snap: dict[str, bytes | None] = {}
    for base in (root, staging_root(root.resolve())):
        if not base.exists():
            continue
        for dirpath, dirnames, filenames in os.walk(base):
            for d in dirnames:
                snap[str(Path(dirpath, d))] = None
            for f in filenames:
                snap[str(Path(dirpath, f))] = Path(dirpath, f).read_bytes()
    return snap


def _versions(repo: Path, model: str = "m") -> list[int]:
    return [v.number for v in list_versions(repo, model)]


def _serves(repo: Path, model: str = "m") -> tuple[int, ...] | None:
    """The versions the live config.pbtxt pins (what Triton serves)."""
    return pinned_versions((repo / model / "config.pbtxt").read_text())


def _live_is(repo: Path, config_text: str, model: str = "m") -> bool:
    """The live config is `config_text` (a version's own config) apart from the served-version pin."""
    live = parse_pbtxt((repo / model / "config.pbtxt").read_text())
    live.ClearField("version_policy")
    own = parse_pbtxt(config_text)
    own.ClearField("version_policy")
    return live == own


def test_first_publish_creates_model_version_1_with_manifest(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    art = _art(manifest={"spec_sha256": "abc", "build": {"trt": "10.3"}})
    plan = plan_publish(repo, [art])
    assert not repo.exists()
    assert [(r.action, r.path) for r in plan.rows()] == [
        ("create", "m/1/model.onnx"),
        ("create", f"m/1/{MANIFEST_NAME}"),
        ("create", "m/config.pbtxt"),
    ]
    result = apply_publish(plan)
    assert [(m.name, m.version, m.status, m.config_written) for m in result.models] == [("m", 1, "new", True)]
    assert (repo / "m" / "1" / "model.onnx").read_bytes() == b"weights-1"
    assert _live_is(repo, art.config_text) and _serves(repo) == (1,)
    manifest = json.loads((repo / "m" / "1" / MANIFEST_NAME).read_text())
    assert manifest["version"] == 1
    assert manifest["config_text"] == art.config_text
    assert manifest["spec_sha256"] == "abc" and manifest["build"] == {"trt": "10.3"}
    assert set(manifest["files"]) == {"model.onnx"}
    assert manifest["tool_version"]
    assert (repo / LOCK_NAME).is_file()
    assert sorted(p.name for p in repo.iterdir() if p.is_dir()) == ["m"]
    assert verify_repository(repo) == []


def test_auto_increment_and_unchanged_publish_creates_nothing(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    assert _publish(repo, _art(payload=b"a")) == {"m": 1}
    assert _publish(repo, _art(payload=b"b")) == {"m": 2}
    before = _snapshot(repo)
    plan = plan_publish(repo, [_art(payload=b"b")])
    assert not plan.changed
    assert {r.action for r in plan.rows()} == {"unchanged"}
    result = apply_publish(plan)
    assert result.models[0].status == "unchanged" and result.models[0].version == 2
    assert _snapshot(repo) == before
    # identical to an *older* version is still new content relative to the newest
    assert _publish(repo, _art(payload=b"a")) == {"m": 3}
    assert _versions(repo) == [1, 2, 3]


def test_config_only_change_is_a_new_version_recording_its_config(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    _publish(repo, _art())
    new = _art(config_extra="instance_group [{ count: 2 kind: KIND_CPU }]\n")
    plan = plan_publish(repo, [new])
    assert plan.models[0].status == "new" and plan.models[0].config_action == "update"
    assert _publish(repo, new) == {"m": 2}
    infos = list_versions(repo, "m")
    assert [i.manifest["config_text"] for i in infos if i.manifest] == [_art().config_text, new.config_text]
    assert _live_is(repo, new.config_text) and _serves(repo) == (2,)


def test_content_only_change_switches_only_the_served_version(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    _publish(repo, _art(payload=b"a"))
    plan = plan_publish(repo, [_art(payload=b"b")])
    assert plan.models[0].config_action == "update"  # the pin moves to version 2
    apply_publish(plan)
    assert _live_is(repo, _art().config_text) and _serves(repo) == (2,)
    mtime = (repo / "m" / "config.pbtxt").stat().st_mtime_ns
    apply_publish(plan_publish(repo, [_art(payload=b"b")]))
    assert (repo / "m" / "config.pbtxt").stat().st_mtime_ns == mtime


def test_drifted_config_is_repaired_without_a_new_version(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    _publish(repo, _art())
    (repo / "m" / "config.pbtxt").write_text("edited by hand\n")
    assert any("differs from the config recorded" in p for p in verify_repository(repo))
    plan = plan_publish(repo, [_art()])
    assert (plan.models[0].status, plan.models[0].config_action) == ("unchanged", "update")
    apply_publish(plan)
    assert _versions(repo) == [1]
    assert verify_repository(repo) == []


def test_explicit_version_conflict_and_force(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    assert _publish(repo, _art(payload=b"a", version=5)) == {"m": 5}
    assert _publish(repo, _art(payload=b"a", version=5)) == {"m": 5}  # same content: reuse
    before = _snapshot(repo)
    with pytest.raises(RepositoryError, match="version 5 already exists with different content") as err:
        plan_publish(repo, [_art(payload=b"b", version=5)])
    assert "force" in (err.value.hint or "")
    assert _snapshot(repo) == before
    plan = plan_publish(repo, [_art(payload=b"b", version=5)], force=True)
    assert plan.models[0].status == "replace"
    assert [r.action for r in plan.rows() if r.path.endswith("model.onnx")] == ["update"]
    apply_publish(plan)
    assert (repo / "m" / "5" / "model.onnx").read_bytes() == b"b"
    assert _versions(repo) == [5] and _serves(repo) == (5,)
    assert verify_repository(repo) == []
    assert not any(staging_root(repo.resolve()).iterdir())
    assert _publish(repo, _art(payload=b"c")) == {"m": 6}


@pytest.mark.parametrize("bad", [0, -1, True, 2**63, 10**300])
def test_invalid_explicit_version(tmp_path: Path, bad: int) -> None:
    with pytest.raises(RepositoryError, match="not allowed"):
        plan_publish(tmp_path / "repo", [_art(version=bad)])


def test_prune_keeps_newest_n(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    for i in range(3):
        _publish(repo, _art(payload=bytes([i])))
    plan = plan_publish(repo, [_art(payload=b"x", keep_versions=2)])
    deletes = [r.path for r in plan.rows() if r.action == "delete"]
    assert deletes == ["m/1", "m/2"]
    result = apply_publish(plan)
    assert result.models[0].pruned == (1, 2)
    assert _versions(repo) == [3, 4]
    assert not any(staging_root(repo.resolve()).glob("*"))
    assert verify_repository(repo) == []
    # policy also applies when the content is unchanged
    assert apply_publish(plan_publish(repo, [_art(payload=b"x", keep_versions=1)])).models[0].pruned == (3,)
    assert _versions(repo) == [4]


def test_an_explicit_lower_version_is_served_and_never_pruned(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    _publish(repo, _art(version=7))
    plan = plan_publish(repo, [_art(payload=b"z", version=3, keep_versions=1)])
    assert plan.models[0].prune == () and plan.models[0].newer_kept == (7,)
    assert "newer versions [7] kept" in plan.models[0].summary
    apply_publish(plan)
    assert _versions(repo) == [3, 7] and _serves(repo) == (3,)


def test_rollback_keeps_every_version_and_pins_the_chosen_one(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    configs = []
    for i in range(4):
        extra = f"# rev {i}\ndynamic_batching {{ max_queue_delay_microseconds: {i} }}\n"
        art = _art(payload=bytes([i]), config_extra=extra)
        configs.append(art.config_text)
        _publish(repo, art)
    versions_before = {v: _snapshot(repo / "m" / str(v)) for v in (1, 2, 3, 4)}
    result = rollback(repo, "m")
    assert (result.version, result.removed, result.kept, result.config_restored) == (3, (), (4,), True)
    assert _versions(repo) == [1, 2, 3, 4] and _serves(repo) == (3,)
    assert _live_is(repo, configs[2])
    result = rollback(repo, "m")  # the default goes below the served version, not below the newest
    assert (result.version, result.kept) == (2, (3, 4))
    result = rollback(repo, "m", to=1)
    assert (result.version, result.removed, result.kept) == (1, (), (2, 3, 4))
    assert _live_is(repo, configs[0]) and _serves(repo) == (1,)
    assert {v: _snapshot(repo / "m" / str(v)) for v in (1, 2, 3, 4)} == versions_before
    assert verify_repository(repo) == []
    plan = plan_publish(repo, [_art(payload=b"new")])
    assert "pinned" not in plan.models[0].summary
    # a publish of new content takes the next number above every kept version and unpins
    assert _publish(repo, _art(payload=b"new")) == {"m": 5}
    assert _serves(repo) == (5,)


def test_publish_after_rollback_reuses_a_kept_version_with_the_same_content(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    for i in range(3):
        _publish(repo, _art(payload=bytes([i])))
    rollback(repo, "m", to=1)
    plan = plan_publish(repo, [_art(payload=bytes([2]))])
    assert (plan.models[0].status, plan.models[0].version) == ("unchanged", 3)
    assert _publish(repo, _art(payload=bytes([2]))) == {"m": 3}
    assert _versions(repo) == [1, 2, 3] and _serves(repo) == (3,)


def test_rollback_prune_deletes_exactly_the_newer_versions(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    for i in range(4):
        _publish(repo, _art(payload=bytes([i])))
    kept = {v: _snapshot(repo / "m" / str(v)) for v in (1, 2)}
    result = rollback(repo, "m", to=2, prune=True)
    assert (result.version, result.removed, result.kept) == (2, (3, 4), ())
    assert _versions(repo) == [1, 2] and _serves(repo) == (2,)
    assert {v: _snapshot(repo / "m" / str(v)) for v in (1, 2)} == kept
    assert not any(staging_root(repo.resolve()).iterdir())
    assert _publish(repo, _art(payload=b"next")) == {"m": 3}


def test_pruning_never_deletes_the_pinned_version(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    for i in range(4):
        _publish(repo, _art(payload=bytes([i])))
    rollback(repo, "m", to=1)
    plan = plan_publish(repo, [_art(payload=bytes([0]), keep_versions=2)])
    assert (plan.models[0].status, plan.models[0].version) == ("unchanged", 1)
    apply_publish(plan)
    assert _versions(repo) == [1, 3, 4] and _serves(repo) == (1,)


def test_latest_n_serves_the_n_versions_up_to_the_pin(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    extra = "version_policy { latest { num_versions: 2 } }\n"
    for i in range(4):
        _publish(repo, _art(payload=bytes([i]), config_extra=extra))
    assert _serves(repo) == (3, 4)
    rollback(repo, "m", to=2)
    assert _serves(repo) == (1, 2)


def test_rollback_refuses_a_spec_that_pins_versions_itself(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    extra = "version_policy { specific { versions: [1] } }\n"
    _publish(repo, _art(payload=b"a", config_extra=extra))
    _publish(repo, _art(payload=b"b", config_extra=extra))
    assert _serves(repo) == (1,)
    with pytest.raises(RepositoryError, match="names its served versions itself"):
        rollback(repo, "m", to=1)


def test_rollback_errors_list_what_exists_and_change_nothing(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    _publish(repo, _art(payload=b"a"))
    _publish(repo, _art(payload=b"b"))
    before = _snapshot(repo)
    with pytest.raises(RepositoryError, match="no version 9") as err:
        rollback(repo, "m", to=9)
    assert "[1, 2]" in (err.value.details or "")
    with pytest.raises(RepositoryError, match="not found") as err:
        rollback(repo, "nope")
    assert "['m']" in (err.value.details or "")
    (repo / "m" / "1" / "model.onnx").write_bytes(b"corrupt")
    before = _snapshot(repo)
    with pytest.raises(RepositoryError, match="not complete"):
        rollback(repo, "m", to=1)
    assert _snapshot(repo) == before
    rollback(repo, "m", to=2)  # rolling back to the served version only re-asserts its config
    assert _versions(repo) == [1, 2] and _serves(repo) == (2,)


def test_rollback_without_previous_version(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    _publish(repo, _art())
    with pytest.raises(RepositoryError, match="no version below the served version 1"):
        rollback(repo, "m")


def test_directory_source_external_data(tmp_path: Path) -> None:
    src = tmp_path / "export" / "model.onnx"
    src.mkdir(parents=True)
    (src / "model.onnx").write_bytes(b"graph")
    (src / "weights.bin").write_bytes(b"\x00" * 4096)
    (src / "sub").mkdir()
    (src / "sub" / "more.bin").write_bytes(b"more")
    repo = tmp_path / "repo"
    art = ModelArtifact("m", _config("m"), (ArtifactFile("model.onnx", source=src),))
    plan = plan_publish(repo, [art])
    assert sorted(r.path for r in plan.rows() if r.action == "create") == [
        f"m/1/{MANIFEST_NAME}",
        "m/1/model.onnx/model.onnx",
        "m/1/model.onnx/sub/more.bin",
        "m/1/model.onnx/weights.bin",
        "m/config.pbtxt",
    ]
    apply_publish(plan)
    assert (repo / "m" / "1" / "model.onnx" / "weights.bin").read_bytes() == b"\x00" * 4096
    assert list_versions(repo, "m")[0].complete
    assert not plan_publish(repo, [art]).changed
    (src / "sub" / "more.bin").write_bytes(b"changed")
    assert plan_publish(repo, [art]).models[0].status == "new"


def test_plan_writes_nothing(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    _publish(repo, _art(payload=b"a"), _art("other", payload=b"o"))
    (repo / "m" / "config.pbtxt").write_text("drift\n")
    before = _snapshot(repo)
    plan = plan_publish(repo, [_art(payload=b"b", keep_versions=1), _art("new"), _art("other", payload=b"o")])
    assert plan.changed
    assert {r.action for r in plan.rows()} == {"create", "update", "unchanged", "delete"}
    assert _snapshot(repo) == before


@pytest.mark.parametrize(
    ("artifacts", "match"),
    [
        ([_art("../evil")], "invalid model name"),
        ([_art(".hidden")], "invalid model name"),
        ([_art("z"), _art("z")], "appears twice"),
        ([ModelArtifact("z", "x", (ArtifactFile("../x", data=b""),))], "invalid artifact path"),
        ([ModelArtifact("z", "x", (ArtifactFile(MANIFEST_NAME, data=b""),))], "reserved"),
        ([ModelArtifact("z", "x", (ArtifactFile("a", data=b""), ArtifactFile("a", data=b"")))], "twice"),
        ([ModelArtifact("z", "x", (ArtifactFile("a", data=b""), ArtifactFile("a/b", data=b"")))], "both"),
        ([ModelArtifact("z", "x", (ArtifactFile("a"),))], "one of source or data"),
        ([ModelArtifact("z", "x", (ArtifactFile("a", source=Path("/nonexistent/x")),))], "does not exist"),
        ([_art("z", manifest={"version": 3})], "reserved"),
        ([_art("z", manifest={"obj": object()})], "JSON"),
        ([_art("z", keep_versions=0)], "keep_versions"),
    ],
)
def test_errors_leave_repository_byte_identical(tmp_path: Path, artifacts: list[ModelArtifact], match: str) -> None:
    repo = tmp_path / "repo"
    _publish(repo, _art(payload=b"base"))
    before = _snapshot(repo)
    with pytest.raises(RepositoryError, match=match):
        apply_publish(plan_publish(repo, [_art(payload=b"new version"), *artifacts]))
    assert _snapshot(repo) == before


def test_source_changed_after_plan_leaves_repository_identical(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    src = tmp_path / "model.onnx"
    src.write_bytes(b"one")
    _publish(repo, _art(payload=b"base"))
    before = _snapshot(repo)
    plan = plan_publish(
        repo,
        [
            _art("a", payload=b"a"),
            ModelArtifact("m", _config("m"), (ArtifactFile("model.onnx", source=src),)),
        ],
    )
    src.write_bytes(b"two")
    with pytest.raises(RepositoryError, match="changed after planning"):
        apply_publish(plan)
    assert _snapshot(repo) == before


def test_stale_plan_is_replanned_under_the_lock(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    _publish(repo, _art(payload=b"a"))
    stale = plan_publish(repo, [_art(payload=b"c")])
    assert stale.models[0].version == 2
    _publish(repo, _art(payload=b"b"))  # someone else published version 2 meanwhile
    result = apply_publish(stale)
    assert result.replanned and result.models[0].version == 3
    assert _versions(repo) == [1, 2, 3]
    assert verify_repository(repo) == []


def test_a_publish_committed_while_planning_is_seen_under_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another run commits between this plan reading the model and finishing: the plan must still be made
    again under the lock (the fingerprint describes the state the models were read from), not collide with
    the other run's version (found as ENOTEMPTY in the concurrent-publish crash test)."""
    import deployer.repository.plan as planning

    repo = tmp_path / "repo"
    _publish(repo, _art(payload=b"a"))
    real = planning._plan_model
    calls = []

    def plan_then_other_run_commits(*args: object) -> object:
        result = real(*args)  # type: ignore[arg-type]
        if not calls:
            calls.append(1)
            _publish(repo, _art(payload=b"b"))  # the other run, between reading the model and the end
        return result

    monkeypatch.setattr(planning, "_plan_model", plan_then_other_run_commits)
    racing = plan_publish(repo, [_art(payload=b"c")])
    monkeypatch.undo()
    assert racing.models[0].version == 2 and _versions(repo) == [1, 2]
    result = apply_publish(racing)
    assert result.replanned and result.models[0].version == 3
    assert _versions(repo) == [1, 2, 3]
    assert verify_repository(repo) == []


def test_leftovers_of_killed_runs_are_reported_and_cleaned(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    _publish(repo, _art(payload=b"a"))
    junk = staging_root(repo.resolve()) / "op-1-dead" / "version-m-2"
    junk.mkdir(parents=True)
    (junk / "model.onnx").write_bytes(b"half")
    (repo / "m" / ".config.pbtxt.abc.deployer-tmp").write_text("half")
    problems = verify_repository(repo)
    assert any("stale staging" in p for p in problems)
    assert any("stale temporary config" in p for p in problems)
    _publish(repo, _art(payload=b"b"))
    assert verify_repository(repo) == []
    assert not any(staging_root(repo.resolve()).iterdir())


def test_verify_reports_triton_hazards(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    _publish(repo, _art(payload=b"a"), _art("n"))
    (repo / "m" / "2_backup").mkdir()
    (repo / "m" / "02").mkdir()
    (repo / "m" / "3").mkdir()  # a version without manifest: incomplete
    (repo / ".ipynb_checkpoints").mkdir()
    (repo / "n" / "config.pbtxt").unlink()
    (repo / "n" / "1" / "extra.txt").write_text("x")
    problems = "\n".join(verify_repository(repo))
    assert "m/2_backup: Triton parses this directory name as a version" in problems
    assert "m/02: Triton parses" in problems
    assert f"m/3: {MANIFEST_NAME} missing" in problems
    assert ".ipynb_checkpoints: hidden directory" in problems
    assert "n/config.pbtxt: missing" in problems
    assert "n/1: file 'extra.txt' is not in the manifest" in problems
    infos = list_versions(repo, "m")
    assert [(i.number, i.complete) for i in infos] == [(1, True), (3, False)]


def test_list_versions_unknown_model(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    _publish(repo, _art())
    with pytest.raises(RepositoryError, match="not found") as err:
        list_versions(repo, "x")
    assert "['m']" in (err.value.details or "")


def test_plan_rows_are_relative_and_described(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    _publish(repo, _art(payload=b"a"))
    rows = plan_publish(repo, [_art(payload=b"bb", keep_versions=1)]).rows()
    assert [(r.model, r.version, r.action, r.path, r.detail) for r in rows] == [
        ("m", 2, "create", "m/2/model.onnx", "2 bytes"),
        ("m", 2, "create", f"m/2/{MANIFEST_NAME}", "manifest"),
        ("m", 2, "update", "m/config.pbtxt", "config.pbtxt (written last)"),
        ("m", 2, "delete", "m/1", "prune old version"),
    ]


def test_directory_source_keeps_every_file_and_follows_dir_symlinks(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "real").mkdir(parents=True)
    (src / "real" / "w.bin").write_bytes(b"w")
    (src / MANIFEST_NAME).write_text("{}")  # not the version manifest: it lives one level down
    (src / "linked").symlink_to(src / "real", target_is_directory=True)
    repo = tmp_path / "repo"
    apply_publish(plan_publish(repo, [ModelArtifact("m", _config("m"), (ArtifactFile("model.onnx", source=src),))]))
    vdir = repo / "m" / "1" / "model.onnx"
    assert sorted(p.relative_to(vdir).as_posix() for p in vdir.rglob("*") if p.is_file()) == [
        MANIFEST_NAME,
        "linked/w.bin",
        "real/w.bin",
    ]
    assert not (vdir / "linked").is_symlink()
    assert verify_repository(repo) == []


def test_plan_summary(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    _publish(repo, _art(payload=b"a"))
    plan = plan_publish(repo, [_art(payload=b"b", config_extra="# x\n", keep_versions=1), _art("n")])
    assert [m.summary for m in plan.models] == [
        "m: new version 2; config.pbtxt update; prune [1]",
        "n: new version 1; config.pbtxt create",
    ]


def test_auto_version_never_passes_int64(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    assert _publish(repo, _art(version=2**63 - 1)) == {"m": 2**63 - 1}
    with pytest.raises(RepositoryError, match="int64"):
        plan_publish(repo, [_art(payload=b"next")])


@pytest.mark.parametrize("name", ["m\n", "m\nx", "\nm", "m/x", "..", ".hidden"])
def test_model_names_that_are_not_one_visible_dir_name_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(RepositoryError, match="invalid model name"):
        plan_publish(tmp_path / "repo", [ModelArtifact(name, 'name: "m"\n', (ArtifactFile("a", data=b"a"),))])


def test_a_pycache_written_by_the_python_stub_does_not_make_a_version_modified(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    assert _publish(repo, _art(payload=b"a")) == {"m": 1}
    cache = repo / "m" / "1" / "__pycache__"
    cache.mkdir()
    (cache / "model.cpython-311.pyc").write_bytes(b"\0pyc")
    assert verify_repository(repo) == []
    assert plan_publish(repo, [_art(payload=b"a")]).models[0].status == "unchanged"
