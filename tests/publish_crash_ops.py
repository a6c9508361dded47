"""Repository operations of the publish crash tests, run in a child process (killed at random) or in-process.

An operation is one JSON object::

    {"op": "publish", "repo": "...", "force": false,
     "models": [{"name": "alpha", "config": "<config.pbtxt text>", "tag": "t1", "big": "/path/model.onnx",
                 "version": null, "keep": 3}]}
    {"op": "rollback", "repo": "...", "models": [{"name": "alpha", "to": null, "prune": false}]}

Every published version holds `model.onnx` (copied from `big`) and `tag.txt` (`<name>:<tag>`), so a test
can tell which publish put which files in a version dir.

As a child (`python -m tests.publish_crash_ops ...`, cwd = the checkout) everything the operation needs is
imported first (the lazy protobuf schema import alone costs ~0.4 s). `--fork-server` then forks one worker
per operation (see `serve_forks`: the crash tests SIGKILL the workers); `READY GO` reads one operation,
creates READY and waits for GO to exist, a barrier for concurrent children.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from deployer.repository import ArtifactFile, ModelArtifact, apply_publish, plan_publish, rollback


def tag_bytes(name: str, tag: str) -> bytes:
    """The content of `tag.txt` in a version of `name` published with `tag`."""
    return f"{name}:{tag}".encode()


def artifacts(models: list[dict[str, Any]]) -> list[ModelArtifact]:
    return [
        ModelArtifact(
            m["name"],
            m["config"],
            (
                ArtifactFile("model.onnx", source=Path(m["big"])),
                ArtifactFile("tag.txt", data=tag_bytes(m["name"], m["tag"])),
            ),
            version=m.get("version"),
            keep_versions=m.get("keep"),
            manifest={"trial": m["tag"]},
        )
        for m in models
    ]


def _kill_self_before_unlink(prefix: str) -> None:
    """SIGKILL this process the moment it is about to unlink a file named `prefix...` (a worker only)."""
    original = Path.unlink

    def unlink(self: Path, missing_ok: bool = False) -> None:
        if self.name.startswith(prefix):
            os.kill(os.getpid(), signal.SIGKILL)
        original(self, missing_ok)

    Path.unlink = unlink  # type: ignore[method-assign]


def run_op(op: dict[str, Any]) -> dict[str, Any]:
    """Carry out one operation; returns per model [version, status, config_written] or
    [version, removed, config_restored]. `kill_before_unlink` (forked workers only): a deterministic kill point."""
    repo = Path(op["repo"])
    if op.get("kill_before_unlink"):
        assert os.environ.get("DEPLOYER_CRASH_WORKER") == "1", "kill_before_unlink would kill the test process"
        _kill_self_before_unlink(op["kill_before_unlink"])
    if op["op"] == "publish":
        result = apply_publish(plan_publish(repo, artifacts(op["models"]), force=bool(op.get("force"))))
        return {m.name: [m.version, m.status, m.config_written] for m in result.models}
    if op["op"] == "rollback":
        out: dict[str, Any] = {}
        for m in op["models"]:
            r = rollback(repo, m["name"], m["to"], prune=bool(m["prune"]))
            out[m["name"]] = [r.version, list(r.removed), r.config_restored]
        return out
    raise ValueError(f"unknown operation {op['op']!r}")


def _preload() -> None:
    """Do every lazy import up front (Triton's protobuf schema alone costs ~0.4 s): kills must land in the
    operation. Parsing a config through the public API triggers them, wherever they live."""
    from deployer.repository import serving

    serving.live_config('name: "preload"\n', (1,), 1)


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def serve_forks() -> int:
    """Fork server: for each operation line on stdin fork a worker that runs it.

    Protocol (one line each): the server says `ready` once; per operation it says `pid N` (the worker starts
    only then), the worker says `result <json>` or `error <json traceback>`, and after the parent's `reap`
    line (sent once it has killed the worker or decided not to) the server waits for the worker and says
    `exit CODE` (-9: SIGKILL). Until `reap` the worker is at worst a zombie, so the pid the parent kills can
    never belong to another process. An empty line ends the server.
    """
    _preload()
    _say("ready")
    while (line := sys.stdin.readline()).strip():
        op = json.loads(line)
        go_r, go_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker: no interpreter start-up, so the kill delay is all operation
            os.environ["DEPLOYER_CRASH_WORKER"] = "1"
            os.close(go_w)
            os.read(go_r, 1)
            code = 0
            try:
                _say("result " + json.dumps(run_op(op)))
            except BaseException:
                _say("error " + json.dumps(traceback.format_exc()))
                code = 1
            os._exit(code)
        os.close(go_r)
        _say(f"pid {pid}")
        os.write(go_w, b"g")
        os.close(go_w)
        if sys.stdin.readline().strip() != "reap":
            os.kill(pid, signal.SIGKILL)
        _pid, status = os.waitpid(pid, 0)
        _say(f"exit {os.waitstatus_to_exitcode(status)}")
    return 0


def barrier(ready: Path, go: Path) -> int:
    """Read the operation, create `ready`, wait for `go` to exist, run it and print the result."""
    _preload()
    line = sys.stdin.readline()
    ready.touch()
    deadline = time.monotonic() + 240.0
    while not go.exists():
        if time.monotonic() > deadline:
            print("no go signal within 240 s", file=sys.stderr)
            return 2
        time.sleep(0.001)
    _say(json.dumps(run_op(json.loads(line))))
    return 0


def main(argv: list[str]) -> int:
    if argv == ["--fork-server"]:
        return serve_forks()
    return barrier(Path(argv[0]), Path(argv[1]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
