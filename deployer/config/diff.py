"""Compare the config we rendered with the one Triton serves, field by field.

Only fields present in *our* config are compared: whatever Triton adds (normalization and backend
auto-complete, brief A.14: `preferred_batch_size = [max]`, instance-group names and counts, pinned
memory, version policy, platform...) is not a difference. Both sides go through the ModelConfig proto,
so spelling differences (int64 as string or number, enum names or numbers) do not matter either.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from deployer.errors import UserError

__all__ = ["ConfigDiff", "diff_config", "model_metadata_diffs"]

# Repeated message fields matched by their `name` rather than by position (Triton may reorder them).
_MATCH_BY_NAME = frozenset({"input", "output", "batch_input", "batch_output", "instance_group"})


@dataclass(frozen=True)
class ConfigDiff:
    """One field where the served value differs from ours (`served` is None when missing)."""

    path: str  # e.g. "input[x].dims", "dynamic_batching.max_queue_delay_microseconds"
    expected: object
    served: object

    def format(self) -> str:
        """`path: expected X, served Y`."""
        return f"{self.path}: expected {self.expected!r}, served {self.served!r}"


def diff_config(expected: Mapping[str, Any], served: Mapping[str, Any]) -> list[ConfigDiff]:
    """Field-level differences between our ModelConfig dict and the served one (empty = agree).

    `expected` uses proto field names (as rendered); `served` is the `/config` JSON, or gRPC's
    `{"config": {...}}` wrapper. Raises UserError if `expected` is not a valid ModelConfig.
    """
    from deployer.config import pb

    if "config" in served and isinstance(served["config"], Mapping) and "name" not in served:
        served = served["config"]
    try:
        exp_msg = pb.from_mapping(expected)
    except pb.ParseError as exc:
        raise UserError(f"expected config is not a valid ModelConfig: {exc}") from exc
    # A newer server may report fields this client's proto does not know; they are not ours.
    srv_msg = pb.from_mapping(served, ignore_unknown_fields=True)
    diffs: list[ConfigDiff] = []
    _walk(expected, exp_msg, srv_msg, "", diffs)
    return diffs


def _field(msg: Any, key: str) -> Any:
    desc = msg.DESCRIPTOR
    f = desc.fields_by_name.get(key)
    if f is None:  # camelCase JSON names are accepted by ParseDict too
        f = next((x for x in desc.fields if x.json_name == key), None)
    return f


def _repeated(f: Any) -> bool:
    # protobuf >= 5 deprecates `label`; older versions lack `is_repeated`.
    flag = getattr(f, "is_repeated", None)
    if flag is not None:
        return bool(flag)
    return bool(f.label == f.LABEL_REPEATED)


def _plain(f: Any, value: Any) -> Any:
    """Value in user terms: enum names instead of numbers, lists instead of repeated containers."""
    from google.protobuf import json_format
    from google.protobuf.descriptor import FieldDescriptor

    if f.type == FieldDescriptor.TYPE_ENUM:
        if _repeated(f):
            return [f.enum_type.values_by_number[v].name for v in value]
        return f.enum_type.values_by_number[value].name
    if f.type == FieldDescriptor.TYPE_MESSAGE:
        return json_format.MessageToDict(value, preserving_proto_field_name=True)
    if _repeated(f):
        return list(value)
    return value


def _walk(spec: Mapping[str, Any], exp: Any, srv: Any, prefix: str, out: list[ConfigDiff]) -> None:
    from google.protobuf.descriptor import FieldDescriptor

    for key, sub in spec.items():
        f = _field(exp, key)
        if f is None:
            continue  # ParseDict would have rejected it; defensive
        path = f"{prefix}{f.name}"
        e_val, s_val = getattr(exp, f.name), getattr(srv, f.name)
        is_map = f.message_type is not None and f.message_type.GetOptions().map_entry
        if is_map:
            _walk_map(f, sub, e_val, s_val, path, out)
        elif _repeated(f) and f.type == FieldDescriptor.TYPE_MESSAGE:
            _walk_repeated(f, sub, e_val, s_val, path, out)
        elif f.type == FieldDescriptor.TYPE_MESSAGE:
            if not srv.HasField(f.name):
                out.append(ConfigDiff(path, _plain(f, e_val), None))
            elif isinstance(sub, Mapping):
                _walk(sub, e_val, s_val, path + ".", out)
        elif e_val != s_val:
            out.append(ConfigDiff(path, _plain(f, e_val), _plain(f, s_val)))


def _walk_repeated(f: Any, sub: Any, e_list: Any, s_list: Any, path: str, out: list[ConfigDiff]) -> None:
    items = list(sub) if isinstance(sub, list) else []
    by_name = f.name in _MATCH_BY_NAME
    served_names = {m.name: m for m in s_list} if by_name else {}
    for i, (spec_item, e_item) in enumerate(zip(items, e_list, strict=False)):
        if by_name and e_item.name:
            label, s_item = f"{path}[{e_item.name}]", served_names.get(e_item.name)
        else:
            label, s_item = f"{path}[{i}]", (s_list[i] if i < len(s_list) else None)
        if s_item is None:
            out.append(ConfigDiff(label, _plain(f, e_item), None))
            continue
        spec_map = dict(spec_item) if isinstance(spec_item, Mapping) else {}
        if f.name == "instance_group" and spec_map.get("kind") in (None, "KIND_AUTO", 0):
            spec_map.pop("kind", None)  # KIND_AUTO resolves to CPU or GPU at load
        _walk(spec_map, e_item, s_item, label + ".", out)


def _walk_map(f: Any, sub: Any, e_map: Any, s_map: Any, path: str, out: list[ConfigDiff]) -> None:
    value_field = f.message_type.fields_by_name["value"]
    keys = list(sub) if isinstance(sub, Mapping) else []
    for key in keys:
        label = f"{path}[{key}]"
        if key not in s_map:
            out.append(ConfigDiff(label, _plain(value_field, e_map[key]), None))
        elif e_map[key] != s_map[key]:
            out.append(ConfigDiff(label, _plain(value_field, e_map[key]), _plain(value_field, s_map[key])))


def model_metadata_diffs(
    expected_inputs: Mapping[str, tuple[str, tuple[int, ...]]],
    expected_outputs: Mapping[str, tuple[str, tuple[int, ...]]],
    metadata: Mapping[str, Any],
) -> list[str]:
    """Differences between expected `{name: (wire dtype, full shape)}` and served model metadata.

    Full shapes include the -1 batch dim for batching models. Returns human-readable lines.
    """
    problems: list[str] = []
    for kind, expected in (("inputs", expected_inputs), ("outputs", expected_outputs)):
        served = {t["name"]: t for t in metadata.get(kind, [])}
        for name, (dtype, shape) in expected.items():
            t = served.get(name)
            if t is None:
                problems.append(f"{kind[:-1]} {name!r} missing (served: {sorted(served)})")
                continue
            if t.get("datatype") != dtype:
                problems.append(f"{kind[:-1]} {name!r} datatype: expected {dtype}, served {t.get('datatype')}")
            got = [int(d) for d in t.get("shape", [])]
            if got != list(shape):
                problems.append(f"{kind[:-1]} {name!r} shape: expected {list(shape)}, served {got}")
        extra = sorted(set(served) - set(expected))
        if extra:
            problems.append(f"unexpected served {kind}: {extra}")
    return problems
