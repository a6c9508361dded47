"""Fill in what the spec leaves out (backend, IO and shapes from the ONNX file) and build each model's
Triton configuration as a proto-JSON dict. Pure: reads model files, writes nothing."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from deployer import tensors
from deployer.dtypes import config_dtype, normalize_dtype
from deployer.errors import ModelFileError, SpecIssue
from deployer.onnx.info import OnnxInfo, read_onnx
from deployer.spec.loader import PathT, RawSpec, make_issue
from deployer.spec.model import Deployment, ResolvedModel, Tensor
from deployer.spec.overrides import Relocations, apply_leftovers, derived_key_problems, lift_overrides, relocate
from deployer.spec.schema import (
    InputSpec,
    ModelSpec,
    OutputSpec,
    QueuePolicy,
    ShapeRange,
    Spec,
)

DEFAULT_MAX_BATCH = 8
DEFAULT_KEEP_VERSIONS = 3
_SUFFIX_BACKEND = {".onnx": "onnxruntime", ".py": "python", ".plan": "tensorrt", ".engine": "tensorrt"}


class _Ctx:
    """Collects issues for one model while resolving it."""

    def __init__(self, raw: RawSpec, index: int) -> None:
        self.raw = raw
        self.prefix: PathT = ("models", index)
        self.issues: list[SpecIssue] = []
        self.relocations: Relocations = {}  # values lifted from config_overrides are reported there

    def add(self, path: PathT, message: str, hint: str = "", *, value: Any = None, has_value: bool = False,
            of_key: bool = False) -> None:
        path = relocate(self.relocations, path)
        self.issues.append(
            make_issue(self.raw, self.prefix + path, message, hint, value=value, has_value=has_value, of_key=of_key)
        )


def resolve_model(
    raw: RawSpec, spec: Spec, index: int, *, base_dir: Path, fallback: str | None
) -> tuple[ResolvedModel | None, list[SpecIssue]]:
    """Resolve models[index]; returns the model (None when unusable) and the issues found."""
    m = spec.models[index]
    ctx = _Ctx(raw, index)
    leftovers: tuple[tuple[PathT, Any], ...] = ()
    if m.config_overrides:
        # The overrides are folded into the typed model first, so every check below applies to them too.
        lifted = lift_overrides(raw, index, m)
        if lifted.spec is None:
            return None, lifted.issues
        m, ctx.relocations, leftovers = lifted.spec, lifted.relocations, lifted.leftovers
    requested = _backend(ctx, m)
    if requested is None:
        return None, ctx.issues
    backend = "onnxruntime" if (requested == "tensorrt" and fallback == "onnxruntime") else requested
    source = _source(ctx, m, requested, base_dir)
    if source is None and requested != "ensemble":
        return None, ctx.issues
    info: OnnxInfo | None = None
    if (source is not None and source.suffix == ".onnx") or (source is not None and source.is_dir()):
        try:
            info = read_onnx(source)
        except ModelFileError as exc:
            ctx.add(("source",), f"cannot read the ONNX model: {exc.message}", exc.hint or "",
                    value=m.source, has_value=True)
            return None, ctx.issues
    mbs = m.max_batch_size
    if mbs is None:
        mbs = DEFAULT_MAX_BATCH if (info is not None and info.batchable) else 0
    sequence = m.sequence_batching
    controls = frozenset(
        [c.name for c in sequence.control_input] + [s.input_name for s in sequence.state]
        + [s.output_name for s in sequence.state]
    ) if sequence else frozenset()
    inputs = _tensors(ctx, m.inputs, info, "inputs", mbs, controls)
    outputs = _tensors(ctx, m.outputs, info, "outputs", mbs, controls)
    if inputs is None or outputs is None:
        return None, ctx.issues
    profiles = _profiles(ctx, m, inputs, mbs)
    if not _config_dtypes(ctx, m):
        return None, ctx.issues
    precision = m.precision or "fp32"
    keep = m.keep_versions
    if keep is None:
        latest = m.version_policy.latest if m.version_policy and m.version_policy.latest else 1
        keep = max(DEFAULT_KEEP_VERSIONS, latest)
    model = ResolvedModel(
        index=index,
        name=m.name,
        backend=backend,
        requested_backend=requested,
        source=source,
        version=None if m.version == "auto" else m.version,
        max_batch_size=mbs,
        inputs=inputs,
        outputs=outputs,
        profiles=profiles,
        precision=precision,
        keep_versions=keep,
        config={},
        spec=m,
        onnx=info,
        relocations=ctx.relocations,
    )
    config = build_config(model)
    for path, message, hint, value in derived_key_problems(m.config_overrides or {}, model.default_filename, config):
        ctx.add(path, message, hint, value=value, has_value=True)
    return _replace_config(model, apply_leftovers(config, leftovers)), ctx.issues


def _replace_config(model: ResolvedModel, config: Mapping[str, Any]) -> ResolvedModel:
    from dataclasses import replace

    return replace(model, config=config)


def _backend(ctx: _Ctx, m: ModelSpec) -> str | None:
    if m.backend:
        return m.backend
    if m.ensemble is not None:
        return "ensemble"
    if m.source:
        suffix = Path(m.source).suffix.lower()
        if suffix in _SUFFIX_BACKEND:
            return _SUFFIX_BACKEND[suffix]
        ctx.add(("source",), f"cannot tell the backend from the file suffix '{suffix}'",
                "set backend: onnxruntime, tensorrt or python", value=m.source, has_value=True)
        return None
    ctx.add(("backend",), "no backend and no source", "set source: path/to/model.onnx (or ensemble: steps)")
    return None


def _config_dtypes(ctx: _Ctx, m: ModelSpec) -> bool:
    """Data types the config spells as TYPE_* (inputs and outputs are checked in `_tensors`)."""
    found: list[tuple[PathT, str]] = [
        (("model_warmup", k, "inputs", name, "dtype"), wi.dtype)
        for k, w in enumerate(m.model_warmup or []) for name, wi in w.inputs.items()
    ]
    sb = m.sequence_batching
    for k, ci in enumerate(sb.control_input if sb else []):
        found.extend((("sequence_batching", "control_input", k, "control", n, "data_type"), c.data_type)
                     for n, c in enumerate(ci.control) if c.data_type is not None)
    for k, st in enumerate(sb.state if sb else []):
        found.append((("sequence_batching", "state", k, "data_type"), st.data_type))
        found.extend((("sequence_batching", "state", k, "initial_state", n, "data_type"), i.data_type)
                     for n, i in enumerate(st.initial_state))
    ok = True
    for path, dtype in found:
        try:
            normalize_dtype(dtype)
        except ValueError as exc:
            ctx.add(path, str(exc).split(";")[0], "use FP32, FP16, INT64, INT32, BOOL, STRING, ... (TYPE_ prefix "
                    "optional)", value=dtype, has_value=True)
            ok = False
    return ok


def _source(ctx: _Ctx, m: ModelSpec, backend: str, base_dir: Path) -> Path | None:
    if backend == "ensemble":
        if m.source:
            ctx.add(("source",), "an ensemble has no model file", "remove source", value=m.source, has_value=True)
        return None
    if not m.source:
        ctx.add(("source",), f"a {backend} model needs a source file", "add source: path/to/model file")
        return None
    path = Path(m.source).expanduser()
    path = path if path.is_absolute() else base_dir / path
    if not path.exists():
        ctx.add(("source",), f"file not found: {path}", "fix the path (relative to the spec file)",
                value=m.source, has_value=True)
        return None
    if not (path.is_file() or path.is_dir()):  # a FIFO or device would block the first read forever
        ctx.add(("source",), f"{path} is not a regular file or directory (a FIFO, socket or device)",
                "point source at a model file", value=m.source, has_value=True)
        return None
    expected = {"onnxruntime": (".onnx",), "tensorrt": (".onnx", ".plan", ".engine"), "python": (".py",)}
    if path.suffix.lower() not in expected[backend] and not path.is_dir():
        ctx.add(("source",), f"a {backend} model needs a {' or '.join(expected[backend])} file",
                "point source at the right file or change backend", value=m.source, has_value=True)
        return None
    return path


def _tensors(
    ctx: _Ctx,
    given: list[InputSpec] | list[OutputSpec] | None,
    info: OnnxInfo | None,
    key: str,
    mbs: int,
    fed_by_triton: frozenset[str] = frozenset(),
) -> tuple[Tensor, ...] | None:
    if given is None:
        if info is None:
            ctx.add((key,), f"{key} must be listed: there is no ONNX file to read them from",
                    f"add {key}: [{{name, dtype, dims}}]")
            return None
        tensors = info.inputs if key == "inputs" else info.outputs
        out = []
        for info_t in tensors:
            if info_t.name in fed_by_triton:
                continue  # sequence control / implicit state tensors are configured in sequence_batching
            dims = info_t.triton_dims(batching=mbs > 0)
            reshape: tuple[int, ...] | None = None
            if not dims:
                # Batch-only tensor ([N] in the model): dims [1] + an empty reshape. A rank-0 tensor in a
                # non-batching model: dims [1], which Triton's ONNX Runtime backend maps to the scalar
                # (onnxruntime_backend#213); an empty reshape is rejected for non-batching models.
                dims, reshape = (1,), (() if mbs > 0 else None)
            out.append(Tensor(name=info_t.name, dtype=info_t.dtype, dims=dims, reshape=reshape))
        return tuple(out)
    result: list[Tensor] = []
    given_list: list[InputSpec | OutputSpec] = list(given)
    for j, spec_t in enumerate(given_list):
        try:
            dtype = normalize_dtype(spec_t.dtype)
        except ValueError as exc:
            ctx.add((key, j, "dtype"), str(exc).split(";")[0], "use FP32, FP16, INT64, INT32, BOOL, STRING, ...",
                    value=spec_t.dtype, has_value=True)
            continue
        t = spec_t
        tol = getattr(t, "tolerance", None)
        result.append(
            Tensor(
                name=t.name,
                dtype=dtype,
                dims=tuple(t.dims),
                reshape=tuple(t.reshape) if t.reshape is not None else None,
                optional=getattr(t, "optional", False),
                format=getattr(t, "format", None),
                is_shape_tensor=t.is_shape_tensor,
                allow_ragged_batch=getattr(t, "allow_ragged_batch", False),
                label_filename=getattr(t, "label_filename", None),
                value_range=getattr(t, "value_range", None),
                value=getattr(t, "value", None),
                atol=tol.atol if tol else None,
                rtol=tol.rtol if tol else None,
            )
        )
    return tuple(result) if len(result) == len(given) else None


def _profiles(
    ctx: _Ctx, m: ModelSpec, inputs: tuple[Tensor, ...], mbs: int
) -> tuple[Mapping[str, tensors.ShapeRange], ...]:
    if m.profiles:
        given_list: list[tuple[PathT, dict[str, ShapeRange]]] = [(("profiles", k), p) for k, p in enumerate(m.profiles)]
    else:
        given_list = [(("shapes",), m.shapes or {})]
    preferred = m.dynamic_batching.preferred_batch_size if m.dynamic_batching else []
    profiles: list[Mapping[str, tensors.ShapeRange]] = []
    for path, given in given_list:
        names = {t.name for t in inputs}
        for name in given:
            if name not in names:
                ctx.add((*path, name), f"no input named '{name}'",
                        f"inputs are: {', '.join(sorted(names))}", of_key=True)
        profile: dict[str, tensors.ShapeRange] = {}
        for t in inputs:
            if t.name in given:
                r = given[t.name]
                profile[t.name] = tensors.ShapeRange(tuple(r.min), tuple(r.opt), tuple(r.max))
                continue
            if t.is_shape_tensor:
                continue
            if any(d == -1 for d in t.dims):
                if m.backend in ("ensemble", "python") or m.ensemble is not None:
                    continue  # no engine to build; smoke tests use the composing models' shapes
                ctx.add((*path,), f"input '{t.name}' has variable dims {list(t.dims)} but no min/opt/max shapes",
                        f"add {path[0]}: {{{t.name}: {{min: [...], opt: [...], max: [...]}}}} "
                        "(`deployer init` probes working sizes)")
                continue
            if mbs > 0:
                opt = max(preferred) if preferred else max(1, math.ceil(mbs / 2))
                profile[t.name] = tensors.ShapeRange((1, *t.dims), (min(opt, mbs), *t.dims), (mbs, *t.dims))
            else:
                profile[t.name] = tensors.ShapeRange(t.dims, t.dims, t.dims)
        profiles.append(profile)
    return tuple(profiles)


# --------------------------------------------------------------------------- config


def _tensor_config(t: Tensor, *, is_input: bool) -> dict[str, Any]:
    d: dict[str, Any] = {"name": t.name, "data_type": config_dtype(t.dtype), "dims": list(t.dims)}
    if t.reshape is not None:
        d["reshape"] = {"shape": list(t.reshape)}
    if is_input:
        if t.format and t.format != "NONE":
            d["format"] = f"FORMAT_{t.format}"
        if t.optional:
            d["optional"] = True
        if t.allow_ragged_batch:
            d["allow_ragged_batch"] = True
    elif t.label_filename:
        d["label_filename"] = t.label_filename
    if t.is_shape_tensor:
        d["is_shape_tensor"] = True
    return d


def _queue_policy(q: QueuePolicy) -> dict[str, Any]:
    return q.model_dump(exclude_defaults=True)


def build_config(m: ResolvedModel) -> dict[str, Any]:
    """The Triton ModelConfig (proto-JSON, proto field names) this model is deployed with."""
    s = m.spec
    cfg: dict[str, Any] = {"name": m.name}
    if m.backend == "ensemble":
        cfg["platform"] = "ensemble"
    else:
        cfg["backend"] = m.backend
        if m.platform:
            cfg["platform"] = m.platform
    cfg["max_batch_size"] = m.max_batch_size
    if s.version_policy is not None:
        vp = s.version_policy
        if vp.latest is not None:
            cfg["version_policy"] = {"latest": {"num_versions": vp.latest}}
        elif vp.all:
            cfg["version_policy"] = {"all": {}}
        elif vp.specific is not None:
            cfg["version_policy"] = {"specific": {"versions": list(vp.specific)}}
    cfg["input"] = [_tensor_config(t, is_input=True) for t in m.inputs]
    cfg["output"] = [_tensor_config(t, is_input=False) for t in m.outputs]
    if s.dynamic_batching is not None:
        cfg["dynamic_batching"] = _dynamic_batching(s)
    if s.sequence_batching is not None:
        cfg["sequence_batching"] = _sequence(s)
    if s.ensemble is not None:
        cfg["ensemble_scheduling"] = _ensemble(s)
    groups = _instance_groups(m)
    if groups:
        cfg["instance_group"] = groups
    if s.optimization is not None:
        cfg["optimization"] = _optimization(s)
        if m.backend != "tensorrt":
            cfg["optimization"].pop("cuda", None)  # recognised only by the TensorRT backend
            if not cfg["optimization"]:
                del cfg["optimization"]
    if s.model_warmup:
        cfg["model_warmup"] = _warmup(s)
    if s.response_cache is not None:
        cfg["response_cache"] = {"enable": s.response_cache}
    if s.decoupled is not None:
        cfg["model_transaction_policy"] = {"decoupled": s.decoupled}
    if s.parameters:
        cfg["parameters"] = {k: {"string_value": v} for k, v in s.parameters.items()}
    caps = s.engine.compute_capabilities if (s.engine and m.backend == "tensorrt") else []
    if len(caps) > 1:
        cfg["cc_model_filenames"] = {cc: f"model_sm{cc.replace('.', '')}.plan" for cc in caps}
    return cfg


def _ensemble(s: ModelSpec) -> dict[str, Any]:
    ens = s.ensemble
    assert ens is not None
    d: dict[str, Any] = {
        "step": [
            {"model_name": st.model, "model_version": st.version, "input_map": dict(st.inputs),
             "output_map": dict(st.outputs)}
            for st in ens.steps
        ]
    }
    if ens.max_inflight_requests:
        d["max_inflight_requests"] = ens.max_inflight_requests
    return d


def _warmup(s: ModelSpec) -> list[dict[str, Any]]:
    return [
        {
            "name": w.name,
            "batch_size": w.batch_size,
            "count": w.count,
            "inputs": {
                k: {"data_type": config_dtype(v.dtype), "dims": list(v.dims),
                    **v.model_dump(exclude_defaults=True, exclude={"dtype", "dims"})}
                for k, v in w.inputs.items()
            },
        }
        for w in s.model_warmup or []
    ]


def _dynamic_batching(s: ModelSpec) -> dict[str, Any]:
    db = s.dynamic_batching
    assert db is not None
    d: dict[str, Any] = db.model_dump(exclude_defaults=True, exclude={"default_queue_policy", "priority_queue_policy"})
    if db.default_queue_policy is not None:
        d["default_queue_policy"] = _queue_policy(db.default_queue_policy)
    if db.priority_queue_policy:
        d["priority_queue_policy"] = {str(k): _queue_policy(v) for k, v in db.priority_queue_policy.items()}
    return d


def _instance_groups(m: ResolvedModel) -> list[dict[str, Any]]:
    s = m.spec
    if m.backend != m.requested_backend:
        return []  # fallback to ONNX Runtime: GPU kinds and TensorRT profiles no longer apply
    if s.instance_group is None:
        if m.backend == "tensorrt":
            return [{"kind": "KIND_GPU", "count": 1}]
        return []
    out = []
    for g in s.instance_group:
        d: dict[str, Any] = {"kind": f"KIND_{g.kind}", "count": g.count}
        if g.name:
            d["name"] = g.name
        if g.gpus:
            d["gpus"] = list(g.gpus)
        if g.profile:
            d["profile"] = list(g.profile)
        if g.passive:
            d["passive"] = True
        if g.host_policy:
            d["host_policy"] = g.host_policy
        out.append(d)
    return out


def _sequence(s: ModelSpec) -> dict[str, Any]:
    sb = s.sequence_batching
    assert sb is not None
    d: dict[str, Any] = {}
    if sb.direct is not None:
        d["direct"] = sb.direct.model_dump(exclude_defaults=True)
    if sb.oldest is not None:
        d["oldest"] = sb.oldest.model_dump(exclude_defaults=True)
    if sb.max_sequence_idle_microseconds:
        d["max_sequence_idle_microseconds"] = sb.max_sequence_idle_microseconds
    if sb.control_input:
        d["control_input"] = []
        for ci in sb.control_input:
            controls = []
            for c in ci.control:
                cd = c.model_dump(exclude_defaults=True)
                if c.data_type:
                    cd["data_type"] = config_dtype(c.data_type)
                controls.append(cd)
            d["control_input"].append({"name": ci.name, "control": controls})
    if sb.state:
        d["state"] = []
        for st in sb.state:
            sd = st.model_dump(exclude_defaults=True, exclude={"initial_state"})
            sd["data_type"] = config_dtype(st.data_type)
            if st.initial_state:
                sd["initial_state"] = [
                    {**i.model_dump(exclude_defaults=True), "data_type": config_dtype(i.data_type)}
                    for i in st.initial_state
                ]
            d["state"].append(sd)
    if sb.iterative_sequence:
        d["iterative_sequence"] = True
    return d


# Opens like _sequence (duplicates: same shape): one mapper per config section, different fields.
def _optimization(s: ModelSpec) -> dict[str, Any]:
    o = s.optimization
    assert o is not None
    d: dict[str, Any] = {}
    if o.graph is not None:
        d["graph"] = {"level": o.graph.level}
    if o.priority is not None:
        d["priority"] = o.priority
    if o.cuda is not None:
        d["cuda"] = o.cuda.model_dump(exclude_defaults=True)
    if o.execution_accelerators is not None:
        d["execution_accelerators"] = o.execution_accelerators.model_dump(exclude_defaults=True)
    if o.input_pinned_memory is not None:
        d["input_pinned_memory"] = {"enable": o.input_pinned_memory}
    if o.output_pinned_memory is not None:
        d["output_pinned_memory"] = {"enable": o.output_pinned_memory}
    if o.gather_kernel_buffer_threshold is not None:
        d["gather_kernel_buffer_threshold"] = o.gather_kernel_buffer_threshold
    if o.eager_batching is not None:
        d["eager_batching"] = o.eager_batching
    return d


def spec_base_dir(raw: RawSpec) -> Path:
    """Directory relative paths in the spec are resolved against."""
    return raw.path.resolve().parent


__all__ = ["Deployment", "build_config", "resolve_model", "spec_base_dir"]
