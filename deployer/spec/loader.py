"""Load a spec: YAML with source positions -> defaults merged -> strict schema -> every issue located.

Errors are collected, never raised one at a time: a user fixes a spec in one pass.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from deployer.errors import SpecError, SpecIssue
from deployer.spec import yamlsafe
from deployer.spec.schema import ModelDefaults, ModelSpec, Spec

PathT = tuple[str | int, ...]


@dataclass(frozen=True)
class RawSpec:
    """The parsed YAML tree (ruamel round-trip nodes carry line/column) and where it came from."""

    path: Path
    data: Any
    sha256: str = ""  # of the text that was parsed (read once, bounded): the spec's identity in manifests


def format_path(path: Iterable[str | int]) -> str:
    """`("models", 2, "dims", 0)` -> `models[2].dims[0]`; odd keys are quoted: `shapes["a/b"]`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.isidentifier():
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out


def read_yaml(path: Path) -> RawSpec:
    """Parse YAML keeping positions. Syntax errors, duplicate keys, undecodable bytes and input past the
    size/depth/alias limits (see deployer.spec.yamlsafe) become located SpecErrors."""
    text = yamlsafe.read_text(path)
    data = yamlsafe.parse(text, str(path))
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise SpecError(
            [SpecIssue("", f"the spec must be a mapping, got {type(data).__name__}", "start with `models:`",
                       file=str(path), line=1, column=1)]
        )
    return RawSpec(path=path, data=data, sha256=hashlib.sha256(text.encode("utf-8")).hexdigest())


# --------------------------------------------------------------------------- locations


def _position(node: Any, key: str | int, *, of_key: bool) -> tuple[int, int] | None:
    lc = getattr(node, "lc", None)
    if lc is None:
        return None
    try:
        if isinstance(node, Mapping):
            # A block mapping/list value starts on the next line, at its first child: point at the key,
            # the line a user reads as "this setting".
            collection = isinstance(node[key], Mapping | list)
            line, col = lc.key(key) if (of_key or collection) else lc.value(key)
        else:
            line, col = lc.item(key)
    except (KeyError, IndexError, TypeError, AttributeError):
        return None
    return int(line) + 1, int(col) + 1


def _walk(root: Any, path: PathT, *, of_key: bool) -> tuple[int, int] | None:
    node, pos = root, None
    start = getattr(root, "lc", None)
    if start is not None:
        pos = (int(start.line) + 1, int(start.col) + 1)
    for i, part in enumerate(path):
        last = i == len(path) - 1
        if isinstance(node, Mapping) and part not in node and isinstance(part, str):
            # pydantic names a non-string YAML key (`null:`, `? [a, b]`) by str(key): find that key
            part = next((k for k in node if not isinstance(k, str) and str(k) == part), part)
        if isinstance(node, Mapping) and part in node:
            pos = _position(node, part, of_key=of_key and last) or pos
            node = node[part]
        elif isinstance(node, Sequence) and not isinstance(node, str) and isinstance(part, int) and (
            0 <= part < len(node)
        ):
            pos = _position(node, part, of_key=False) or pos
            node = node[part]
        else:
            # A missing key is reported where its parent is (the top-level mapping for root keys).
            return pos
    return pos


def locate(raw: RawSpec, path: PathT, *, of_key: bool = False) -> tuple[int, int]:
    """1-based (line, column) of `path` in the YAML, falling back to `defaults` for merged keys."""
    pos = _walk(raw.data, path, of_key=of_key)
    if len(path) >= 3 and path[0] == "models" and isinstance(raw.data, Mapping):
        # The key may come from `defaults:`; point there when the model itself lacks it.
        model = raw.data.get("models")
        own = _exists(model, path[1:]) if model is not None else False
        if not own and _exists(raw.data.get("defaults"), path[2:]):
            pos = _walk(raw.data, ("defaults", *path[2:]), of_key=of_key)
    return pos or (0, 0)


def _exists(node: Any, path: PathT) -> bool:
    for part in path:
        in_map = isinstance(node, Mapping) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_map or in_list:
            node = node[part]
        else:
            return False
    return True


def make_issue(
    raw: RawSpec,
    path: PathT,
    message: str,
    hint: str = "",
    *,
    value: Any = None,
    has_value: bool = False,
    of_key: bool = False,
) -> SpecIssue:
    """A SpecIssue located in the spec's YAML."""
    line, col = locate(raw, path, of_key=of_key)
    return SpecIssue(
        path=format_path(path),
        message=message,
        hint=hint,
        value=_plain(value),
        has_value=has_value,
        file=str(raw.path),
        line=line,
        column=col,
    )


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, str):
        return str(value)
    return value


# --------------------------------------------------------------------------- pydantic errors


def _model_class_at(root: type[BaseModel], loc: PathT) -> type[BaseModel] | None:
    """The pydantic model class that holds the key at the end of `loc` (for 'did you mean')."""
    current: Any = root
    for part in loc:
        current = _unwrap(current)
        if isinstance(part, int) or current is None:
            continue
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(part)
            if field is None:
                return None
            current = field.annotation
        else:
            current = None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(tp: Any) -> Any:
    """Strip Optional/list/dict/Annotated down to a model class where there is one."""
    for _ in range(6):
        origin = typing.get_origin(tp)
        if origin is None:
            return tp
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if origin is typing.Annotated:
            tp = args[0]
        elif origin in (list, tuple, typing.Union, types.UnionType):
            models = [a for a in args if isinstance(_unwrap(a), type) and issubclass(_unwrap(a), BaseModel)]
            tp = models[0] if models else (args[0] if args else None)
        elif origin is dict:
            tp = args[1] if len(args) > 1 else None
        else:
            return None
    return tp


def issues_from_validation(
    raw: RawSpec, error: ValidationError, root: type[BaseModel], prefix: PathT = (), *,
    skip: Callable[[PathT], bool] | None = None,
) -> list[SpecIssue]:
    """Translate pydantic errors into located SpecIssues with hints; errors whose location `skip` accepts
    are dropped before the (per error) location and did-you-mean work."""
    issues: list[SpecIssue] = []
    for err in error.errors(include_url=False):
        loc: PathT = tuple(p for p in err["loc"] if not (isinstance(p, str) and _is_union_tag(p)))
        if skip is not None and skip(loc):
            continue
        path = prefix + loc
        kind = err["type"]
        if kind == "extra_forbidden":
            key = loc[-1] if loc else ""
            owner = _model_class_at(root, loc[:-1])
            known = sorted(owner.model_fields) if owner else []
            close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'?" if close else (f"known keys: {', '.join(known)}" if known else "")
            issues.append(make_issue(raw, path, f"unknown key '{key}'", hint, of_key=True))
        elif kind == "invalid_key":
            issues.append(make_issue(raw, path, err["msg"][0].lower() + err["msg"][1:],
                                     "quote the key or remove it (null, lists and mappings cannot be keys)",
                                     of_key=True))
        elif kind == "missing":
            issues.append(make_issue(raw, path, "required key is missing", f"add '{loc[-1]}'"))
        else:
            message = err["msg"][0].lower() + err["msg"][1:]
            issues.append(make_issue(raw, path, message, _type_hint(kind, err.get("ctx")), value=err.get("input"),
                                     has_value=True))
    return issues


_TYPE_HINTS = {
    "int": "write a whole number, e.g. 8",
    "float": "write a number, e.g. 0.5",
    "bool": "write true or false",
    "string": "write a string (quote it if it looks like a number)",
    "list": "write a YAML list, e.g. [1, 2] or one '- item' per line",
    "dict": "write a mapping of key: value lines",
    "model": "write a mapping of key: value lines",
    "tuple": "write a YAML list, e.g. [0.0, 1.0]",
}


def _type_hint(kind: str, ctx: Mapping[str, Any] | None) -> str:
    """How to fix a pydantic type/constraint error, from its error type and context."""
    ctx = ctx or {}
    bounds = {"greater_than_equal": ">= {ge}", "greater_than": "> {gt}", "less_than_equal": "<= {le}",
              "less_than": "< {lt}"}
    if kind in bounds:
        return "use a value " + bounds[kind].format(**ctx)
    if kind == "literal_error":
        return "check the spelling (values are case-sensitive)"
    if kind in ("too_short", "too_long"):
        return f"give at least {ctx['min_length']} item(s)" if kind == "too_short" else "give fewer items"
    if kind == "string_pattern_mismatch":
        return f"match the pattern {ctx.get('pattern', '')}"
    head = kind.split("_")[0]
    return _TYPE_HINTS.get(head, "see docs/spec.md for this key's type")


def _is_union_tag(part: str) -> bool:
    # pydantic inserts the union member's type name into loc (e.g. "list[int]", "literal['all','none']").
    return "[" in part or part in {"int", "str", "float", "bool"}


# --------------------------------------------------------------------------- merge + validate


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Mappings merge recursively; everything else in `override` replaces `base`."""
    out: dict[str, Any] = {k: copy.deepcopy(v) for k, v in base.items()}
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


# Triton rejects these on an ensemble; `defaults` meant for real models must not break ensembles.
ENSEMBLE_SKIPS_DEFAULTS = ("dynamic_batching", "sequence_batching", "instance_group", "optimization", "model_warmup")


def defaults_for(model: Mapping[str, Any], defaults: Mapping[str, Any]) -> Mapping[str, Any]:
    """The defaults that apply to `model`: all of them, except scheduling/instance keys for an ensemble."""
    if "ensemble" in model or model.get("backend") == "ensemble":
        return {k: v for k, v in defaults.items() if k not in ENSEMBLE_SKIPS_DEFAULTS}
    return defaults


def _reported_above(loc: PathT) -> bool:
    return loc[:1] == ("defaults",) or (loc[:1] == ("models",) and len(loc) > 1 and isinstance(loc[1], int))


def validate_schema(raw: RawSpec) -> tuple[Spec | None, list[SpecIssue]]:
    """Strict schema validation of the whole spec, with `defaults` merged into every model."""
    data = raw.data
    issues: list[SpecIssue] = []
    defaults = data.get("defaults")
    usable_defaults: Mapping[str, Any] = {}
    if defaults is not None:
        try:
            ModelDefaults.model_validate(defaults)
            usable_defaults = defaults
        except ValidationError as exc:
            issues.extend(issues_from_validation(raw, exc, ModelDefaults, ("defaults",)))
    merged = dict(data)
    models = data.get("models")
    if isinstance(models, list):
        merged["models"] = [
            deep_merge(defaults_for(m, usable_defaults), m) if isinstance(m, Mapping) and usable_defaults else m
            for m in models
        ]
        for i, model in enumerate(merged["models"]):
            try:
                ModelSpec.model_validate(model)
            except ValidationError as exc:
                issues.extend(issues_from_validation(raw, exc, ModelSpec, ("models", i)))
    try:
        spec = Spec.model_validate(merged)
    except ValidationError as exc:
        spec = None
        # Model and defaults errors were already reported above with better locations (skipped before
        # locating them: a spec with thousands of bad keys would pay that twice).
        issues.extend(issues_from_validation(raw, exc, Spec, skip=_reported_above))
    issues.sort(key=lambda i: (i.line or 10**9, i.column))
    return (spec if not issues else None), issues
