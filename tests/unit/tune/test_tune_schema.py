"""The `tune:` section: strict, merged from `defaults`, defaults that work with no section at all."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from deployer.errors import SpecError, UserError
from deployer.spec import load_deployment
from deployer.tune import plan_tune

ROOT = Path(__file__).resolve().parents[3]


def _spec(tmp_path: Path, model_extra: str = "", defaults: str = "") -> Path:
    shutil.copy(ROOT / "examples" / "quickstart" / "classifier.onnx", tmp_path / "classifier.onnx")
    path = tmp_path / "deployer.yaml"
    path.write_text(f"repository: repo\n{defaults}models:\n  - name: classifier\n    source: classifier.onnx\n"
                    f"    max_batch_size: 16\n{model_extra}")
    return path


def test_no_tune_section_gives_a_working_plan(tmp_path: Path) -> None:
    plan, _ = plan_tune(load_deployment(_spec(tmp_path)))
    assert plan.model.name == "classifier" and plan.objective.kind == "max_throughput"
    assert plan.start.max_batch_size == 16 and plan.space.contains(plan.start)
    assert plan.space.max_batch_size == (1, 2, 4, 8, 16, 32)
    assert plan.loads[0].concurrency == 16 and plan.inputs["features"].shape == (1, 16)
    assert plan.space.size() > 4 * plan.budget.trials


def test_tune_merges_from_defaults_and_the_model_wins(tmp_path: Path) -> None:
    path = _spec(tmp_path, "    tune: {budget: {trials: 7}}\n",
                 "defaults:\n  tune: {p99_ms: 50, budget: {trials: 3, minutes: 2}, load: {concurrency: [4, 8]}}\n")
    plan, _ = plan_tune(load_deployment(path))
    assert plan.budget.trials == 7 and plan.budget.seconds == 120
    assert plan.objective.p99_ms == 50 and [ld.concurrency for ld in plan.loads] == [4, 8]


@pytest.mark.parametrize(("extra", "needle"), [
    ("    tune: {objective: fastest}\n", "tune.objective"),
    ("    tune: {objective: min_latency, p99_ms: 5}\n", "p99_ms is the budget"),
    ("    tune: {space: {max_batch_size: {min: 8, max: 4}}}\n", "min 8 > max 4"),
    ("    tune: {budget: {trials: 0}}\n", "tune.budget.trials"),
    ("    tune: {lod: {}}\n", "lod"),
])
def test_bad_tune_input_is_a_located_spec_error(tmp_path: Path, extra: str, needle: str) -> None:
    with pytest.raises(SpecError) as exc:
        load_deployment(_spec(tmp_path, extra))
    assert needle in exc.value.render() and "deployer.yaml:" in exc.value.render()


def test_candidates_pass_the_spec_rules(tmp_path: Path) -> None:
    # explicit shapes: a max_batch_size below the shapes' max batch breaks a spec rule, so it is not a candidate
    path = _spec(tmp_path, "    shapes: {features: {min: [1, 16], opt: [4, 16], max: [8, 16]}}\n")
    plan, validator = plan_tune(load_deployment(path))
    assert min(plan.space.max_batch_size) == 8
    assert plan.inputs["features"].shape == (1, 16)
    from dataclasses import replace

    assert validator.problems(plan, replace(plan.start, max_batch_size=4, preferred_batch_size=()))
    assert validator.problems(plan, plan.start) == []


def test_unknown_model_or_shapes_are_bad_input(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no model 'nope'"):
        plan_tune(load_deployment(_spec(tmp_path)), "nope")
    with pytest.raises(UserError, match="no input named x"):
        plan_tune(load_deployment(_spec(tmp_path, "    tune: {load: {shapes: {x: [1, 2]}}}\n")))
