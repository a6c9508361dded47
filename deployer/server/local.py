"""The `local` runtime: a real `tritonserver` process on this machine, no Docker.

Discovery (`find_tritonserver`, deployer.server.install) and planning (`plan_launch`) are separate
from the one place that acts (`LocalRuntime._launch`, run by the shared lifecycle of
deployer.server.lifecycle); stopping the process group is deployer.server.process. The server
runs detached in its own session/process group with its log in `<state_dir>/tritonserver.log`; the
state is recorded in `<state_dir>/server.json`.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, replace
from pathlib import Path

from deployer.errors import EnvironmentProblem, MissingDependency
from deployer.server.argv import tritonserver_argv
from deployer.server.backends import DEPLOYER_CPU, inventory
from deployer.server.base import RuntimeName, ServerSettings, ServerState, StopReport, with_server_defaults
from deployer.server.install import TritonInstall, find_tritonserver
from deployer.server.lifecycle import (
    LOG_FILE,
    Launched,
    ServerLifecycle,
    check_ports_free,
    file_tail,
    forget,
    unload_for_stop,
)
from deployer.server.process import group_members, is_running, stop_group
from deployer.server.state import clear_state, load_state, state_path

__all__ = [
    "LOG_FILE",
    "LaunchPlan",
    "LocalRuntime",
    "TritonInstall",
    "check_ports_free",
    "find_tritonserver",
    "is_running",
    "plan_launch",
]

log = logging.getLogger(__name__)

_BACKENDS = "backends"
_ORT_BACKEND_SRC = Path(__file__).parent / "backends" / "onnxruntime" / "model.py"
_TRITON_BACKENDS = Path("/opt/tritonserver/backends")  # Triton's default --backend-directory
_STOP_GRACE_S = 20.0  # after SIGTERM (Triton itself gives up after --exit-timeout-secs); then SIGKILL
_ABORT_GRACE_S = 3.0  # a failed up(): nothing to drain, and Triton ignores SIGTERM while a model loads


@dataclass(frozen=True)
class LaunchPlan:
    """Everything `up()` will do, computed without side effects."""

    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]  # overrides on top of os.environ
    log_path: Path
    backend_dir: Path | None  # --backend-directory; private ones are rebuilt on each up()
    backend_files: tuple[tuple[Path, Path], ...]  # (file inside a private backend_dir, source file)
    python_onnxruntime_backend: bool  # install our Python-based onnxruntime backend


def _python_env() -> dict[str, str]:
    """Let the python-backend stub import numpy/onnxruntime from *this* environment.

    The stub embeds libpython; with no program name set it searches PATH for `python3` to find its
    prefix, so our interpreter's bin dir goes first (a venv is then found through its pyvenv.cfg;
    PYTHONPATH is not honoured by the stub). Our libpython goes on LD_LIBRARY_PATH so the stub runs
    the same patch release as the stdlib it finds.
    """
    env: dict[str, str] = {}
    bindir = Path(sys.executable).parent
    if (bindir / "python3").exists():
        env["PATH"] = f"{bindir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}"
    else:
        log.warning("no python3 next to %s; python models may not find this environment's packages", sys.executable)
    libdir = sysconfig.get_config_var("LIBDIR")
    ldlib = sysconfig.get_config_var("LDLIBRARY")
    if libdir and ldlib and (Path(libdir) / str(ldlib)).exists():
        env["_LIBPYTHON_DIR"] = str(libdir)
    return env


def _files_under(src: Path, dest: Path) -> list[tuple[Path, Path]]:
    return [
        (dest / f.relative_to(src), f)
        for f in sorted(src.rglob("*"))
        if f.is_file() and "__pycache__" not in f.relative_to(src).parts
    ]


def plan_launch(settings: ServerSettings, install: TritonInstall) -> LaunchPlan:
    """The argv, environment and backend layout for `settings` (pure apart from reading dirs).

    A private backend dir is built only when needed: for the wheel (its python backend needs the stub
    matching this interpreter) or to add the Python-based onnxruntime backend. Otherwise the install's
    own backend dir is used as is.
    """
    settings = with_server_defaults(settings)
    state_dir = settings.state_dir.absolute()
    backend_dir: Path | None = install.backends_dir
    files: list[tuple[Path, Path]] = []
    src = install.backends_dir
    has_python = src is not None and (src / "python" / "libtriton_python.so").is_file()
    python_ort = has_python and not install.has_native_onnxruntime
    if src is not None and src.is_dir() and (python_ort or (has_python and install.stubs_dir is not None)):
        backend_dir = state_dir / _BACKENDS
        for entry in sorted(p for p in src.iterdir() if p.is_dir()):
            if entry.name == "onnxruntime" and python_ort:
                continue  # replaced by ours below
            files.extend(_files_under(entry, backend_dir / entry.name))
        if has_python and install.stubs_dir is not None:
            version = f"{sys.version_info.major}.{sys.version_info.minor}"
            stub = install.stubs_dir / version / "triton_python_backend_stub"
            if not stub.is_file():
                raise MissingDependency(
                    f"tritonserver's python backend has no stub for Python {version} ({stub} is missing)",
                    hint="run deployer with a Python version nvidia-pytriton supports (3.8-3.13)",
                )
            files.append((backend_dir / "python" / stub.name, stub))

    # Only when we supply the stub: a native install's stub belongs to that install's own Python.
    env = _python_env() if install.stubs_dir is not None else {}
    lib_dirs = [str(install.lib_dir)] if install.lib_dir else []
    libpython = env.pop("_LIBPYTHON_DIR", None)
    if libpython:
        lib_dirs.append(libpython)
    if os.environ.get("LD_LIBRARY_PATH"):
        lib_dirs.append(os.environ["LD_LIBRARY_PATH"])
    if lib_dirs:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(lib_dirs)
    env.update(dict(settings.env))

    argv = tritonserver_argv(
        settings,
        binary=str(install.binary),
        repository=settings.repository_url or str(settings.repository.absolute()),
        backend_dir=str(backend_dir) if backend_dir else None,
        cache_dir=str(install.caches_dir) if install.caches_dir else None,
    )
    return LaunchPlan(
        argv=tuple(argv),
        env=tuple(sorted(env.items())),
        log_path=state_dir / LOG_FILE,
        backend_dir=backend_dir,
        backend_files=tuple(files),
        python_onnxruntime_backend=python_ort,
    )


class LocalRuntime(ServerLifecycle[None]):
    """Runtime protocol implementation for a local `tritonserver` process."""

    name: RuntimeName = "local"

    def __init__(self) -> None:
        super().__init__()
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    # -- how the server is planned, found and started (the lifecycle is ServerLifecycle.up) ----------

    def _plan(self, settings: ServerSettings) -> None:
        # nothing to plan before the port check: `plan_launch` needs the installed server, and finding
        # it must not hide a busy port on a machine without one
        return None

    def _prepare(self, settings: ServerSettings, plan: None) -> None:
        state_dir = settings.state_dir.absolute()
        previous = load_state(state_dir)
        if previous is not None:
            if previous.runtime != "local" or is_running(previous.pid):
                what = f"pid {previous.pid}" if previous.runtime == "local" else f"runtime {previous.runtime}"
                raise EnvironmentProblem(
                    f"a server started from {state_dir} is recorded as running ({what})",
                    hint="run `deployer down` first",
                )
            clear_state(state_dir)  # stale: its process is gone

    def _launch(self, settings: ServerSettings, plan: None, state: ServerState) -> Launched:
        install = find_tritonserver(settings)
        launch = plan_launch(settings, install)
        self._prepare_files(launch)
        # what the server will find, read back from the directory it is given (the smoke report names it)
        backends = inventory(launch.backend_dir or _TRITON_BACKENDS)
        if dict(backends).get("onnxruntime") == DEPLOYER_CPU:
            log.warning(
                "%s has no native onnxruntime backend; ONNX models run on deployer's Python-based "
                "ONNX Runtime CPU backend (correct, slower than native)",
                install.binary,
            )
        launched_at = time.monotonic()
        pid = self._start(launch)
        return Launched(
            state=replace(state, log_path=launch.log_path, pid=pid, backends=backends),
            describe=f"tritonserver (pid {pid})",
            alive=lambda: self._alive(pid),
            log_tail=lambda lines: file_tail(launch.log_path, lines),
            backends=lambda: backends,
            launched_at=launched_at,
        )

    @staticmethod
    def _prepare_files(plan: LaunchPlan) -> None:
        plan.log_path.parent.mkdir(parents=True, exist_ok=True)
        if plan.backend_dir is None or not (plan.backend_files or plan.python_onnxruntime_backend):
            return  # the install's own backend dir, used as is
        if plan.backend_dir.exists():
            shutil.rmtree(plan.backend_dir)
        for dest, source in plan.backend_files:
            dest.parent.mkdir(parents=True, exist_ok=True)
            # Triton rejects backend libraries whose real path escapes the backend dir: no symlinks.
            try:
                os.link(source, dest)
            except OSError:  # another filesystem
                shutil.copy2(source, dest)
        if plan.python_onnxruntime_backend:
            ort_dir = plan.backend_dir / "onnxruntime"
            ort_dir.mkdir(parents=True, exist_ok=True)
            # a copy, not a link: upgrading deployer must not change a running server's backend
            shutil.copyfile(_ORT_BACKEND_SRC, ort_dir / "model.py")

    def _start(self, plan: LaunchPlan) -> int:
        env = {**os.environ, **dict(plan.env)}
        with plan.log_path.open("wb") as logfile:
            try:
                proc = subprocess.Popen(
                    list(plan.argv),
                    stdin=subprocess.DEVNULL,
                    stdout=logfile,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=plan.log_path.parent,
                    start_new_session=True,  # own process group: down() signals the stubs too
                    close_fds=True,
                )
            except OSError as exc:
                raise EnvironmentProblem(f"cannot start {plan.argv[0]}: {exc}") from exc
        self._children[proc.pid] = proc
        log.info("started %s (pid %d), log %s", plan.argv[0], proc.pid, plan.log_path)
        return proc.pid

    def _abort(self, state: ServerState) -> None:
        self.down(state, grace_s=_ABORT_GRACE_S, unload=False)

    def _is_running(self, state: ServerState) -> bool:
        return self._alive(state.pid)

    def _alive(self, pid: int | None) -> bool:
        if pid is not None and pid in self._children:
            return self._children[pid].poll() is None
        return is_running(pid)

    # -- down / status / logs ------------------------------------------------------------------------

    def down(self, state: ServerState, grace_s: float = _STOP_GRACE_S, *, unload: bool = True,
             quick: bool = False) -> None:
        """Unload the models (`unload`), SIGTERM the process group, wait up to `grace_s`, SIGKILL what is
        left; forget the state. Idempotent. What it did is in `last_stop`. `quick`: no unload, no grace
        (the group is killed and its shared-memory segments removed: python models' `finalize()` does
        not run, which is why only deploy's own server, idle after its smoke, is stopped this way).

        The unload through the repository API comes first because it is the graceful part that is fast:
        in-flight requests finish, models finalize, stubs exit, and Triton then exits on SIGTERM at once
        instead of polling its unloading models once a second.
        """
        if quick:
            grace_s, unload = 0.0, False
        pid = state.pid
        report = StopReport()
        alive = pid is not None and (pid in self._children or is_running(pid))
        # a SIGKILLed tritonserver leaves its backend stubs running in its process group: stop them too
        if pid is not None and (alive or group_members(pid)):
            if unload and alive:
                report = unload_for_stop(state)
            seconds, killed = stop_group(pid, self._children.pop(pid, None), grace_s)
            if killed and not quick:
                log.warning("tritonserver (pid %d) still running %.0f s after SIGTERM; killed it", pid, grace_s)
            report = StopReport(report.unload_s, seconds, report.unloaded, report.pending, killed)
        self.last_stop = report
        forget(state, "pid")

    def close(self) -> None:
        """Stop every server this instance started that is still running (for tests and atexit)."""
        for pid in list(self._children):
            stop_group(pid, self._children.pop(pid), _ABORT_GRACE_S)

    def logs(self, state: ServerState, tail: int = 200) -> str:
        """Last `tail` lines of the server log."""
        return file_tail(state.log_path, tail)

    @staticmethod
    def state_file(settings: ServerSettings) -> Path:
        """Where `up()` records the server for `settings`."""
        return state_path(settings.state_dir.absolute())
