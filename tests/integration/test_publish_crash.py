"""Crash safety and concurrency of publish and rollback, with real processes killed by SIGKILL at random points.

Scenarios (>= 50 SIGKILL trials each): (a) auto-version publish of three models with keep_versions=3,
sometimes of a brand-new model; (b) `force` replacing the served version with other files; (c) explicit
versions below the newest (served, the newer kept) and above it; (d) rollback with and without prune.
Each trial runs one operation in a real process (forked by a fork server, `tests/publish_crash_ops.py`,
which imported deployer once: the kill lands in the operation, not in interpreter start-up) and
SIGKILLs it after a random delay: calibrated on unkilled runs of the scenario, every other kill uniform
over the whole run, the others in a window near the end that follows the commit phase (moved later when
a kill came before any change, earlier when after all of them). After each kill it checks, per model,
what a Triton polling or (re)loading the repository right now would see (`observe`):

- config.pbtxt exists and parses with Triton's schema, names the model; no stray directory in the
  model dir or the repository root (hidden temp config or probe *files* are fine: Triton ignores
  files there); every version dir complete;
- its first line is the head marker, `version_policy.specific` pins versions that all exist and are
  complete, and the head is among them;
- the live config minus version_policy equals the head's recorded `config_text` minus version_policy:
  the served files and their config belong together;

and how it got there from the state before the operation (`check_transition`):

- the served state (head, pins, live text) is exactly the old one or the intended one, computed by
  the test from the documented rules (`intend_publish`, `intend_rollback`);
- every old version is byte-identical (same manifest bytes, complete) unless the operation removes
  it, and is removed only after the switch; every other version dir holds exactly the published files;
- `force`: the replaced version's files change together with the config (old files with the old
  config, new with new, never mixed), and the old version is never lost.

After each group of trials a publish in-process heals the repository: `verify_repository` is clean and
the staging dir empty. A killed operation that left a model half-way is sometimes re-run with the same
content, which must reuse what the killed run renamed in.

The concurrency tests release several real `python` children at once (each creates a ready file, the
parent waits for all of them with a deadline) and check that the repository lock serializes them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from deployer.repository import LOCK_NAME, MANIFEST_NAME, list_versions, serving, staging_root, verify_repository
from tests.publish_crash_ops import run_op, tag_bytes

pytestmark = pytest.mark.slow

CHECKOUT = Path(__file__).resolve().parents[2]
MIN_KILL_TRIALS = 50  # per scenario (the hardening requirement)
KILL_TRIALS = 70  # stopped earlier by TIME_BUDGET_S
CALIBRATION_RUNS = 3
GROUP = 10  # kill trials between healing publishes
TIME_BUDGET_S = 45.0  # per scenario: caps a slow machine (the >= MIN_KILL_TRIALS assert still holds)
FILE_SIZE = 4 << 20
KEEP = 3
# Each model's own version_policy: `latest 1` (Triton's default) or `latest 2` (the pin covers two versions).
POLICY = {"alpha": 1, "beta": 2, "gamma": 1}
PROBE_PREFIX = ".deployer-probe-"  # probe_writable's hidden file (a kill between create and unlink leaves it)
_MARKER = re.compile(r"# deployer: head version (\d+); serves \[([\d, ]*)\]")


def config_text(name: str, tag: str) -> str:
    text = (
        f"# rendered for trial {tag}\n"
        f'name: "{name}"\nbackend: "onnxruntime"\nmax_batch_size: 4\n'
        f'parameters {{ key: "tag" value: {{ string_value: "{tag}" }} }}\n'
    )
    if POLICY[name] > 1:
        text += f"version_policy {{ latest {{ num_versions: {POLICY[name]} }} }}\n"
    return text


@functools.cache
def file_sha(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def model_entry(name: str, tag: str, big: Path, version: int | None = None, keep: int | None = KEEP) -> dict[str, Any]:
    """One model of a publish operation (see tests/publish_crash_ops.py)."""
    return {"name": name, "config": config_text(name, tag), "tag": tag, "big": str(big), "version": version,
            "keep": keep}


# --- what Triton would see ------------------------------------------------------------------------


@dataclass(frozen=True)
class Content:
    """What a publish puts in a version: deployer's identity of a version (files + config)."""

    tag: bytes
    model_sha: str
    config_text: str


@dataclass(frozen=True)
class Version:
    manifest_sha: str  # same manifest bytes + complete (every file re-hashed) = byte-identical version
    content: Content


@dataclass(frozen=True)
class Model:
    head: int
    pinned: tuple[int, ...]
    live: str
    versions: Mapping[int, Version]

    @property
    def served(self) -> tuple[int, tuple[int, ...], str]:
        return self.head, self.pinned, self.live


Op = dict[str, Any]  # one operation, see tests/publish_crash_ops.py
Snaps = dict[str, Model | None]  # every model's state (None: no model dir)


def _parse(text: str) -> model_config_pb2.ModelConfig:
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def _without_policy(text: str) -> model_config_pb2.ModelConfig:
    msg = _parse(text)
    msg.ClearField("version_policy")
    return msg


def observe_model(repo: Path, name: str) -> Model:
    """Assert what Triton needs to load `name` right now, and snapshot its served state and versions."""
    mdir = repo / name
    for child in mdir.iterdir():
        if child.is_dir():
            assert child.name.isdigit() and not child.name.startswith("0"), f"{name}: stray directory {child.name!r}"
        else:  # Triton reads config.pbtxt and ignores every other file in a model dir
            ok = child.name == "config.pbtxt" or child.name.startswith((".config.pbtxt.", PROBE_PREFIX))
            assert ok, f"{name}: unexpected file {child.name!r}"
    config = mdir / "config.pbtxt"
    assert config.is_file(), f"{name}: no config.pbtxt"
    live = config.read_text()
    parsed = _parse(live)
    assert parsed.name == name, live
    versions: dict[int, Version] = {}
    for info in list_versions(repo, name):
        assert info.complete, f"{name}/{info.number}: incomplete version dir: {info.problems}"
        assert info.manifest is not None
        versions[info.number] = Version(
            hashlib.sha256((info.path / MANIFEST_NAME).read_bytes()).hexdigest(),
            Content((info.path / "tag.txt").read_bytes(), info.manifest["files"]["model.onnx"]["sha256"],
                    info.manifest["config_text"]),
        )
    assert versions, f"{name}: no version dir"
    marker = _MARKER.match(live.splitlines()[0])
    assert marker, f"{name}: the first line is not the head marker:\n{live}"
    head = int(marker.group(1))
    assert parsed.version_policy.WhichOneof("policy_choice") == "specific", f"{name}: versions not pinned:\n{live}"
    pinned = tuple(sorted(parsed.version_policy.specific.versions))
    assert pinned == tuple(sorted(int(v) for v in marker.group(2).split(",") if v.strip())), live
    assert set(pinned) <= set(versions), f"{name}: pins {pinned}, versions on disk {sorted(versions)}"
    assert head in pinned, f"{name}: head {head} not among the pinned {pinned}"
    assert _without_policy(live) == _without_policy(versions[head].content.config_text), (
        f"{name}: the live config is not the config of served version {head}:\n{live}"
    )
    return Model(head, pinned, live, versions)


def observe(repo: Path, names: tuple[str, ...]) -> Snaps:
    """`observe_model` for every model present, after checking the repository root."""
    entries = list(repo.iterdir())
    dirs = sorted(p.name for p in entries if p.is_dir())
    assert set(dirs) <= set(names), f"stray directories in the repository root: {dirs}"
    files = sorted(p.name for p in entries if not p.is_dir())
    assert all(f == LOCK_NAME or f.startswith(PROBE_PREFIX) for f in files), f"unexpected files in the root: {files}"
    return {n: observe_model(repo, n) if (repo / n).is_dir() else None for n in names}


def litter(repo: Path, names: tuple[str, ...]) -> tuple[set[Path], bool]:
    """Hidden files a kill may leave in the repository (Triton ignores files there), and whether staging is
    left: counted, not failed (but see test_sigkill_in_writability_probe_leaves_litter_forever)."""
    found = set()
    for d in [repo, *(repo / n for n in names if (repo / n).is_dir())]:
        found |= {p for p in d.iterdir() if p.name.startswith((".config.pbtxt.", PROBE_PREFIX))}
    staging = staging_root(repo.resolve())
    return found, staging.is_dir() and any(staging.iterdir())


# --- what the operation intends ---------------------------------------------------------------------


@dataclass(frozen=True)
class Intent:
    """The state an operation leaves a model in, and what it may change on the way."""

    before: Model | None
    head: int
    pinned: tuple[int, ...]
    live: str
    new: Mapping[int, Content] = field(default_factory=dict)  # version dirs it creates or replaces
    gone: frozenset[int] = frozenset()  # old versions it removes (prune), after the switch only
    swap: bool = False  # force: the replaced version's files and the config change in one step

    @property
    def served(self) -> tuple[int, tuple[int, ...], str]:
        return self.head, self.pinned, self.live

    @property
    def final(self) -> set[int]:
        old = set(self.before.versions) if self.before else set()
        return (old - self.gone) | set(self.new)


def unchanged(b: Model | None) -> Intent:
    assert b is not None
    return Intent(b, b.head, b.pinned, b.live)


def served_set(num: int, versions: set[int] | list[int], head: int) -> tuple[int, ...]:
    """`latest num` with `head` as the newest: the num highest versions up to the head."""
    return tuple(sorted(sorted((v for v in set(versions) | {head} if v <= head), reverse=True)[:num]))


def intend_publish(b: Model | None, m: Mapping[str, Any], *, force: bool) -> Intent:
    """The documented publish rules: auto = reuse the head or a kept newer version with this very content,
    else newest + 1; explicit = new, unchanged or (force) replaced; the served set is `latest N` up to the
    published version (newer ones kept); keep_versions prunes the oldest but never a served version."""
    name = m["name"]
    content = Content(tag_bytes(name, m["tag"]), file_sha(m["big"]), m["config"])
    existing = dict(b.versions) if b else {}
    numbers = sorted(existing)
    status = "new"
    if m["version"] is None:
        candidates = [b.head, *(v for v in reversed(numbers) if v > b.head)] if b else []
        reuse = [v for v in candidates if existing[v].content == content]
        version = reuse[0] if reuse else (numbers[-1] if numbers else 0) + 1
        status = "unchanged" if reuse else "new"
    else:
        version = m["version"]
        if version in existing:
            assert existing[version].content == content or force
            status = "unchanged" if existing[version].content == content else "replace"
    after = set(numbers) | {version}
    served = served_set(POLICY[name], after, version)
    keep = m["keep"]
    prune = frozenset(sorted(after, reverse=True)[keep:]) - set(served) if keep else frozenset()
    live = serving.live_config(m["config"], served, version)
    new = {} if status == "unchanged" else {version: content}
    return Intent(b, version, served, live, new, prune, swap=status == "replace")


def intend_rollback(b: Model | None, name: str, to: int | None, *, prune: bool) -> Intent:
    """Serve `to` (default: the highest below the head) with its own recorded config; delete nothing unless
    prune (then every version above `to`)."""
    assert b is not None
    numbers = sorted(b.versions)
    target = to if to is not None else max(v for v in numbers if v < b.head)
    served = served_set(POLICY[name], numbers, target)
    live = serving.live_config(b.versions[target].content.config_text, served, target)
    gone = frozenset(v for v in numbers if v > target) if prune else frozenset()
    return Intent(b, target, served, live, {}, gone)


def check_transition(name: str, now: Model | None, it: Intent, *, finished: bool) -> str:
    """Assert that `now` is the state before, the intended one, or a legal step between (per model).

    Returns "before", "intended" or "partial" (a new version renamed in but not served yet, or switched
    but not yet pruned).
    """
    b = it.before
    if b is None:  # a new model appears whole: one rename of a staged model dir, config included
        if now is None:
            assert not finished, f"{name}: the publish finished, the new model is not there"
            return "before"
        assert now.served == it.served, f"{name}: new model with another served state:\n{now.live}"
        assert {v: s.content for v, s in now.versions.items()} == dict(it.new), f"{name}: new model incomplete"
        return "intended"
    assert now is not None, f"{name}: the model directory is gone"
    switched = now.served == it.served
    assert switched or now.served == b.served, (
        f"{name}: served state is neither the old nor the intended one\n--- old:\n{b.live}\n--- intended:\n"
        f"{it.live}\n--- now:\n{now.live}"
    )
    for v, snap in sorted(now.versions.items()):
        old = b.versions.get(v)
        if old is not None and snap.manifest_sha == old.manifest_sha:  # untouched (complete: byte-identical)
            assert not (it.swap and v in it.new and switched), f"{name}/{v}: config switched, old files still there"
            continue
        assert v in it.new and snap.content == it.new[v], f"{name}/{v}: neither the old files nor the published ones"
        assert switched or not it.swap, f"{name}/{v}: the new files are served with the old config"
    lost = set(b.versions) - set(now.versions)
    assert lost <= it.gone, f"{name}: versions {sorted(lost - it.gone)} lost (before {sorted(b.versions)})"
    assert not lost or switched, f"{name}: versions {sorted(lost)} removed before the config switched"
    at_intent = switched and set(now.versions) == it.final and all(
        now.versions[v].content == c for v, c in it.new.items()
    )
    if finished:
        assert at_intent, f"{name}: finished, but versions {sorted(now.versions)} != intended {sorted(it.final)}"
    same_versions = {v: s.manifest_sha for v, s in now.versions.items()} == {
        v: s.manifest_sha for v, s in b.versions.items()
    }
    return "intended" if at_intent else "before" if now.served == b.served and same_versions else "partial"


# --- running operations in-process and in killed children -----------------------------------------------


def publish_inprocess(
    repo: Path, names: tuple[str, ...], models: list[dict[str, Any]], before: Snaps | None = None
) -> Snaps:
    """Publish in this process (setup, refills, heals), check it reached exactly the intended state, and
    return that state. `before`: the current state when the caller has it."""
    if before is None:
        before = observe(repo, names) if repo.is_dir() else dict.fromkeys(names)
    intents = {n: unchanged(before[n]) if before[n] else None for n in names}
    for m in models:
        intents[m["name"]] = intend_publish(before[m["name"]], m, force=False)
    run_op({"op": "publish", "repo": str(repo), "force": False, "models": models})
    now = observe(repo, names)
    for n, it in intents.items():
        if it is not None:
            assert check_transition(n, now[n], it, finished=True) == "intended"
    return now


def heal(repo: Path, names: tuple[str, ...], big: Path, tag: str, keep: int | None = KEEP,
         before: Snaps | None = None) -> Snaps:
    """The next publish after kills succeeds, leaves a repository verify_repository finds clean, and
    removes the staging leftovers."""
    now = publish_inprocess(repo, names, [model_entry(n, tag, big, None, keep) for n in names], before)
    assert verify_repository(repo) == []
    staging = staging_root(repo.resolve())
    assert not staging.exists() or not any(staging.iterdir()), sorted(p.name for p in staging.iterdir())
    return now


class Workers:
    """A fork server child (`tests/publish_crash_ops.py --fork-server`) that imports deployer once and forks a
    worker process per operation: a trial costs no interpreter start-up, and the kill delay is all operation."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.publish_crash_ops", "--fork-server"],
            cwd=CHECKOUT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self._line() == "ready"

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.kill()
            pytest.fail(f"fork server died: {self.proc.communicate(timeout=60)[1]}")
        return line.rstrip("\n")

    def _send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def run(self, op: Op, kill_after: float | None) -> tuple[str, float]:
        """Run `op` in a worker, SIGKILLed `kill_after` s after it started (None: not killed).

        Returns "killed" or "finished", and the seconds from the worker's start to its result (or death).
        """
        self._send(json.dumps(op))
        pid_line = self._line()
        start = time.monotonic()
        assert pid_line.startswith("pid "), pid_line
        if kill_after is not None:
            time.sleep(kill_after)
            os.kill(int(pid_line[4:]), signal.SIGKILL)  # our worker, at worst a zombie: not reaped before `reap`
        self._send("reap")
        elapsed = None
        while not (line := self._line()).startswith("exit "):
            if line.startswith("error "):
                pytest.fail(f"the operation failed: {json.loads(line[6:])}")
            assert line.startswith("result "), line
            elapsed = time.monotonic() - start
        code = int(line[5:])
        if code == -signal.SIGKILL:
            return "killed", time.monotonic() - start
        assert code == 0, line
        return "finished", elapsed if elapsed is not None else time.monotonic() - start

    def close(self) -> None:
        try:
            self.proc.communicate(input="\n", timeout=60)  # an empty operation ends the server
        except (subprocess.TimeoutExpired, OSError):
            self.proc.kill()
            self.proc.wait()


@dataclass
class Last:
    """The previous trial: its operation, how it ended, and each model's state after it."""

    op: Op
    outcome: str
    states: dict[str, str]


class Scenario:
    """One kind of operation; `trial` returns the operation and each model's intent from the current state."""

    label = ""
    names: tuple[str, ...] = ("alpha", "beta", "gamma")

    def __init__(self, repo: Path, bigs: tuple[Path, Path], rng: random.Random) -> None:
        self.repo, self.bigs, self.rng = repo, bigs, rng
        self.outcomes: Counter[str] = Counter()

    def setup(self) -> None:
        heal(self.repo, self.names, self.bigs[0], "seed")

    def prepare(self, i: int, snaps: Snaps) -> Snaps | None:
        """In-process changes before trial i; returns the new state if it changed the repository."""
        return None

    def trial(self, i: int, snaps: Snaps, last: Last | None) -> tuple[Op, dict[str, Intent]]:
        raise NotImplementedError

    def after(self, op: Op, before: Snaps, now: Snaps) -> None:
        """Scenario-specific checks after each trial."""

    def heal(self, tag: str, before: Snaps) -> Snaps:
        return heal(self.repo, self.names, self.bigs[0], tag, KEEP, before)

    def publish_op(self, models: list[dict[str, Any]], *, force: bool = False) -> Op:
        return {"op": "publish", "repo": str(self.repo), "force": force, "models": models}

    def retry(self, last: Last | None, chance: float) -> bool:
        """Re-run a killed operation (same content): it must reuse what the killed run renamed in."""
        if last is not None and last.outcome == "killed" and "partial" in last.states.values() and (
            self.rng.random() < chance
        ):
            self.outcomes["retried_after_partial_kill"] += 1
            return True
        return False


def run_scenario(sc: Scenario) -> Counter[str]:
    repo, names, rng, outcomes = sc.repo, sc.names, sc.rng, sc.outcomes
    sc.setup()
    workers = Workers()
    durations: list[float] = []
    commit_at = 0.0  # seconds: centre of the near-end kills, following the commit phase
    start = time.monotonic()
    kills = runs = 0
    snaps = observe(repo, names)
    last: Last | None = None
    seen: set[Path] = set()
    try:
        while kills < KILL_TRIALS and time.monotonic() - start < TIME_BUDGET_S:
            if (prepared := sc.prepare(runs, snaps)) is not None:
                snaps, last = prepared, None
            op, intents = sc.trial(runs, snaps, last)
            delay = None
            near_end = kills % 2 == 0
            if len(durations) >= CALIBRATION_RUNS:  # half the kills anywhere, half near the end (the commit)
                commit_at = commit_at or 0.9 * min(durations)
                delay = commit_at * (rng.uniform(0.85, 1.15) if near_end else rng.uniform(0.0, 1.1))
            outcome, elapsed = workers.run(op, delay)
            runs += 1
            now = observe(repo, names)
            states = {n: check_transition(n, now[n], intents[n], finished=outcome == "finished") for n in names}
            sc.after(op, snaps, now)
            if delay is None:
                durations.append(elapsed)
                outcomes["calibration_runs"] += 1
            else:
                kills += 1
                outcomes[outcome] += 1
                kinds = set(states.values())
                if near_end:  # later when the kill came before the commit, earlier when after it
                    commit_at *= 1.15 if kinds == {"before"} else 1 / 1.15 if kinds == {"intended"} else 1.0
                if outcome == "killed":
                    kind = {frozenset({"before"}): "before_commit", frozenset({"intended"}): "after_commit"}
                    outcomes["killed_" + kind.get(frozenset(kinds), "mid_commit")] += 1
                files, staging_left = litter(repo, names)
                outcomes["staging_left"] += staging_left
                for p in files - seen:
                    outcomes["temp_config_left" if p.name.startswith(".config") else "probe_file_left"] += 1
                seen |= files
            snaps, last = now, Last(op, outcome, states)
            if delay is not None and kills % GROUP == 0:
                snaps, last = sc.heal(f"heal{runs}", snaps), None
    finally:
        workers.close()
    sc.heal("final", snaps)
    wall = time.monotonic() - start
    print(
        f"\n[{sc.label}] {kills} SIGKILL trials (+{outcomes['calibration_runs']} calibration runs) in {wall:.1f} s, "
        f"operation {min(durations) * 1000:.0f} ms unkilled, commit at ~{commit_at * 1000:.0f} ms: "
        f"{dict(sorted(outcomes.items()))}"
    )
    assert kills >= MIN_KILL_TRIALS, f"only {kills} SIGKILL trials within {TIME_BUDGET_S} s"
    assert outcomes["killed"] >= kills // 3, "the trials must really kill"
    return outcomes


@pytest.fixture(scope="module")
def bigs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("src")
    paths = (root / "a.onnx", root / "b.onnx")
    for p in paths:
        p.write_bytes(os.urandom(FILE_SIZE))
    return paths


@pytest.fixture
def rng() -> random.Random:
    seed = int.from_bytes(os.urandom(4), "big")
    print(f"\nrandom seed {seed}")
    return random.Random(seed)


# --- (a) auto-version publish of three models ------------------------------------------------------


class AutoPublish(Scenario):
    """Auto-version publish of alpha, beta (latest 2) and gamma, keep_versions=3; every 6th trial gamma is a
    brand-new model; after a kill that left a model half-way, sometimes the same publish again."""

    label = "auto multi-model publish"

    def prepare(self, i: int, snaps: Snaps) -> Snaps | None:
        if i % 6 == 5 and snaps["gamma"] is not None:
            shutil.rmtree(self.repo / "gamma")
            self.outcomes["gamma_brand_new"] += 1
            return {**snaps, "gamma": None}
        return None

    def trial(self, i: int, snaps: Snaps, last: Last | None) -> tuple[Op, dict[str, Intent]]:
        op = last.op if self.retry(last, 0.5) and last else self.publish_op(
            [model_entry(n, f"a{i}", self.bigs[0]) for n in self.names]
        )
        return op, {m["name"]: intend_publish(snaps[m["name"]], m, force=False) for m in op["models"]}


def test_sigkill_auto_publish_multi_model(tmp_path: Path, bigs: tuple[Path, Path], rng: random.Random) -> None:
    outcomes = run_scenario(AutoPublish(tmp_path / "repo", bigs, rng))
    assert outcomes["gamma_brand_new"] >= 5


# --- (b) --force replacing the served version --------------------------------------------------------


class ForceReplace(Scenario):
    """force=True: alpha and beta (latest 2) publish their served version again with other files (the other
    big file, a new tag), gamma a new auto version in the same publish."""

    label = "force replace of the served version"

    def setup(self) -> None:
        for k in range(3):
            heal(self.repo, self.names, self.bigs[0], f"seed{k}")

    def trial(self, i: int, snaps: Snaps, last: Last | None) -> tuple[Op, dict[str, Intent]]:
        retry = self.retry(last, 0.3)
        if retry and last:
            op = last.op
        else:
            models = []
            for n in ("alpha", "beta"):
                b = snaps[n]
                assert b is not None
                served_a = b.versions[b.head].content.model_sha == file_sha(str(self.bigs[0]))
                other = self.bigs[1] if served_a else self.bigs[0]
                models.append(model_entry(n, f"b{i}", other, b.head))
            models.append(model_entry("gamma", f"b{i}", self.bigs[0]))
            op = self.publish_op(models, force=True)
        intents = {m["name"]: intend_publish(snaps[m["name"]], m, force=True) for m in op["models"]}
        assert retry or (intents["alpha"].swap and intents["beta"].swap), "a fresh trial replaces the served version"
        return op, intents

    def after(self, op: Op, before: Snaps, now: Snaps) -> None:
        for m in op["models"][:2]:
            b, n = before[m["name"]], now[m["name"]]
            assert b is not None and n is not None
            v = m["version"]
            assert v in n.versions, f"{m['name']}: version {v} lost by the replace"
            old = (b.versions[v].content.tag, b.versions[v].content.model_sha)
            new = (tag_bytes(m["name"], m["tag"]), file_sha(m["big"]))
            got = (n.versions[v].content.tag, n.versions[v].content.model_sha)
            assert got in (old, new), f"{m['name']}/{v}: mixed files {got}"
            if old != new:
                self.outcomes["swapped" if got == new else "not_swapped"] += 1


def test_sigkill_force_replace_served_version(tmp_path: Path, bigs: tuple[Path, Path], rng: random.Random) -> None:
    outcomes = run_scenario(ForceReplace(tmp_path / "repo", bigs, rng))
    assert outcomes["swapped"] and outcomes["not_swapped"]


# --- (c) explicit versions, lower and higher than the newest -----------------------------------------


class ExplicitVersions(Scenario):
    """alpha and beta (latest 2) at explicit versions: a free number below the newest (it becomes served,
    the newer ones are kept) or above it; keep_versions=3."""

    label = "explicit-version publish"
    names = ("alpha", "beta")

    def setup(self) -> None:
        for v in (10, 20):
            publish_inprocess(self.repo, self.names, [model_entry(n, f"seed{v}", self.bigs[0], v) for n in self.names])

    def trial(self, i: int, snaps: Snaps, last: Last | None) -> tuple[Op, dict[str, Intent]]:
        if self.retry(last, 0.3) and last:
            op = last.op
        else:
            models = []
            for n in self.names:
                b = snaps[n]
                assert b is not None
                newest = max(b.versions)
                free = [v for v in range(1, newest) if v not in b.versions]
                if free and self.rng.random() < 0.5:
                    version = self.rng.choice(free)
                    self.outcomes["lower_than_newest"] += 1
                else:
                    version = newest + self.rng.randint(1, 4)
                    self.outcomes["higher_than_newest"] += 1
                models.append(model_entry(n, f"c{i}", self.bigs[i % 2], version))
            op = self.publish_op(models)
        return op, {m["name"]: intend_publish(snaps[m["name"]], m, force=False) for m in op["models"]}


def test_sigkill_explicit_version_publish(tmp_path: Path, bigs: tuple[Path, Path], rng: random.Random) -> None:
    outcomes = run_scenario(ExplicitVersions(tmp_path / "repo", bigs, rng))
    assert outcomes["lower_than_newest"] >= 10 and outcomes["higher_than_newest"] >= 10


# --- (d) rollback, with and without prune -------------------------------------------------------------


class Rollback(Scenario):
    """Roll alpha, beta (latest 2) and gamma back (default target, an explicit older one, or forward to a kept
    newer one), with or without prune; refilled by publishes in-process when too few versions are left."""

    label = "rollback"
    keep = 5

    def setup(self) -> None:
        for k in range(4):
            heal(self.repo, self.names, self.bigs[k % 2], f"seed{k}", self.keep)

    def heal(self, tag: str, before: Snaps) -> Snaps:
        return heal(self.repo, self.names, self.bigs[0], tag, self.keep, before)

    def prepare(self, i: int, snaps: Snaps) -> Snaps | None:
        refilled = None
        for k in range(4):
            if all(s and len(s.versions) >= 3 and min(s.versions) < s.head for s in snaps.values()):
                break
            models = [model_entry(n, f"refill{i}.{k}", self.bigs[k % 2], None, self.keep) for n in self.names]
            snaps = refilled = publish_inprocess(self.repo, self.names, models, snaps)
            self.outcomes["refills"] += 1
        return refilled

    def trial(self, i: int, snaps: Snaps, last: Last | None) -> tuple[Op, dict[str, Intent]]:
        models, intents = [], {}
        for n in self.names:
            b = snaps[n]
            assert b is not None
            prune = self.rng.random() < 0.5
            above = [v for v in b.versions if v > b.head]
            below = [v for v in b.versions if v < b.head]
            r = self.rng.random()
            to = self.rng.choice(above) if above and r < 0.2 else None if r < 0.6 else self.rng.choice(below)
            self.outcomes["prune" if prune else "no_prune"] += 1
            self.outcomes["forward" if to is not None and to > b.head else "back"] += 1
            models.append({"name": n, "to": to, "prune": prune})
            intents[n] = intend_rollback(b, n, to, prune=prune)
        return {"op": "rollback", "repo": str(self.repo), "models": models}, intents

    def after(self, op: Op, before: Snaps, now: Snaps) -> None:
        for m in op["models"]:
            b, n = before[m["name"]], now[m["name"]]
            assert b is not None and n is not None
            if not m["prune"]:
                assert set(n.versions) == set(b.versions), f"{m['name']}: rollback without prune lost versions"


def test_sigkill_rollback(tmp_path: Path, bigs: tuple[Path, Path], rng: random.Random) -> None:
    outcomes = run_scenario(Rollback(tmp_path / "repo", bigs, rng))
    assert outcomes["prune"] >= 10 and outcomes["no_prune"] >= 10


# --- concurrency ------------------------------------------------------------------------------------------


def _concurrent_round(tmp_path: Path, repo: Path, rnd: int, versions: list[int | None]) -> list[dict[str, Any]]:
    """Start one child per version, each publishing alpha and beta; release them together once all are ready."""
    go = tmp_path / f"go{rnd}"
    ready = [tmp_path / f"ready{rnd}.{i}" for i in range(len(versions))]
    procs = []
    for i, version in enumerate(versions):
        tag = f"r{rnd}p{i}"
        big_i = tmp_path / f"{tag}.bin"
        big_i.write_bytes(tag.encode() * 200000)
        op = {"op": "publish", "repo": str(repo), "force": False,
              "models": [model_entry(n, tag, big_i, version, None) for n in ("alpha", "beta")]}
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.publish_crash_ops", str(ready[i]), str(go)],
            cwd=CHECKOUT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(op) + "\n")
        proc.stdin.flush()
        procs.append(proc)
    deadline = time.monotonic() + 180.0  # a loaded machine imports slowly: a deadline, not a pace
    while not all(r.exists() for r in ready):  # every child imported and waits at the barrier
        for p in procs:
            if p.poll() is not None:
                pytest.fail(f"child exited before the barrier: {p.communicate()[1]}")
        assert time.monotonic() < deadline, "children not ready within 180 s"
        time.sleep(0.005)
    go.touch()
    results = []
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
        results.append(json.loads(out))
    return results


def test_concurrent_publishes_serialize(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    names = ("alpha", "beta")
    for rnd in range(3):
        results = _concurrent_round(tmp_path, repo, rnd, [None, None])
        for name in names:
            assert [r[name][1] for r in results] == ["new", "new"], results
            assert sorted(r[name][0] for r in results) == [2 * rnd + 1, 2 * rnd + 2], results
        snaps = observe(repo, names)
        for name in names:  # the later publish got the higher number and serves it, with its config
            s = snaps[name]
            assert s is not None and s.head == 2 * rnd + 2
            last = next(i for i, r in enumerate(results) if r[name][0] == s.head)
            assert s.versions[s.head].content.tag == tag_bytes(name, f"r{rnd}p{last}")
    assert verify_repository(repo) == []
    for name in names:
        infos = list_versions(repo, name)
        assert [i.number for i in infos] == [1, 2, 3, 4, 5, 6]
        assert all(i.complete for i in infos)
        assert len({(i.path / "model.onnx").read_bytes()[:5] for i in infos}) == 6


def test_concurrent_explicit_version_publishes_serialize(tmp_path: Path) -> None:
    """Four children publish alpha and beta at different explicit versions at once: the lock runs them one
    after the other, so the last one serves its version, with its config, for both models, and the others
    are kept whole."""
    repo = tmp_path / "repo"
    names = ("alpha", "beta")
    published: dict[int, str] = {}
    for rnd in range(3):
        versions: list[int | None] = [10 * rnd + v for v in (3, 7, 5, 9)]
        results = _concurrent_round(tmp_path, repo, rnd, versions)
        for i, (version, r) in enumerate(zip(versions, results, strict=True)):
            assert version is not None
            published[version] = f"r{rnd}p{i}"
            for name in names:
                assert r[name] == [version, "new", True], r
        snaps = observe(repo, names)  # each: the live config is the served version's config
        heads = set()
        for name in names:
            s = snaps[name]
            assert s is not None
            assert sorted(s.versions) == sorted(published), s.versions
            assert s.head in versions
            assert s.pinned == served_set(POLICY[name], list(s.versions), s.head)
            assert s.live == serving.live_config(config_text(name, published[s.head]), s.pinned, s.head)
            for v, snap in s.versions.items():
                assert snap.content.tag == tag_bytes(name, published[v])
            heads.add(s.head)
        assert len(heads) == 1, f"alpha and beta serve versions of different publishes: {heads}"
        assert verify_repository(repo) == []


# --- a kill inside the writability probe ------------------------------------------------------------------


@pytest.mark.parametrize("operation", ["publish", "rollback"])
def test_sigkill_in_writability_probe_leaves_nothing_after_the_next_publish(
    tmp_path: Path, bigs: tuple[Path, Path], operation: str
) -> None:
    """The random trials hit this now and then (probe_file_left); here the worker SIGKILLs itself at the exact
    moment, just before it unlinks the probe file. Triton is not affected (it ignores files in a model dir),
    but the next publish must remove what a killed run left, as it does for temp configs and staging."""
    repo, names = tmp_path / "repo", ("alpha",)
    heal(repo, names, bigs[0], "seed1")
    heal(repo, names, bigs[1], "seed2")
    if operation == "publish":
        op = {"op": "publish", "repo": str(repo), "force": False, "models": [model_entry("alpha", "t", bigs[0])]}
    else:
        op = {"op": "rollback", "repo": str(repo), "models": [{"name": "alpha", "to": None, "prune": False}]}
    op["kill_before_unlink"] = PROBE_PREFIX
    workers = Workers()
    try:
        assert workers.run(op, None)[0] == "killed"
    finally:
        workers.close()
    left = [p.name for p in (repo / "alpha").iterdir() if p.name.startswith(PROBE_PREFIX)]
    assert len(left) == 1, left  # the killed run's probe file
    observe(repo, names)  # what Triton sees is fine
    assert any("stale file" in p or "stale temporary" in p for p in verify_repository(repo))
    heal(repo, names, bigs[0], "heal")  # the next publish removes it, as it does temp configs and staging
    still = [p.name for p in (repo / "alpha").iterdir() if p.name.startswith(PROBE_PREFIX)]
    assert still == [], f"{still} left by the killed run is still there after the next publish"
