"""The TensorRT API differences between 8.6, 10.x and 11.x, in one place.

Every TensorRT call goes through a `TrtModule` (the real `tensorrt` module, or a fake injected by tests)
so that `mypy --strict` checks names and signatures against `tensorrt-stubs` (10.13). Members that the
10.13 stubs declare but 8.6 or 11 lack (FP16/INT8/BF16/FP8 flags, EXPLICIT_BATCH, STRONGLY_TYPED,
ParserError.node_name) are only touched behind an explicit version guard.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol, cast

from deployer.errors import BuildError, MissingDependency, UserError

from .plan import FlagPlan, NetworkInput
from .request import BuildRequest, Profile
from .versions import TrtVersion, parse_trt_version

if TYPE_CHECKING:
    # Resolved against tensorrt-stubs (see tests/fakes/sanitized_trt_stubs.py for the mypy setup). The
    # ignore only matters where the stubs are not on mypy's path; with them it is unused and allowed.
    import tensorrt as trt_stub  # type: ignore[import-untyped, unused-ignore]

LOGGER = logging.getLogger(__name__)


class TrtModule(Protocol):
    """The part of the `tensorrt` module this package uses (checked structurally against the stubs)."""

    @property
    def Builder(self) -> type[trt_stub.Builder]: ...
    @property
    def BuilderFlag(self) -> type[trt_stub.BuilderFlag]: ...
    @property
    def NetworkDefinitionCreationFlag(self) -> type[trt_stub.NetworkDefinitionCreationFlag]: ...
    @property
    def MemoryPoolType(self) -> type[trt_stub.MemoryPoolType]: ...
    @property
    def HardwareCompatibilityLevel(self) -> type[trt_stub.HardwareCompatibilityLevel]: ...
    @property
    def ProfilingVerbosity(self) -> type[trt_stub.ProfilingVerbosity]: ...
    @property
    def LayerInformationFormat(self) -> type[trt_stub.LayerInformationFormat]: ...
    @property
    def DataType(self) -> type[trt_stub.DataType]: ...
    @property
    def TensorIOMode(self) -> type[trt_stub.TensorIOMode]: ...
    @property
    def TensorFormat(self) -> type[trt_stub.TensorFormat]: ...
    @property
    def Dims(self) -> type[trt_stub.Dims]: ...
    @property
    def ILogger(self) -> type[trt_stub.ILogger]: ...
    @property
    def Logger(self) -> type[trt_stub.Logger]: ...
    @property
    def OnnxParser(self) -> type[trt_stub.OnnxParser]: ...
    @property
    def Runtime(self) -> type[trt_stub.Runtime]: ...
    @property
    def IInt8EntropyCalibrator2(self) -> type[trt_stub.IInt8EntropyCalibrator2]: ...
    @property
    def IInt8MinMaxCalibrator(self) -> type[trt_stub.IInt8MinMaxCalibrator]: ...


# Which module `import tensorrt` means. TensorRT-RTX (`tensorrt_rtx_bindings`, from the `trt-rtx` extra)
# is opt-in, never a silent substitute: its plans cannot be served by Triton, so picking it must be a choice.
MODULE_ENV = "DEPLOYER_TENSORRT_MODULE"
KNOWN_MODULES = ("tensorrt", "tensorrt_rtx_bindings")


def tensorrt_module_name() -> str:
    """$DEPLOYER_TENSORRT_MODULE (tensorrt or tensorrt_rtx_bindings), default tensorrt.

    Raises:
        UserError: another module name (exit 2).
    """
    name = os.environ.get(MODULE_ENV) or "tensorrt"
    if name not in KNOWN_MODULES:
        raise UserError(f"{MODULE_ENV}={name!r} is not a TensorRT module",
                        hint=f"use one of {', '.join(KNOWN_MODULES)}")
    return name


def load_tensorrt(module: ModuleType | None = None) -> TrtModule:
    """The `tensorrt` module (or `module`, e.g. TensorRT-RTX or a test fake) typed as `TrtModule`.

    Raises:
        MissingDependency: tensorrt is not importable (exit 3), with the options.
    """
    if module is not None:
        return cast("TrtModule", module)
    name = tensorrt_module_name()
    try:
        imported = importlib.import_module(name)
    except Exception as exc:  # ImportError, or OSError/RuntimeError when libnvinfer is missing
        raise MissingDependency(
            f"TensorRT is not available: cannot import {name} ({exc})", hint=MISSING_TRT_HINT
        ) from exc
    if not hasattr(imported, "Builder"):
        # `tensorrt-stubs` installs a bare tensorrt/ directory of .pyi files, which imports as an empty
        # namespace package: that is not TensorRT.
        where = ", ".join(getattr(imported, "__path__", [])) or "?"
        raise MissingDependency(
            f"TensorRT is not available: `tensorrt` at {where} has no Builder (only type stubs are installed)",
            hint=MISSING_TRT_HINT,
        )
    return cast("TrtModule", imported)


MISSING_TRT_HINT = (
    "options: (1) install the TensorRT matching the target Triton release (`pip install tensorrt==X.Y.*` "
    "from NVIDIA's index, on a machine with an NVIDIA GPU and driver); (2) build inside the target's NGC "
    "image on a GPU machine with the container builder (`deployer build --builder container`); "
    "(3) deploy the ONNX through the onnxruntime backend instead: `--fallback onnxruntime`"
)


def is_rtx(trt: TrtModule) -> bool:
    """True for TensorRT-RTX (`tensorrt_rtx_bindings`): its own versions, strongly typed only, AOT targets."""
    return "tensorrt_rtx" in str(getattr(trt, "__name__", ""))


def trt_version_of(trt: TrtModule) -> str:
    """`tensorrt.__version__`, prefixed `rtx-` for TensorRT-RTX ("rtx-1.7.1.116"): the flavour is part of
    every version string (cache keys, timing-cache files, manifests), so an RTX plan never passes for one
    of standard TensorRT with the same numbers."""
    version = str(getattr(trt, "__version__", "0.0"))
    return f"rtx-{version}" if is_rtx(trt) else version


@dataclass
class CapturedLog:
    """Messages TensorRT logged during one build (warnings and errors go to our logger too)."""

    messages: list[tuple[str, str]] = field(default_factory=list)

    def mark(self) -> int:
        """A position: `errors(since=mark)` then leaves out what was logged before (e.g. a timing cache
        that failed to load must not stand in for the builder's own error)."""
        return len(self.messages)

    def errors(self, since: int = 0) -> list[str]:
        """Error-level messages (from position `since`), most useful for a failed build or deserialization."""
        return [m for sev, m in self.messages[since:] if sev in ("ERROR", "INTERNAL_ERROR")]


def make_logger(trt: TrtModule, captured: CapturedLog) -> trt_stub.ILogger:
    """A `trt.ILogger` subclass instance that records messages and forwards them to `logging`.

    Built with `type()` because the base class comes from the (possibly fake) module at runtime.
    """
    base = trt.ILogger

    def __init__(self: trt_stub.ILogger) -> None:
        base.__init__(self)  # pybind11 trampoline classes need the base __init__

    def log(self: trt_stub.ILogger, severity: trt_stub.ILogger.Severity, msg: str) -> None:
        name = str(getattr(severity, "name", severity))
        captured.messages.append((name, msg))
        level = {"INTERNAL_ERROR": logging.ERROR, "ERROR": logging.ERROR, "WARNING": logging.WARNING}.get(
            name, logging.DEBUG
        )
        LOGGER.log(level, "TensorRT: %s", msg)

    cls = type("DeployerTrtLogger", (base,), {"__init__": __init__, "log": log})
    return cast("trt_stub.ILogger", cls())


_LOGGERS: dict[int, tuple[TrtModule, trt_stub.ILogger, CapturedLog]] = {}


def shared_logger(trt: TrtModule) -> tuple[trt_stub.ILogger, CapturedLog]:
    """One logger per process and TensorRT module, its captured messages cleared for the next step.

    TensorRT keeps the first logger it was given as its global logger (later ones only trigger a "logger
    differs" warning), so creating one per build would send later builds' errors to an old capture.
    """
    entry = _LOGGERS.get(id(trt))
    if entry is None or entry[0] is not trt:
        captured = CapturedLog()
        entry = (trt, make_logger(trt, captured), captured)
        _LOGGERS[id(trt)] = entry
    entry[2].messages.clear()
    return entry[1], entry[2]


def dims(trt: TrtModule, shape: Sequence[int]) -> trt_stub.Dims:
    """A `trt.Dims` from a Python shape."""
    return trt.Dims(list(shape))


def shape_of(d: trt_stub.Dims) -> tuple[int, ...]:
    """A Python tuple from `trt.Dims` (the stubs give __len__/__getitem__, not __iter__)."""
    return tuple(int(d[i]) for i in range(len(d)))


class TrtAdapter:
    """Version-aware helpers bound to one `tensorrt` module."""

    def __init__(self, trt: TrtModule) -> None:
        self.trt = trt
        self.version_text = trt_version_of(trt)
        self.version: TrtVersion = parse_trt_version(self.version_text)
        self.rtx = self.version.flavor == "rtx"

    def rtx_compute_capabilities(self) -> tuple[str, ...]:
        """GPU architectures TensorRT-RTX can build for ahead of time ("7.5", "8.6", ...); () elsewhere."""
        enum = getattr(self.trt, "ComputeCapability", None)
        names = getattr(enum, "__members__", {}) if enum is not None else {}
        return tuple(f"{int(n[2:]) // 10}.{int(n[2:]) % 10}" for n in names if n.startswith("SM"))

    def check_compute_capability(self, cc: str) -> None:
        """Raise UserError unless this TensorRT can build for `cc` ahead of time (TensorRT-RTX only)."""
        supported = self.rtx_compute_capabilities()
        if not self.rtx:
            raise UserError(f"TensorRT {self.version} builds only for the GPU it runs on, not for sm {cc}")
        if cc not in supported:
            raise UserError(
                f"TensorRT-RTX {self.version} cannot build for compute capability {cc}",
                hint=f"it targets {', '.join(supported)} (no Hopper 9.0, no data-center Blackwell 10.0)",
            )

    def set_compute_capability(self, config: trt_stub.IBuilderConfig, cc: str) -> None:
        """Make TensorRT-RTX build for `cc` ("8.6") ahead of time, whatever GPU (if any) is here.

        Raises:
            UserError: not TensorRT-RTX, or an architecture it cannot target (e.g. 9.0 Hopper).
        """
        self.check_compute_capability(cc)
        # Not in tensorrt-stubs (RTX-only API): IBuilderConfig.num_compute_capabilities / set_compute_capability.
        cfg: Any = config
        enum: Any = getattr(self.trt, "ComputeCapability")  # noqa: B009 - RTX-only, absent from the stubs
        cfg.num_compute_capabilities = 1
        if not cfg.set_compute_capability(getattr(enum, "SM" + cc.replace(".", "")), 0):
            raise BuildError(f"TensorRT-RTX {self.version} refused compute capability {cc}")

    def builder_flag(self, name: str) -> trt_stub.BuilderFlag:
        """The `trt.BuilderFlag` member `name`; BuildError when this TensorRT lacks it."""
        F = self.trt.BuilderFlag
        # Lambdas: attribute access (checked by mypy) only happens for the flag actually requested, so
        # members removed in TensorRT 11 (FP16, INT8, BF16, FP8) are never touched there.
        table: dict[str, Callable[[], trt_stub.BuilderFlag]] = {
            "TF32": lambda: F.TF32,
            "FP16": lambda: F.FP16,
            "BF16": lambda: F.BF16,
            "INT8": lambda: F.INT8,
            "FP8": lambda: F.FP8,
            "REFIT": lambda: F.REFIT,
            "STRIP_PLAN": lambda: F.STRIP_PLAN,
            "VERSION_COMPATIBLE": lambda: F.VERSION_COMPATIBLE,
            "EXCLUDE_LEAN_RUNTIME": lambda: F.EXCLUDE_LEAN_RUNTIME,
            "SPARSE_WEIGHTS": lambda: F.SPARSE_WEIGHTS,
            "ERROR_ON_TIMING_CACHE_MISS": lambda: F.ERROR_ON_TIMING_CACHE_MISS,
        }
        try:
            return table[name]()
        except (KeyError, AttributeError) as exc:
            raise BuildError(f"TensorRT {self.version} has no BuilderFlag.{name}") from exc

    def network_flags(self, names: Sequence[str]) -> int:
        """Bit mask for `create_network` from NetworkDefinitionCreationFlag member names."""
        NDF = self.trt.NetworkDefinitionCreationFlag
        table: dict[str, Callable[[], trt_stub.NetworkDefinitionCreationFlag]] = {
            "EXPLICIT_BATCH": lambda: NDF.EXPLICIT_BATCH,  # 8.x only (removed in 11)
            "STRONGLY_TYPED": lambda: NDF.STRONGLY_TYPED,  # 9/10 opt-in
        }
        mask = 0
        for name in names:
            try:
                mask |= 1 << int(table[name]())
            except (KeyError, AttributeError) as exc:
                raise BuildError(f"TensorRT {self.version} has no NetworkDefinitionCreationFlag.{name}") from exc
        return mask

    def apply_config(self, config: trt_stub.IBuilderConfig, plan: FlagPlan, request: BuildRequest) -> None:
        """Set flags, memory pool, hardware compatibility and optimization level on `config`."""
        if request.workspace_bytes is not None:
            # max_workspace_size is gone since 10.0; the memory-pool API exists from 8.3 on.
            config.set_memory_pool_limit(self.trt.MemoryPoolType.WORKSPACE, request.workspace_bytes)
        for name in plan.set_flags:
            config.set_flag(self.builder_flag(name))
        for name in plan.clear_flags:
            config.clear_flag(self.builder_flag(name))
        if plan.hardware_compatibility == "AMPERE_PLUS":
            config.hardware_compatibility_level = self.trt.HardwareCompatibilityLevel.AMPERE_PLUS
        elif plan.hardware_compatibility == "SAME_COMPUTE_CAPABILITY":
            config.hardware_compatibility_level = self.trt.HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY
        level = request.builder_flags.builder_optimization_level
        if level is not None:
            config.builder_optimization_level = level
        if request.precision not in ("fp32", "tf32"):
            # Layer precisions are only visible in the engine inspector with detailed verbosity.
            config.profiling_verbosity = self.trt.ProfilingVerbosity.DETAILED

    def network_inputs(self, network: trt_stub.INetworkDefinition) -> tuple[NetworkInput, ...]:
        """The parsed network's inputs (names are the truth for profiles)."""
        out: list[NetworkInput] = []
        for i in range(network.num_inputs):
            t = network.get_input(i)
            out.append(NetworkInput(t.name, shape_of(t.shape), t.dtype.name, bool(t.is_shape_tensor)))
        return tuple(out)

    def add_profiles(
        self,
        builder: trt_stub.Builder,
        config: trt_stub.IBuilderConfig,
        network: trt_stub.INetworkDefinition,
        profiles: Sequence[Profile],
    ) -> list[trt_stub.IOptimizationProfile]:
        """Create and register one optimization profile per `Profile` (already validated)."""
        shape_tensors = {n.name for n in self.network_inputs(network) if n.is_shape_tensor}
        created: list[trt_stub.IOptimizationProfile] = []
        for profile in profiles:
            prof = builder.create_optimization_profile()
            for s in profile.inputs:
                if s.name in shape_tensors:
                    prof.set_shape_input(s.name, list(s.min), list(s.opt), list(s.max))
                else:
                    prof.set_shape(s.name, dims(self.trt, s.min), dims(self.trt, s.opt), dims(self.trt, s.max))
            index = config.add_optimization_profile(prof)
            if index < 0:
                raise BuildError(f"TensorRT rejected optimization profile {len(created)}: {profile}")
            created.append(prof)
        return created

    def parser_errors(self, parser: trt_stub.OnnxParser) -> list[str]:
        """Readable parser errors with the failing node's name and operator (10.x+) or index (8.6)."""
        lines: list[str] = []
        for i in range(parser.num_errors):
            err: trt_stub.ParserError = parser.get_error(i)
            where = f"node #{err.node()}"
            if self.version.api_major >= 10:  # node_name/node_operator were added in 10.0 (and are in RTX)
                where = f"node {err.node_name()!r} (op {err.node_operator()}, #{err.node()})"
            lines.append(f"{where}: {err.desc()} [{err.code()}]")
        return lines
