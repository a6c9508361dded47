"""Make the installed `tensorrt-stubs` usable by mypy (a tool for CI and the type-check test).

`tensorrt-stubs` 10.13.0.35.1 installs `tensorrt/` and `tensorrt_bindings/` .pyi files but:
  * no `py.typed` marker and no `-stubs` suffix, so mypy ignores them (PEP 561), and
  * a few generated lines are not valid Python (a parameter named `in`, a non-default parameter after
    defaults in `add_scale_nd`), so mypy refuses to parse them at all.
This script copies them into a directory with only those syntax defects repaired (every other name and
signature is unchanged) so that `MYPYPATH=<dir> mypy --strict deployer/engines` checks our TensorRT
calls against the stubs' real names and signatures.

Usage: python tests/fakes/sanitized_trt_stubs.py [OUT_DIR]   (default: tests/fakes/.trt_stubs)
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

DEFAULT_OUT = Path(__file__).resolve().parent / ".trt_stubs"
_PACKAGES = ("tensorrt", "tensorrt_bindings")


def _stub_root() -> Path:
    spec = importlib.util.find_spec("tensorrt_stubs")
    if spec is None or spec.origin is None:
        raise SystemExit("tensorrt-stubs is not installed (pip install tensorrt-stubs)")
    return Path(spec.origin).resolve().parent.parent


def _repair(text: str) -> str:
    # `in` is a keyword: rename the parameter (positional use is unaffected).
    text = re.sub(r"([(,]\s*)in:", r"\1in_:", text)
    # pybind11-stubgen emitted a required parameter after optional ones; give it a default marker.
    text = text.replace("power: Weights = None, channel_axis: int)", "power: Weights = None, channel_axis: int = ...)")
    # `tensorrt_libs` is a runtime-only helper package without stubs.
    text = text.replace("import tensorrt_libs as tensorrt_libs\n", "")
    # Errors *inside* the generated stubs (untyped helpers etc.) are not ours to fix; only our code is checked.
    return "# mypy: ignore-errors\n" + text


def write_sanitized_stubs(out_dir: Path = DEFAULT_OUT) -> Path:
    """Write repaired copies of the tensorrt stubs under `out_dir`; returns `out_dir`."""
    root = _stub_root()
    for pkg in _PACKAGES:
        for src in sorted((root / pkg).glob("*.pyi")):
            dst = out_dir / pkg / src.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            new = _repair(src.read_text(encoding="utf-8"))
            if not dst.exists() or dst.read_text(encoding="utf-8") != new:
                dst.write_text(new, encoding="utf-8")
    return out_dir


if __name__ == "__main__":
    out = write_sanitized_stubs(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT)
    sys.stdout.write(f"{out}\n")
