"""The one protobuf helper for Triton's `inference.ModelConfig`: from a mapping, from config.pbtxt text.

The spec's final check, the renderer's proof, the repository's served-version pin and smoke's config
comparison all go through these functions, so a config is parsed one way everywhere.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from google.protobuf import json_format, text_format

if TYPE_CHECKING:
    from types import ModuleType

    from tritonclient.grpc.model_config_pb2 import ModelConfig

__all__ = ["ParseError", "TextParseError", "from_mapping", "model_config_module", "parse_pbtxt"]

ParseError = json_format.ParseError
TextParseError = text_format.ParseError


_PB2 = "tritonclient.grpc.model_config_pb2"


@functools.cache
def model_config_module() -> ModuleType:
    """Triton's generated schema `tritonclient.grpc.model_config_pb2`, loaded without running
    `tritonclient/grpc/__init__.py`: that imports grpc and the whole gRPC client (25-30 ms of every
    `validate`, ~0.13 s alone), while the generated module needs only protobuf (2 ms). It is registered
    under its own name first, so a later `import tritonclient.grpc` (smoke's client) reuses this module
    and the schema is registered in protobuf's pool once. Raises ModuleNotFoundError like an import."""
    if _PB2 in sys.modules:
        return sys.modules[_PB2]
    package = importlib.util.find_spec("tritonclient")  # the top package only: its __init__ is empty
    locations = package.submodule_search_locations if package is not None else None
    path = Path(next(iter(locations or ())), "grpc", "model_config_pb2.py") if locations else None
    spec = importlib.util.spec_from_file_location(_PB2, path) if path is not None and path.is_file() else None
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"No module named {_PB2!r}", name=_PB2)
    module = importlib.util.module_from_spec(spec)
    sys.modules[_PB2] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[_PB2]
        raise
    return module


def jsonable(value: Any) -> Any:
    """Mappings -> dicts (int map keys -> str), tuples -> lists: ParseDict accepts only JSON-shaped input."""
    if isinstance(value, Mapping):
        return {(str(k) if isinstance(k, int) else k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def from_mapping(config: Mapping[str, Any], *, ignore_unknown_fields: bool = False) -> ModelConfig:
    """The ModelConfig a protobuf-JSON mapping (proto field names) stands for; raises `ParseError`.

    `ignore_unknown_fields` is for configs a (newer) server reports, whose extra fields are not ours.
    """
    msg: ModelConfig = model_config_module().ModelConfig()
    json_format.ParseDict(jsonable(config), msg, ignore_unknown_fields=ignore_unknown_fields)
    return msg


def parse_pbtxt(text: str) -> ModelConfig:
    """Parse config.pbtxt text with Triton's schema; raises `TextParseError` on bad text."""
    msg: ModelConfig = model_config_module().ModelConfig()
    text_format.Parse(text, msg)
    return msg
