"""Read and parse a spec's YAML so that hostile input fails fast, located, and in bounded time and memory.

A spec is a hand-written file of a few KB, yet `deployer validate` may be pointed at anything: a
300-byte alias bomb, ten thousand `[`, a 50 MB file, a binary. The stages, each bounded by the last:

1. bytes: `MAX_SPEC_BYTES`, checked with fstat before reading and enforced by a bounded read (pipes and
   devices report no size);
2. text: UTF-8, or UTF-16/32 found by BOM or by the null-byte pattern of the first character (YAML 1.2
   section 5.2); undecodable bytes and characters YAML forbids are reported with line and column;
3. events: ruamel's pure-Python parser, whose event stream is scanned iteratively against
   `MAX_DEPTH`, `MAX_NODES` (counting what aliases expand to) and `MAX_ALIASES` BEFORE anything
   recursive runs: ruamel composes and constructs recursively, and the tree is walked recursively later
   (defaults merge, pydantic) with every alias expanded;
4. only then composition and construction, replayed from the checked events.
"""

from __future__ import annotations

import codecs
import functools
import os
import re
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.constructor import ConstructorError, RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import (
    AliasEvent,
    CollectionEndEvent,
    CollectionStartEvent,
    DocumentStartEvent,
    MappingStartEvent,
    ScalarEvent,
)
from ruamel.yaml.nodes import ScalarNode
from ruamel.yaml.scanner import Scanner, ScannerError

from deployer.errors import SpecError, SpecIssue

# Limits, as internet-facing YAML loaders set them (SnakeYAML: 3 MB, depth 50, 50 collection aliases).
# Ruamel's parser is pure Python (~0.5-1 s per MiB of plain text on a quiet machine, worse for blank
# lines): 1 MiB keeps the worst accepted file around a second, and is still ~25,000 lines, far past any
# real spec.
MAX_SPEC_BYTES = 1024 * 1024
# Real specs nest about 8 deep (models > model > config_overrides > ... > list); recursion downstream
# costs a few frames per level, so 64 stays far from Python's recursion limit.
MAX_DEPTH = 64
# Nodes after alias expansion: that is what the defaults merge and validation walk. A model is ~20-100
# nodes, so this allows hundreds of models while the worst case stays well within a few seconds.
MAX_NODES = 20_000
# Alias uses (`*name`, `<<: *name`): a spec shares a few blocks, not thousands.
MAX_ALIASES = 1_000
# Ruamel decodes a tag one character at a time (quadratic: a 1 MB tag takes 20 s); real tags are short.
MAX_TAG_CHARS = 1024
# Python refuses longer decimal ints (sys.get_int_max_str_digits); YAML 1.1's sexagesimal `1:2:3...`
# is computed with ever bigger powers of 60 (quadratic), and no spec number is this long.
MAX_NUMBER_CHARS = 4300

_MIB = 1024 * 1024
_LINE_END = "\n\0\r\x85\u2028\u2029"  # what ends a line for ruamel's scanner ('\0': end of input)
_NUMBER_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")

# YAML 1.2 (and ruamel's Reader) accept only these characters (c-printable).
_NON_PRINTABLE = re.compile("[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# Line breaks as ruamel counts them, so our positions agree with the ones its marks give.
_BREAK = re.compile("\r\n|[\n\r\x85\u2028\u2029]")
_BOMS = (
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF32_LE, "utf-32-le"),  # before UTF-16 LE: its BOM starts with FF FE too
    (codecs.BOM_UTF16_BE, "utf-16-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF8, "utf-8"),
)
_ASCII = frozenset(b"\t\n\r" + bytes(range(0x20, 0x7F)))
_CONTROL_NAMES = {0x00: "NUL", 0x07: "BEL", 0x08: "backspace", 0x0B: "vertical tab", 0x0C: "form feed",
                  0x1B: "ESC", 0x7F: "DEL"}


def _error(file: str, message: str, hint: str = "", line: int = 0, column: int = 0, path: str = "") -> SpecError:
    return SpecError([SpecIssue(path, message, hint, file=file, line=line, column=column)])


def line_col(text: str, index: int) -> tuple[int, int]:
    """1-based (line, column) of `text[index]`, columns in characters. One linear pass: call it once."""
    line, start = 1, 0
    for m in _BREAK.finditer(text, 0, index):
        line, start = line + 1, m.end()
    return line, index - start + 1


# --------------------------------------------------------------------------- bytes -> text


def read_text(path: Path) -> str:
    """The spec's text, decoded; SpecError when it is missing, too big, undecodable or has forbidden characters."""
    file = str(path)
    try:
        with path.open("rb") as f:
            info = os.fstat(f.fileno())
            if stat.S_ISREG(info.st_mode) and info.st_size > MAX_SPEC_BYTES:
                raise _too_big(file, info.st_size)
            data = f.read(MAX_SPEC_BYTES + 1)  # bounded: /dev/zero and endless pipes report size 0
    except FileNotFoundError:
        raise _error(file, "spec file not found", "check the path") from None
    except OSError as exc:
        raise _error(file, f"cannot read spec: {exc.strerror or exc}") from None
    if len(data) > MAX_SPEC_BYTES:
        raise _too_big(file, None)
    text = _decode(data, file)
    bad = _NON_PRINTABLE.search(text)
    if bad:
        # A binary that happens to be valid UTF-8 (an .onnx file can be) is named by its first NUL.
        nul = text.find("\0")
        raise _forbidden_character(file, text, nul if nul >= 0 else bad.start())
    return text


def _too_big(file: str, size: int | None) -> SpecError:
    got = f"{size} bytes" if size is not None else "longer than that (read stopped at the limit)"
    return _error(file, f"spec file too large: the limit is {MAX_SPEC_BYTES} bytes ({MAX_SPEC_BYTES // _MIB} MiB), "
                        f"this one is {got}",
                  "a spec is hand-written YAML of a few KB: check that this is the spec file")


def _encoding(data: bytes) -> tuple[str, int]:
    """(codec, BOM length): by BOM, else by where the zero bytes of an ASCII first character are."""
    for bom, codec in _BOMS:
        if data.startswith(bom):
            return codec, len(bom)
    head = data[:4]
    if len(head) == 4 and head[:3] == b"\0\0\0" and head[3] in _ASCII:
        return "utf-32-be", 0
    if len(head) == 4 and head[1:] == b"\0\0\0" and head[0] in _ASCII:
        return "utf-32-le", 0
    if len(head) >= 2 and head[0] == 0 and head[1] in _ASCII:
        return "utf-16-be", 0
    if len(head) >= 2 and head[1] == 0 and head[0] in _ASCII:
        return "utf-16-le", 0
    return "utf-8", 0


def _decode(data: bytes, file: str) -> str:
    codec, skip = _encoding(data)
    try:
        return data[skip:].decode(codec)
    except UnicodeDecodeError as exc:
        offset, end, reason = skip + exc.start, skip + exc.end, exc.reason
    nul = data.find(b"\0") if codec == "utf-8" else -1
    if nul >= 0:  # report the binary, not its first stray byte
        offset = nul
        message = f"not a text file: NUL byte at byte offset {nul}"
        hint = "point at the YAML spec, not a binary (an .onnx model belongs under `source:`)"
    else:
        name = codec.upper().replace("-BE", " BE").replace("-LE", " LE")
        bad = " ".join(f"0x{b:02x}" for b in data[offset:end])
        message = f"not valid {name}: byte{'s' if end - offset > 1 else ''} {bad} at byte offset {offset} ({reason})"
        hint = "save the spec as UTF-8"
    # The bytes before give the line and column; `replace` only matters for a truncated code unit.
    prefix = data[skip:offset].decode(codec, errors="replace")
    line, column = line_col(prefix, len(prefix))
    raise _error(file, message, hint, line, column)


def _forbidden_character(file: str, text: str, index: int) -> SpecError:
    code = ord(text[index])
    label = _CONTROL_NAMES.get(code, "control character" if code < 0x20 or 0x80 <= code < 0xA0 else "character")
    line, column = line_col(text, index)
    if code == 0:
        return _error(file, "not a text file: NUL character (U+0000)",
                      "point at the YAML spec, not a binary (an .onnx model belongs under `source:`)", line, column)
    return _error(file, f"{label} U+{code:04X} is not allowed in YAML",
                  'remove it; inside double quotes it can be written as an escape, e.g. "\\x07"', line, column)


# --------------------------------------------------------------------------- text -> data


class _Frame:
    """An open collection while scanning events: its expanded size so far, its height, its anchor."""

    __slots__ = ("anchor", "children", "height", "in_key", "is_map", "key", "label", "size")

    def __init__(self, anchor: str | None, is_map: bool) -> None:
        self.anchor, self.size, self.height = anchor, 1, 1
        self.is_map, self.children = is_map, 0  # in a mapping, even-numbered children are keys
        self.in_key = False  # this collection is a mapping key or inside one
        self.key = ""  # a mapping's last scalar key: names the value that follows
        self.label = ""  # how the parent reaches this collection: ".key" or "[i]"


class _Limits:
    """Checks an event stream against the limits, iteratively, counting aliases as what they expand to."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.open: list[_Frame] = []
        self.anchors: dict[str, tuple[int, int]] = {}  # anchor -> (expanded size, height)
        self.nodes = 0
        self.aliases = 0
        self.documents = 0

    def fail(self, event: Any, message: str, hint: str) -> SpecError:
        mark = event.start_mark
        return _error(self.file, message, hint, mark.line + 1, mark.column + 1)

    def fail_at(self, event: Any, message: str, hint: str) -> SpecError:
        """`fail` with the YAML path of the mapping whose key is at fault."""
        frames = self.open
        while len(frames) > 1 and frames[-1].in_key:
            frames = frames[:-1]
        mark = event.start_mark
        path = "".join(f.label for f in frames).lstrip(".")
        return _error(self.file, message, hint, mark.line + 1, mark.column + 1, path=path)

    def label(self) -> str:
        """The label of a collection starting under the innermost open one."""
        if not self.open:
            return ""
        parent = self.open[-1]
        return f".{parent.key}" if parent.is_map else f"[{parent.children - 1}]"

    def node(self, event: Any, size: int, height: int) -> None:
        """A node of `size` nodes and `height` levels once expanded, placed under the open collections."""
        self.nodes += size
        if self.nodes > MAX_NODES:
            why = f" once aliases are expanded (this one adds {size})" if size > 1 else ""
            raise self.fail(event, f"YAML too large: more than {MAX_NODES} nodes{why}",
                            "a spec needs far fewer values; an alias counts as a copy of what it names")
        if len(self.open) + height > MAX_DEPTH:
            raise self.fail(event, f"YAML nested too deeply: more than {MAX_DEPTH} levels",
                            "flatten the structure (aliases count with the depth of what they name)")
        if self.open:
            parent = self.open[-1]
            parent.size += size
            parent.height = max(parent.height, height + 1)

    def key_check(self, event: Any, height: int) -> bool:
        """Refuse a collection nested inside a mapping key (`? [[a]]: 1`): the constructor would fail
        hashing it instead of saying where. Flat ones (`? [a, b]`) become tuples, refused later with
        their YAML path. Returns whether a collection starting here is (part of) a key."""
        if not self.open:
            return False
        parent = self.open[-1]
        parent.children += 1
        at_key = parent.is_map and parent.children % 2 == 1
        # `height`: 1 for a collection starting here (its children are checked as they come), the
        # named node's height for an alias (`? *x` naming `[[1]]` is nested too)
        if at_key and isinstance(event, ScalarEvent):
            parent.key = str(event.value)
        if (parent.in_key and height >= 1) or (at_key and height >= 2):
            raise self.fail_at(event, "keys should be strings: a list or mapping is nested in a mapping key",
                            "keys are plain names: write `key: value` (remove the `?` or the brackets)")
        return parent.in_key or at_key

    def check(self, events: Iterable[Any]) -> Iterator[Any]:
        for event in events:
            if isinstance(event, ScalarEvent | CollectionStartEvent | AliasEvent):
                named = self.anchors.get(event.anchor, (1, 0)) if isinstance(event, AliasEvent) else (1, 0)
                in_key = self.key_check(event, 1 if isinstance(event, CollectionStartEvent) else named[1])
            if isinstance(event, ScalarEvent):
                self.node(event, 1, 0)
                if event.anchor is not None:
                    self.anchors[event.anchor] = (1, 0)
            elif isinstance(event, CollectionStartEvent):
                self.node(event, 1, 1)  # counted now, so an endless collection stops at the limit
                label = self.label()
                self.open.append(_Frame(event.anchor, isinstance(event, MappingStartEvent)))
                self.open[-1].in_key, self.open[-1].label = in_key, label
            elif isinstance(event, CollectionEndEvent):
                frame = self.open.pop()
                if self.open:  # fold the child's expansion into its parent (its own node is counted)
                    parent = self.open[-1]
                    parent.size += frame.size - 1
                    parent.height = max(parent.height, frame.height + 1)
                if frame.anchor is not None:
                    self.anchors[frame.anchor] = (frame.size, frame.height)
            elif isinstance(event, AliasEvent):
                self.alias(event)
            elif isinstance(event, DocumentStartEvent):
                self.documents += 1
                if self.documents > 1:
                    # Stop here: the rest of a long stream of documents would be parsed for nothing.
                    raise self.fail(event, "invalid YAML: expected a single document in the stream but found "
                                           "another document", "a spec is one YAML document: remove the `---`")
            yield event

    def alias(self, event: Any) -> None:
        self.aliases += 1
        if self.aliases > MAX_ALIASES:
            raise self.fail(event, f"YAML too large: more than {MAX_ALIASES} aliases",
                            "a spec shares a few blocks with aliases, not thousands")
        if any(f.anchor == event.anchor for f in self.open):
            raise self.fail(event, f"alias *{event.anchor} is inside the node it names (a cycle)",
                            "an alias can only name a node that is complete where the alias is used")
        size, height = self.anchors.get(event.anchor, (1, 0))  # undefined: the composer reports it
        self.node(event, size, height)


class _Replay:
    """A ruamel parser that hands out events already checked (ruamel's composer pulls from `loader.parser`)."""

    def __init__(self, events: list[Any], loader: Any = None) -> None:
        self.events, self.index, self.loader = events, 0, loader

    def check_event(self, *choices: Any) -> bool:
        if self.index >= len(self.events):
            return False
        return not choices or isinstance(self.events[self.index], choices)

    def peek_event(self) -> Any:
        return self.events[self.index] if self.index < len(self.events) else None

    def get_event(self) -> Any:
        event = self.peek_event()
        self.index += 1
        return event

    def dispose(self) -> None:
        self.events = []


class _Scanner(Scanner):
    """Ruamel's base scanner (it skips comments: the round-trip one collects them, quadratically), with
    its other quadratic paths bounded or made linear."""

    def scan_tag(self) -> Any:
        token = super().scan_tag()  # linear; the quadratic decoding of the tag comes later
        handle, suffix = token.value
        if len(handle or "") + len(suffix or "") > MAX_TAG_CHARS:
            raise ScannerError("while scanning a tag", token.start_mark,
                               f"tag longer than {MAX_TAG_CHARS} characters", token.start_mark)
        return token

    def scan_block_scalar_ignored_line(self, start_mark: Any) -> Any:
        # The rest of a `|`/`>` header line. Same behaviour as ruamel's, which appends one character at a
        # time to a str (1 MB of trailing spaces: 25 s); here one slice.
        peek = self.reader.peek
        n = 0
        while peek(n) == " ":
            n += 1
        has_comment = peek(n) == "#"
        while has_comment and peek(n) not in _LINE_END:
            n += 1
        rest = self.reader.prefix(n)
        self.reader.forward(n)
        if peek() not in _LINE_END:
            raise ScannerError("while scanning a block scalar", start_mark,
                               f"expected a comment or a line break, but found {peek()!r}", self.reader.get_mark())
        self.scan_line_break()
        return rest if has_comment else None


class _LocatedConstructor(RoundTripConstructor):
    """Ruamel's constructors raise bare ValueError & co. for some scalars (`2020-13-45` as a date, `!!int x`):
    give them the node's position so they are reported like syntax errors."""

    def construct_non_recursive_object(self, node: Any, tag: str | None = None) -> Any:
        if isinstance(node, ScalarNode) and node.tag in _NUMBER_TAGS and len(node.value) > MAX_NUMBER_CHARS:
            raise ConstructorError(None, None, f"number longer than {MAX_NUMBER_CHARS} characters",
                                   node.start_mark)
        try:
            return super().construct_non_recursive_object(node, tag)
        except YAMLError:
            raise
        except (ValueError, TypeError, ArithmeticError, LookupError, AttributeError) as exc:
            what = _short(str(node.value)) if isinstance(node.value, str) else "this node"
            raise ConstructorError(None, None, f"cannot read {what!r} as {node.tag}: {exc}", node.start_mark) from None


def parse(text: str, file: str) -> Any:
    """YAML text -> ruamel round-trip data (nodes carry `.lc` positions). SpecError on bad or hostile YAML."""
    parsing = YAML(typ="rt")
    # The round-trip scanner collects comments by adding one character at a time to a str, quadratic in
    # a long comment or run of blank lines (1 MB of newlines: 17 s). Comments are never used: the base
    # scanner skips them in linear time and yields the same tokens otherwise.
    parsing.Scanner = _Scanner
    try:
        events = list(_Limits(file).check(parsing.parse(text)))
        composing = YAML(typ="rt")
        composing.allow_duplicate_keys = False
        composing.version = parsing.version  # a `%YAML 1.1` directive seen while parsing
        composing.Parser = functools.partial(_Replay, events)
        composing.Constructor = _LocatedConstructor
        # Redefining an anchor is valid YAML; ruamel would print a Python warning with its own source line.
        composing.composer.warn_double_anchors = False
        return composing.load("")  # the stream is ignored: events come from _Replay
    except MarkedYAMLError as exc:
        raise _yaml_error(exc, file) from None
    except YAMLError as exc:  # unmarked (e.g. a reader error): the text was checked, so unexpected
        raise _error(file, f"invalid YAML: {_short(str(exc))}", "fix the YAML syntax") from None


def _short(text: str, limit: int = 200) -> str:
    """Problem texts quote the input; keep a 1 MB scalar or anchor name out of the message."""
    return text if len(text) <= limit else text[:limit] + "..."


def _yaml_error(exc: Any, file: str) -> SpecError:
    mark = exc.problem_mark or exc.context_mark
    problem = " ".join(_short(str(p)) for p in (exc.context, exc.problem) if p)
    if exc.problem_mark and exc.context_mark and exc.context_mark.line != exc.problem_mark.line:
        # e.g. an unclosed '[' is detected lines later: say where the construct started too.
        problem += f" (the construct started at line {exc.context_mark.line + 1}, column " \
                   f"{exc.context_mark.column + 1})"
    return _error(file, f"invalid YAML: {problem}", "fix the YAML syntax (indentation, quotes, duplicate keys)",
                  (mark.line + 1) if mark else 0, (mark.column + 1) if mark else 0)
