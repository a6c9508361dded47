"""Stopping a local server's process group with real processes: SIGTERM, bounded wait, SIGKILL of what is
left, and removal of the python backend's shared-memory segments a killed process could not remove."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from deployer.server.process import group_members, shm_segments, stop_group

pytestmark = pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="needs Linux /dev/shm")

# A leader and a forked member (what a python-backend stub is to tritonserver), each mapping a segment
# named like the python backend's. The member ignores SIGTERM; the leader only when told to.
GROUP = """
import mmap, os, signal, sys, time
leader_ignores, names = sys.argv[1] == "1", sys.argv[2:]
def segment(name):
    fd = os.open(name, os.O_CREAT | os.O_RDWR, 0o600)
    os.ftruncate(fd, 4096)
    return mmap.mmap(fd, 4096)
if os.fork() == 0:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    m = segment(names[1])
    os.write(1, b"member\\n")  # one write per line: the two processes share the pipe
    time.sleep(120)
else:
    if leader_ignores:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    m = segment(names[0])
    os.write(1, b"leader\\n")
    time.sleep(120)
"""


@pytest.mark.parametrize("leader_ignores", [True, False], ids=["leader-killed", "leader-exits-member-left"])
def test_stop_group_kills_what_is_left_and_removes_its_shm_segments(leader_ignores: bool) -> None:
    # the python backend's own name, and a Python-based backend's (deployer's onnxruntime one)
    names = [f"/dev/shm/triton_{b}_backend_shm_region_deployer-test-{uuid.uuid4()}" for b in ("python", "onnxruntime")]
    proc = subprocess.Popen(
        [sys.executable, "-c", GROUP, "1" if leader_ignores else "0", *names],
        stdout=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        assert sorted(proc.stdout.readline().strip() for _ in range(2)) == ["leader", "member"]
        members = group_members(proc.pid)
        assert len(members) == 2 and proc.pid in members
        assert shm_segments(members) == {Path(n) for n in names}

        _, killed = stop_group(proc.pid, proc, grace_s=0.5)

        assert killed is leader_ignores
        assert proc.poll() is not None and group_members(proc.pid) == []
        # what the killed processes mapped is gone; a leader that exited by itself owned its own cleanup
        assert not Path(names[1]).exists()
        assert Path(names[0]).exists() is not leader_ignores
    finally:
        if proc.pid != os.getpgrp() and group_members(proc.pid):  # the child's own session, never ours
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        for n in names:
            Path(n).unlink(missing_ok=True)


def test_stop_group_refuses_our_own_group_and_init() -> None:
    from deployer.errors import ServerError

    for pgid in (0, 1, os.getpgrp()):
        with pytest.raises(ServerError, match="refusing"):
            stop_group(pgid, None, grace_s=0.1)
