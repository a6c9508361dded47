"""Plan a tune run from a validated spec (pure): the model, objective, load, inputs, space and start point;
and the spec edit a candidate means, validated by the spec's own rules.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from deployer.errors import SpecError, UserError
from deployer.smoke.load import LoadSpec
from deployer.spec import Deployment, RawSpec, ResolvedModel, deployment_from_raw
from deployer.spec.schema import InstanceGroup
from deployer.spec.schema_tune import TuneSpec
from deployer.tune.search import Budget, Objective
from deployer.tune.space import DELAY_LADDER, INSTANCE_LADDER, Candidate, Space, filtered, ladder
from deployer.tune.writeback import Sub

log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH_CAP = 32


@dataclass(frozen=True)
class TunePlan:
    """Everything a tune run needs, decided before any server is touched."""

    deployment: Deployment
    model: ResolvedModel
    settings: TuneSpec
    objective: Objective
    loads: tuple[LoadSpec, ...]
    inputs: Mapping[str, npt.NDArray[Any]] = field(repr=False)
    space: Space
    start: Candidate
    budget: Budget
    has_raw_instance_group: bool = False

    def updates(self, c: Candidate) -> dict[str, Any]:
        """The spec keys of the model that change when `c` replaces the start point (Sub = edit inside)."""
        s = self.start
        upd: dict[str, Any] = {}
        if c.max_batch_size != s.max_batch_size:
            upd["max_batch_size"] = c.max_batch_size
        db = Sub()
        if c.preferred_batch_size != s.preferred_batch_size:
            db["preferred_batch_size"] = list(c.preferred_batch_size)
        if c.max_queue_delay_microseconds != s.max_queue_delay_microseconds:
            db["max_queue_delay_microseconds"] = c.max_queue_delay_microseconds
        qp = Sub()
        if c.max_queue_size is not None and c.max_queue_size != s.max_queue_size:
            qp["max_queue_size"] = c.max_queue_size
        timeout = c.default_timeout_microseconds
        if timeout is not None and timeout != s.default_timeout_microseconds:
            qp["default_timeout_microseconds"] = timeout
        if qp:
            db["default_queue_policy"] = qp
        if db:
            upd["dynamic_batching"] = db
        if c.instance_count != s.instance_count:
            groups = self.model.spec.instance_group or [InstanceGroup()]
            if self.has_raw_instance_group:
                upd["instance_group"] = Sub({i: Sub({"count": c.instance_count}) for i in range(len(groups))})
            else:  # inherited from defaults (or Triton's default): the model gets its own list
                upd["instance_group"] = [{**g.model_dump(exclude_defaults=True), "count": c.instance_count}
                                         for g in groups]
        return upd


def _raw_models(dep: Deployment) -> tuple[RawSpec, list[Any]]:
    from deployer.spec.loader import read_yaml

    raw = read_yaml(dep.spec_path)
    return raw, list(raw.data.get("models") or [])


def choose_model(dep: Deployment, name: str | None) -> ResolvedModel:
    """The model to tune: `name`, else the one with a `tune:` section, else the only one that batches."""
    if name is not None:
        try:
            m = dep.model(name)
        except KeyError:
            raise UserError(f"no model {name!r} in {dep.spec_path}",
                            hint=f"models: {', '.join(x.name for x in dep.models)}") from None
        _check_tunable(m)
        return m
    _, raw_models = _raw_models(dep)
    tunable = [m for m in dep.models if m.max_batch_size > 0 and m.backend in ("onnxruntime", "tensorrt")
               and m.spec.sequence_batching is None]
    own = [m for m in tunable if isinstance(raw_models[m.index], Mapping) and "tune" in raw_models[m.index]]
    for group in (own, tunable):
        if len(group) == 1:
            return group[0]
        if len(group) > 1:
            raise UserError(f"several models could be tuned: {', '.join(m.name for m in group)}",
                            hint="name one: deployer tune SPEC MODEL")
    raise UserError("no model to tune: none batches with the onnxruntime or tensorrt backend",
                    hint="name one: deployer tune SPEC MODEL")


def _check_tunable(m: ResolvedModel) -> None:
    if m.backend == "ensemble":
        raise UserError(f"model {m.name!r} is an ensemble; tune its composing models")
    if m.spec.sequence_batching is not None:
        raise UserError(f"model {m.name!r} uses sequence batching; the tuner tunes dynamic batching")


def _objective(dep: Deployment, t: TuneSpec) -> Objective:
    sla = dep.spec.smoke.sla
    p99 = t.p99_ms if t.p99_ms is not None else (sla.p99_ms if sla else None)
    floor = t.min_throughput if t.min_throughput is not None else (sla.min_throughput if sla else None)
    if t.objective == "max_throughput":
        return Objective("max_throughput", p99_ms=p99, batch_size=t.load.batch_size)
    return Objective("min_latency", min_throughput=floor, batch_size=t.load.batch_size)


def _loads(dep: Deployment, t: TuneSpec) -> tuple[LoadSpec, ...]:
    ld = t.load
    common: dict[str, Any] = {"warmup_s": ld.warmup_s, "window_s": ld.window_s, "max_windows": ld.max_windows,
                              "protocol": ld.protocol}
    concurrency = ld.concurrency if ld.concurrency is not None else ([] if ld.rates else [dep.spec.smoke.concurrency])
    return (tuple(LoadSpec(mode="closed", concurrency=c, **common) for c in concurrency)
            + tuple(LoadSpec(mode="open", rate=r, arrival=ld.arrival, **common) for r in ld.rates))


def request_inputs(m: ResolvedModel, t: TuneSpec, seed: int = 0) -> dict[str, npt.NDArray[Any]]:
    """One request's tensors: the given shapes, else the opt shape (batch dim = load.batch_size)."""
    from deployer.onnx.runtime import random_tensor

    given = t.load.shapes or {}
    unknown = sorted(set(given) - {x.name for x in m.inputs})
    if unknown:
        raise UserError(f"models[{m.index}].tune.load.shapes: no input named {', '.join(unknown)}",
                        hint=f"inputs: {', '.join(x.name for x in m.inputs)}")
    batching = m.max_batch_size > 0
    out = {}
    for i, x in enumerate(m.inputs):
        if x.optional and x.name not in given:
            continue
        if x.name in given:
            shape = tuple(given[x.name])
            want = len(x.dims) + (1 if batching else 0)
            if len(shape) != want:
                raise UserError(f"models[{m.index}].tune.load.shapes.{x.name}: rank {len(shape)}, the input needs "
                                f"{want}", hint="full request shapes, batch dim first when the model batches")
        else:
            r = m.shapes.get(x.name)
            inner = tuple(r.opt[1:] if batching else r.opt) if r is not None else tuple(
                1 if d < 0 else d for d in x.dims)
            shape = ((t.load.batch_size, *inner) if batching else inner)
        out[x.name] = random_tensor(x.dtype, shape, np.random.default_rng([seed, i]), x.value_range, x.value,
                                    name=x.name)
    return out


def start_candidate(m: ResolvedModel, t: TuneSpec) -> Candidate:
    """The spec's own settings as a candidate (the first trial, and the baseline of the report)."""
    db = m.spec.dynamic_batching
    qp = db.default_queue_policy if db else None
    groups = m.spec.instance_group or []
    return Candidate(
        max_batch_size=m.max_batch_size,
        preferred_batch_size=tuple(db.preferred_batch_size) if db else (),
        max_queue_delay_microseconds=db.max_queue_delay_microseconds if db else 0,
        instance_count=groups[0].count if groups else 1,
        max_queue_size=(qp.max_queue_size if qp else 0) if t.space.max_queue_size is not None else None,
        default_timeout_microseconds=(qp.default_timeout_microseconds if qp else 0)
        if t.space.default_timeout_microseconds is not None else None,
    )


def _bounds(value: Any) -> tuple[list[int] | None, tuple[int, int] | None]:
    if value is None:
        return None, None
    if isinstance(value, list):
        return value, None
    return None, (value.min, value.max)


def build_space(m: ResolvedModel, t: TuneSpec, start: Candidate) -> Space:
    """The axes' values before validation (see docs/tune.md for the defaults)."""
    sp = t.space
    if m.max_batch_size == 0:  # no batching: only the instance count is left to tune
        given, rng = _bounds(sp.instance_count)
        return Space((0,), (start.max_queue_delay_microseconds,), ladder(given, rng, INSTANCE_LADDER,
                     current=start.instance_count, dense=True))
    cap = max(DEFAULT_MAX_BATCH_CAP, m.max_batch_size)
    if m.requested_backend == "tensorrt" and m.profiles:
        cap = min(r.max[0] for p in m.profiles for r in p.values())  # the engine cannot run larger batches
    given, rng = _bounds(sp.max_batch_size)
    powers = [1 << k for k in range(31) if (1 << k) <= (cap if rng is None else rng[1])]
    mbs = ladder(given, rng, powers, current=m.max_batch_size)
    given, rng = _bounds(sp.max_queue_delay_microseconds)
    delay = ladder(given, rng, DELAY_LADDER, current=start.max_queue_delay_microseconds)
    given, rng = _bounds(sp.instance_count)
    inst = ladder(given, rng, INSTANCE_LADDER, current=start.instance_count, dense=True)
    sets = tuple(tuple(s) for s in sp.preferred_batch_size) if sp.preferred_batch_size is not None else None
    return Space(
        max_batch_size=mbs, max_queue_delay_microseconds=delay, instance_count=inst, preferred_sets=sets,
        max_queue_size=tuple(sorted({*sp.max_queue_size, start.max_queue_size or 0}))
        if sp.max_queue_size is not None else (None,),
        default_timeout_microseconds=tuple(sorted({*sp.default_timeout_microseconds,
                                                   start.default_timeout_microseconds or 0}))
        if sp.default_timeout_microseconds is not None else (None,),
        extra_sets=((start.max_batch_size, start.preferred_batch_size),),
    )


class Validator:
    """Candidate -> problems ([] = valid), by the spec's own rules on the spec with the candidate applied."""

    def __init__(self, plan_model: ResolvedModel, raw: RawSpec, fallback: str | None) -> None:
        self.model, self.raw, self.fallback = plan_model, raw, fallback
        self.cache: dict[Candidate, list[str]] = {}

    def problems(self, plan: TunePlan, c: Candidate) -> list[str]:
        if c not in self.cache:
            from deployer.tune.writeback import _apply

            data = copy.deepcopy(self.raw.data)
            _apply(data["models"][self.model.index], plan.updates(c))
            try:
                deployment_from_raw(RawSpec(self.raw.path, data), fallback=self.fallback)
                self.cache[c] = []
            except SpecError as exc:
                self.cache[c] = [i.format() for i in exc.issues]
        return self.cache[c]


def plan_tune(dep: Deployment, model: str | None = None) -> tuple[TunePlan, Validator]:
    """Decide the run (raises UserError, exit 2, on bad tune input)."""
    m = choose_model(dep, model)
    t = m.spec.tune or TuneSpec()
    raw, raw_models = _raw_models(dep)
    start = start_candidate(m, t)
    plan = TunePlan(
        deployment=dep, model=m, settings=t, objective=_objective(dep, t), loads=_loads(dep, t),
        inputs=request_inputs(m, t), space=build_space(m, t, start), start=start,
        budget=Budget(t.budget.trials, t.budget.minutes * 60 if t.budget.minutes else None),
        has_raw_instance_group=isinstance(raw_models[m.index], Mapping) and "instance_group" in raw_models[m.index],
    )
    fallback = "onnxruntime" if any(x.backend != x.requested_backend for x in dep.models) else None
    validator = Validator(m, raw, fallback)
    from dataclasses import replace

    space = filtered(plan.space, start, lambda c: not validator.problems(plan, c))
    if space.size() < 1:
        raise UserError(f"model {m.name!r}: the tune space is empty", hint="widen models[].tune.space")
    return replace(plan, space=space), validator
