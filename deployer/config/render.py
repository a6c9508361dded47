"""Render `config.pbtxt` from Jinja2 templates and prove it equals the intended `ModelConfig`.

The input is a plain mapping in protobuf-JSON form of `inference.ModelConfig` (proto field names).
It is parsed with `json_format.ParseDict` (the *expected* message), turned into a typed read-only view
for the template (see `_view`), rendered, and the text is parsed back with `text_format.Parse`.
Any difference raises `RenderMismatchError` with a field-level diff, so a template can never silently
drop, alter or inject a field.

Escaping: every string reaches the text through the `pb`/`pbstr` filters (protobuf `CEscape`, all
non-ASCII and control bytes as octal escapes), enums through `pbenum` (identifier check). As defence in
depth, a config string printed *without* a filter (`"{{ config.name }}"`) is still escaped by the
environment's `finalize` hook (without adding quotes), so a user template cannot inject fields that way.
"""

from __future__ import annotations

import difflib
import functools
import logging
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from google.protobuf import text_encoding, text_format
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from deployer.config import pb
from deployer.config.pb import parse_pbtxt
from deployer.errors import RenderMismatchError, TemplateError, UserError

if TYPE_CHECKING:

    from tritonclient.grpc.model_config_pb2 import ModelConfig

__all__ = [
    "DEFAULT_TEMPLATE",
    "default_template_dir",
    "expected_message",
    "parse_pbtxt",
    "render_config",
]

logger = logging.getLogger(__name__)

DEFAULT_TEMPLATE = "config.pbtxt.j2"
_ENUM_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MAX_DIFF_LINES = 40
# Fields shown to templates (and so rendered) even at their proto3 default, because a reader of config.pbtxt
# expects them: `max_batch_size: 0` is a decision, and Triton's docs always spell out these enum kinds.
_ALWAYS_SHOWN: dict[str, tuple[str, ...]] = {
    "inference.ModelConfig": ("max_batch_size",),
    "inference.ModelSequenceBatching.Control": ("kind",),
    "inference.ModelInstanceGroup.SecondaryDevice": ("kind",),
    "inference.BatchOutput": ("kind",),
}


# --------------------------------------------------------------------------- schema


def expected_message(config: Mapping[str, Any] | Message) -> ModelConfig:
    """The `ModelConfig` a config mapping (protobuf-JSON, proto field names) stands for.

    Raises UserError for unknown fields, bad enum names or wrong value types.
    """
    if isinstance(config, Message):
        msg = pb.model_config_module().ModelConfig()
        msg.CopyFrom(config)  # raises TypeError for a message of another type: a caller bug
        return msg
    if not isinstance(config, Mapping):
        raise UserError(f"model configuration must be a mapping, got {type(config).__name__}")
    try:
        return pb.from_mapping(config)
    except pb.ParseError as exc:
        name = config.get("name", "?")
        raise UserError(
            f"configuration of model {name!r} is not a valid Triton ModelConfig: {exc}",
            hint="use proto field names (input, data_type, dims, max_batch_size ...) and enum names "
            "such as TYPE_FP32 / KIND_GPU; the schema is the installed tritonclient's model_config.proto",
        ) from exc


# --------------------------------------------------------------------------- the template's view


class PbMessage(dict[str, Any]):
    """A set message: its set fields (field-number order) by proto name. `type_name` is the full name."""

    def __init__(self, type_name: str) -> None:
        super().__init__()
        self.type_name = type_name


class PbMap(dict[Any, Any]):
    """A protobuf map field (keys are `PbString` or `int`)."""


class PbString(str):
    """A string from the configuration; escaped even if a template prints it without a filter."""

    __slots__ = ()


class PbEnum(str):
    """An enum value name from the configuration (printed bare, after an identifier check)."""

    __slots__ = ()


def _enum_type(fd: FieldDescriptor) -> EnumDescriptor:
    assert fd.enum_type is not None, fd.full_name  # only called for enum fields
    return fd.enum_type


def _message_type(fd: FieldDescriptor) -> Descriptor:
    assert fd.message_type is not None, fd.full_name  # only called for message fields
    return fd.message_type


def _scalar_view(fd: FieldDescriptor, value: Any) -> Any:
    if fd.type == FieldDescriptor.TYPE_ENUM:
        ev = _enum_type(fd).values_by_number.get(value)
        if ev is None:
            raise UserError(f"field {fd.full_name}: {value} is not a value of enum {_enum_type(fd).full_name}")
        return PbEnum(ev.name)
    if fd.type == FieldDescriptor.TYPE_STRING:
        return PbString(value)
    if fd.type == FieldDescriptor.TYPE_FLOAT:
        # Stored as float32; the shortest repr that round-trips keeps "0.1" readable instead of 0.100000001.
        from google.protobuf.internal import type_checkers

        return type_checkers.ToShortestFloat(value) if math.isfinite(value) else value
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        return _view(value)
    return value


def _is_repeated(fd: FieldDescriptor) -> bool:
    # protobuf >= 6 has `is_repeated` and deprecates `label`; 4.x/5.x only have `label`.
    rep = getattr(fd, "is_repeated", None)
    if rep is None:
        return bool(fd.label == FieldDescriptor.LABEL_REPEATED)  # type: ignore[attr-defined]
    return bool(rep() if callable(rep) else rep)


def _is_map(fd: FieldDescriptor) -> bool:
    return fd.type == FieldDescriptor.TYPE_MESSAGE and bool(_message_type(fd).GetOptions().map_entry)


def _view(msg: Message) -> PbMessage:
    """Typed view of a message for templates: set fields (+ `_ALWAYS_SHOWN`), proto names, enums as names."""
    desc = msg.DESCRIPTOR
    out = PbMessage(desc.full_name)
    items: list[tuple[Any, Any]] = list(msg.ListFields())
    present = {fd.name for fd, _ in items}
    items += [
        (desc.fields_by_name[name], getattr(msg, name))
        for name in _ALWAYS_SHOWN.get(desc.full_name, ())
        if name not in present
    ]
    for fd, value in sorted(items, key=lambda item: item[0].number):
        if _is_map(fd):
            entry = _message_type(fd)
            kfd, vfd = entry.fields_by_name["key"], entry.fields_by_name["value"]
            out[fd.name] = PbMap((_scalar_view(kfd, k), _scalar_view(vfd, value[k])) for k in sorted(value))
        elif _is_repeated(fd):
            out[fd.name] = [_scalar_view(fd, v) for v in value]
        else:
            out[fd.name] = _scalar_view(fd, value)
    return out


# --------------------------------------------------------------------------- filters


def _fmt_float(value: float) -> str:
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return repr(float(value))


def _defined(value: Any) -> None:
    """Let an undefined value fail as UndefinedError (naming the missing field), not as a type error."""
    if isinstance(value, jinja2.Undefined):
        str(value)  # StrictUndefined raises here
        raise TypeError("undefined value")


def pb_string(value: Any) -> str:
    """Quoted protobuf-text string literal; every non-printable or non-ASCII byte is octal-escaped."""
    _defined(value)
    if not isinstance(value, str):
        raise TypeError(f"pbstr expects a string, got {type(value).__name__} {value!r}")
    escaped: str = text_encoding.CEscape(value.encode("utf-8"), as_utf8=False)
    return f'"{escaped}"'


def pb_enum(value: Any) -> str:
    """A bare enum identifier, after checking it is one (so it cannot carry text-format syntax)."""
    _defined(value)
    if not isinstance(value, str) or not _ENUM_IDENT.fullmatch(value):
        raise ValueError(f"not an enum identifier: {value!r}")
    return str(value)


def pb_value(value: Any) -> str:
    """Any scalar as protobuf text: enums bare, strings quoted+escaped, bools lower-case, numbers exact."""
    _defined(value)
    if isinstance(value, PbEnum):
        return pb_enum(value)
    if isinstance(value, str):
        return pb_string(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(int(value))  # int() drops IntEnum-style reprs
    if isinstance(value, float):
        return _fmt_float(value)
    raise TypeError(f"cannot render {type(value).__name__} {value!r} as a protobuf text scalar")


def pb_comment(text: Any) -> str:
    """`# ` comment lines; non-printable characters are escaped so no line break can end the comment."""
    lines = str(text).split("\n")
    return "\n".join(
        "# " + "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in line)
        for line in lines
    )


def _finalize(value: Any) -> Any:
    """Applied to every `{{ ... }}`: config strings/enums printed raw are still escaped/validated."""
    if isinstance(value, PbEnum):
        return pb_enum(value)
    if isinstance(value, PbString):
        escaped: str = text_encoding.CEscape(value.encode("utf-8"), as_utf8=False)
        return escaped
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


# --------------------------------------------------------------------------- environment


def default_template_dir() -> Path:
    """`deployer/templates` inside a wheel (force-included), else the checkout's top-level `templates/`."""
    package = Path(__file__).resolve().parents[1]  # deployer/
    packaged = package / "templates"
    if (packaged / DEFAULT_TEMPLATE).is_file():
        return packaged
    return package.parent / "templates"


@functools.lru_cache(maxsize=16)
def _environment(search_path: tuple[str, ...]) -> jinja2.Environment:
    """The one Jinja environment factory (cached per search path so compiled templates are reused)."""
    # Sandboxed for every template, ours included: a spec's `templates:` dir may come from anywhere
    # (a downloaded example, a colleague's repo), and a plain Environment lets
    # `{{ cycler.__init__.__globals__.os.system(...) }}` run code. The immutable sandbox also refuses
    # to mutate the config views handed to templates.
    env = ImmutableSandboxedEnvironment(
        loader=jinja2.FileSystemLoader(list(search_path)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # output is protobuf text, escaped by the pb* filters
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=_finalize,
    )
    env.filters.update(pb=pb_value, pbstr=pb_string, pbenum=pb_enum, pbcomment=pb_comment)
    env.tests.update(
        pbmessage=lambda v: isinstance(v, PbMessage),
        pbmap=lambda v: isinstance(v, PbMap),
        pbenum=lambda v: isinstance(v, PbEnum),
        pblist=lambda v: isinstance(v, list),
    )
    return env


def _search_path(template_dir: Path | None) -> tuple[str, ...]:
    default = default_template_dir()
    if template_dir is None:
        return (str(default),)
    template_dir = Path(template_dir)  # tolerate a str from callers
    if not template_dir.is_dir():
        raise TemplateError(
            f"template directory {str(template_dir)!r} does not exist or is not a directory",
            hint="point template_dir at a directory containing config.pbtxt.j2, or omit it for the default",
        )
    # The user's dir wins; the default dir stays searchable so user templates can import its macros.
    return (str(template_dir.resolve()), str(default))


def _template_location(exc: BaseException, search_path: Iterable[str]) -> tuple[str, int] | None:
    """Innermost traceback frame that belongs to a template file (Jinja rewrites frames to template lines)."""
    roots = tuple(search_path)
    found: tuple[str, int] | None = None
    tb = exc.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.startswith(roots) and not filename.endswith(".py"):
            found = (filename, tb.tb_lineno)
        tb = tb.tb_next
    return found


# --------------------------------------------------------------------------- render + proof


def render_config(
    config: Mapping[str, Any],
    *,
    template_dir: Path | None = None,
    template_name: str = DEFAULT_TEMPLATE,
    header: str | None = None,
) -> str:
    """Render `config.pbtxt` text for `config` and prove it parses back to exactly the same ModelConfig.

    `header` becomes leading `#` comment lines. Raises UserError (invalid config), TemplateError (template
    missing/syntax/undefined/runtime error, or text that is not valid protobuf text, with file and line)
    and RenderMismatchError (parsed-back config differs; field-level diff in `details`).
    """
    expected = expected_message(config)
    search_path = _search_path(template_dir)
    env = _environment(search_path)
    try:
        template = env.get_template(template_name)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(
            f"template syntax error in {exc.filename or exc.name}, line {exc.lineno}: {exc.message}",
            hint="fix the Jinja syntax at that line",
        ) from exc
    except jinja2.TemplateNotFound as exc:
        raise TemplateError(
            f"template {template_name!r} not found in {', '.join(search_path)}",
            hint="create it there or pass the right template name",
        ) from exc
    source = template.filename or template_name
    try:
        text = template.render(config=_view(expected), header=None if header is None else PbString(header))
    except Exception as exc:  # any error raised while rendering is a template problem
        where = _template_location(exc, search_path)
        if isinstance(exc, jinja2.TemplateSyntaxError):  # e.g. in an imported macro file
            where = (exc.filename or exc.name or "?", exc.lineno)
        loc = f"{where[0]}, line {where[1]}" if where else source
        if isinstance(exc, SecurityError):
            raise TemplateError(
                f"template {loc}: refused by the sandbox: {exc}",
                hint="templates run in Jinja2's sandbox: they may read the config view and use the pb* "
                "filters, not reach Python internals (attributes starting with '_', globals, mutation)",
            ) from exc
        raise TemplateError(
            f"template {loc}: failed to render: {type(exc).__name__}: {exc}",
            hint="config fields that are not set are absent: guard optional ones with "
            "`{% if config.x is defined %}`; escape strings with |pbstr, enums with |pbenum",
        ) from exc
    try:
        rendered = parse_pbtxt(text)
    except text_format.ParseError as exc:
        line = exc.GetLine() or 0
        raise TemplateError(
            f"template {source} rendered text that is not a valid Triton config.pbtxt: "
            f"rendered line {line}, column {exc.GetColumn()}: {exc}",
            details=_excerpt(text, line),
            hint="the rendered text must be protobuf text format for inference.ModelConfig",
        ) from exc
    if rendered != expected and _wire(rendered) != _wire(expected):  # bytes compare: NaN == NaN
        problems = diff_messages(expected, rendered)
        model = expected.name or "<unnamed>"
        canon = difflib.unified_diff(
            text_format.MessageToString(expected, use_short_repeated_primitives=True).splitlines(),
            text_format.MessageToString(rendered, use_short_repeated_primitives=True).splitlines(),
            "intended",
            "rendered",
            lineterm="",
        )
        raise RenderMismatchError(
            f"rendered config.pbtxt of model {model!r} differs from the intended configuration in "
            f"{len(problems)} field(s): {', '.join(p.split(':', 1)[0] for p in problems[:8])}",
            details="\n".join([*problems[:_MAX_DIFF_LINES], "canonical diff:", *list(canon)[:_MAX_DIFF_LINES]]),
            hint=f"template {source} drops, alters or adds these fields; fix it so every field of the "
            "configuration is rendered (the default macros' `fields()` renders any field)",
        )
    logger.debug("rendered %s (%d bytes) with %s", expected.name, len(text), source)
    return text


def _wire(msg: Message) -> bytes:
    data: bytes = msg.SerializeToString(deterministic=True)
    return data


def _excerpt(text: str, line: int, context: int = 2) -> str:
    lines = text.splitlines()
    lo, hi = max(1, line - context), min(len(lines), line + context)
    return "\n".join(f"{'>' if n == line else ' '}{n:4d} | {lines[n - 1]}" for n in range(lo, hi + 1))


# --------------------------------------------------------------------------- field-level diff


def _short(value: Any) -> str:
    s: str
    if isinstance(value, PbEnum):
        s = str(value)
    elif isinstance(value, dict):
        s = "{" + ", ".join(f"{_short(k)}: {_short(v)}" for k, v in value.items()) + "}"
    elif isinstance(value, Message):
        s = text_format.MessageToString(value, as_one_line=True, use_short_repeated_primitives=True)
        s = "{ " + s + " }" if s else "{}"
    elif isinstance(value, str):
        s = pb_string(value)
    else:
        s = repr(value)
    return s if len(s) <= 100 else s[:97] + "..."


def diff_messages(expected: Message, actual: Message, path: str = "") -> list[str]:
    """`path: what differs` lines between two messages of the same type (empty if equal)."""
    out: list[str] = []
    fds = {fd.name: fd for fd, _ in expected.ListFields()}
    fds.update({fd.name: fd for fd, _ in actual.ListFields()})
    present_e = {fd.name for fd, _ in expected.ListFields()}
    present_a = {fd.name for fd, _ in actual.ListFields()}
    for fd in sorted(fds.values(), key=lambda f: f.number):
        p = f"{path}.{fd.name}" if path else fd.name
        ev, av = getattr(expected, fd.name), getattr(actual, fd.name)
        if fd.name not in present_a:
            out.append(f"{p}: missing from the rendered file (intended {_short(_plain(fd, ev))})")
        elif fd.name not in present_e:
            out.append(f"{p}: not in the intended configuration (rendered {_short(_plain(fd, av))})")
        elif _is_map(fd):
            vfd = _message_type(fd).fields_by_name["value"]
            for k in sorted(set(ev) | set(av), key=str):
                kp = f"{p}[{k!r}]"
                if k not in av:
                    out.append(f"{kp}: missing from the rendered file")
                elif k not in ev:
                    out.append(f"{kp}: not in the intended configuration")
                elif vfd.type == FieldDescriptor.TYPE_MESSAGE:
                    out.extend(diff_messages(ev[k], av[k], kp))
                elif ev[k] != av[k]:
                    out.append(f"{kp}: intended {_short(ev[k])}, rendered {_short(av[k])}")
        elif _is_repeated(fd) and fd.type == FieldDescriptor.TYPE_MESSAGE:
            if len(ev) != len(av):
                out.append(f"{p}: intended {len(ev)} entries, rendered {len(av)}")
            for i, (e_item, a_item) in enumerate(zip(ev, av, strict=False)):
                out.extend(diff_messages(e_item, a_item, f"{p}[{i}]"))
        elif fd.type == FieldDescriptor.TYPE_MESSAGE:
            out.extend(diff_messages(ev, av, p))
        elif _plain(fd, ev) != _plain(fd, av):
            out.append(f"{p}: intended {_short(_plain(fd, ev))}, rendered {_short(_plain(fd, av))}")
    return out


def _plain(fd: FieldDescriptor, value: Any) -> Any:
    """Comparable/printable form of a field value (enum names instead of numbers, lists for repeated)."""
    if _is_map(fd):
        return dict(value)
    if _is_repeated(fd):
        return [_plain_scalar(fd, v) for v in value]
    return _plain_scalar(fd, value)


def _plain_scalar(fd: FieldDescriptor, value: Any) -> Any:
    if fd.type == FieldDescriptor.TYPE_ENUM:
        ev = _enum_type(fd).values_by_number.get(value)
        return PbEnum(ev.name) if ev is not None else value
    return value
