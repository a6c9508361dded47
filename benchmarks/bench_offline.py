"""Offline pipeline cost: validate + render + publish for N generated models (issue 2: <= 5 s for 500).

    python benchmarks/bench_offline.py                 # 250 and 500 models, library API, plus the CLI for 500
    python benchmarks/bench_offline.py --models 500 --profile   # cProfile of one run, top functions

Each model is a distinct tiny ONNX file (x[N,4] -> Relu -> y[N,4], distinct bytes) listed in one spec
with dynamic batching; inputs/outputs are read from the ONNX files, as a user's spec would.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib
import io
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Timing:
    """Seconds per stage for one run."""

    models: int
    validate: float
    render: float
    publish: float
    cpu: float  # process CPU seconds of the three stages (less sensitive to a busy machine than wall time)

    @property
    def total(self) -> float:
        return self.validate + self.render + self.publish


def make_workspace(root: Path, n: int) -> Path:
    """n tiny ONNX models and one spec listing them; returns the spec path."""
    import onnx
    from onnx import TensorProto, helper

    models = root / "models"
    models.mkdir(parents=True)
    lines = ["repository: model_repository", "defaults:", "  max_batch_size: 8",
             "  dynamic_batching: {preferred_batch_size: [4, 8], max_queue_delay_microseconds: 100}", "models:"]
    for i in range(n):
        graph = helper.make_graph(
            [helper.make_node("Relu", ["x"], ["y"])], f"g{i}",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
        model.doc_string = f"model {i}"  # distinct bytes -> distinct sha256, like real models
        onnx.save(model, str(models / f"m{i:04d}.onnx"))
        lines += [f"  - name: m{i:04d}", f"    source: models/m{i:04d}.onnx"]
    spec = root / "spec.yaml"
    spec.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return spec


def run_once(spec: Path) -> Timing:
    """validate (load_deployment), render (render_all) and publish (plan + atomic apply) in-process.

    Publish reuses the rendered configs (what `deployer publish` does in one process: render once).
    """
    from deployer.repository import apply_publish, plan_publish
    from deployer.repository import from_spec as pipeline
    from deployer.spec import load_deployment

    c0 = time.process_time()
    t0 = time.perf_counter()
    dep = load_deployment(spec)
    t1 = time.perf_counter()
    rendered = pipeline.render_all(dep)
    t2 = time.perf_counter()
    result = apply_publish(plan_publish(dep.repository, pipeline.artifacts(dep, rendered)))
    t3 = time.perf_counter()
    cpu = time.process_time() - c0
    assert len(rendered) == len(dep.models) == len(result.models)
    assert all(m.status == "new" for m in result.models)
    return Timing(len(dep.models), t1 - t0, t2 - t1, t3 - t2, cpu)


def fresh(spec: Path) -> None:
    shutil.rmtree(spec.parent / "model_repository", ignore_errors=True)


def cli_seconds(spec: Path, command: str) -> float:
    """Wall time of the real console script (includes interpreter start-up and imports)."""
    deployer = Path(sys.executable).parent / "deployer"
    t0 = time.perf_counter()
    subprocess.run([str(deployer), command, str(spec)], check=True, capture_output=True)
    return time.perf_counter() - t0


def profile(spec: Path, top: int = 30) -> str:
    prof = cProfile.Profile()
    prof.enable()
    run_once(spec)
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(top)
    return buf.getvalue()


def count_fsyncs(*, disable: bool) -> list[int]:
    """Count os.fsync calls in this process (optionally skipping them); returns a live one-element counter."""
    import os

    counter = [0]
    real = os.fsync

    def fsync(fd: int) -> None:
        counter[0] += 1
        if not disable:
            real(fd)

    os.fsync = fsync  # type: ignore[assignment]
    return counter


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, nargs="*", default=[250, 500], help="model counts to time")
    parser.add_argument("--repeat", type=int, default=3, help="runs per count (best is reported)")
    parser.add_argument("--profile", action="store_true", help="cProfile one run of the largest count")
    parser.add_argument("--no-cli", action="store_true", help="skip timing the console script")
    parser.add_argument("--no-fsync", action="store_true",
                        help="DIAGNOSTIC ONLY: make os.fsync a no-op (how much of publish waits for the disk)")
    args = parser.parse_args()
    fsyncs = count_fsyncs(disable=args.no_fsync)

    importlib.import_module("deployer.pipeline")  # imports are not part of the per-model cost

    best: dict[int, Timing] = {}
    with tempfile.TemporaryDirectory(prefix="bench-offline-") as tmp:
        for n in args.models:
            spec = make_workspace(Path(tmp) / f"n{n}", n)
            runs = []
            for _ in range(args.repeat):
                fresh(spec)
                runs.append(run_once(spec))
            best[n] = min(runs, key=lambda t: t.total)
            t = best[n]
            print(f"{n:5d} models: validate {t.validate:6.3f} s  render {t.render:6.3f} s  publish {t.publish:6.3f} s"
                  f"  total {t.total:6.3f} s  ({1000 * t.total / n:.2f} ms/model; CPU {t.cpu:.3f} s; "
                  f"best of {args.repeat})")
        if len(best) >= 2:
            small, large = sorted(best)[0], sorted(best)[-1]
            ratio = best[large].total / best[small].total
            cpu_ratio = best[large].cpu / best[small].cpu
            print(f"linearity: {large}/{small} models = {large / small:.2f}x models -> {ratio:.2f}x wall time, "
                  f"{cpu_ratio:.2f}x CPU time")
        per_model = fsyncs[0] / max(1, sum(args.models) * args.repeat)
        print(f"fsync calls: {fsyncs[0]} ({per_model:.1f} per model published)"
              + (" -- DISABLED, numbers are not crash-safe" if args.no_fsync else ""))
        largest = max(args.models)
        spec = Path(tmp) / f"n{largest}" / "spec.yaml"
        verdict = "OK" if best[largest].total <= 5.0 else "OVER"
        print(f"target: {largest} models in <= 5 s -> {best[largest].total:.2f} s {verdict}")
        if not args.no_cli:
            fresh(spec)
            print(f"CLI   {largest} models: validate {cli_seconds(spec, 'validate'):.2f} s, "
                  f"publish {cli_seconds(spec, 'publish'):.2f} s (wall, incl. ~1 s interpreter start-up)")
        if args.profile:
            fresh(spec)
            print(profile(spec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
