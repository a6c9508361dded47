"""Build manifest (`<plan>.build.json`), GPU/CUDA discovery, and multi-architecture file names."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from deployer._files import atomic_write
from deployer.errors import UserError

from .request import BuildInfo, GpuInfo, ProfileRecord

LOGGER = logging.getLogger(__name__)


def manifest_path(engine_path: Path) -> Path:
    """`model.plan` -> `model.plan.build.json`."""
    return engine_path.with_name(engine_path.name + ".build.json")


def build_info_to_dict(info: BuildInfo) -> dict[str, Any]:
    """JSON-ready dict (paths as strings, tuples as lists)."""
    doc = asdict(info)
    doc["engine_path"] = str(info.engine_path)
    return doc


def build_info_from_dict(doc: Mapping[str, Any]) -> BuildInfo:
    """Inverse of `build_info_to_dict` (unknown keys ignored, so older readers keep working)."""
    known = {f.name for f in fields(BuildInfo)}
    data = {k: v for k, v in doc.items() if k in known}
    data["engine_path"] = Path(str(data["engine_path"]))
    data["flags"] = tuple(data.get("flags", ()))
    data["warnings"] = tuple(data.get("warnings", ()))
    data["profiles"] = tuple(
        ProfileRecord(**{**p, "min": tuple(p["min"]), "opt": tuple(p["opt"]), "max": tuple(p["max"])})
        for p in data.get("profiles", ())
    )
    return BuildInfo(**data)


def write_manifest(info: BuildInfo) -> Path:
    """Write the manifest next to the engine; returns its path."""

    path = manifest_path(info.engine_path)
    atomic_write(path, json.dumps(build_info_to_dict(info), indent=2, sort_keys=True).encode())
    LOGGER.info("Saving build manifest to %s", path)
    return path


def read_manifest(engine_path: Path) -> BuildInfo:
    """The BuildInfo recorded next to `engine_path`.

    Raises:
        UserError: no manifest (the engine was not built by this tool, or the file was removed).
    """
    path = manifest_path(engine_path)
    if not path.is_file():
        raise UserError(f"no build manifest {path} for engine {engine_path}", hint="rebuild with `deployer build`")
    return build_info_from_dict(json.loads(path.read_text(encoding="utf-8")))


def detect_gpus() -> tuple[GpuInfo, ...]:
    """Visible NVIDIA GPUs via `nvidia-smi` (name, compute capability); () when none or no driver."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return ()
    try:
        proc = subprocess.run(
            [exe, "--query-gpu=index,name,compute_cap", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        LOGGER.debug("nvidia-smi failed: %s", exc)
        return ()
    gpus: list[GpuInfo] = []
    for line in proc.stdout.splitlines() if proc.returncode == 0 else []:
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3 and parts[0].isdigit():
            gpus.append(GpuInfo(int(parts[0]), parts[1], parts[2]))
    return tuple(gpus)


def cuda_version() -> str | None:
    """CUDA runtime version: cuda-python if importable, else $CUDA_VERSION (set in NGC images)."""
    for mod in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            import importlib

            rt = importlib.import_module(mod)
            err, ver = rt.cudaRuntimeGetVersion()
            if int(err) == 0:
                return f"{int(ver) // 1000}.{int(ver) % 1000 // 10}"
        except Exception:
            continue
    return os.environ.get("CUDA_VERSION")


def engine_filename_for_cc(base: str, compute_capability: str) -> str:
    """`model.plan` + "8.6" -> `model_sm86.plan` (one plan per GPU architecture)."""
    stem, dot, ext = base.rpartition(".")
    tag = "sm" + compute_capability.replace(".", "")
    return f"{stem}_{tag}.{ext}" if dot else f"{base}_{tag}"


def cc_model_filenames(builds: Sequence[BuildInfo]) -> dict[str, str]:
    """Triton `cc_model_filenames` ({"8.6": "model_sm86.plan", ...}) from per-architecture builds.

    Triton silently falls back to `default_model_filename` for an unlisted CC (server#4657), so every
    build must carry its CC and file names must be unique.

    Raises:
        UserError: a build without a compute capability, or two builds for the same CC.
    """
    out: dict[str, str] = {}
    for info in builds:
        cc = info.compute_capability
        if not cc:
            raise UserError(f"engine {info.engine_path} has no recorded compute capability", hint="rebuild it")
        if cc in out and out[cc] != info.engine_path.name:
            raise UserError(f"two engines for compute capability {cc}: {out[cc]} and {info.engine_path.name}")
        out[cc] = info.engine_path.name
    if len(set(out.values())) != len(out):
        raise UserError(
            f"engine file names must differ per compute capability, got {out}",
            hint="name them with engine_filename_for_cc()",
        )
    return dict(sorted(out.items()))
