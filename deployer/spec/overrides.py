"""`config_overrides` under the same rules as the typed keys.

Triton reads the merged config, so an override must not be a way around validation (`backend:
../../x` becomes the path of the backend library Triton loads, `max_batch_size: -5` reaches Triton
unchecked, and the smoke tests, engines and server would still act on the typed values). So:

- an override of a knob the spec models (`max_batch_size`, `dynamic_batching`, `input`, ...) is
  translated back into spec form and merged into the model, which is validated and resolved again:
  every schema constraint and rule applies to it, and issues point at the override's own key;
- `backend`/`platform` become the model's `backend` (a backend deployer supports, never a path);
  `name` must be the model's name; files deployer names itself may not be renamed;
- keys the spec does not model are kept as written and merged into the generated config, where
  Triton's own schema (spec/__init__.py `_protobuf_check`) checks them; fields Triton turns into
  library paths must be plain names.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import ValidationError

from deployer.errors import SpecIssue
from deployer.spec.loader import PathT, RawSpec, deep_merge, format_path, issues_from_validation, locate, make_issue
from deployer.spec.schema import ModelSpec

_SKIP: Any = object()  # nothing lifted (malformed node, reported; or an empty wrapper without default)
_OVER = "config_overrides"
_PLAIN = re.compile(r"[A-Za-z0-9_]+")
_PLATFORM_BACKEND = {"onnxruntime_onnx": "onnxruntime", "tensorrt_plan": "tensorrt", "ensemble": "ensemble"}
_BACKENDS = "onnxruntime, tensorrt, python"
Relocations = Mapping[PathT, PathT]


@dataclass
class _State:
    """One model's lift: where each spec-form value came from, unmodeled keys, problems."""

    relocations: dict[PathT, PathT] = field(default_factory=dict)
    leftovers: list[tuple[PathT, Any]] = field(default_factory=list)  # (config path, value as written)
    problems: list[tuple[PathT, str, str, Any]] = field(default_factory=list)  # (config path, message, hint, value)

    def came_from(self, spec: PathT, proto: PathT) -> None:
        self.relocations[spec] = (_OVER, *proto)

    def wrong_shape(self, proto: PathT, value: Any, want: str) -> Any:
        self.problems.append((proto, f"expected {want} (config_overrides use ModelConfig's proto-JSON form)",
                              "see model_config.proto for this field's form", value))
        return _SKIP


class _Node:
    def lift(self, value: Any, spec: PathT, proto: PathT, base: Any, st: _State) -> Any:
        """`value` (found at config path `proto`) in spec form for spec path `spec`; `base` is what the typed
        spec already holds there (a mapping merges into it, anything else replaces it)."""
        raise NotImplementedError


class _Same(_Node):
    """Spec and proto agree on the form (and, below, on every key name)."""

    def __init__(self, convert: Callable[[Any], Any] | None = None) -> None:
        self.convert = convert

    def lift(self, value: Any, spec: PathT, proto: PathT, base: Any, st: _State) -> Any:
        st.came_from(spec, proto)
        return self.convert(value) if self.convert else value


_S = _Same()


def _same(*keys: str) -> dict[str, tuple[str, _Node]]:
    return {k: (k, _S) for k in keys}


class _Map(_Node):
    """A proto message: `fields` maps its proto keys to spec keys. `complete` = the spec models every field,
    so an unknown key is passed on for the schema to report ("did you mean"); otherwise it is kept as written."""

    def __init__(self, fields: Mapping[str, tuple[str, _Node]], *, complete: bool = False) -> None:
        self.fields = fields
        self.complete = complete

    def lift(self, value: Any, spec: PathT, proto: PathT, base: Any, st: _State) -> Any:
        if not isinstance(value, Mapping):
            return st.wrong_shape(proto, value, "a mapping")
        merging = isinstance(base, Mapping)
        if not merging and spec:
            # A new mapping: whatever is wrong inside it (a missing key too) belongs to the override.
            st.came_from(spec, proto)
        out: dict[Any, Any] = {}
        for key, item in value.items():
            if key in self.fields:
                spec_key, node = self.fields[key]
                below = base.get(spec_key) if merging else None
                lifted = node.lift(item, (*spec, spec_key), (*proto, key), below, st)
                if lifted is not _SKIP:
                    out[spec_key] = lifted
            elif self.complete:
                st.came_from((*spec, key), (*proto, key))
                out[key] = item
            else:
                st.leftovers.append(((*proto, key), item))
        for key, (spec_key, _) in self.fields.items():
            # A required key left out is reported under its proto name (`data_type`, not `dtype`).
            if spec_key != key and key not in value and not (merging and spec_key in base):
                st.came_from((*spec, spec_key), (*proto, key))
        return out


class _List(_Node):
    """A repeated field: replaces the typed list as a whole (as a YAML list does in `defaults`)."""

    def __init__(self, item: _Node) -> None:
        self.item = item

    def lift(self, value: Any, spec: PathT, proto: PathT, base: Any, st: _State) -> Any:
        if not isinstance(value, list):
            return st.wrong_shape(proto, value, "a list")
        st.came_from(spec, proto)
        items = [self.item.lift(v, (*spec, i), (*proto, i), None, st) for i, v in enumerate(value)]
        return _SKIP if any(i is _SKIP for i in items) else items  # dropping one would shift the indexes


# `lift` opens like _Map.lift (duplicates: same shape): a proto map has user keys, a message fixed ones;
# what follows the shared mapping check differs.
class _Dict(_Node):
    """A proto map: user-chosen keys, each value lifted by `item`."""

    def __init__(self, item: _Node, key: Callable[[Any], Any] = lambda k: k) -> None:
        self.item = item
        self.key = key

    def lift(self, value: Any, spec: PathT, proto: PathT, base: Any, st: _State) -> Any:
        if not isinstance(value, Mapping):
            return st.wrong_shape(proto, value, "a mapping")
        merging = isinstance(base, Mapping)
        if not merging:
            st.came_from(spec, proto)
        out = {}
        for k, v in value.items():
            sk = self.key(k)
            lifted = self.item.lift(v, (*spec, sk), (*proto, k), base.get(sk) if merging else None, st)
            if lifted is not _SKIP:
                out[sk] = lifted
        return out


class _Unwrap(_Node):
    """A proto message wrapping the spec's one value, e.g. `response_cache: {enable: true}` -> `true`.
    `default` is proto3's value for the field when the message is given empty."""

    def __init__(self, key: str, default: Any = _SKIP) -> None:
        self.key = key
        self.default = default

    def lift(self, value: Any, spec: PathT, proto: PathT, base: Any, st: _State) -> Any:
        if not isinstance(value, Mapping):
            return st.wrong_shape(proto, value, f"a mapping {{{self.key}: ...}}")
        st.leftovers.extend(((*proto, k), v) for k, v in value.items() if k != self.key)
        if self.key in value:
            return _S.lift(value[self.key], spec, (*proto, self.key), base, st)
        st.came_from(spec, proto)
        return self.default


class _Flag(_Node):
    """A message whose presence is the value (`version_policy: {all: {}}` -> `all: true`)."""

    def lift(self, value: Any, spec: PathT, proto: PathT, base: Any, st: _State) -> Any:
        if not isinstance(value, Mapping):
            return st.wrong_shape(proto, value, "a mapping ({} for none)")
        st.leftovers.extend(((*proto, k), v) for k, v in value.items())
        st.came_from(spec, proto)
        return True


def _int_key(key: Any) -> Any:
    # Proto-JSON writes map keys as strings ("1"); the spec's priority levels are integers.
    return int(key) if isinstance(key, str) and key.isascii() and key.isdigit() else key


def _strip_format(value: Any) -> Any:
    return value[len("FORMAT_"):] if isinstance(value, str) and value.startswith("FORMAT_") else value


_TENSOR: dict[str, tuple[str, _Node]] = {
    **_same("name", "dims", "is_shape_tensor"),
    "data_type": ("dtype", _S),
    "reshape": ("reshape", _Unwrap("shape", default=[])),
}
_QUEUE = _Map(_same("timeout_action", "default_timeout_microseconds", "allow_timeout_override", "max_queue_size"),
              complete=True)
# Proto key -> (spec key, translation). Message fields the spec lacks (instance_group.rate_limiter,
# input.is_non_linear_format_io, ensemble step model_namespace, cuda.graph_spec) stay as written.
_LIFTED: dict[str, tuple[str, _Node]] = {
    "max_batch_size": ("max_batch_size", _S),
    "input": ("inputs", _List(_Map({**_TENSOR, **_same("optional", "allow_ragged_batch"),
                                    "format": ("format", _Same(_strip_format))}))),
    "output": ("outputs", _List(_Map({**_TENSOR, **_same("label_filename")}))),
    "dynamic_batching": ("dynamic_batching", _Map({
        **_same("preferred_batch_size", "max_queue_delay_microseconds", "preserve_ordering", "priority_levels",
                "default_priority_level"),
        "default_queue_policy": ("default_queue_policy", _QUEUE),
        "priority_queue_policy": ("priority_queue_policy", _Dict(_QUEUE, key=_int_key)),
    }, complete=True)),
    "sequence_batching": ("sequence_batching", _Map({
        "direct": ("direct", _Map(_same("max_queue_delay_microseconds", "minimum_slot_utilization"), complete=True)),
        "oldest": ("oldest", _Map(_same("max_candidate_sequences", "preferred_batch_size",
                                        "max_queue_delay_microseconds", "preserve_ordering"), complete=True)),
        **_same("max_sequence_idle_microseconds", "control_input", "state", "iterative_sequence"),
    }, complete=True)),
    "ensemble_scheduling": ("ensemble", _Map({
        "step": ("steps", _List(_Map({"model_name": ("model", _S), "model_version": ("version", _S),
                                      "input_map": ("inputs", _S), "output_map": ("outputs", _S)}))),
        **_same("max_inflight_requests"),
    }, complete=True)),
    "instance_group": ("instance_group", _List(_Map(_same("name", "kind", "count", "gpus", "profile", "passive",
                                                          "host_policy")))),
    "model_warmup": ("model_warmup", _List(_Map({
        **_same("name", "batch_size", "count"),
        "inputs": ("inputs", _Dict(_Map({"data_type": ("dtype", _S),
                                         **_same("dims", "zero_data", "random_data", "input_data_file")},
                                        complete=True))),
    }, complete=True))),
    "version_policy": ("version_policy", _Map({
        "latest": ("latest", _Unwrap("num_versions", default=0)),
        "all": ("all", _Flag()),
        "specific": ("specific", _Unwrap("versions", default=[])),
    }, complete=True)),
    "optimization": ("optimization", _Map({
        "graph": ("graph", _Map(_same("level"), complete=True)),
        "cuda": ("cuda", _Map(_same("graphs", "busy_wait_events", "output_copy_stream"))),
        "execution_accelerators": ("execution_accelerators", _Map(
            _same("gpu_execution_accelerator", "cpu_execution_accelerator"), complete=True)),
        "input_pinned_memory": ("input_pinned_memory", _Unwrap("enable", default=False)),
        "output_pinned_memory": ("output_pinned_memory", _Unwrap("enable", default=False)),
        **_same("priority", "gather_kernel_buffer_threshold", "eager_batching"),
    }, complete=True)),
    "parameters": ("parameters", _Dict(_Unwrap("string_value", default=""))),
    "response_cache": ("response_cache", _Unwrap("enable", default=False)),
    "model_transaction_policy": ("decoupled", _Unwrap("decoupled", default=False)),
}
_IDENTITY = ("name", "backend", "platform")


@dataclass(frozen=True)
class Lifted:
    """A model with its overrides folded in; `spec` is None when they are unusable (see `issues`)."""

    spec: ModelSpec | None
    relocations: Relocations  # spec path -> config_overrides path, for issues about lifted values
    leftovers: tuple[tuple[PathT, Any], ...]  # unmodeled (config path, value) pairs, merged as written
    issues: list[SpecIssue]


def relocate(relocations: Relocations, path: PathT) -> PathT:
    """`path` (within a model) moved to the override it came from, by its longest lifted prefix."""
    for n in range(len(path), 0, -1):
        if path[:n] in relocations:
            return (*relocations[path[:n]], *path[n:])
    return path


def lift_overrides(raw: RawSpec, index: int, model: ModelSpec) -> Lifted:
    """Fold `models[index].config_overrides` into the model and validate the result with the schema."""
    overrides = model.config_overrides or {}
    st = _State()
    base = model.model_dump(exclude_unset=True)
    lifted: dict[str, Any] = {}
    _identity(overrides, model, st, lifted)
    for key, value in overrides.items():
        if key in _LIFTED:
            spec_key, node = _LIFTED[key]
            result = node.lift(value, (spec_key,), (key,), base.get(spec_key), st)
            if result is not _SKIP:
                lifted[spec_key] = result
        elif key not in _IDENTITY:
            st.leftovers.append(((key,), value))
    _passthrough(st)
    prefix: PathT = ("models", index)
    issues = [make_issue(raw, (*prefix, _OVER, *p), msg, hint, value=v, has_value=True) for p, msg, hint, v in
              st.problems]
    spec: ModelSpec | None = None
    try:
        # What was refused above is not in `lifted`: the rest is still checked, every problem at once.
        spec = ModelSpec.model_validate(deep_merge(base, lifted))
    except ValidationError as exc:
        issues.extend(_relocated(raw, prefix, exc, st.relocations))
    if issues:
        return Lifted(None, st.relocations, (), issues)
    return Lifted(spec, st.relocations, tuple(st.leftovers), [])


def _identity(overrides: Mapping[str, Any], model: ModelSpec, st: _State, lifted: dict[str, Any]) -> None:
    """name / backend / platform: Triton derives the model directory and the backend library from them."""
    if "name" in overrides and overrides["name"] != model.name:
        st.problems.append((("name",), f"config_overrides may not rename the model: Triton requires the config's "
                            f"name to be its directory name, {model.name!r}",
                            "remove name from config_overrides (rename the model with its own `name:`)",
                            overrides["name"]))
    backend = overrides.get("backend")
    if "backend" in overrides:
        if isinstance(backend, str) and not _PLAIN.fullmatch(backend):
            st.problems.append((("backend",), "a backend must be a plain name: Triton loads "
                                "backends/<backend>/libtriton_<backend>.so, so this would load another library",
                                f"use one of {_BACKENDS} (better: set `backend:` on the model)", backend))
        else:
            lifted["backend"] = backend  # the schema allows exactly the backends deployer deploys
            st.came_from(("backend",), ("backend",))
    if "platform" in overrides:
        platform = overrides["platform"]
        implied = _PLATFORM_BACKEND.get(platform) if isinstance(platform, str) else None
        if implied is None:
            st.problems.append((("platform",), "not a platform deployer deploys",
                                f"use {', '.join(_PLATFORM_BACKEND)}, or remove platform (it follows from the "
                                "backend)", platform))
        elif "backend" in overrides and backend != implied:
            st.problems.append((("platform",), f"platform {platform!r} is for backend {implied!r}, but "
                                f"config_overrides.backend is {backend!r}", "remove one of them", platform))
        elif "backend" not in overrides:
            lifted["backend"] = implied
            st.came_from(("backend",), ("platform",))


def _passthrough(st: _State) -> None:
    """Unmodeled fields Triton turns into library paths must stay plain names."""
    for path, value in st.leftovers:
        if path == ("runtime",) and not _plain_file(value):
            st.problems.append((path, "runtime must be a file name in the backend's directory: Triton loads it "
                                "from there, so a path would load another library", "remove runtime", value))
        agents = value.get("agents") if path == ("model_repository_agents",) and isinstance(value, Mapping) else None
        for k, agent in enumerate(agents if isinstance(agents, list) else []):
            name = agent.get("name") if isinstance(agent, Mapping) else None
            if isinstance(name, str) and not _PLAIN.fullmatch(name):
                st.problems.append(((*path, "agents", k, "name"), "a repository agent must be a plain name: Triton "
                                    "loads libtritonrepoagent_<name>.so from it", "use the agent's name, e.g. checksum",
                                    name))


def _plain_file(value: Any) -> bool:
    return isinstance(value, str) and value not in ("", ".", "..") and not re.search(r"[/\\]", value)


def derived_key_problems(overrides: Mapping[str, Any], default_filename: str | None,
                         config: Mapping[str, Any]) -> list[tuple[PathT, str, str, Any]]:
    """Overrides of file names deployer chooses itself: Triton would look for files it does not publish.
    Returned as (path within the model, message, hint, value)."""
    out: list[tuple[PathT, str, str, Any]] = []
    if "default_model_filename" in overrides and overrides["default_model_filename"] != default_filename:
        out.append(((_OVER, "default_model_filename"), f"deployer publishes the model file as {default_filename!r}, "
                    "so Triton would look for a file that is not there", "remove default_model_filename",
                    overrides["default_model_filename"]))
    if "cc_model_filenames" in overrides and overrides["cc_model_filenames"] != config.get("cc_model_filenames"):
        out.append(((_OVER, "cc_model_filenames"), "deployer names the per-GPU engine files itself",
                    "remove cc_model_filenames; list the GPU archs in engine.compute_capabilities",
                    overrides["cc_model_filenames"]))
    return out


def apply_leftovers(config: dict[str, Any], leftovers: tuple[tuple[PathT, Any], ...]) -> dict[str, Any]:
    """Merge the unmodeled values into the generated config at their paths. A value inside a list item
    the generated config lacks (an instance group the ONNX Runtime fallback drops) is dropped with it."""
    for path, value in leftovers:
        node: Any = config
        for part, below in itertools.pairwise(path):
            if isinstance(node, dict) and part not in node and not isinstance(below, int):
                node[part] = {}
            ok = (isinstance(node, dict) and part in node) or (
                isinstance(node, list) and isinstance(part, int) and part < len(node))
            if not ok:
                break
            node = node[part]
        else:
            if isinstance(node, dict):
                node[path[-1]] = value
    return config


def _is_union_tag(part: Any) -> bool:
    # As in loader.issues_from_validation: pydantic puts union members' type names into error locations.
    return isinstance(part, str) and ("[" in part or part in {"int", "str", "float", "bool"})


def _relocated(raw: RawSpec, prefix: PathT, exc: ValidationError, relocations: Relocations) -> list[SpecIssue]:
    """Schema issues of the merged model, moved to the override keys the offending values came from."""
    issues = issues_from_validation(raw, exc, ModelSpec, prefix)
    errors = exc.errors(include_url=False)
    if len(issues) != len(errors):  # one issue per error is the loader's contract; never guess otherwise
        return issues
    out = []
    for err, issue in zip(errors, issues, strict=True):
        loc: PathT = tuple(p for p in err["loc"] if not _is_union_tag(p))
        moved = relocate(relocations, loc)
        if moved == loc:
            out.append(issue)
            continue
        path = (*prefix, *moved)
        line, column = locate(raw, path, of_key=err["type"] == "extra_forbidden")
        hint = f"add '{moved[-1]}'" if err["type"] == "missing" else issue.hint
        out.append(replace(issue, path=format_path(path), line=line, column=column, hint=hint))
    return out
