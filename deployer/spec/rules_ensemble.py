"""Ensemble rules: step wiring and dtypes (per ensemble), and cycles between ensembles (per spec)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from deployer.spec.loader import PathT
from deployer.spec.model import ResolvedModel
from deployer.spec.schema import EnsembleStep
from deployer.spec.schema_base import INT64_MAX

if TYPE_CHECKING:
    from deployer.spec.rules import Checker


def _ensemble_dtypes(c: Checker, m: ResolvedModel, p: PathT, step: EnsembleStep, sub: ResolvedModel) -> None:
    """Triton checks that the ensemble's own tensors and the composing model's agree in type."""
    ens_types = {t.name: t.dtype for t in (*m.inputs, *m.outputs)}
    sub_types = {t.name: t.dtype for t in (*sub.inputs, *sub.outputs)}
    for side, mapping in (("inputs", step.inputs), ("outputs", step.outputs)):
        for name, tensor in mapping.items():
            if name in sub_types and tensor in ens_types and sub_types[name] != ens_types[tensor]:
                c.add(m, (*p, side, name), f"{step.model}'s {name!r} is {sub_types[name]} but the ensemble's "
                      f"{tensor!r} is {ens_types[tensor]}", "make the dtypes agree", value=tensor, has_value=True)


def ensemble(c: Checker, m: ResolvedModel) -> None:
    ens = m.spec.ensemble
    assert ens is not None
    inputs = {t.name for t in m.inputs}
    outputs = {t.name for t in m.outputs}
    produced: dict[str, int] = {}
    consumed: set[str] = set()
    for k, step in enumerate(ens.steps):
        p: PathT = ("ensemble", "steps", k)
        for out_tensor in step.outputs.values():
            if out_tensor in produced:
                c.add(m, (*p, "outputs"), f"ensemble tensor {out_tensor!r} is produced twice "
                      f"(also by step {produced[out_tensor]})", "give each step output its own tensor name",
                      value=out_tensor, has_value=True)
            produced[out_tensor] = k
        consumed.update(step.inputs.values())
        if step.version != -1 and not 1 <= step.version <= INT64_MAX:
            c.add(m, (*p, "version"), f"a step version must be -1 (latest) or in 1..{INT64_MAX}",
                  "use -1 to follow the newest version", value=step.version, has_value=True)
        sub = c.by_name.get(step.model)
        if sub is None:
            continue
        if sub.max_batch_size and m.max_batch_size > sub.max_batch_size:
            c.add(m, ("max_batch_size",), f"ensemble max_batch_size must be <= {step.model}'s "
                  f"({sub.max_batch_size})", "lower the ensemble's max_batch_size", value=m.max_batch_size,
                  has_value=True)
        sub_in = {t.name for t in sub.inputs}
        sub_out = {t.name for t in sub.outputs}
        _ensemble_dtypes(c, m, p, step, sub)
        for name in step.inputs:
            if name not in sub_in:
                c.add(m, (*p, "inputs", name), f"{step.model} has no input {name!r}",
                      f"its inputs are: {', '.join(sorted(sub_in))}", of_key=True)
        for name in sub_in - set(step.inputs):
            c.add(m, (*p, "inputs"), f"{step.model}'s input {name!r} is not mapped", "map every input once")
        for name in step.outputs:
            if name not in sub_out:
                c.add(m, (*p, "outputs", name), f"{step.model} has no output {name!r}",
                      f"its outputs are: {', '.join(sorted(sub_out))}", of_key=True)
    for k, step in enumerate(ens.steps):
        for tensor in step.inputs.values():
            if tensor not in inputs and tensor not in produced:
                c.add(m, ("ensemble", "steps", k, "inputs"), f"tensor {tensor!r} is neither an ensemble input "
                      "nor produced by a step", "check the wiring", value=tensor, has_value=True)
    for name in inputs - consumed:
        c.add(m, ("inputs",), f"ensemble input {name!r} is not used by any step", "remove it or map it in a step",
              value=name, has_value=True)
    for name in outputs - set(produced):
        c.add(m, ("outputs",), f"ensemble output {name!r} is not produced by any step",
              "map a step output to it or remove it", value=name, has_value=True)
    for tensor, k in produced.items():
        if tensor not in outputs and tensor not in consumed:
            c.add(m, ("ensemble", "steps", k, "outputs"), f"intermediate tensor {tensor!r} is never used",
                  "consume it in a step or make it an output", value=tensor, has_value=True)


def ensemble_cycles(c: Checker) -> None:
    """An ensemble that contains itself, directly or through other ensembles of the spec, never loads
    (Triton resolves composing models before the ensemble). A cycle is reported at the step that leads back,
    naming the models on it; each step is followed once, so overlapping cycles may surface one fix at a time."""
    steps = {m.name: [(k, s.model) for k, s in enumerate(m.spec.ensemble.steps)] for m in c.models
             if m.backend == "ensemble" and m.spec.ensemble is not None}
    done: set[str] = set()
    for start in steps:
        if start in done:
            continue
        # Iterative depth-first search: `path` is the chain of ensembles being explored, each with the
        # index of its next step to follow.
        path: list[tuple[str, int]] = [(start, 0)]
        on_path = {start}
        while path:
            name, next_step = path[-1]
            if next_step == len(steps[name]):
                path.pop()
                on_path.discard(name)
                done.add(name)
                continue
            path[-1] = (name, next_step + 1)
            k, target = steps[name][next_step]
            if target in on_path:
                names = [n for n, _ in path]
                cycle = [*names[names.index(target):], target]
                c.add(c.by_name[name], ("ensemble", "steps", k, "model"), f"ensemble cycle: {' -> '.join(cycle)}; "
                      "an ensemble cannot contain itself", f"remove the step that leads back to {target!r}",
                      value=target, has_value=True)
            elif target in steps and target not in done:
                path.append((target, 0))
                on_path.add(target)
