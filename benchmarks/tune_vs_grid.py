"""The tuner's search vs the exhaustive grid, measured on one real tritonserver in one run (issue 11).

    python benchmarks/tune_vs_grid.py            # ~10 minutes on 2 shared cores; --json FILE
    python benchmarks/tune_vs_grid.py --quick    # ~4 minutes: shorter windows, a smaller space

Serves two models from one spec through the library (`Pipeline.publish`, `up`, `down`) on free ports
of 127.0.0.1: `ppocr_det` (PP-OCRv4 text detector from the rapidocr wheel, tests/data/third_party.toml;
~4 ms per 128x128 image on one CPU core, batching gains little) and the quickstart `classifier` (a tiny
MLP: per-request overhead dominates, batching gains a lot). For each model, through `tune_model` (the
same trial code `deployer tune` runs: repository-API load, served-config check, `measure`):

1. grid: every candidate of the tune space (`search.grid`);
2. tuner: coordinate descent (the default search) with a budget of 25 % of the grid's trials;
3. confirm: the grid's best and the tuner's pick measured again, alternating, 3 times each (skipped when
   they are the same config).

Printed per model: grid trials and best objective, tuner trials and best objective, the trial
fraction (target <= 25 %) and best_tuner / best_grid (target >= 0.95). Grid and tuner measure
separately, so a ratio of two measurements of the same config is noise, and the grid's best is the
maximum of many noisy values (biased upwards). Three ratios are printed; the target is judged on the
first that applies: (a) the confirm round (medians of the paired re-measurements), (b) the grid's own
measurement of the tuner's pick over the grid's best (same measuring run), (c) the tuner's own value
over the grid's best (the naive one).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import bench_serving

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from deployer.tune import TuneResult  # noqa: E402
from deployer.tune.search import Budget, Evaluate, Objective, SearchResult, grid  # noqa: E402
from deployer.tune.space import Candidate, Space  # noqa: E402

HOST = "127.0.0.1"
CONFIRM_ROUNDS = 3

# Per model: the tune section (space small enough for a grid on 2 cores), and the start config.
SPACES = {
    "full": {"max_batch_size": [1, 2, 4, 8, 16], "max_queue_delay_microseconds": [0, 1000, 4000],
             "instance_count": [1, 2]},
    "quick": {"max_batch_size": [1, 4, 16], "max_queue_delay_microseconds": [0, 2000, 8000],
              "instance_count": [1, 2]},
}
WINDOWS = {"full": {"warmup_s": 0.3, "window_s": 0.7, "max_windows": 3},
           "quick": {"warmup_s": 0.2, "window_s": 0.4, "max_windows": 3}}


def write_spec(work: Path, ports: tuple[int, ...], size: str) -> Path:
    """One spec with both models; each starts from a plain config (mbs 4, no preferred sets, no delay)."""
    from models import third_party_model

    shutil.copy(third_party_model("ppocr_det"), work / "ppocr_det.onnx")
    shutil.copy(ROOT / "examples" / "quickstart" / "classifier.onnx", work / "classifier.onnx")
    load = {**WINDOWS[size]}

    def tune(concurrency: int, p99_ms: float) -> dict[str, Any]:
        return {"p99_ms": p99_ms, "load": {"concurrency": [concurrency], **load}, "space": SPACES[size],
                "budget": {"trials": 1000}}

    def model(name: str, t: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return {"name": name, "source": f"{name}.onnx", "max_batch_size": 4,
                "dynamic_batching": {"max_queue_delay_microseconds": 0},
                "instance_group": [{"kind": "CPU", "count": 1}], "tune": t, **extra}

    image = [1, 3, 128, 128]  # H, W multiples of 32; the request shape (opt) of every trial

    spec = {
        "repository": "model_repository",
        "server": {"runtime": "local", "http_port": ports[0], "grpc_port": ports[1], "metrics_port": ports[2]},
        "models": [model("ppocr_det", tune(4, 250.0),
                         shapes={"x": {"min": image, "opt": image, "max": image}}),
                   model("classifier", tune(8, 50.0))],
    }
    path = work / "deployer.yaml"
    path.write_text(json.dumps(spec, indent=2), encoding="utf-8")  # JSON is YAML
    return path


def _value(obj: Objective, r: TuneResult, c: Candidate) -> float | None:
    """The objective's value of `c` as measured in run `r` (None: not measured, failed or infeasible)."""
    for tr in r.trials:
        m = tr.measurement
        if tr.candidate == c and m is not None and obj.feasible(m):
            return obj.value(m)
    return None


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:,.1f}"


def compare(p: Any, server: Any, name: str) -> dict[str, Any]:
    from deployer.tune import plan_tune, tune_model

    plan, validator = plan_tune(p.deployment, name)
    obj = plan.objective
    n_grid = plan.space.size()

    def progress(what: str) -> Any:
        def show(kind: str, index: int, c: Candidate, trial: Any) -> None:
            if kind == "done":
                m = trial.measurement
                text = f"{obj.value(m):,.0f} p99 {m.p99_ms:.1f} ms" if m else trial.error[:60]
                print(f"    {what} {index:3d} {c.label():40s} {text}", flush=True)
        return show

    def fixed(cands: list[Candidate]) -> Any:
        def run(space: Space, start: Candidate, ev: Evaluate, o: Objective, b: Budget) -> SearchResult:
            return grid(space, ev, o, cands)
        return run

    def full(space: Space, start: Candidate, ev: Evaluate, o: Objective, b: Budget) -> SearchResult:
        return grid(space, ev, o)

    print(f"== {name}: {obj.describe()}, {plan.loads[0].concurrency} clients, grid of {n_grid} candidates",
          flush=True)
    t0 = time.monotonic()
    g = tune_model(plan, validator, server, dry_run=True, search=full, progress=progress("grid "))
    t_grid = time.monotonic() - t0
    budget = max(1, n_grid // 4)
    t0 = time.monotonic()
    t = tune_model(dataclasses.replace(plan, budget=Budget(trials=budget)), validator, server, dry_run=True,
                   progress=progress("tuner"))
    t_tune = time.monotonic() - t0
    if g.best is None or t.best is None or g.best.measurement is None or t.best.measurement is None:
        raise RuntimeError(f"{name}: nothing measured (grid best {g.best}, tuner best {t.best})")
    gb, tb = g.best.candidate, t.best.candidate
    best_grid, best_tuner = obj.value(g.best.measurement), obj.value(t.best.measurement)
    ratios: dict[str, float | None] = {
        "confirm": None,
        "grid_of_tuner_pick": (v / best_grid) if (v := _value(obj, g, tb)) is not None else None,
        "tuner_own": best_tuner / best_grid,
    }
    confirm: dict[str, list[float]] = {}
    if gb == tb:
        ratios["confirm"] = 1.0
        print("  confirm: the tuner picked the grid's best config", flush=True)
    else:
        c = tune_model(plan, validator, server, dry_run=True, search=fixed([gb, tb] * CONFIRM_ROUNDS),
                       progress=progress("check"))
        for who, cand in (("grid", gb), ("tuner", tb)):
            confirm[who] = [obj.value(tr.measurement) for tr in c.trials
                            if tr.candidate == cand and tr.measurement is not None and obj.feasible(tr.measurement)]
        if confirm["grid"] and confirm["tuner"]:
            ratios["confirm"] = statistics.median(confirm["tuner"]) / statistics.median(confirm["grid"])
    used = next(k for k in ("confirm", "grid_of_tuner_pick", "tuner_own") if ratios[k] is not None)
    ratio, fraction = ratios[used], len(t.trials) / len(g.trials)
    assert ratio is not None
    unit = "infer/s"  # both models tune max_throughput (write_spec)
    print(f"  grid : {len(g.trials):3d} trials in {t_grid:5.0f} s, best {best_grid:,.1f} {unit}  ({gb.label()})")
    print(f"  tuner: {len(t.trials):3d} trials in {t_tune:5.0f} s, best {best_tuner:,.1f} {unit}  ({tb.label()})"
          f"{'  [budget spent]' if len(t.trials) >= budget else ''}")
    if confirm:
        print(f"  confirm (alternating re-measurement): grid's best {', '.join(map(_fmt, confirm['grid']))}; "
              f"tuner's pick {', '.join(map(_fmt, confirm['tuner']))} {unit}")
    print(f"  best_tuner / best_grid: (a) confirm {_fmt3(ratios['confirm'])}, (b) grid's value of the tuner's "
          f"pick {_fmt3(ratios['grid_of_tuner_pick'])}, (c) tuner's own value {_fmt3(ratios['tuner_own'])}")
    print(f"  => ratio {ratio:.3f} [{used}] (target >= 0.95: {'OK' if ratio >= 0.95 else 'MISSED'}), "
          f"trial fraction {fraction:.1%} (target <= 25 %: {'OK' if fraction <= 0.25 else 'MISSED'})", flush=True)
    return {"model": name, "objective": obj.describe(), "grid_trials": len(g.trials), "grid_best": best_grid,
            "grid_best_config": gb.as_dict(), "grid_seconds": t_grid, "tuner_trials": len(t.trials),
            "tuner_best": best_tuner, "tuner_best_config": tb.as_dict(), "tuner_seconds": t_tune,
            "confirm": confirm, "ratios": ratios, "ratio": ratio, "ratio_from": used, "trial_fraction": fraction}


def _fmt3(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shorter windows and a smaller space (~4 minutes)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    from deployer import Pipeline
    from deployer.tune import TuneServer

    size = "quick" if args.quick else "full"
    out: dict[str, Any] = {"cores": os.cpu_count(), "loadavg_start": os.getloadavg(), "size": size, "models": []}
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tune_vs_grid_") as tmp:
        spec = write_spec(Path(tmp), bench_serving.free_ports(3), size)
        p = Pipeline.load(spec)
        p.publish()
        state = p.up()
        try:
            server = TuneServer(state.http_url, state.runtime, state.grpc_url)
            print(f"tritonserver ({state.runtime}) at {state.http_url}, {os.cpu_count()} cores shared with "
                  f"the load generator; {size} space", flush=True)
            for name in ("ppocr_det", "classifier"):
                out["models"].append(compare(p, server, name))
        finally:
            p.down()
    out["seconds"] = time.monotonic() - t0
    out["loadavg_end"] = os.getloadavg()
    print("\nsummary (ratio: best_tuner / best_grid, from the comparison named in brackets)")
    for r in out["models"]:
        print(f"  {r['model']:11s} grid {r['grid_trials']:3d} trials, best {r['grid_best']:10,.1f} | tuner "
              f"{r['tuner_trials']:3d} trials, best {r['tuner_best']:10,.1f} | ratio {r['ratio']:.3f} "
              f"[{r['ratio_from']}] | trials {r['trial_fraction']:.1%}")
    print(f"total {out['seconds']:.0f} s; load average before/after: {out['loadavg_start'][0]:.2f} / "
          f"{out['loadavg_end'][0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
