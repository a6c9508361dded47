"""A tune run on a running server: trials through the repository API, the search, restore, write-back.

`tune_model(plan, validator, server)` is what `Pipeline.tune` calls once it has a server (its own,
or the one given by URL). The original config is served again at the end, on failure and on Ctrl-C.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import logging
import math
import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deployer.errors import CheckFailed, DeployerError, UserError
from deployer.smoke.load import LoadSpec, Measurement, measure
from deployer.tune.plan import TunePlan, Validator
from deployer.tune.search import Search, coordinate_descent
from deployer.tune.session import ModelSession, candidate_config
from deployer.tune.space import Candidate
from deployer.tune.writeback import MARKER, check_inline, check_rewrite, rewrite

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TuneServer:
    """Where the trials run: `http_url` host:port, and how the server was started (for the record)."""

    http_url: str
    runtime: str  # local | docker | compose | url
    grpc_url: str | None = None
    gpus: str = "none"


@dataclass(frozen=True)
class Trial:
    """One candidate: its measurement per load point, the one the objective counts, and why it failed."""

    index: int
    candidate: Candidate
    measurements: tuple[Measurement, ...] = ()
    chosen: int | None = None  # index into measurements / plan.loads
    feasible: bool = False
    error: str = ""
    seconds: float = 0.0
    served: dict[str, Any] | None = None  # the knobs the server reported after loading it (checked equal)

    @property
    def measurement(self) -> Measurement | None:
        """The measurement the objective counts (the best load point)."""
        return self.measurements[self.chosen] if self.chosen is not None else None


@dataclass(frozen=True)
class TuneResult:
    """What `deployer tune` found and did."""

    model: str
    spec_path: Path
    objective: str
    load: str
    server: str
    trials: tuple[Trial, ...]
    best: Trial | None
    original: Trial | None
    met: bool
    written: bool
    dry_run: bool
    diff: str
    grid_size: int
    budget_trials: int
    seconds: float
    p99_budget_ms: float | None = None
    min_throughput: float | None = None
    batch_size: int = 1
    comment: tuple[str, ...] = field(default=())
    loads: tuple[LoadSpec, ...] = ()  # the load points, in the order of each trial's measurements

    def raise_for_unmet(self) -> None:
        """CheckFailed (exit 1) when no candidate met the objective."""
        if not self.met:
            best = self.best.candidate.label() if self.best else "none measured"
            raise CheckFailed(f"{self.model}: no candidate met {self.objective} in {len(self.trials)} trials "
                              f"(closest: {best}); the spec was not changed")


Progress = Callable[[str, int, Candidate, "Trial | None"], None]


def describe_load(plan: TunePlan) -> str:
    """`closed loop c=16, batch 1` / `open loop 200 req/s poisson`."""
    parts = []
    for ld in plan.loads:
        parts.append(f"c={ld.concurrency}" if ld.mode == "closed" else f"{ld.rate:g} req/s {ld.arrival}")
    modes = {ld.mode for ld in plan.loads}
    mode = "closed loop" if modes == {"closed"} else "open loop" if modes == {"open"} else "closed and open loop"
    return f"{mode} {', '.join(parts)}, batch {plan.settings.load.batch_size}, {plan.loads[0].protocol}"


def describe_server(server: TuneServer, version: str, original: dict[str, Any]) -> str:
    """`local Triton 2.51.0, model on CPU (host: <cpu>, 2 cores)`."""
    kinds = sorted({str(g.get("kind", "KIND_AUTO")).removeprefix("KIND_") for g in original.get("instance_group", [])})
    where = "/".join(kinds) or "AUTO"
    host = ""
    if server.runtime != "url":
        host = f"; host {_cpu_name()}, {os.cpu_count()} cores, GPUs {server.gpus}"
    return f"{server.runtime} Triton {version or '?'}, model on {where}{host}"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return " ".join(line.split(":", 1)[1].split())[:60]
    except OSError:
        pass
    return platform.machine() or "CPU"


def tune_model(plan: TunePlan, validator: Validator, server: TuneServer, *, dry_run: bool = False,
               progress: Progress | None = None, clock: Callable[[], float] = time.monotonic,
               search: Search | None = None) -> TuneResult:
    """Run the search (default: coordinate descent) against `server`, restore the original config, and
    write the winner into the spec."""
    m = plan.model
    check_inline(_read_text(plan.deployment.spec_path), m.index, _tuned_paths(plan))
    if server.grpc_url is None and any(ld.protocol == "grpc" for ld in plan.loads):
        raise UserError(f"models[{m.index}].tune.load.protocol is grpc, but no gRPC endpoint of the server is known",
                        hint="give it with --grpc-url HOST:PORT next to --url")
    t0 = clock()
    session = ModelSession(server.http_url, m.name)
    trials: list[Trial] = []
    try:
        original = session.begin()
        version = session.server_version()

        def evaluate(c: Candidate) -> Measurement | None:
            trial = _trial(plan, validator, session, server, original, c, len(trials) + 1, progress)
            trials.append(trial)
            return trial.measurement

        if search is None:
            coordinate_descent(plan.space, plan.start, evaluate, plan.objective, plan.budget, clock=clock)
        else:
            search(plan.space, plan.start, evaluate, plan.objective, plan.budget)
    finally:
        try:
            session.restore()
        finally:
            session.close()
    best = max(trials, key=lambda tr: plan.objective.key(tr.measurement), default=None)
    met = best is not None and best.feasible
    server_text = describe_server(server, version, original)
    comment: tuple[str, ...] = ()
    diff, written = "", False
    if met and best is not None and best.candidate != plan.start:
        comment = _comment(plan, best, server_text, len(trials))
        diff, written = write_back(plan, best.candidate, comment, dry_run=dry_run)
    return TuneResult(
        model=m.name, spec_path=plan.deployment.spec_path, objective=plan.objective.describe(),
        load=describe_load(plan), server=server_text, trials=tuple(trials), best=best,
        original=next((tr for tr in trials if tr.candidate == plan.start), None), met=met, written=written,
        dry_run=dry_run, diff=diff, grid_size=plan.space.size(), budget_trials=plan.budget.trials,
        seconds=clock() - t0, p99_budget_ms=plan.objective.p99_ms, min_throughput=plan.objective.min_throughput,
        batch_size=plan.objective.batch_size, comment=comment, loads=plan.loads,
    )


def _tuned_paths(plan: TunePlan) -> list[tuple[str | int, ...]]:
    return [("max_batch_size",), ("dynamic_batching", "preferred_batch_size"),
            ("dynamic_batching", "max_queue_delay_microseconds"), ("dynamic_batching", "default_queue_policy"),
            ("instance_group",)]


def _trial(plan: TunePlan, validator: Validator, session: ModelSession, server: TuneServer,
           original: dict[str, Any], c: Candidate, index: int, progress: Progress | None) -> Trial:
    if progress:
        progress("start", index, c, None)
    t0 = time.monotonic()
    problems = validator.problems(plan, c)
    if problems:
        trial = Trial(index, c, error=f"invalid: {problems[0]}")
    else:
        served: dict[str, Any] | None = None
        try:
            served = served_knobs(session.apply(candidate_config(original, c)))
            ms = tuple(measure(server.http_url, plan.model.name, plan.inputs, ld, grpc_url=server.grpc_url)
                       for ld in plan.loads)
            chosen = max(range(len(ms)), key=lambda i: plan.objective.key(ms[i]))
            trial = Trial(index, c, ms, chosen, plan.objective.feasible(ms[chosen]),
                          seconds=time.monotonic() - t0, served=served)
        except DeployerError as exc:
            if exc.exit_code != 1:  # environment: the server is gone; no point in trying more
                raise
            log.warning("trial %d (%s) failed: %s", index, c.label(), exc.message)
            trial = Trial(index, c, error=exc.message, seconds=time.monotonic() - t0, served=served)
    if progress:
        progress("done", index, c, trial)
    return trial


def served_knobs(config: dict[str, Any]) -> dict[str, Any]:
    """The tuned knobs as the server reports them (Triton's JSON config: int64 fields are strings)."""
    db = config.get("dynamic_batching") or {}
    groups = config.get("instance_group") or [{}]
    return {"max_batch_size": int(config.get("max_batch_size", 0)),
            "preferred_batch_size": [int(x) for x in db.get("preferred_batch_size", [])],
            "max_queue_delay_microseconds": int(db.get("max_queue_delay_microseconds", 0)),
            "instance_count": int(groups[0].get("count", 1))}


def _comment(plan: TunePlan, best: Trial, server: str, n: int) -> tuple[str, ...]:
    m = best.measurement
    assert m is not None
    obj = plan.objective
    day = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d")
    value = (f"{obj.throughput(m):.0f} infer/s at p99 {m.p99_ms:.2f} ms" if obj.kind == "max_throughput"
             else f"p99 {m.p99_ms:.2f} ms at {obj.throughput(m):.0f} infer/s")
    load = describe_load(plan)
    if best.chosen is not None and len(plan.loads) > 1:
        ld: LoadSpec = plan.loads[best.chosen]
        load += f" (best at {'c=' + str(ld.concurrency) if ld.mode == 'closed' else f'{ld.rate:g} req/s'})"
    return (
        f"{MARKER} {day}: {obj.describe()} -> {value}",
        f"{MARKER} load: {load}; {n} trials of a {plan.space.size()}-point grid",
        f"{MARKER} server: {_printable(server)}",
    )


def _printable(text: str) -> str:
    return "".join(ch if ch.isprintable() else " " for ch in text)


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8; the tuner writes UTF-8 specs only") from None


def write_back(plan: TunePlan, c: Candidate, comment: tuple[str, ...], *, dry_run: bool) -> tuple[str, bool]:
    """Rewrite the spec in place (validated copy, then an atomic replace); returns (unified diff, written)."""
    from deployer.spec import load_deployment

    path = plan.deployment.spec_path
    old = _read_text(path)
    updates = plan.updates(c)
    new = rewrite(old, plan.model.index, updates, comment)
    check_rewrite(old, new, plan.model.index, updates)
    diff = "".join(difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                        f"a/{path.name}", f"b/{path.name}"))
    if dry_run:
        return diff, False
    import hashlib

    if hashlib.sha256(old.encode("utf-8")).hexdigest() != plan.deployment.spec_sha256:
        raise UserError(f"{path} changed while tuning; not overwriting it", hint="run deployer tune again")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.tune-", suffix=path.suffix, dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(new.encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())
        tmp.chmod(path.stat().st_mode & 0o7777)
        tuned = load_deployment(tmp).model(plan.model.name)  # the rewritten spec must validate
        _check_tuned(tuned, c)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    log.info("wrote %s", path)
    return diff, True


def _check_tuned(model: Any, c: Candidate) -> None:
    from deployer.spec.schema_tune import TuneSpec
    from deployer.tune.plan import start_candidate

    got = start_candidate(model, model.spec.tune or TuneSpec())
    if got != c:
        raise AssertionError(f"the rewritten spec resolves to {got.label()}, not {c.label()}")


def nan_to_none(x: float) -> float | None:
    """JSON has no NaN."""
    return None if (isinstance(x, float) and math.isnan(x)) else x
