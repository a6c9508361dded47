"""Where a local tritonserver lives: an explicit binary, `tritonserver` on PATH, or the nvidia-pytriton wheel.

Discovery only (reads the file system); `deployer.server.local.plan_launch` decides what to do with it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from deployer.errors import MissingDependency
from deployer.server.base import ServerSettings

__all__ = ["TritonInstall", "find_tritonserver"]


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
            hint="pip install 'triton-deployer[local]' (ships tritonserver 2.51), or put tritonserver on PATH",
        )
    binary = Path(next(iter(spec.submodule_search_locations))) / "tritonserver" / "bin" / "tritonserver"
    if not _executable(binary):
        raise MissingDependency(
            f"the nvidia-pytriton wheel has no usable tritonserver at {binary}",
            hint="reinstall it: pip install --force-reinstall 'triton-deployer[local]'",
        )
    return _install_at(binary, "pytriton")
