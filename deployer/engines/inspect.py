"""Read a built engine's IO through the name-based API (8.6/10/11) and derive/check Triton config fields.

Triton's TensorRT backend rules (brief A.14, A.15 #15, C.3): engine max batch = max over the profiles
the instance group uses (default: profile 0) of min over inputs of profile-max dim 0; config
`max_batch_size` may not exceed it; profile-min batch should be 1; dims exclude the batch dim when
batching; data types must equal the engine's (INT64 only exists from TensorRT 10 — older engines
expose INT32 where the ONNX said INT64).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from deployer.errors import BuildError, UserError

from .adapters import TrtAdapter, load_tensorrt, shape_of, shared_logger
from .request import Shape

if TYPE_CHECKING:
    import tensorrt as trt_stub  # type: ignore[import-untyped, unused-ignore]

# TensorRT DataType name -> Triton config data_type; types Triton's TRT backend maps to TYPE_INVALID
# (FP8, INT4, FP4, E8M0) are absent (tensorrt_backend src/tensorrt_utils.cc).
TRT_TO_TRITON = {
    "FLOAT": "TYPE_FP32",
    "HALF": "TYPE_FP16",
    "BF16": "TYPE_BF16",
    "INT8": "TYPE_INT8",
    "UINT8": "TYPE_UINT8",
    "INT32": "TYPE_INT32",
    "INT64": "TYPE_INT64",
    "BOOL": "TYPE_BOOL",
}


@dataclass(frozen=True)
class EngineTensor:
    """One engine IO tensor."""

    name: str
    is_input: bool
    dtype: str  # TensorRT DataType member name
    shape: Shape  # -1 = dynamic
    is_shape_tensor: bool = False
    linear_format: bool = True
    # inputs only: per profile (min, opt, max) shapes — or values, for shape tensors
    profiles: tuple[tuple[Shape, Shape, Shape], ...] = ()

    @property
    def triton_dtype(self) -> str | None:
        """Triton `data_type`, None when Triton's TensorRT backend cannot serve this dtype."""
        return TRT_TO_TRITON.get(self.dtype)


@dataclass(frozen=True)
class EngineInfo:
    """The IO contract of a built engine."""

    tensors: tuple[EngineTensor, ...]
    num_profiles: int

    @property
    def inputs(self) -> tuple[EngineTensor, ...]:
        """Input tensors in engine order."""
        return tuple(t for t in self.tensors if t.is_input)

    @property
    def outputs(self) -> tuple[EngineTensor, ...]:
        """Output tensors in engine order."""
        return tuple(t for t in self.tensors if not t.is_input)


def read_engine_info(engine: trt_stub.ICudaEngine, adapter: TrtAdapter) -> EngineInfo:
    """Read IO names, modes, dtypes, shapes, formats and profile shapes from a deserialized engine."""
    trt = adapter.trt
    tensors: list[EngineTensor] = []
    nprof = engine.num_optimization_profiles
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        shape_io = bool(engine.is_shape_inference_io(name))
        profiles: list[tuple[Shape, Shape, Shape]] = []
        shape = shape_of(engine.get_tensor_shape(name))
        if is_input:
            for p in range(nprof):
                if shape_io:
                    profiles.append(_profile_values(engine, adapter, name, p))
                elif all(d >= 0 for d in shape):
                    profiles.append((shape, shape, shape))  # static input: every profile is its shape
                else:
                    lo, mid, hi = engine.get_tensor_profile_shape(name, p)
                    profiles.append((shape_of(lo), shape_of(mid), shape_of(hi)))
        tensors.append(
            EngineTensor(
                name=name,
                is_input=is_input,
                dtype=engine.get_tensor_dtype(name).name,
                shape=shape,
                is_shape_tensor=shape_io,
                linear_format=engine.get_tensor_format(name) == trt.TensorFormat.LINEAR,
                profiles=tuple(profiles),
            )
        )
    return EngineInfo(tuple(tensors), nprof)


def _profile_values(engine: Any, adapter: TrtAdapter, name: str, p: int) -> tuple[Shape, Shape, Shape]:
    if adapter.version.api_major >= 10:
        # (profile_index, name): that is the binding's real order on 10.x, 11.x and TensorRT-RTX — its
        # docstring reads `get_tensor_profile_values(self, name: int, profile_index: str)`, i.e. the
        # parameter *names* are swapped, not the types (so are tensorrt-stubs, copied from it).
        vals = engine.get_tensor_profile_values(p, name)
    else:
        # 8.6-only binding (removed in 10), absent from the 10.13 stubs.
        vals = engine.get_profile_shape_input(p, name)
    lo, mid, hi = (tuple(int(x) for x in v) for v in vals)
    return lo, mid, hi


def inspect_engine(plan: bytes, trt_module: ModuleType | None = None, *, allow_host_code: bool = False) -> EngineInfo:
    """Deserialize `plan` and read its IO.

    `allow_host_code=True` is needed for version-compatible plans (they embed the lean runtime, i.e. code
    that runs on the host); only set it for plans you trust, e.g. ones this tool built.

    Raises:
        MissingDependency: no tensorrt (exit 3).
        BuildError: the plan does not deserialize (wrong TensorRT version or GPU), with TensorRT's error.
    """
    trt = load_tensorrt(trt_module)
    adapter = TrtAdapter(trt)
    logger, captured = shared_logger(trt)
    runtime = trt.Runtime(logger)
    if allow_host_code:
        runtime.engine_host_code_allowed = True
    engine: trt_stub.ICudaEngine | None = runtime.deserialize_cuda_engine(plan)
    if engine is None:  # the stubs say ICudaEngine, the binding returns None on failure
        raise BuildError(
            f"TensorRT {adapter.version} could not deserialize the engine",
            details="\n".join(captured.errors()) or None,
            hint="a plan only loads with the TensorRT version and GPU architecture that built it",
        )
    return read_engine_info(engine, adapter)


@dataclass(frozen=True)
class TritonTensor:
    """One `input`/`output` entry of a Triton config."""

    name: str
    data_type: str  # "TYPE_FP32"
    dims: Shape  # batch dim excluded when max_batch_size > 0
    is_shape_tensor: bool = False
    is_non_linear_format_io: bool = False


@dataclass(frozen=True)
class TritonFields:
    """Config fields derived from an engine."""

    max_batch_size: int
    engine_max_batch: int  # 0 = engine does not batch
    inputs: tuple[TritonTensor, ...]
    outputs: tuple[TritonTensor, ...]
    warnings: tuple[str, ...] = ()


def _batch_bounds(t: EngineTensor, p: int) -> tuple[int, int] | None:
    if p >= len(t.profiles):
        return None
    lo, _, hi = t.profiles[p]
    if not lo:
        return None
    return lo[0], hi[0]


def engine_max_batch(info: EngineInfo, profiles: Sequence[int] = (0,)) -> int:
    """Triton's engine max batch: max over `profiles` of min over inputs of profile-max dim 0 (0 = none)."""
    batching = all(t.is_shape_tensor or (t.shape and t.shape[0] == -1) for t in info.inputs) and info.inputs
    if not batching:
        return 0
    best = 0
    for p in profiles:
        bounds = [b for t in info.inputs if (b := _batch_bounds(t, p)) is not None]
        if bounds:
            best = max(best, min(hi for _, hi in bounds))
    return best


def _to_triton(t: EngineTensor, batching: bool) -> TritonTensor:
    dtype = t.triton_dtype
    if dtype is None:
        raise BuildError(
            f"engine tensor {t.name!r} has TensorRT type {t.dtype}, which Triton's TensorRT backend cannot serve",
            hint="keep IO types fp32/fp16/bf16/int8/uint8/int32/int64/bool (ModelOpt: keep_io_types=True)",
        )
    if t.is_shape_tensor:
        dims: Shape = (t.shape[0] - 1,) if batching and t.shape and t.shape[0] > 1 else t.shape
    else:
        dims = t.shape[1:] if batching else t.shape
    if not dims:
        dims = (1,)  # Triton forbids empty dims; rank-0 tensors need `reshape {}` (left to the renderer)
    return TritonTensor(t.name, dtype, dims, t.is_shape_tensor, not t.linear_format)


def derive_triton_fields(
    info: EngineInfo, max_batch_size: int | None = None, profiles: Sequence[int] = (0,)
) -> TritonFields:
    """Triton `max_batch_size`, inputs and outputs for this engine.

    `max_batch_size=None` takes the engine's maximum (what Triton's auto-complete would do).

    Raises:
        UserError: requested max_batch_size exceeds what the engine supports, or a profile min batch != 1.
    """
    emax = engine_max_batch(info, profiles)
    mbs = emax if max_batch_size is None else max_batch_size
    warnings: list[str] = []
    if mbs > emax:
        raise UserError(
            f"max_batch_size {mbs} exceeds the engine's max batch {emax} (profiles {list(profiles)})",
            hint="rebuild with a profile whose batch maximum covers max_batch_size, or lower max_batch_size",
        )
    if mbs > 0:
        for p in profiles:
            for t in info.inputs:
                b = _batch_bounds(t, p)
                if b is not None and b[0] != 1:
                    raise UserError(
                        f"engine profile {p} input {t.name!r} has batch minimum {b[0]}; batch-1 requests would fail",
                        hint="rebuild with profile min batch 1",
                    )
    for t in info.tensors:
        if " " in t.name:
            # tensorrt_backend model_state.cc GetRefIO truncates auto-completed names at the first space.
            warnings.append(f"engine tensor {t.name!r} contains a space: write its config entry explicitly")
    batching = mbs > 0
    return TritonFields(
        max_batch_size=mbs,
        engine_max_batch=emax,
        inputs=tuple(_to_triton(t, batching) for t in info.inputs),
        outputs=tuple(_to_triton(t, batching) for t in info.outputs),
        warnings=tuple(warnings),
    )


def check_triton_config(
    info: EngineInfo,
    max_batch_size: int,
    inputs: Sequence[TritonTensor],
    outputs: Sequence[TritonTensor],
    profiles: Sequence[int] = (0,),
) -> list[str]:
    """Problems Triton would report when loading this engine with this config (brief A.15 #15)."""
    problems: list[str] = []
    for p in profiles:
        if p < 0 or p >= info.num_profiles:
            problems.append(f"instance_group profile {p} does not exist (engine has {info.num_profiles})")
    emax = engine_max_batch(info, [p for p in profiles if 0 <= p < info.num_profiles] or [0])
    if max_batch_size > emax:
        problems.append(
            f"configuration specified max-batch {max_batch_size} but TensorRT engine only supports max-batch {emax}"
        )
    batching = max_batch_size > 0
    engine = {t.name: t for t in info.tensors}
    for kind, cfg, is_input in (("input", inputs, True), ("output", outputs, False)):
        names = {c.name for c in cfg}
        for t in info.tensors:
            if t.is_input == is_input and t.name not in names:
                problems.append(f"expected configuration for {kind} {t.name!r}")
        for c in cfg:
            et = engine.get(c.name)
            if et is None or et.is_input != is_input:
                allowed = ", ".join(x.name for x in info.tensors if x.is_input == is_input)
                problems.append(f"unexpected inference {kind} {c.name!r}, allowed {kind}s are: {allowed}")
                continue
            if c.data_type != et.triton_dtype:
                problems.append(f"unexpected datatype {c.data_type} for {kind} {c.name!r}, expecting {et.triton_dtype}")
            problems.extend(_dims_problems(c, et, batching, profiles))
    return problems


def _dims_problems(c: TritonTensor, t: EngineTensor, batching: bool, profiles: Sequence[int]) -> list[str]:
    if t.is_shape_tensor:
        return []
    engine_dims = t.shape[1:] if batching else t.shape
    if len(c.dims) != len(engine_dims):
        return [
            f"{c.name!r}: engine has rank {len(t.shape)} but config dims {list(c.dims)} "
            f"{'+ batch ' if batching else ''}give rank {len(c.dims) + (1 if batching else 0)}"
        ]
    problems: list[str] = []
    off = 1 if batching else 0
    for axis, (cd, ed) in enumerate(zip(c.dims, engine_dims, strict=True)):
        if ed != -1 and cd != ed:
            problems.append(f"{c.name!r}: config dim {axis + off} is {cd} but the engine fixes it to {ed}")
        elif ed == -1 and cd != -1 and t.is_input:
            for p in profiles:
                if p < len(t.profiles):
                    lo, hi = t.profiles[p][0][axis + off], t.profiles[p][2][axis + off]
                    if not lo <= cd <= hi:
                        problems.append(
                            f"{c.name!r}: config dim {axis + off} = {cd} is outside profile {p} range [{lo}, {hi}]"
                        )
    return problems
