"""Write tuned values back into the spec text, changing nothing else.

ruamel's round-trip *dump* re-emits the whole document (indentation normalized, flow mappings
re-spaced, long lines folded), so a heavily formatted spec would not stay byte-identical. Instead the
edit is made at the exact spans ruamel's round-trip *composer* reports for the tuned nodes: existing
values are replaced in place (flow style), missing keys are inserted on a new line at the mapping's
indentation (or after the last entry of a flow mapping), and one comment block above the first edit
records the result (an older `# deployer tune` block of that model is replaced). Everything outside
those spans is byte-identical by construction; `check_rewrite` proves the data changed only as asked.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from deployer.errors import UserError

MARKER = "# deployer tune"
_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")


class Sub(dict[Any, Any]):
    """Updates inside an existing mapping (str keys) or sequence (int keys), not a value to write."""


@dataclass(frozen=True)
class _Edit:
    start: int
    end: int
    text: str
    first: bool = False  # at the same position, goes before the other edits (the comment block)


def render(value: Any) -> str:
    """A flow-style YAML text of ints, floats, bools, identifier-like strings, lists and mappings."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        plain = _PLAIN.fullmatch(value) and value.lower() not in {"true", "false", "null", "yes", "no", "on", "off"}
        return value if plain else json.dumps(value)
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{render(k)}: {render(v)}" for k, v in value.items()) + "}"
    if isinstance(value, Sequence):
        return "[" + ", ".join(render(v) for v in value) + "]"
    raise TypeError(f"cannot render {type(value).__name__}")


def _compose(text: str) -> Any:
    from ruamel.yaml import YAML

    return YAML(typ="rt").compose(text)


def _kind(node: Any) -> str:
    return type(node).__name__  # ScalarNode, MappingNode, SequenceNode


def _content_end(node: Any) -> int:
    """Index just after the last character of `node`'s content (its last scalar or closing bracket)."""
    if _kind(node) == "ScalarNode" or node.flow_style:
        return int(node.end_mark.index)
    ends = [int(node.start_mark.index)]
    for item in node.value:
        if isinstance(item, tuple):
            ends.extend(_content_end(n) for n in item)
        else:
            ends.append(_content_end(item))
    return max(ends)


def _find(mapping: Any, key: str) -> tuple[Any, Any] | None:
    for k, v in mapping.value:
        if _kind(k) == "ScalarNode" and k.value == key:
            return k, v
    return None


def _line_start(text: str, index: int) -> int:
    return text.rfind("\n", 0, index) + 1


def _line_end(text: str, index: int) -> int:
    end = text.find("\n", index)
    if end < 0:
        return len(text)
    return end - 1 if end > index and text[end - 1] == "\r" else end


def model_node(text: str, index: int) -> Any:
    """The composed mapping node of `models[index]`."""
    root = _compose(text)
    models = _find(root, "models") if root is not None and _kind(root) == "MappingNode" else None
    if models is None or _kind(models[1]) != "SequenceNode" or index >= len(models[1].value):
        raise UserError(f"models[{index}] not found in the spec text")
    node = models[1].value[index]
    if _kind(node) != "MappingNode":
        raise UserError(f"models[{index}] is not a mapping")
    return node


def check_inline(text: str, index: int, paths: Sequence[tuple[str | int, ...]]) -> None:
    """Every existing node on the tuned paths is written inside the model (no YAML alias or merge key)."""
    node = model_node(text, index)
    lo, hi = int(node.start_mark.index), _content_end(node)
    for path in paths:
        cur = node
        for part in path:
            if _kind(cur) == "MappingNode" and isinstance(part, str):
                found = _find(cur, part)
                cur = found[1] if found else None
            elif _kind(cur) == "SequenceNode" and isinstance(part, int) and part < len(cur.value):
                cur = cur.value[part]
            else:
                cur = None
            if cur is None:
                break
            if not lo <= int(cur.start_mark.index) <= hi:
                where = ".".join(str(p) for p in path)
                raise UserError(f"models[{index}].{where} comes from a YAML alias or merge key; the tuner writes "
                                "inline values only", hint="write that key out in the model (no `*alias` / `<<:`)")


def _edits(text: str, node: Any, updates: Mapping[Any, Any], nl: str) -> list[_Edit]:
    out: list[_Edit] = []
    if _kind(node) == "SequenceNode":
        for i, upd in updates.items():
            out.extend(_edits(text, node.value[i], upd, nl))
        return out
    missing = {}
    for key, upd in updates.items():
        found = _find(node, key)
        if found is None:
            missing[key] = _materialize(upd)
            continue
        k, v = found
        if isinstance(upd, Sub) and _kind(v) in ("MappingNode", "SequenceNode"):
            out.extend(_edits(text, v, upd, nl))
        elif isinstance(upd, Sub):
            raise UserError(f"cannot update {key!r}: it is a scalar in the spec")
        elif _kind(v) == "ScalarNode" or v.flow_style:
            if _kind(v) == "ScalarNode" and v.value == "" and v.start_mark.index == v.end_mark.index:
                out.append(_Edit(int(k.end_mark.index), _colon_after(text, k) + 1, ": " + render(upd)))
            else:
                out.append(_Edit(int(v.start_mark.index), int(v.end_mark.index), render(upd)))
        else:  # a block collection becomes a flow one after the key's colon
            colon = _colon_after(text, k)
            out.append(_Edit(colon + 1, _content_end(v), " " + render(upd)))
    if missing:
        out.append(_insert(text, node, missing, nl))
    return out


def _colon_after(text: str, key: Any) -> int:
    return text.index(":", int(key.end_mark.index))


def _materialize(upd: Any) -> Any:
    if isinstance(upd, Sub):
        return {k: _materialize(v) for k, v in upd.items()}
    return upd


def _insert(text: str, mapping: Any, values: Mapping[str, Any], nl: str) -> _Edit:
    if mapping.flow_style:
        close = int(mapping.end_mark.index) - 1
        while text[close] != "}":
            close -= 1
        body = ", ".join(f"{k}: {render(v)}" for k, v in values.items())
        if not mapping.value:
            return _Edit(close, close, body)
        end = _content_end(mapping.value[-1][1])
        return _Edit(end, end, ", " + body)
    indent = " " * int(mapping.value[0][0].start_mark.column)
    at = _line_end(text, _content_end(mapping))
    lines = "".join(f"{nl}{indent}{k}: {render(v)}" for k, v in values.items())
    return _Edit(at, at, lines)


def rewrite(text: str, index: int, updates: Mapping[str, Any], comment: Sequence[str]) -> str:
    """`text` with `models[index]` updated (see the module doc) and `comment` lines above the first edit."""
    nl = "\r\n" if "\r\n" in text else "\n"
    node = model_node(text, index)
    edits = _edits(text, node, updates, nl)
    if not edits:
        return text
    first = min(edits, key=lambda e: (e.start, e.end))
    edits.extend(_comment_edits(text, node, first, comment, nl))
    edits.sort(key=lambda e: (e.start, e.end, not e.first))
    for a, b in itertools.pairwise(edits):
        if b.start < a.end:
            raise AssertionError(f"overlapping spec edits {a} and {b}")
    out = text
    for e in reversed(edits):
        out = out[: e.start] + e.text + out[e.end :]
    return out


def _comment_edits(text: str, node: Any, first: _Edit, comment: Sequence[str], nl: str) -> list[_Edit]:
    """Drop this model's older tune comment lines; put `comment` above the line of the first edit."""
    out: list[_Edit] = []
    lo = _line_start(text, int(node.start_mark.index))
    while lo > 0:  # an older block right above the model's first line
        prev = _line_start(text, lo - 1)
        if not text[prev:lo].lstrip().startswith(MARKER):
            break
        lo = prev
    hi = _line_end(text, _content_end(node))
    pos = lo
    while pos <= hi and pos < len(text):
        end = _line_end(text, pos)
        newline = text.find("\n", pos)
        nxt = len(text) if newline < 0 else newline + 1
        if text[pos:end].lstrip().startswith(MARKER):
            out.append(_Edit(pos, nxt, ""))
        pos = nxt
    if first.start == first.end and first.text.startswith(nl):  # new lines after the last entry: comment them
        rest = first.text[len(nl):]
        indent = rest[: len(rest) - len(rest.lstrip(" "))]
        out.append(_Edit(first.start, first.start, "".join(f"{nl}{indent}{c}" for c in comment), first=True))
        return out
    at = _line_start(text, first.start)
    line = text[at:_line_end(text, at)]
    indent = line[: len(line) - len(line.lstrip())]
    out.append(_Edit(at, at, "".join(f"{indent}{c}{nl}" for c in comment), first=True))
    return out


def check_rewrite(old: str, new: str, index: int, updates: Mapping[str, Any]) -> None:
    """The data of `new` is the data of `old` with exactly `updates` applied to models[index]."""
    from ruamel.yaml import YAML

    def plain(text: str) -> Any:
        return json.loads(json.dumps(YAML(typ="safe").load(text)))

    want = plain(old)
    model = want["models"][index]
    _apply(model, updates)
    got = plain(new)
    if got != want:
        raise AssertionError("the rewritten spec's data differs from the intended update")


def _apply(target: Any, updates: Mapping[Any, Any]) -> None:
    for k, upd in updates.items():
        if isinstance(upd, Sub) and (isinstance(target, list) or k in target):
            _apply(target[k], upd)
        else:
            target[k] = copy.deepcopy(json.loads(json.dumps(_materialize(upd))))
