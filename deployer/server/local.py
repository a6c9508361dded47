"""The `local` runtime: a real `tritonserver` process on this machine, no Docker.

Discovery (`find_tritonserver`) and planning (`plan_launch`) are separate from the one place that
acts (`LocalRuntime.up`). The server runs detached in its own session/process group with its log in
`<state_dir>/tritonserver.log`; the state is recorded in `<state_dir>/server.json`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from deployer.errors import EnvironmentProblem, MissingDependency, PortInUse, RepositoryError, ServerError
from deployer.server.argv import tritonserver_argv
from deployer.server.base import RuntimeName, ServerSettings, ServerState, ServerStatus
from deployer.server.readiness import ReadinessReport, query_status, wait_until_ready
from deployer.server.state import clear_state, load_state, save_state, state_path

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

LOG_FILE = "tritonserver.log"
_BACKENDS = "backends"
_ORT_BACKEND_SRC = Path(__file__).parent / "backends" / "onnxruntime" / "model.py"
_STOP_GRACE_S = 20.0  # Triton drains in-flight requests on SIGTERM; then we SIGKILL the group
_ABORT_GRACE_S = 3.0  # a failed up(): nothing to drain, and Triton ignores SIGTERM while a model loads


@dataclass(frozen=True)
class TritonInstall:
    """Where a tritonserver and its companions live."""

    binary: Path
    source: Literal["settings", "path", "pytriton"]
    lib_dir: Path | None = None  # must be on LD_LIBRARY_PATH (the wheel's nvidia_pytriton.libs)
    backends_dir: Path | None = None  # read-only source of backends; None = Triton's default
    stubs_dir: Path | None = None  # python_backend_stubs/<X.Y>/triton_python_backend_stub (wheel only)
    caches_dir: Path | None = None

    @property
    def has_native_onnxruntime(self) -> bool:
        return (
            self.backends_dir is not None and (self.backends_dir / "onnxruntime" / "libtriton_onnxruntime.so").is_file()
        )


@dataclass(frozen=True)
class LaunchPlan:
    """Everything `up()` will do, computed without side effects."""

    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]  # overrides on top of os.environ
    log_path: Path
    backend_dir: Path | None  # --backend-directory; private ones are rebuilt on each up()
    backend_files: tuple[tuple[Path, Path], ...]  # (file inside a private backend_dir, source file)
    python_onnxruntime_backend: bool  # install our Python-based onnxruntime backend


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _install_at(binary: Path, source: Literal["settings", "path", "pytriton"]) -> TritonInstall:
    """Describe the install around `binary`: the /opt/tritonserver layout (`backends/`, `caches/` next
    to `bin/`) or the nvidia-pytriton wheel layout (plus `python_backend_stubs/` and its own libs)."""
    root = binary.resolve().parent.parent
    backends, caches, stubs = root / "backends", root / "caches", root / "python_backend_stubs"
    wheel = stubs.is_dir()
    libs = root.parent.parent / "nvidia_pytriton.libs"  # <site-packages>/pytriton/tritonserver/bin
    return TritonInstall(
        binary=binary,
        source="pytriton" if wheel and source == "pytriton" else source,
        lib_dir=libs if wheel and libs.is_dir() else None,
        backends_dir=backends if backends.is_dir() else None,
        stubs_dir=stubs if wheel else None,
        caches_dir=caches if caches.is_dir() else None,
    )


def find_tritonserver(settings: ServerSettings) -> TritonInstall:
    """settings.tritonserver, else `tritonserver` on PATH, else the one in the nvidia-pytriton wheel."""
    if settings.tritonserver is not None:
        binary = Path(settings.tritonserver).expanduser()
        if not _executable(binary):
            raise MissingDependency(
                f"server.tritonserver is not an executable file: {binary}",
                hint="point it at a tritonserver binary, or unset it to use PATH or nvidia-pytriton",
            )
        return _install_at(binary.absolute(), "settings")
    on_path = shutil.which("tritonserver")
    if on_path:
        return _install_at(Path(on_path), "path")
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependency(
            "no tritonserver found: server.tritonserver is unset, none is on PATH, nvidia-pytriton is absent",
            hint="pip install 'deployer[local]' (ships tritonserver 2.51), or put tritonserver on PATH",
        )
    binary = Path(next(iter(spec.submodule_search_locations))) / "tritonserver" / "bin" / "tritonserver"
    if not _executable(binary):
        raise MissingDependency(
            f"the nvidia-pytriton wheel has no usable tritonserver at {binary}",
            hint="reinstall it: pip install --force-reinstall 'deployer[local]'",
        )
    return _install_at(binary, "pytriton")


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
        repository=str(settings.repository.absolute()),
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


def check_ports_free(host: str, ports: dict[str, int]) -> None:
    """Raise `PortInUse` for the first port something already listens on at `host`."""
    for name, port in ports.items():
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise PortInUse(f"cannot resolve server.host {host!r}: {exc}", hint="use an IP address") from exc
        family, kind, proto, _, addr = infos[0]
        with socket.socket(family, kind, proto) as sock:
            # SO_REUSEADDR: only a live listener conflicts, not TIME_WAIT leftovers (Triton sets it too)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(addr)
            except OSError as exc:
                raise PortInUse(
                    f"port {port} ({name}) on {host} is already in use: {exc.strerror}",
                    hint=f"stop what listens there (`ss -ltnp 'sport = :{port}'` shows it; `deployer down` "
                    f"if it is a server deployer started) or choose another server.{name}",
                ) from exc


def _proc_state(pid: int) -> str | None:
    """Linux /proc state letter, or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def is_running(pid: int | None) -> bool:
    """True when `pid` is a live (non-zombie) tritonserver process."""
    if pid is None or pid <= 0:
        return False
    state = _proc_state(pid)
    if state is None or state in ("Z", "X"):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    # guard against pid reuse after a reboot or a crash
    return b"tritonserver" in cmdline


def _tail(path: Path | None, lines: int) -> str:
    if path is None or not path.is_file():
        return ""
    with path.open("r", encoding="utf-8", errors="replace") as fh:
        return "".join(deque(fh, maxlen=lines))


class LocalRuntime:
    """Runtime protocol implementation for a local `tritonserver` process."""

    name: RuntimeName = "local"

    def __init__(self) -> None:
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self.last_report: ReadinessReport | None = None

    # -- up ------------------------------------------------------------------------------------------

    def up(self, settings: ServerSettings) -> ServerState:
        """Start tritonserver, load `settings.models` one by one, wait for readiness, record the state."""
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
        if not settings.repository.is_dir():
            raise RepositoryError(
                f"model repository {settings.repository} does not exist or is not a directory",
                hint="publish the repository first (`deployer publish`) or fix the repository path",
            )
        check_ports_free(
            settings.host,
            {
                "http_port": settings.http_port,
                "grpc_port": settings.grpc_port,
                "metrics_port": settings.metrics_port,
            },
        )
        install = find_tritonserver(settings)
        plan = plan_launch(settings, install)
        self._prepare(plan)
        if plan.python_onnxruntime_backend:
            log.warning(
                "%s has no native onnxruntime backend; ONNX models run on deployer's Python-based "
                "ONNX Runtime CPU backend (correct, slower than native)",
                install.binary,
            )
        launched_at = time.monotonic()
        state = self._start(settings, plan)
        try:
            self.last_report = wait_until_ready(
                state.http_url,
                settings.models,
                timeout_s=settings.startup_timeout_s,
                is_alive=lambda: self._alive(state.pid),
                log_tail=lambda: _tail(plan.log_path, 60),
                launched_at=launched_at,
            )
        except BaseException:  # includes KeyboardInterrupt: never leave the server behind
            self.down(state, grace_s=_ABORT_GRACE_S)
            raise
        log.info(
            "tritonserver (pid %s) up: ready %.2f s, models %s",
            state.pid,
            self.last_report.server_s,
            ", ".join(f"{m} {s:.2f} s" for m, s in self.last_report.model_load_s) or "none",
        )
        return state

    @staticmethod
    def _prepare(plan: LaunchPlan) -> None:
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

    def _start(self, settings: ServerSettings, plan: LaunchPlan) -> ServerState:
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
        state = ServerState(
            runtime="local",
            host=settings.host,
            http_port=settings.http_port,
            grpc_port=settings.grpc_port,
            metrics_port=settings.metrics_port,
            models=settings.models,
            log_path=plan.log_path,
            pid=proc.pid,
            started_at=time.time(),
        )
        try:
            # recorded before readiness so a `deployer down` from another shell can find it
            save_state(plan.log_path.parent, state)
        except BaseException:
            self.down(state, grace_s=_ABORT_GRACE_S)
            raise
        log.info("started %s (pid %d), log %s", plan.argv[0], proc.pid, plan.log_path)
        return state

    def _alive(self, pid: int | None) -> bool:
        if pid is not None and pid in self._children:
            return self._children[pid].poll() is None
        return is_running(pid)

    # -- down / status / logs ------------------------------------------------------------------------

    def down(self, state: ServerState, grace_s: float = _STOP_GRACE_S) -> None:
        """SIGTERM the server's process group, wait up to `grace_s`, SIGKILL; forget the state. Idempotent."""
        pid = state.pid
        if pid is not None and (pid in self._children or is_running(pid)):
            self._stop_group(pid, grace_s)
        if state.log_path is not None:
            recorded = None
            with contextlib.suppress(EnvironmentProblem):
                recorded = load_state(state.log_path.parent)
            if recorded is None or recorded.pid == pid:
                clear_state(state.log_path.parent)

    def _stop_group(self, pid: int, grace_s: float = _STOP_GRACE_S) -> None:
        child = self._children.pop(pid, None)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            if child is not None:
                if child.poll() is not None:
                    break
            elif not is_running(pid):
                break
            time.sleep(0.1)
        else:
            log.warning("tritonserver (pid %d) still running %.0f s after SIGTERM; killing it", pid, grace_s)
        # whatever is left in the group (python-backend stubs included) goes now
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=10)
        deadline = time.monotonic() + 10
        while is_running(pid) and time.monotonic() < deadline:  # not our child: init reaps it
            time.sleep(0.05)
        if self._alive(pid):
            raise ServerError(f"tritonserver (pid {pid}) is still running after SIGKILL")

    def close(self) -> None:
        """Stop every server this instance started that is still running (for tests and atexit)."""
        for pid in list(self._children):
            self._stop_group(pid, _ABORT_GRACE_S)

    def status(self, state: ServerState | None) -> ServerStatus:
        """Process liveness plus the server's own view of readiness and of each model."""
        if state is None:
            return ServerStatus(running=False, ready=False, models={}, state=None)
        return query_status(state, running=self._alive(state.pid))

    def logs(self, state: ServerState, tail: int = 200) -> str:
        """Last `tail` lines of the server log."""
        return _tail(state.log_path, tail)

    @staticmethod
    def state_file(settings: ServerSettings) -> Path:
        """Where `up()` records the server for `settings`."""
        return state_path(settings.state_dir.absolute())
