"""Which backend implementations a Triton server has, read from its backend directory, and what served a model.

Triton resolves backend `X` in `<backend-dir>/X/`: `libtriton_X.so` (a native backend) or, when there is
none, `model.py` (a Python-based backend, run by the python backend's stub). deployer ships one of the
latter, `onnxruntime/model.py`, for servers without a native onnxruntime backend (the local runtime
installs it into a private backend dir; deployer's CPU image has it). The runtimes record what they find
in `ServerState.backends`; `served_by` names the implementation that served a model from that record and
the model's served config, so the smoke report says what actually ran it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "DEPLOYER_CPU",
    "DEPLOYER_MARKER",
    "INVENTORY_SCRIPT",
    "KINDS",
    "NATIVE",
    "PYTHON_BASED",
    "backend_kind",
    "inventory",
    "parse_inventory",
    "served_by",
]

NATIVE = "native"  # libtriton_<name>.so
DEPLOYER_CPU = "deployer-cpu-python"  # deployer's Python-based CPU onnxruntime backend (model.py)
PYTHON_BASED = "python-based"  # some other Python-based backend (model.py)
KINDS = (NATIVE, DEPLOYER_CPU, PYTHON_BASED)
# `DEPLOYER_BACKEND = "..."` in deployer's model.py; identifies it in any backend dir, whatever version
DEPLOYER_MARKER = "deployer-cpu-onnxruntime"

# Platforms Triton maps onto a backend (model_config.proto); an ensemble runs in Triton's own scheduler.
_PLATFORM_BACKEND = {
    "onnxruntime_onnx": "onnxruntime",
    "tensorrt_plan": "tensorrt",
    "pytorch_libtorch": "pytorch",
    "tensorflow_graphdef": "tensorflow",
    "tensorflow_savedmodel": "tensorflow",
    "ensemble": "ensemble",
}
# Backends deployer may provide itself: say "native" explicitly when the server's own one ran.
_ALTERNATIVES = frozenset({"onnxruntime"})

# POSIX sh, run inside a container (`sh -c SCRIPT sh BACKEND_DIR`): one "<name> <kind>" line per backend,
# with the same rules as `backend_kind`.
INVENTORY_SCRIPT = (
    'for d in "$1"/*/; do [ -d "$d" ] || continue; n=$(basename "$d"); '
    f'if [ -f "$d/libtriton_$n.so" ]; then echo "$n {NATIVE}"; '
    f'elif [ -f "$d/model.py" ]; then if grep -q "{DEPLOYER_MARKER}" "$d/model.py"; '
    f'then echo "$n {DEPLOYER_CPU}"; else echo "$n {PYTHON_BASED}"; fi; fi; done'
)


def backend_kind(directory: Path) -> str | None:
    """The kind of backend in `<backend-dir>/<name>/`, or None when it holds neither a library nor model.py.

    The library wins, as it does in Triton.
    """
    if (directory / f"libtriton_{directory.name}.so").is_file():
        return NATIVE
    model = directory / "model.py"
    if model.is_file():
        try:
            text = model.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return PYTHON_BASED
        return DEPLOYER_CPU if DEPLOYER_MARKER in text else PYTHON_BASED
    return None


def inventory(backend_dir: Path | None) -> tuple[tuple[str, str], ...]:
    """(name, kind) of every backend in `backend_dir`, sorted; () when the directory is missing."""
    if backend_dir is None or not backend_dir.is_dir():
        return ()
    found = []
    for entry in sorted(backend_dir.iterdir()):
        kind = backend_kind(entry) if entry.is_dir() else None
        if kind is not None:
            found.append((entry.name, kind))
    return tuple(found)


def parse_inventory(text: str) -> tuple[tuple[str, str], ...]:
    """`INVENTORY_SCRIPT` output -> (name, kind) pairs, sorted; unknown lines are ignored."""
    found = set()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1] in KINDS:
            found.add((parts[0], parts[1]))
    return tuple(sorted(found))


def _backend_of(config: Mapping[str, Any]) -> str:
    backend = str(config.get("backend") or "")
    platform = str(config.get("platform") or "")
    if platform == "ensemble":
        return "ensemble"
    return backend or _PLATFORM_BACKEND.get(platform, platform)


def served_by(config: Mapping[str, Any], backends: Mapping[str, str]) -> str:
    """What served a model: its served config's backend (or platform) and the implementation the server's
    backend dir holds for it, e.g. "onnxruntime (deployer CPU Python-based backend)", "onnxruntime
    (native)", "python", "tensorrt", "ensemble". "" when the config names no backend."""
    backend = _backend_of(config)
    if not backend or backend == "ensemble":
        return backend
    kind = backends.get(backend)
    if kind == DEPLOYER_CPU:
        return f"{backend} (deployer CPU Python-based backend)"
    if kind == PYTHON_BASED:
        return f"{backend} (Python-based backend)"
    if kind == NATIVE:
        return f"{backend} (native)" if backend in _ALTERNATIVES else backend
    # not recorded (a state written before deployer inspected backend dirs, or the inspection failed)
    return f"{backend} (implementation not recorded)" if backend in _ALTERNATIVES else backend
