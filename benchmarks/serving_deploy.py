"""Deploy overhead: `deployer deploy SPEC` through the real console script, split into its parts.

Used by bench_serving.py. Three independent clocks are correlated on the wall clock (time.time):

- the CLI's own output, read line by line as it arrives: the `» publish/up/smoke/down` stage markers
  (stderr) and the closing `stages: publish X up Y smoke Z down W` line (stdout, perf_counter durations);
- `server.json`, which LocalRuntime writes right after spawning tritonserver (pid, `started_at`), and
  the pid's liveness in /proc, polled every 5 ms (-> when the process exited);
- tritonserver's own log timestamps (microseconds): services started, `loading:`/`successfully loaded`
  per model, and the start of its SIGTERM shutdown.

"Server's own start-to-ready" = (server process spawned -> its last endpoint started) + the sum of each
model's `loading:` -> `successfully loaded` interval: the time the server itself was busy starting.
Gaps where the server sat idle waiting for deployer (readiness polls, the next load request) are
deployer's overhead, not the server's.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

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
    server_shutdown: float = 0.0  # SIGTERM seen by Triton -> process gone
    model_loads: dict[str, float] = field(default_factory=dict)

    @property
    def overhead(self) -> float:
        """The issue's definition: wall - server's own start-to-ready - smoke."""
        return self.wall - self.server_start_to_ready - self.stages.get("smoke", 0.0)

    @property
    def overhead_excl_shutdown(self) -> float:
        """Also without the server's own graceful shutdown (Triton's drain/unload after SIGTERM)."""
        return self.overhead - self.server_shutdown


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
    shutdown = last = 0.0
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
    return {"services_ready": max(services) if services else 0.0, "loading": loading, "loaded": loaded,
            "shutdown": shutdown, "last": last}


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


def cli_import_seconds(runs: int = 3) -> float:
    """Best-of-`runs` wall time of `python -c "import deployer.cli"`: interpreter start + CLI import + exit
    (what the console script does before `main()`; `deployer --help` would add rich's help rendering)."""
    best = float("inf")
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import deployer.cli"], check=True, capture_output=True, timeout=60)
        best = min(best, time.perf_counter() - t)
    return best


def run_deploy(deployer: Path, spec: Path, state_dir: Path, timeout_s: float = 120.0) -> DeployTiming:
    """Run `deployer -v deploy SPEC` and split its wall time. Raises RuntimeError when it fails.

    On any failure or Ctrl-C the deploy process gets SIGINT (deployer then stops its server) and
    then SIGKILL; the caller still runs `down` on the state dir as a last resort.
    """
    watcher = _Watcher(state_dir / "server.json")
    watcher.start()
    markers: dict[str, float] = {}
    out_lines: list[str] = []
    err_lines: list[str] = []
    t0 = time.time()
    proc = subprocess.Popen([str(deployer), "-v", "deploy", str(spec)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)

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
    if code != 0 or stages_m is None:
        tail = "".join((out_lines + err_lines)[-30:])
        raise RuntimeError(f"deployer deploy exited {code}:\n{tail}")
    stages = {k: float(v) for k, v in re.findall(r"(\w+) ([\d.]+)s", stages_m.group(1))}
    timing = DeployTiming(wall=t_end - t0, exit_code=code, stages=stages)
    _split(timing, t0, t_end, markers, watcher, parse_triton_log(state_dir / "tritonserver.log"))
    return timing


def _split(timing: DeployTiming, t0: float, t_end: float, markers: dict[str, float], watcher: _Watcher,
           log: dict[str, object]) -> None:
    """Fill `timing.parts`; every part is measured, `validate`/`*_glue` are what is left of a stage."""
    st = timing.stages
    loading = log["loading"]
    loaded = log["loaded"]
    assert isinstance(loading, dict) and isinstance(loaded, dict)
    services = float(log["services_ready"])  # type: ignore[arg-type]
    shutdown = float(log["shutdown"])  # type: ignore[arg-type]
    timing.model_loads = {m: loaded[m] - loading[m] for m in loading if m in loaded}
    server_init = services - watcher.started_at
    # Loads run concurrently: the server is busy loading from the first `loading:` to the last
    # `successfully loaded` (the union of the intervals), not for the sum of them.
    spans = sorted((loading[m], loaded[m]) for m in timing.model_loads)
    loads, end = 0.0, float("-inf")
    for start, stop in spans:
        loads += max(0.0, stop - max(start, end))
        end = max(end, stop)
    timing.server_start_to_ready = server_init + loads
    timing.server_shutdown = (watcher.exited_at - shutdown) if watcher.exited_at and shutdown else 0.0
    p = timing.parts
    p["cli start + validate (to '» publish')"] = markers.get("publish", t0) - t0
    p["publish"] = st.get("publish", 0.0)
    p["up: prepare backend dir + spawn"] = watcher.started_at - markers.get("up", watcher.started_at)
    p["up: server init (spawn -> endpoints started) [server]"] = server_init
    p["up: model loads (wall-clock union, Triton log) [server]"] = loads
    p["up: deployer glue (readiness polls, load calls)"] = st.get("up", 0.0) - (
        watcher.started_at - markers.get("up", watcher.started_at)) - server_init - loads
    p["smoke [excluded]"] = st.get("smoke", 0.0)
    p["down: Triton's own shutdown (SIGTERM -> exit) [server]"] = timing.server_shutdown
    p["down: deployer glue"] = st.get("down", 0.0) - timing.server_shutdown
    p["report + exit (after down)"] = t_end - markers.get("down", t_end) - st.get("down", 0.0)
    p["between stages"] = timing.wall - sum(p.values())


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


def console_script() -> Path:
    """The `deployer` console script of the running environment."""
    path = Path(sys.executable).parent / "deployer"
    if not path.is_file():
        raise RuntimeError(f"no deployer console script at {path}; pip install -e . in this venv")
    return path
