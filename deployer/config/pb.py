"""The one protobuf helper for Triton's `inference.ModelConfig`: from a mapping, from config.pbtxt text.

The spec's final check, the renderer's proof, the repository's served-version pin and smoke's config
comparison all go through these functions, so a config is parsed one way everywhere.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from google.protobuf import json_format, text_format

if TYPE_CHECKING:
    from types import ModuleType

    from tritonclient.grpc.model_config_pb2 import ModelConfig

__all__ = ["ParseError", "TextParseError", "from_mapping", "model_config_module", "parse_pbtxt"]

ParseError = json_format.ParseError
TextParseError = text_format.ParseError


@functools.cache
def model_config_module() -> ModuleType:
    """Triton's generated schema; imported lazily because `tritonclient.grpc` costs ~0.4 s to import."""
    from tritonclient.grpc import model_config_pb2

    module: ModuleType = model_config_pb2
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
