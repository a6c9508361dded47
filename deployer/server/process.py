"""A local tritonserver's process group: liveness, a bounded stop, and what a kill would leave behind.

The local runtime starts tritonserver as the leader of its own session/process group; the python
backend's stub processes join that group. Stopping is SIGTERM to the group, a bounded wait for the
server to exit on its own, then SIGKILL to whatever is left. A killed stub cannot remove its shared
memory segment (`/dev/shm/triton_<backend>_backend_shm_region_*`: `python`, or the name of a
Python-based backend such as deployer's `onnxruntime`), so the segments the group maps are noted before
the kill and removed after it.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path

from deployer.errors import ServerError

__all__ = ["group_members", "is_running", "proc_state", "shm_segments", "stop_group"]

_SHM_SEGMENT = re.compile(r"/dev/shm/triton_[A-Za-z0-9_.-]+_backend_shm_region[^/\s]*")
_POLL_S = 0.01  # a graceful exit takes tens of ms once the models are unloaded: poll finely
_KILL_WAIT_S = 10.0


def proc_state(pid: int) -> str | None:
    """Linux /proc state letter, or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def is_running(pid: int | None, program: bytes = b"tritonserver") -> bool:
    """True when `pid` is a live (non-zombie) `program` process (tritonserver unless told)."""
    if pid is None or pid <= 0:
        return False
    state = proc_state(pid)
    if state is None or state in ("Z", "X"):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    # guard against pid reuse after a reboot or a crash
    return program in cmdline


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group `pgid`."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def shm_segments(pids: list[int]) -> set[Path]:
    """The python backend's shared-memory segments mapped by `pids`."""
    found: set[Path] = set()
    for pid in pids:
        try:
            maps = Path(f"/proc/{pid}/maps").read_text()
        except OSError:
            continue
        for line in maps.splitlines():
            path = line.split(None, 5)[-1].removesuffix(" (deleted)")
            if _SHM_SEGMENT.fullmatch(path):
                found.add(Path(path))
    return found


def _gone(pid: int, child: subprocess.Popen[bytes] | None) -> bool:
    return child.poll() is not None if child is not None else not is_running(pid)


def stop_group(pid: int, child: subprocess.Popen[bytes] | None, grace_s: float) -> tuple[float, bool]:
    """SIGTERM group `pid`, wait up to `grace_s` for its leader to exit, SIGKILL what is left.

    `child` is the leader's Popen when this process started it (so it is reaped here). Returns
    (seconds, killed) where `killed` means the leader outlived the grace period. Raises ServerError
    when the leader survives SIGKILL.
    """
    if pid <= 1 or pid == os.getpgrp():  # a corrupted state file must never make us signal ourselves or init
        raise ServerError(f"refusing to stop process group {pid}: it is not a server's own group")
    t0 = time.monotonic()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = t0 + grace_s
    while not _gone(pid, child) and time.monotonic() < deadline:
        time.sleep(_POLL_S)
    killed = not _gone(pid, child)
    left = group_members(pid)
    if left:  # the leader after the grace period, or stubs a server that gave up on them left behind
        segments = shm_segments(left)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        kill_deadline = time.monotonic() + _KILL_WAIT_S
        while group_members(pid) and time.monotonic() < kill_deadline:
            time.sleep(_POLL_S)
        for segment in segments:
            segment.unlink(missing_ok=True)
    if child is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=_KILL_WAIT_S)
    kill_deadline = time.monotonic() + _KILL_WAIT_S
    while is_running(pid) and time.monotonic() < kill_deadline:  # not our child: init reaps it
        time.sleep(_POLL_S)
    if (child.poll() is None) if child is not None else is_running(pid):
        raise ServerError(f"tritonserver (pid {pid}) is still running after SIGKILL")
    return time.monotonic() - t0, killed
