"""Run the `deployer` CLI in this process with timing probes; `serving_deploy.run_deploy` uses it.

    python benchmarks/deploy_probe.py EVENTS.json -- -v deploy SPEC

It does what the console script does (`deployer.cli:run`: `main()`, then `exit_process(code)`; older
versions: `main()` and the interpreter's exit), after installing:

- wrappers (wall clock, `time.time()`) around the calls that make up a deploy, each installed as soon
  as its module has been imported by deployer itself, so nothing is imported earlier than deployer
  would import it: `deployer.spec.load_deployment` (load + validate), `render_all` and `publish`
  (deployer.repository.from_spec), the runtime's `up`/`down`, `run_smoke`, `deployer.cli.main`;
- an `__import__` wrapper that records each import that loads something new: its top-level package,
  wall-clock start, duration and own time (without nested imports), so that the time to publish
  splits into imports (per package) and the rest.

Wrappers whose target does not exist (the library is being reshaped) are skipped; the report then has
fewer parts. The events are written to EVENTS.json when `main()` returns, just before the interpreter
starts to exit; the parent times the exit itself (until the process is gone).

What-if for a version without `exit_process`: with DEPLOY_PROBE_FAST_EXIT=1 the process ends like a
CLI that calls `os._exit` once its output is flushed (skipping the interpreter's teardown).
"""

from __future__ import annotations

import builtins
import functools
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any

PROBE_START = time.time()

# (module, attribute path, event name): wrapped once the module is in sys.modules and has the attribute
_TARGETS: list[tuple[str, str, str]] = [
    ("deployer.cli", "main", "main"),
    ("deployer.spec", "load_deployment", "load_deployment"),
    # render_all/publish in each layout the library had (and is measured in, e.g. with --compare HEAD)
    ("deployer.repository.from_spec", "render_all", "render"),
    ("deployer.repository.from_spec", "publish", "publish"),
    ("deployer.artifacts", "render_all", "render"),
    ("deployer.artifacts", "publish", "publish"),
    ("deployer.pipeline", "render_all", "render"),
    ("deployer.pipeline", "publish", "publish"),
    ("deployer.server.local", "LocalRuntime.up", "up"),
    ("deployer.server.local", "LocalRuntime.down", "down"),
    ("deployer.server.docker_runtime", "DockerRuntime.up", "up"),
    ("deployer.server.docker_runtime", "DockerRuntime.down", "down"),
    ("deployer.server.docker.runtime", "DockerRuntime.up", "up"),
    ("deployer.server.docker.runtime", "DockerRuntime.down", "down"),
    ("deployer.smoke", "run_smoke", "smoke"),
    ("deployer.smoke.runner", "run_smoke", "smoke"),
]

events: list[dict[str, Any]] = []
import_spans: list[tuple[str, float, float, float, bool]] = []  # see _import
_stack: list[str] = [""]
_pending = list(_TARGETS)
_wrapped: set[int] = set()


def _timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if _stack[-1] == name:  # a re-export calling the original: time the outer call only
            return fn(*args, **kwargs)
        event: dict[str, Any] = {"name": name, "start": time.time()}
        events.append(event)
        _stack.append(name)
        try:
            return fn(*args, **kwargs)
        finally:
            _stack.pop()
            event["end"] = time.time()
            runtime = args[0] if args and name in ("up", "down") else None
            report = getattr(runtime, "last_report", None) if name == "up" else None
            if report is not None:
                event["server_s"] = report.server_s
                event["model_load_s"] = dict(report.model_load_s)
            stop = getattr(runtime, "last_stop", None) if name == "down" else None
            if stop is not None:
                event["stop"] = {k: v for k, v in vars(stop).items() if isinstance(v, int | float | bool)}

    return wrapper


def _install() -> None:
    for target in list(_pending):
        module_name, path, name = target
        module = sys.modules.get(module_name)
        if module is None:
            continue
        owner: Any = module
        *parents, attr = path.split(".")
        try:
            for part in parents:
                owner = getattr(owner, part)
            fn = getattr(owner, attr)
        except AttributeError:
            continue  # not (yet) there: checked again after the next import
        _pending.remove(target)
        if id(fn) not in _wrapped:
            wrapped = _timed(name, fn)
            _wrapped.add(id(wrapped))
            setattr(owner, attr, wrapped)


_real_import = builtins.__import__
_open: list[list[float]] = []  # per import in progress: [seconds spent in nested imports]


def _import(name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0) -> Any:
    if level == 0 and name in sys.modules:
        result = _real_import(name, globals, locals, fromlist, level)  # cached: nothing to charge
        if fromlist and _pending:
            _install()
        return result
    _open.append([0.0])
    before = len(sys.modules)
    wall, t = time.time(), time.perf_counter()
    try:
        return _real_import(name, globals, locals, fromlist, level)
    finally:
        took = time.perf_counter() - t
        nested = _open.pop()[0]
        if _open:
            _open[-1][0] += took
        if len(sys.modules) != before:
            package = name if level == 0 else str((globals or {}).get("__package__") or "")
            # (top-level package, wall-clock start, seconds, seconds not spent in nested imports, outermost)
            import_spans.append((package.split(".")[0], wall, took, took - nested, not _open))
        if _pending:
            _install()


def main() -> int:
    if len(sys.argv) < 3 or sys.argv[2] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    out, argv = sys.argv[1], sys.argv[3:]
    builtins.__import__ = _import
    t = time.time()
    import deployer.cli  # noqa: F401 - what the console script imports before calling main()

    marks = {"probe_start": PROBE_START, "cli_import_start": t, "cli_imported": time.time()}
    _install()
    sys.argv = ["deployer", *argv]
    code: Any = 0
    try:
        sys.modules["deployer.cli"].main()  # looked up now: `main` was wrapped after the import
    except SystemExit as exc:
        code = exc.code
    finally:
        marks["main_end"] = time.time()
        builtins.__import__ = _real_import
        with open(out, "w", encoding="utf-8") as fh:
            json.dump({"marks": marks, "events": events, "import_spans": import_spans}, fh)
    status = int(code or 0) if not isinstance(code, str) else 1
    exit_process = getattr(sys.modules["deployer.cli"], "exit_process", None)
    if exit_process is not None:  # the console script (`deployer.cli:run`) ends the process this way
        exit_process(status)
    if os.environ.get("DEPLOY_PROBE_FAST_EXIT") == "1":
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        os._exit(status)
    return status


if __name__ == "__main__":
    sys.exit(main())
