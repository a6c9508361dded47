"""Triton's load-time rules, checked offline (brief A.15), and consistency with the ONNX file.

Each check appends located issues; nothing stops at the first problem. The wording follows what Triton
would say at load time, plus how to fix it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from deployer.dtypes import normalize_dtype, supported_by_backend
from deployer.errors import SpecIssue
from deployer.spec.loader import PathT, RawSpec, make_issue
from deployer.spec.model import ResolvedModel, Tensor
from deployer.spec.overrides import relocate
from deployer.spec.rules_ensemble import ensemble, ensemble_cycles
from deployer.spec.schema_base import INT64_MAX

# Used with fullmatch: `$` would also match before a final newline, and "m\n" would become a directory.
_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")
_CORRID_TYPES = {"INT32", "INT64", "UINT32", "UINT64", "STRING"}


class Checker:
    """Runs every rule over the resolved models of one spec."""

    def __init__(self, raw: RawSpec, models: Sequence[ResolvedModel]) -> None:
        self.raw = raw
        self.models = list(models)
        self.by_name = {m.name: m for m in models}
        self.issues: list[SpecIssue] = []

    def add(self, m: ResolvedModel | int, path: PathT, message: str, hint: str = "", *, value: Any = None,
            has_value: bool = False, of_key: bool = False) -> None:
        index = m if isinstance(m, int) else m.index
        if not isinstance(m, int):
            path = relocate(m.relocations, path)  # the value came from config_overrides: point there
        self.issues.append(make_issue(self.raw, ("models", index, *path), message, hint, value=value,
                                      has_value=has_value, of_key=of_key))

    def run(self) -> list[SpecIssue]:
        for m in self.models:
            _tensor_rules(self, m, "inputs", m.inputs)
            _tensor_rules(self, m, "outputs", m.outputs)
            for rule in (_kind, _batching, _sequence, _instances, _warmup, _versions, _shapes, _files):
                rule(self, m)
            if m.requested_backend == "tensorrt":
                _tensorrt(self, m)
            if m.onnx is not None:
                _onnx(self, m)
            if m.backend == "ensemble" and m.spec.ensemble is not None:
                ensemble(self, m)
        ensemble_cycles(self)
        return self.issues


def _kind(c: Checker, m: ResolvedModel) -> None:
    """`backend: ensemble` and the `ensemble:` section go together; I/O types the backend can carry."""
    if m.backend == "ensemble" and m.spec.ensemble is None:
        c.add(m, ("backend",), "an ensemble needs its steps", "add ensemble: {steps: [{model, inputs, outputs}]}",
              value="ensemble", has_value=True)
    if m.spec.ensemble is not None and m.requested_backend != "ensemble":
        c.add(m, ("ensemble",), f"ensemble scheduling is only valid for backend: ensemble, not {m.requested_backend}",
              "remove `ensemble`, or remove `backend`/`source` to make this model an ensemble")
    # The requested backend counts too: a --fallback deployment must still work once TensorRT is there.
    for backend in sorted({m.backend, m.requested_backend} & {"onnxruntime", "tensorrt"}):
        for key, tensors in (("inputs", m.inputs), ("outputs", m.outputs)):
            for j, t in enumerate(tensors):
                if not supported_by_backend(t.dtype, backend):
                    c.add(m, (key, j, "dtype"), f"the {backend} backend has no {t.dtype} I/O",
                          "cast in the ONNX model", value=t.dtype, has_value=True)


def _files(c: Checker, m: ResolvedModel) -> None:
    """Files the later stages read (calibration and accuracy data, golden outputs) must exist now, not mid-build."""
    base = c.raw.path.resolve().parent
    s = m.spec
    wanted: list[tuple[PathT, str]] = [(("calibration", "data", k), f) for k, f in
                                       enumerate(s.calibration.data if s.calibration else [])]
    wanted += [(("accuracy", "data", k), f) for k, f in enumerate(s.accuracy.data if s.accuracy else [])]
    if s.accuracy is not None and s.accuracy.labels:
        wanted.append((("accuracy", "labels"), s.accuracy.labels))
    if s.smoke is not None and s.smoke.golden:
        wanted.append((("smoke", "golden"), s.smoke.golden))
    for path, name in wanted:
        if not (base / Path(name).expanduser()).is_file():
            c.add(m, path, f"file not found: {base / name}", "paths are relative to the spec file", value=name,
                  has_value=True)


def check_names(raw: RawSpec, names: Sequence[str]) -> list[SpecIssue]:
    """Model names become directory names and URL path segments."""
    issues: list[SpecIssue] = []
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        path: PathT = ("models", i, "name")
        if not _NAME_RE.fullmatch(name) or len(name) > 200:
            issues.append(make_issue(raw, path, "invalid model name: it becomes a directory name and a URL segment",
                                     "use letters, digits, '_', '-' and '.', not starting with '.'",
                                     value=name, has_value=True))
        if name in seen:
            issues.append(make_issue(raw, path, f"duplicate model name (also models[{seen[name]}])",
                                     "model names must be unique in a repository", value=name, has_value=True))
        seen.setdefault(name, i)
    return issues


def _count(dims: Sequence[int]) -> int:
    return math.prod(dims) if dims else 1


def _chunks(dims: Sequence[int]) -> list[int]:
    """Element counts between wildcards (Triton compares reshape and dims chunk by chunk)."""
    out, acc = [], 1
    for d in dims:
        if d == -1:
            out.append(acc)
            acc = 1
        else:
            acc *= d
    out.append(acc)
    return out


def _tensor_rules(c: Checker, m: ResolvedModel, key: str, tensors: Sequence[Tensor]) -> None:
    seen: set[str] = set()
    for j, t in enumerate(tensors):
        p: PathT = (key, j)
        if not t.name:
            c.add(m, (*p, "name"), "a tensor needs a name", "set name to the model's tensor name")
        if t.name in seen:
            c.add(m, (*p, "name"), f"duplicate {key[:-1]} name", "each tensor appears once", value=t.name,
                  has_value=True)
        seen.add(t.name)
        if not t.dims:
            c.add(m, (*p, "dims"), "dims must not be empty (Triton: must specify 'dims')",
                  "for a scalar use dims: [1] with reshape: []", value=[], has_value=True)
        for k, d in enumerate(t.dims):
            if d == 0 or d < -1:
                c.add(m, (*p, "dims", k), "dimension must be >= 1, or -1 for a variable size",
                      "0 is never valid in Triton", value=d, has_value=True)
        if t.reshape is not None:
            _reshape_rules(c, m, p, t)
        if t.label_filename:
            # Triton reads labels from the model directory; publish only writes versions and the config.
            c.add(m, (*p, "label_filename"), "label files are not published by deployer yet, so Triton would "
                  "fail to load the model", "remove label_filename (map class ids to labels in the client)",
                  value=t.label_filename, has_value=True)
        if t.format in ("NCHW", "NHWC") and len(t.dims) != 3:
            c.add(m, (*p, "format"), f"format {t.format} needs exactly 3 dims, got {len(t.dims)}",
                  "remove format or fix dims", value=t.format, has_value=True)
        if t.is_shape_tensor and m.requested_backend != "tensorrt":
            c.add(m, (*p, "is_shape_tensor"), "shape tensors are only supported for the TensorRT platform",
                  "remove is_shape_tensor", value=True, has_value=True)
        if t.value_range is not None and t.value_range[0] > t.value_range[1]:
            c.add(m, (*p, "value_range"), "low is greater than high", "write [low, high]",
                  value=list(t.value_range), has_value=True)
        if t.optional and m.backend == "onnxruntime" and m.max_batch_size > 0:
            c.add(m, (*p, "optional"), "the ONNX Runtime backend does not support optional inputs in models that "
                  "batch", "set max_batch_size: 0 or make the input required", value=True, has_value=True)


def _reshape_rules(c: Checker, m: ResolvedModel, p: PathT, t: Tensor) -> None:
    assert t.reshape is not None
    for k, d in enumerate(t.reshape):
        if d == 0 or d < -1:
            c.add(m, (*p, "reshape", k), "reshape dimension must be >= 1 or -1", "0 is never valid in Triton",
                  value=d, has_value=True)
    if not t.reshape:
        if m.max_batch_size == 0:
            c.add(m, (*p, "reshape"), "empty reshape is not allowed for a non-batching model "
                  "(Triton: scalar tensors are not supported)", "set max_batch_size > 0 or a real shape",
                  value=[], has_value=True)
        elif -1 in t.dims or _count(t.dims) != 1:
            c.add(m, (*p, "reshape"), f"empty reshape needs dims with one element, dims are {list(t.dims)}",
                  "use dims: [1]", value=[], has_value=True)
    elif (-1 in t.dims) != (-1 in t.reshape) or _chunks(t.dims) != _chunks(t.reshape):
        if -1 not in t.dims and -1 not in t.reshape:
            why = f"{_count(t.dims)} elements vs {_count(t.reshape)}"
        else:
            why = "element counts differ between variable-size dims"
        c.add(m, (*p, "reshape"), f"reshape {list(t.reshape)} does not match dims {list(t.dims)} ({why})",
              "reshape must hold the same number of elements as dims", value=list(t.reshape), has_value=True)


def _batching(c: Checker, m: ResolvedModel) -> None:
    s = m.spec
    schedulers = [k for k, v in (("dynamic_batching", s.dynamic_batching), ("sequence_batching",
                  s.sequence_batching), ("ensemble", s.ensemble)) if v is not None]
    if len(schedulers) > 1:
        c.add(m, (schedulers[1],), f"only one scheduler may be set, found {' and '.join(schedulers)}",
              "keep one of dynamic_batching, sequence_batching, ensemble")
    db = s.dynamic_batching
    if db is None:
        return
    for k, size in enumerate(db.preferred_batch_size):
        path: PathT = ("dynamic_batching", "preferred_batch_size", k)
        if size < 1:
            c.add(m, path, "dynamic batching preferred size must be positive", "use sizes in [1, max_batch_size]",
                  value=size, has_value=True)
        elif size > max(m.max_batch_size, 0) and m.max_batch_size > 0:
            c.add(m, path, f"preferred batch size must be <= max_batch_size ({m.max_batch_size})",
                  f"lower it or raise max_batch_size to {size}", value=size, has_value=True)
    if m.max_batch_size == 0 and db.preferred_batch_size:
        c.add(m, ("dynamic_batching", "preferred_batch_size"), "a model with max_batch_size 0 never forms batches",
              "set max_batch_size > 0 (the model's first dim must be a batch dim) or remove dynamic_batching",
              value=db.preferred_batch_size, has_value=True)
    if db.priority_levels:
        if not 1 <= db.default_priority_level <= db.priority_levels:
            c.add(m, ("dynamic_batching", "default_priority_level"),
                  f"default priority level must be in [1, {db.priority_levels}]",
                  "set default_priority_level to one of the levels", value=db.default_priority_level, has_value=True)
        for level in db.priority_queue_policy:
            if not 1 <= level <= db.priority_levels:
                c.add(m, ("dynamic_batching", "priority_queue_policy", level),
                      f"priority level must be in [1, {db.priority_levels}]", "raise priority_levels or fix the key",
                      value=level, has_value=True, of_key=True)
    elif db.priority_queue_policy:
        c.add(m, ("dynamic_batching", "priority_queue_policy"), "priority queue policies need priority_levels > 0",
              "set priority_levels")
    if db.preserve_ordering:
        if db.priority_levels > 1:
            c.add(m, ("dynamic_batching", "preserve_ordering"),
                  "preserve_ordering cannot be combined with more than one priority level",
                  "drop priority_levels or preserve_ordering", value=True, has_value=True)
        policies = [db.default_queue_policy, *db.priority_queue_policy.values()]
        if any(q and q.timeout_action == "DELAY" and q.default_timeout_microseconds for q in policies):
            c.add(m, ("dynamic_batching", "preserve_ordering"),
                  "preserve_ordering cannot be combined with a DELAY queue policy that has a timeout",
                  "use timeout_action: REJECT or no timeout", value=True, has_value=True)


def _sequence(c: Checker, m: ResolvedModel) -> None:
    s = m.spec
    if s.response_cache and s.sequence_batching is not None:
        c.add(m, ("response_cache",), "the response cache does not support models with sequence batching",
              "disable response_cache", value=True, has_value=True)
    if s.response_cache and s.decoupled:
        c.add(m, ("response_cache",), "the response cache does not support decoupled models",
              "disable response_cache", value=True, has_value=True)
    sb = s.sequence_batching
    if sb is None:
        return
    if sb.direct is not None and sb.oldest is not None:
        c.add(m, ("sequence_batching", "oldest"), "give one strategy: direct or oldest, not both", "remove one of them")
    if sb.oldest is not None:
        for k, size in enumerate(sb.oldest.preferred_batch_size):
            if size < 1 or size > m.max_batch_size:
                c.add(m, ("sequence_batching", "oldest", "preferred_batch_size", k),
                      f"preferred batch size must be in [1, max_batch_size={m.max_batch_size}]",
                      "lower it or raise max_batch_size", value=size, has_value=True)
    names = {t.name for t in m.inputs}
    for k, ci in enumerate(sb.control_input):
        if ci.name in names:
            hint = ("Triton feeds control inputs itself: remove it from inputs" if s.inputs is not None else
                    "inputs default to all ONNX inputs, this one included: list inputs explicitly without it")
            c.add(m, ("sequence_batching", "control_input", k, "name"),
                  "a control input must not also be listed in inputs", hint, value=ci.name, has_value=True)
        for n, ctl in enumerate(ci.control):
            p: PathT = ("sequence_batching", "control_input", k, "control", n)
            if ctl.kind == "CONTROL_SEQUENCE_CORRID":
                try:
                    ok = ctl.data_type is not None and normalize_dtype(ctl.data_type) in _CORRID_TYPES
                except ValueError:
                    ok = False
                if not ok:
                    c.add(m, (*p, "data_type"), "CORRID control needs data_type INT32, INT64, UINT32, UINT64 or "
                          "STRING", "set data_type: INT64 (or UINT64, INT32, UINT32, STRING)", value=ctl.data_type,
                          has_value=True)
            else:
                lists = [x for x in (ctl.int32_false_true, ctl.fp32_false_true, ctl.bool_false_true) if x]
                if len(lists) != 1 or len(lists[0]) != 2:
                    c.add(m, p, f"{ctl.kind} needs exactly one of int32_false_true / fp32_false_true / "
                          "bool_false_true with two values [false, true]", "e.g. int32_false_true: [0, 1]")


def _instances(c: Checker, m: ResolvedModel) -> None:
    s = m.spec
    if m.backend == "ensemble":
        for key in ("instance_group", "optimization", "model_warmup"):
            if getattr(s, key):
                c.add(m, (key,), f"an ensemble must not set {key}", f"remove {key}")
        return
    n_profiles = len(m.profiles)
    for k, g in enumerate(s.instance_group or []):
        p: PathT = ("instance_group", k)
        if g.gpus and g.kind in ("CPU", "MODEL"):
            c.add(m, (*p, "gpus"), f"kind {g.kind} may not list GPUs", "remove gpus or use kind: GPU",
                  value=g.gpus, has_value=True)
        if g.profile and m.requested_backend != "tensorrt":
            c.add(m, (*p, "profile"), "profile is only valid for TensorRT models", "remove profile",
                  value=g.profile, has_value=True)
        for n, prof in enumerate(g.profile):
            if not prof.isdigit() or (m.requested_backend == "tensorrt" and int(prof) >= n_profiles):
                c.add(m, (*p, "profile", n), f"profile must be a profile index in [0, {n_profiles - 1}]",
                      "use indexes of `profiles`", value=prof, has_value=True)
        if m.requested_backend == "tensorrt" and g.kind in ("CPU", "MODEL"):
            c.add(m, (*p, "kind"), "the TensorRT backend supports only GPU instances", "use kind: GPU",
                  value=g.kind, has_value=True)


def _warmup(c: Checker, m: ResolvedModel) -> None:
    names = {t.name for t in m.inputs}
    for k, w in enumerate(m.spec.model_warmup or []):
        limit = max(m.max_batch_size, 1)
        if w.batch_size > limit:
            c.add(m, ("model_warmup", k, "batch_size"), f"warmup batch_size must be <= {limit}",
                  "lower batch_size (1 for a model that does not batch)", value=w.batch_size, has_value=True)
        for name in w.inputs:
            if name not in names:
                c.add(m, ("model_warmup", k, "inputs", name), "warmup input is not a model input",
                      f"inputs are: {', '.join(sorted(names))}", of_key=True)
        missing = names - set(w.inputs)
        if missing:
            c.add(m, ("model_warmup", k, "inputs"), f"warmup must give every input; missing {sorted(missing)}",
                  "add an entry for each model input")
        by_name = {t.name: t for t in m.inputs}
        for name, wi in w.inputs.items():
            p: PathT = ("model_warmup", k, "inputs", name)
            try:
                dtype = normalize_dtype(wi.dtype)
            except ValueError as exc:
                c.add(m, (*p, "dtype"), str(exc).split(";")[0], value=wi.dtype, has_value=True)
                dtype = None
            t = by_name.get(name)
            if t is None:
                continue
            if dtype is not None and dtype != t.dtype:
                c.add(m, (*p, "dtype"), f"input {name!r} is {t.dtype}", f"use dtype: {t.dtype}", value=wi.dtype,
                      has_value=True)
            if len(wi.dims) != len(t.dims) or any(
                d < 1 or (want != -1 and d != want) for d, want in zip(wi.dims, t.dims, strict=False)
            ):
                c.add(m, (*p, "dims"), f"warmup dims must be a concrete shape matching the input's dims {list(t.dims)}",
                      "give every dim (>= 1), without the batch dim", value=list(wi.dims), has_value=True)
            sources = [x for x in (wi.zero_data, wi.random_data, wi.input_data_file) if x]
            if len(sources) != 1:
                c.add(m, ("model_warmup", k, "inputs", name),
                      "give exactly one of zero_data, random_data, input_data_file", "e.g. zero_data: true")


def _versions(c: Checker, m: ResolvedModel) -> None:
    vp = m.spec.version_policy
    if m.version is not None and m.version < 1:
        c.add(m, ("version",), "version must be >= 1 (Triton ignores 0 and zero-padded names)",
              "use auto or a number >= 1", value=m.version, has_value=True)
    elif m.version is not None and m.version > INT64_MAX:
        c.add(m, ("version",), f"version must be <= {INT64_MAX}: Triton reads version directory names as int64",
              "use auto or a smaller number", value=m.version, has_value=True)
    if vp is None:
        return
    given = [k for k in ("latest", "all", "specific") if getattr(vp, k) not in (None, False)]
    if len(given) != 1:
        c.add(m, ("version_policy",), "give exactly one of latest, all, specific", "remove the others", value=given,
              has_value=True)
    if vp.specific is not None:
        if not vp.specific or any(not 1 <= v <= INT64_MAX for v in vp.specific):
            c.add(m, ("version_policy", "specific"), f"list one or more versions in 1..{INT64_MAX}",
                  "e.g. specific: [1]", value=vp.specific, has_value=True)
        elif m.version is not None and m.version not in vp.specific:
            c.add(m, ("version",), f"version {m.version} would not be served by version_policy.specific "
                  f"{vp.specific}", "add it to specific", value=m.version, has_value=True)


def _shapes(c: Checker, m: ResolvedModel) -> None:
    key = "profiles" if m.spec.profiles else "shapes"
    by_name = {t.name: t for t in m.inputs}
    given = m.spec.profiles or [m.spec.shapes or {}]
    for k, profile in enumerate(m.profiles):
        base: PathT = (key, k) if key == "profiles" else (key,)
        for name, r in profile.items():
            t = by_name.get(name)
            if t is None or name not in given[k]:
                continue  # derived shapes follow from dims, whose own errors are reported
            want = ([-1] if m.max_batch_size > 0 else []) + list(t.dims)
            p: PathT = (*base, name)
            for label, shape in (("min", r.min), ("opt", r.opt), ("max", r.max)):
                if len(shape) != len(want):
                    c.add(m, (*p, label), f"rank {len(shape)} does not match the input's full shape {want}",
                          "shapes are full shapes: batch dim first when max_batch_size > 0", value=list(shape),
                          has_value=True)
                    return
                for d, (got, exp) in enumerate(zip(shape, want, strict=True)):
                    if got < 1 or (exp != -1 and got != exp):
                        c.add(m, (*p, label, d), f"dim must be {exp if exp != -1 else '>= 1'}",
                              "shapes follow the input's dims", value=got, has_value=True)
            if any(a > b for a, b in zip(r.min, r.opt, strict=True)) or any(
                a > b for a, b in zip(r.opt, r.max, strict=True)
            ):
                c.add(m, p, "shapes must satisfy min <= opt <= max in every dim", "order the three shapes",
                      value={"min": list(r.min), "opt": list(r.opt), "max": list(r.max)}, has_value=True)
            if m.max_batch_size > 0 and r.max[0] > m.max_batch_size and m.requested_backend != "tensorrt":
                c.add(m, (*p, "max", 0), f"batch {r.max[0]} exceeds max_batch_size {m.max_batch_size}",
                      "lower the max batch", value=r.max[0], has_value=True)


def _tensorrt(c: Checker, m: ResolvedModel) -> None:
    if m.max_batch_size > 0:
        for k, profile in enumerate(m.profiles):
            for name, r in profile.items():
                p: PathT = ("profiles", k, name) if m.spec.profiles else ("shapes", name)
                if r.min and r.min[0] != 1:
                    c.add(m, (*p, "min", 0),
                          "the profile's minimum batch must be 1 (batch-1 requests fail otherwise)", "set min batch 1",
                          value=r.min[0], has_value=True)
                if r.max and r.max[0] < m.max_batch_size and k == 0:
                    c.add(m, (*p, "max", 0), f"profile max batch {r.max[0]} is below max_batch_size "
                          f"{m.max_batch_size}", "raise the profile max or lower max_batch_size", value=r.max[0],
                          has_value=True)
    caps = m.spec.engine.compute_capabilities if m.spec.engine else []
    for k, cc in enumerate(caps):
        if not re.fullmatch(r"\d{1,2}\.\d", cc) or cc in caps[:k]:
            c.add(m, ("engine", "compute_capabilities", k), f"{'duplicate' if cc in caps[:k] else 'not a'} "
                  "compute capability", "write MAJOR.MINOR as nvidia-smi --query-gpu=compute_cap prints it, "
                  "e.g. '8.6', each once", value=cc, has_value=True)
    if len(caps) > 1 and m.source is not None and m.source.suffix != ".onnx":
        c.add(m, ("engine", "compute_capabilities"), "one prebuilt plan cannot be published as one plan per "
              "GPU architecture (cc_model_filenames would name files that do not exist)",
              "give the ONNX as source so deployer builds each architecture, or drop compute_capabilities")
    if m.spec.calibration is not None and m.precision != "int8":
        c.add(m, ("calibration",), "calibration data is only used with precision: int8", "remove it or set int8")


def _onnx(c: Checker, m: ResolvedModel) -> None:
    info = m.onnx
    assert info is not None
    batching = m.max_batch_size > 0
    from_onnx_inputs = m.spec.inputs is None
    for key, tensors, model_tensors in (("inputs", m.inputs, info.inputs), ("outputs", m.outputs, info.outputs)):
        by_name = {t.name: t for t in model_tensors}
        for j, t in enumerate(tensors):
            p: PathT = (key, j)
            mt = by_name.get(t.name)
            if mt is None:
                c.add(m, (*p, "name"), f"the ONNX model has no {key[:-1]} named {t.name!r}",
                      f"its {key} are: {', '.join(repr(n) for n in by_name)}", value=t.name, has_value=True)
                continue
            if mt.dtype != t.dtype:
                c.add(m, (*p, "dtype"), f"the ONNX model's {key[:-1]} {t.name!r} is {mt.dtype}",
                      f"use dtype: {mt.dtype}", value=t.dtype, has_value=True)
            model_shape = [-1 if isinstance(d, str) else d for d in mt.shape]
            if batching:
                if not model_shape or model_shape[0] != -1:
                    c.add(m, ("max_batch_size",), f"batching needs a variable first dim on every input and output; "
                          f"{key[:-1]} {t.name!r} has shape {model_shape}",
                          "set max_batch_size: 0, or re-export the model with a dynamic batch axis",
                          value=m.max_batch_size, has_value=True)
                    continue
                model_shape = model_shape[1:]
            cfg_shape = list(t.reshape) if t.reshape is not None else list(t.dims)
            if not mt.has_shape or not t.dims or any(d == 0 or d < -1 for d in cfg_shape):
                continue  # no shape to compare, or dims already reported invalid
            if not model_shape and cfg_shape == [1] and not batching:
                continue  # rank-0 model tensor served as [1] (ONNX Runtime backend scalar support)
            if len(cfg_shape) != len(model_shape):
                full = ([-1] if batching else []) + cfg_shape
                c.add(m, (*p, "dims"), f"the model expects {len(model_shape) + batching} dims "
                      f"(shape {([-1] if batching else []) + model_shape}) but the configuration gives "
                      f"{len(full)} (full shape {full})",
                      "dims exclude the batch dim when max_batch_size > 0", value=list(t.dims), has_value=True)
                continue
            where = "dims" if t.reshape is None else "reshape"
            for d, (got, exp) in enumerate(zip(cfg_shape, model_shape, strict=True)):
                if exp != -1 and got != exp:
                    c.add(m, (*p, where, d), f"the model's dim is {exp}", f"use {exp}", value=got, has_value=True)
        if key == "inputs":
            # Sequence control and state inputs are fed by Triton, not listed in `inputs`.
            sb = m.spec.sequence_batching
            fed = {ci.name for ci in sb.control_input} | {st.input_name for st in sb.state} if sb else set()
            configured = {t.name for t in tensors} | fed
            for mt in model_tensors:
                if mt.name not in configured and not from_onnx_inputs:
                    c.add(m, (key,), f"the ONNX model's input {mt.name!r} is not configured",
                          f"add {{name: {mt.name}, dtype: {mt.dtype}, ...}} to inputs")

