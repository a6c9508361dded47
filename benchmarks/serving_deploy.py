"""Deploy overhead: `deployer -v deploy SPEC` through the CLI's own `main()`, split into its parts.

Used by bench_serving.py. Independent clocks are correlated on the wall clock (time.time):

- deploy_probe.py, which runs the CLI's `main()` as the console script does, with wrappers around
  the calls a deploy is made of (load_deployment, render_all, publish, the runtime's up/down,
  run_smoke, main) and around `__import__` (each outermost import that loads something new), written
  to a JSON file when main() returns; this process times the interpreter's start (spawn -> the
  probe's first line) and exit (main() returned -> process gone);
- the CLI's own closing `stages: publish X up Y smoke Z down W` line (its exit code and smoke stage);
- `server.json`, which LocalRuntime writes right after spawning tritonserver (pid, `started_at`), and
  the pid's liveness in /proc, polled every 5 ms (-> when the process exited);
- tritonserver's own log timestamps (microseconds): services started, `loading:`/`successfully loaded`
  per model, and the start of its SIGTERM shutdown;
- the runtime's own `last_stop` report (down: how long the unload through the repository API took).

"Server's own start-to-ready" = (server process spawned -> its last endpoint started) + the sum of each
model's `loading:` -> `successfully loaded` interval: the time the server itself was busy starting.
Gaps where the server sat idle waiting for deployer (readiness polls, the next load request) are
deployer's overhead, not the server's.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_GLOG = re.compile(r"^[IWEF](\d\d)(\d\d) (\d\d):(\d\d):(\d\d)\.(\d{6}) +\d+ [^\]]+\] (.*)$")
_STAGES = re.compile(r"stages:((?:\s+\w+ [\d.]+s)+)")
_MARKER = re.compile(r"»\s*(\w+)")


@dataclass
class DeployTiming:
    """One `deployer deploy` run, seconds. `parts` is the breakdown, in the order things happen."""

    wall: float
    exit_code: int
    stages: dict[str, float]
    parts: dict[str, float] = field(default_factory=dict)
    server_start_to_ready: float = 0.0  # server init + sum of model loads (the server's own work)
    server_shutdown: float = 0.0  # SIGTERM -> process gone (Triton noticing it, then its own shutdown)
    unload: float = 0.0  # down's unload through the repository API (Triton's python backend mostly)
    model_loads: dict[str, float] = field(default_factory=dict)
    validate_imports: dict[str, float] = field(default_factory=dict)  # top-level package -> s, to publish

    @property
    def overhead(self) -> float:
        """The issue's definition: wall - server's own start-to-ready - smoke."""
        return self.wall - self.server_start_to_ready - self.stages.get("smoke", 0.0)

    @property
    def overhead_excl_shutdown(self) -> float:
        """Also without the server's own graceful shutdown: the unload down asks for (mostly Triton's
        python backend finalizing its stubs) and Triton's exit after SIGTERM."""
        return self.overhead - self.server_shutdown - self.unload


def _glog_time(line: str, year: int) -> tuple[float, str] | None:
    m = _GLOG.match(line)
    if not m:
        return None
    mo, d, h, mi, s, us = (int(x) for x in m.groups()[:6])
    # glog writes local time; the machine's local zone converts it back
    return dt.datetime(year, mo, d, h, mi, s, us).timestamp(), m.group(7)


def parse_triton_log(path: Path) -> dict[str, object]:
    """Timestamps of interest from a tritonserver log (wall clock, seconds)."""
    year = dt.datetime.now().year
    services: list[float] = []
    loading: dict[str, float] = {}
    loaded: dict[str, float] = {}
    shutdown = http_wait = last = 0.0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        parsed = _glog_time(line, year)
        if parsed is None:
            continue
        ts, msg = parsed
        last = ts
        if msg.startswith('"Started ') and "Service at" in msg:
            services.append(ts)
        elif m := re.match(r'"loading: ([^:"]+):', msg):
            loading[m.group(1)] = ts
        elif m := re.match(r"\"successfully loaded '([^']+)'", msg):
            loaded[m.group(1)] = ts
        elif "Waiting for in-flight requests" in msg and not shutdown:
            shutdown = ts
        elif "HTTP service connections" in msg and not http_wait:
            http_wait = ts  # SIGTERM noticed, open HTTP connections waited for (polled once a second)
    return {"services_ready": max(services) if services else 0.0, "loading": loading, "loaded": loaded,
            "shutdown": shutdown, "http_wait": http_wait, "last": last}


class _Watcher(threading.Thread):
    """Finds the server's pid in server.json as soon as it is written, then notes when the pid is gone."""

    def __init__(self, state_file: Path) -> None:
        super().__init__(daemon=True, name="bench-watch")
        self.state_file = state_file
        self.pid = 0
        self.started_at = 0.0
        self.exited_at = 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set() and not self.pid:
            with contextlib.suppress(OSError, ValueError, KeyError):
                data = json.loads(self.state_file.read_text())
                self.pid, self.started_at = int(data["pid"]), float(data["started_at"])
            time.sleep(0.005)
        while not self.stop.is_set() and self.pid:
            try:
                state = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                state = "X"
            if state in ("Z", "X"):  # a zombie has exited; its parent just has not reaped it yet
                self.exited_at = time.time()
                return
            time.sleep(0.005)


PROBE = Path(__file__).resolve().parent / "deploy_probe.py"


def run_deploy(spec: Path, state_dir: Path, timeout_s: float = 120.0, deployer_src: Path | None = None,
               fast_exit: bool = False) -> DeployTiming:
    """Run `deployer -v deploy SPEC` (through deploy_probe.py) and split its wall time.

    `deployer_src`: a directory holding another `deployer` package (e.g. `git archive HEAD deployer`),
    put first on PYTHONPATH, to measure that version with the same probe on the same machine.
    `fast_exit`: what-if, the CLI ends with `os._exit` after flushing (see deploy_probe.py).

    Raises RuntimeError when it fails. On any failure or Ctrl-C the deploy process gets SIGINT
    (deployer then stops its own server) and then SIGKILL; the caller still runs `down` on the state
    dir as a last resort.
    """
    watcher = _Watcher(state_dir / "server.json")
    watcher.start()
    markers: dict[str, float] = {}
    out_lines: list[str] = []
    err_lines: list[str] = []
    events_file = state_dir.parent / f"{spec.stem}.probe.json"
    events_file.unlink(missing_ok=True)
    env = dict(os.environ)
    env["DEPLOY_PROBE_FAST_EXIT"] = "1" if fast_exit else "0"
    if deployer_src is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(deployer_src), env.get("PYTHONPATH")) if p)
    t0 = time.time()
    proc = subprocess.Popen([sys.executable, str(PROBE), str(events_file), "--", "-v", "deploy", str(spec)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
                            env=env)

    def read_err() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            err_lines.append(line)
            m = _MARKER.search(line)
            if m and m.group(1) not in markers:
                markers[m.group(1)] = time.time()

    reader = threading.Thread(target=read_err, daemon=True)
    reader.start()
    try:
        assert proc.stdout is not None
        out_lines.extend(proc.stdout)  # ends when the process closes stdout (it exits)
        code = proc.wait(timeout=timeout_s)
        t_end = time.time()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(2)  # SIGINT: deployer's KeyboardInterrupt path stops its server
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
    finally:
        reader.join(timeout=5)
        watcher.stop.set()
        watcher.join(timeout=1)
    stages_m = _STAGES.search("".join(out_lines))
    if code != 0 or stages_m is None or not events_file.is_file():
        tail = "".join((out_lines + err_lines)[-30:])
        raise RuntimeError(f"deployer deploy exited {code}:\n{tail}")
    stages = {k: float(v) for k, v in re.findall(r"(\w+) ([\d.]+)s", stages_m.group(1))}
    timing = DeployTiming(wall=t_end - t0, exit_code=code, stages=stages)
    probe = json.loads(events_file.read_text(encoding="utf-8"))
    _split(timing, t0, t_end, probe, watcher, parse_triton_log(state_dir / "tritonserver.log"))
    return timing


def _server_busy(timing: DeployTiming, watcher: _Watcher, log: dict[str, object]) -> tuple[float, float]:
    """(server init, model loads) from the Triton log: the server's own start-to-ready work."""
    loading = log["loading"]
    loaded = log["loaded"]
    assert isinstance(loading, dict) and isinstance(loaded, dict)
    services = float(log["services_ready"])  # type: ignore[arg-type]
    timing.model_loads = {m: loaded[m] - loading[m] for m in loading if m in loaded}
    # Loads run concurrently: the server is busy loading from the first `loading:` to the last
    # `successfully loaded` (the union of the intervals), not for the sum of them.
    spans = sorted((loading[m], loaded[m]) for m in timing.model_loads)
    loads, end = 0.0, float("-inf")
    for start, stop in spans:
        loads += max(0.0, stop - max(start, end))
        end = max(end, stop)
    return services - watcher.started_at, loads


def _split(timing: DeployTiming, t0: float, t_end: float, probe: dict[str, Any], watcher: _Watcher,
           log: dict[str, object]) -> None:
    """Fill `timing.parts` from the probe's events, the server's pid and its log, in the order things happen.

    Parts marked [server] are the server's own work; [excluded] is what the issue's overhead leaves out.
    """
    marks: dict[str, float] = probe["marks"]
    ev: dict[str, dict[str, Any]] = {}
    for e in probe["events"]:
        ev.setdefault(e["name"], e)  # the first call of each (down may run again on a failure path)
    imports: list[list[Any]] = probe.get("import_spans", [])

    def span(name: str) -> float:
        e = ev.get(name)
        return float(e["end"] - e["start"]) if e and "end" in e else 0.0

    def imports_in(a: float, b: float) -> float:  # outermost imports that ran between a and b
        return sum(float(d) for _, s, d, _own, outer in imports if outer and a <= s and s + d <= b + 1e-6)

    server_init, loads = _server_busy(timing, watcher, log)
    timing.server_start_to_ready = server_init + loads
    shutdown = float(log["shutdown"])  # type: ignore[arg-type]
    timing.server_shutdown = (watcher.exited_at - shutdown) if watcher.exited_at and shutdown else 0.0
    load, publish = ev.get("load_deployment", {}), ev.get("publish", {})
    up, down = ev.get("up", {}), ev.get("down", {})
    validate_end = publish.get("start", up.get("start", t_end))
    begin = marks["cli_import_start"]
    p = timing.parts
    p["interpreter start (to the first line of the script)"] = marks["probe_start"] - t0
    p["imports, `import deployer.cli` -> publish (all of them)"] = imports_in(begin, validate_end)
    p["validate: load + check the spec (without imports)"] = span("load_deployment") - imports_in(
        load.get("start", 0.0), load.get("end", 0.0))
    p["cli glue to publish: typer, logging, pipeline (without imports)"] = (
        validate_end - begin - p["imports, `import deployer.cli` -> publish (all of them)"]
        - p["validate: load + check the spec (without imports)"])
    p["render (config.pbtxt, parse-back proof)"] = span("render")
    p["publish (without render)"] = span("publish") - span("render")
    p["publish -> up"] = up.get("start", 0.0) - publish.get("end", up.get("start", 0.0))
    spawned = watcher.started_at
    p["up: prepare backend dir + spawn"] = spawned - up.get("start", spawned)
    p["up: server init (spawn -> endpoints started) [server]"] = server_init
    p["up: model loads (wall-clock union, Triton log) [server]"] = loads
    p["up: deployer glue (readiness polls, load calls)"] = up.get("end", spawned) - spawned - server_init - loads
    # in the CLI's smoke stage (the smoke package's imports, smoke targets), before run_smoke
    p["smoke: before run_smoke (imports, targets) [excluded]"] = ev.get("smoke", {}).get("start", 0.0) - up.get(
        "end", 0.0)
    p["smoke: run_smoke [excluded]"] = span("smoke")
    p["smoke -> down"] = down.get("start", 0.0) - ev.get("smoke", {}).get("end", down.get("start", 0.0))
    stop = down.get("stop", {})
    unload = float(stop.get("unload_s", 0.0))
    # SIGTERM goes out right after the unload; Triton logs when its main loop notices (a condition
    # variable waited on with a 1 s timeout), first waiting for open HTTP connections to close if any
    # (polled once a second: keep-alive connections a client did not close), then the rest
    sigterm = down.get("start", 0.0) + unload
    http_wait = float(log["http_wait"])  # type: ignore[arg-type]
    first = http_wait or shutdown
    noticed = max(0.0, first - sigterm) if first and down else 0.0
    waited = shutdown - http_wait if http_wait and shutdown else 0.0
    p["down: unload the models (repository API) [mostly server]"] = unload
    p["down: stop: SIGTERM -> Triton notices it [server]"] = noticed
    p["down: stop: Triton waits for open HTTP connections"] = waited
    p["down: stop: Triton's shutdown (in-flight, models, exit) [server]"] = timing.server_shutdown
    p["down: stop: deployer glue"] = span("down") - unload - noticed - waited - timing.server_shutdown
    p["report (after down, to the end of main)"] = marks["main_end"] - down.get("end", marks["main_end"])
    p["interpreter exit (end of main -> process gone)"] = t_end - marks["main_end"]
    p["unaccounted"] = timing.wall - sum(p.values())
    timing.unload = unload
    timing.server_shutdown += noticed  # from SIGTERM to gone, but the wait for connections deployer left open
    timing.validate_imports = _top_imports(imports, marks["cli_import_start"], validate_end)


def _top_imports(imports: list[list[Any]], a: float, b: float, n: int = 8) -> dict[str, float]:
    """Own import time (without the packages it imports) per top-level package, between `a` and `b`."""
    per: dict[str, float] = {}
    for top, s, d, own, _outer in imports:
        if a <= s and s + d <= b + 1e-6:
            per[top] = per.get(top, 0.0) + float(own)
    return dict(sorted(per.items(), key=lambda kv: -kv[1])[:n])


def write_spec(example: Path, dest: Path, ports: tuple[int, int, int]) -> Path:
    """A copy of the quickstart example in `dest`, its repository inside `dest`, on `ports`."""
    dest.mkdir(parents=True, exist_ok=True)
    for f in example.iterdir():
        if f.suffix in (".onnx", ".py") and f.name != "make_models.py":
            (dest / f.name).write_bytes(f.read_bytes())
    text = (example / "deployer.yaml").read_text(encoding="utf-8")
    text = re.sub(r"(?m)^repository: .*$", "repository: model_repository", text)
    for key, port in zip(("http_port", "grpc_port", "metrics_port"), ports, strict=True):
        text, n = re.subn(rf"(?m)^(\s+{key}:) \d+", rf"\g<1> {port}", text)
        if n != 1:
            raise RuntimeError(f"cannot set {key} in {example / 'deployer.yaml'}")
    spec = dest / "deployer.yaml"
    spec.write_text(text, encoding="utf-8")
    return spec
