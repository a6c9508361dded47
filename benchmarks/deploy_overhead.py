"""Deploy overhead (issue 9, target <= 1 s): `deployer deploy` of the quickstart, minus the server's own
start-to-ready and the smoke stage, split into its parts; median over runs, before/after side by side.

    python benchmarks/deploy_overhead.py                       # 5 deploys of this checkout
    python benchmarks/deploy_overhead.py --before main --runs 5  # + 5 of git ref `main`, interleaved
    python benchmarks/deploy_overhead.py --before /tmp/old     # or a directory holding a `deployer` package

Each run is `deployer -v deploy SPEC` on a copy of examples/quickstart on free 127.0.0.1 ports, through
deploy_probe.py (the console script's own entry with timing wrappers, see serving_deploy.py for how the
clocks are correlated). `--before` runs another deployer package with the same probe, alternating run by
run with this checkout so that both see the same machine. Rows, in the order things happen:

- imports: every import from `import deployer.cli` to publish (the top packages are listed per run);
- spec load: load + validate without imports, with the CLI's own glue;
- render + publish: config.pbtxt rendered and proven, the repository version published;
- up (deployer's part): backend dir + spawn, readiness polls, load calls;
- start-to-ready [excluded]: the server's init + the union of its model loads (Triton's log);
- smoke [excluded]: the CLI's smoke stage;
- stop: the unload through the repository API (the python backend finalizing its stubs), then
  SIGTERM -> process gone, then deployer's glue;
- report + exit: the report printed, then main() returned -> process gone (interpreter exit).

overhead = wall - start-to-ready - smoke (the issue's definition). The python backend sleeps a fixed 1 s
in every model instance's destructor before it finalizes the stub (`StubLauncher::UpdateHealth`, called
from `~ModelInstanceState`; both quickstart models run on it locally), so a stop that unloads the models
cleanly costs >= 1 s by itself; the last row leaves that server-side shutdown work out too.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import serving_deploy

REPO = Path(__file__).resolve().parent.parent

# coarse row -> the serving_deploy parts it sums (None: computed below)
ROWS: dict[str, tuple[str, ...]] = {
    "interpreter start": ("interpreter start",),
    "imports (import deployer.cli -> publish)": ("imports,",),
    "spec load + validate, CLI glue": ("validate:", "cli glue"),
    "render + publish": ("render", "publish"),
    "up: deployer's part (spawn, polls)": ("up: prepare", "up: deployer glue"),
    "down: unload (python backend >= 1 s)": ("down: unload",),
    "down: SIGTERM -> server gone": ("down: stop: SIGTERM", "down: stop: Triton"),
    "down: deployer glue": ("down: stop: deployer glue",),
    "report": ("report",),
    "interpreter exit": ("interpreter exit",),
}


def free_ports(n: int) -> tuple[int, ...]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return tuple(s.getsockname()[1] for s in socks)
    finally:
        for s in socks:
            s.close()


def breakdown(t: serving_deploy.DeployTiming) -> dict[str, float]:
    """One run in the coarse rows; the rows that are not excluded sum to the overhead exactly."""
    rows = {row: sum(v for k, v in t.parts.items() if k.startswith(prefixes)) for row, prefixes in ROWS.items()}
    rows["other (smoke stage edges, unaccounted)"] = t.overhead - sum(rows.values())
    rows["[excluded] server start-to-ready"] = t.server_start_to_ready
    rows["[excluded] smoke stage"] = t.stages.get("smoke", 0.0)
    rows["wall"] = t.wall
    rows["OVERHEAD = wall - start-to-ready - smoke"] = t.overhead
    rows["overhead without the server's own stop work"] = t.overhead_excl_shutdown
    return rows


def checkout(ref: str, dest: Path) -> Path:
    """The `deployer` package (with templates/ and docker/ when the ref has them) of git `ref` in `dest`."""
    names = subprocess.run(["git", "-C", str(REPO), "ls-tree", "--name-only", ref], check=True,
                           capture_output=True, text=True).stdout.split()
    paths = [p for p in ("deployer", "templates", "docker") if p in names]
    tar = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", ref, *paths], check=True,
                         capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
        tf.extractall(dest, filter="data")
    return dest


def down_leftover(state_dir: Path) -> None:
    """Last resort after a failed or interrupted deploy: stop whatever server.json still records."""
    from deployer.server.local import LocalRuntime
    from deployer.server.state import load_state

    with contextlib.suppress(Exception):
        state = load_state(state_dir)
        if state is not None:
            LocalRuntime().down(state, grace_s=3.0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="deploys per version (default 5)")
    ap.add_argument("--before", metavar="REF|DIR", help="also measure this git ref or deployer source dir")
    args = ap.parse_args()
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="deploy-overhead-") as tmp:
        work = Path(tmp)
        sources: list[tuple[str, Path | None]] = [("after", None)]
        if args.before:
            src = Path(args.before)
            if not (src / "deployer").is_dir():
                src = checkout(args.before, work / "before-src")
            sources.insert(0, (f"before ({args.before})", src))
        runs: dict[str, list[dict[str, float]]] = {label: [] for label, _ in sources}
        imports: dict[str, list[dict[str, float]]] = {label: [] for label, _ in sources}
        for i in range(args.runs):
            for k, (label, src) in enumerate(sources):
                spec = serving_deploy.write_spec(REPO / "examples" / "quickstart", work / f"d{i}-{k}", free_ports(3))
                state_dir = spec.parent / ".deployer" / spec.stem
                try:
                    t = serving_deploy.run_deploy(spec, state_dir, deployer_src=src)
                finally:
                    down_leftover(state_dir)
                runs[label].append(breakdown(t))
                imports[label].append(t.validate_imports)
                print(f"  {label} run {i + 1}: overhead {t.overhead:.3f} s (wall {t.wall:.2f} s)", file=sys.stderr)
    load1 = os.getloadavg()
    print(f"\ndeploy overhead, quickstart (classifier ONNX + python model), local runtime; {args.runs} runs "
          f"each, median (min-max) in seconds; load average {load0[0]:.2f} before, {load1[0]:.2f} after, "
          f"{os.cpu_count()} CPUs")
    labels = [label for label, _ in sources]
    print(f"  {'part':<46}" + "".join(f"{label:>26}" for label in labels))
    for row in runs[labels[0]][0]:
        cells = []
        for label in labels:
            vals = [r[row] for r in runs[label]]
            cells.append(f"{statistics.median(vals):7.3f} ({min(vals):.2f}-{max(vals):.2f})")
        print(f"  {row:<46}" + "".join(f"{c:>26}" for c in cells))
    for label in labels:
        top: dict[str, list[float]] = {}
        for per_run in imports[label]:
            for pkg, s in per_run.items():
                top.setdefault(pkg, []).append(s)
        line = ", ".join(f"{p} {statistics.median(v):.3f}" for p, v in
                         sorted(top.items(), key=lambda kv: -statistics.median(kv[1]))[:8])
        med = statistics.median(r["OVERHEAD = wall - start-to-ready - smoke"] for r in runs[label])
        print(f"  {label}: overhead median {med:.3f} s (target <= 1 s: {'OK' if med <= 1.0 else 'MISSED'}); "
              f"imports' own time, top packages: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
