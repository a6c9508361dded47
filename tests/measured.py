"""Run the real `deployer` console script as a child and measure its wall time and peak memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

DEPLOYER = Path(sys.executable).parent / "deployer"

# A small parent that waits for its one child and reports that child's rusage: RUSAGE_CHILDREN of the
# test process itself would be the maximum over every child it ever waited for, not this one's.
_WRAPPER = """
import json, os, resource, subprocess, sys, time
t0 = time.monotonic()
p = subprocess.Popen(sys.argv[1:])
try:
    code = p.wait(timeout=float(os.environ["MEASURED_TIMEOUT"]))
except subprocess.TimeoutExpired:
    p.kill(); p.wait(); code = -9
wall = time.monotonic() - t0
use = resource.getrusage(resource.RUSAGE_CHILDREN)
info = {"code": code, "wall": wall, "rss": use.ru_maxrss * 1024, "cpu": use.ru_utime + use.ru_stime}
sys.stderr.write("\\nMEASURED " + json.dumps(info) + "\\n")
sys.exit(0)
"""


@dataclass(frozen=True)
class Measured:
    code: int
    stdout: str
    stderr: str
    wall_s: float
    peak_rss_bytes: int
    # CPU seconds (user + system) of the child: the work it did. Wall time on a loaded machine (load 16 on
    # 2 cores seen in CI-like runs) measures the neighbours; a hang is caught by the kill at `timeout_s`.
    cpu_s: float

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_deployer(*args: str | Path, cwd: Path, timeout_s: float = 120.0) -> Measured:
    """`deployer ARGS` in `cwd`; a child still running after `timeout_s` is killed (code -9)."""
    env_timeout = {"MEASURED_TIMEOUT": str(timeout_s), "COLUMNS": "200", "NO_COLOR": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", _WRAPPER, str(DEPLOYER), *map(str, args)],
        cwd=cwd, capture_output=True, text=True, timeout=timeout_s + 30, stdin=subprocess.DEVNULL,
        env={**os.environ, **env_timeout},
    )
    err, _, tail = proc.stderr.rpartition("\nMEASURED ")
    info = json.loads(tail)
    return Measured(info["code"], proc.stdout, err, info["wall"], info["rss"], info["cpu"])
