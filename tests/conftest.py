"""Marker handling for the whole suite.

- `gpu`: skipped (with the reason) when there is no NVIDIA GPU or no TensorRT.
- `triton`: skipped when no tritonserver can be found, but FAILS when env CI=true (CI must run them).
- `docker`: same rule when no Docker engine answers.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import signal
import subprocess

import pytest


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


@functools.cache
def gpu_unavailable_reason() -> str | None:
    """None when an NVIDIA GPU and the TensorRT Python package are both present."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return "no NVIDIA GPU (nvidia-smi not found)"
    try:
        ok = subprocess.run([smi, "-L"], capture_output=True, timeout=20, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    if not ok:
        return "no NVIDIA GPU (nvidia-smi -L failed)"
    if importlib.util.find_spec("tensorrt") is None:
        return "TensorRT Python package is not installed"
    return None


@functools.cache
def triton_unavailable_reason() -> str | None:
    """None when deployer's local runtime can find a tritonserver binary."""
    from pathlib import Path

    from deployer.errors import MissingDependency
    from deployer.server.base import ServerSettings
    from deployer.server.local import find_tritonserver

    probe = ServerSettings(runtime="local", repository=Path(), models=(), state_dir=Path())
    try:
        find_tritonserver(probe)
    except MissingDependency as exc:
        return f"no tritonserver: {exc.message} ({exc.hint})"
    return None


@functools.cache
def docker_unavailable_reason() -> str | None:
    """None when a Docker engine answers a ping."""
    try:
        # via importlib: the repo's own `docker/` directory would shadow the SDK for type checkers
        docker = importlib.import_module("docker")
    except ImportError:
        return "docker SDK not installed (pip install 'triton-deployer[docker]')"
    try:
        client = docker.from_env(timeout=10)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:
        return f"no Docker engine answers: {type(exc).__name__}: {exc}"
    return None


def pytest_configure(config: pytest.Config) -> None:
    """Ctrl-C tests need Python's SIGINT handler. A shell starting the suite in the background (`cmd &`,
    CI wrappers, nohup) sets SIGINT to SIG_IGN, which Python keeps and children inherit: then
    `_thread.interrupt_main` does nothing and a child's SIGINT is dropped. Restore it, for us and for
    the children we spawn."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("gpu") is not None:
        reason = gpu_unavailable_reason()
        if reason:
            pytest.skip(reason)
    for marker, probe in (("triton", triton_unavailable_reason), ("docker", docker_unavailable_reason)):
        if item.get_closest_marker(marker) is None:
            continue
        reason = probe()
        if reason:
            if _in_ci():
                pytest.fail(f"`{marker}` test cannot run in CI: {reason}", pytrace=False)
            pytest.skip(reason)
