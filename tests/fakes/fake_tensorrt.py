"""FAKE `tensorrt` module for unit tests — not TensorRT. No GPU, no kernels, no real engines.

`make_fake_tensorrt(version)` returns a module object that imitates the TensorRT Python API of
8.6 / 10.x / 11.x closely enough to drive `deployer.engines`:

* it exposes only names that `tensorrt-stubs` (10.13) declares, with the stubs' parameter names
  (tests/unit/engines/test_engines_fake_fidelity.py checks this against the .pyi files);
* members are present or absent per version as in the brief's part C table: 8.6 has EXPLICIT_BATCH but no
  STRONGLY_TYPED / BF16 / STRIP_PLAN / INT64 / ParserError.node_name; 11.x has no FP16/INT8/BF16/FP8
  builder flags, no EXPLICIT_BATCH, no calibrators or int8_calibrator;
* behaviour: the parser reads the ONNX with `onnx` (inputs, outputs, ops; INT64 IO becomes INT32 below 10;
  1-D integer inputs used as a shape are shape tensors), the builder refuses dynamic inputs without
  profiles and precision flags on strongly typed networks (always strongly typed on 11), runs INT8
  calibrators, fills the timing cache, and serializes a JSON "plan" that the fake Runtime deserializes
  only with the same version.

Knob: `unsupported_ops` (the parser rejects them). The fake never claims a layer precision (its engine
inspector gives layer names only), and tests never assert a message the fake writes.
Enum values, names and signatures are checked against tensorrt-stubs (<= 10) and the real TensorRT-RTX
module (11) by tests/unit/engines/test_engines_fake_fidelity.py.
"""

from __future__ import annotations

import importlib.util
import types
from collections.abc import Iterable
from pathlib import Path
from typing import Any

_ONNX_DTYPE = {1: "FLOAT", 10: "HALF", 16: "BF16", 6: "INT32", 7: "INT64", 3: "INT8", 2: "UINT8", 9: "BOOL"}


class _EnumMember:
    def __init__(self, owner: str, name: str, value: int) -> None:
        self._owner, self._name, self._value = owner, name, value

    @property
    def name(self) -> str:
        return self._name

    @property
    def value(self) -> int:
        return self._value

    def __int__(self) -> int:
        return self._value

    def __index__(self) -> int:
        return self._value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _EnumMember) and (other._owner, other._value) == (self._owner, self._value)

    def __hash__(self) -> int:
        return hash((self._owner, self._value))

    def __repr__(self) -> str:
        return f"<{self._owner}.{self._name}: {self._value}>"


# Member values of the real modules (pybind enums are ints: `1 << int(flag)`, and TensorRT 11 renumbered
# BuilderFlag, e.g. VERSION_COMPATIBLE 13 -> 12). <= 10: tensorrt-stubs 10.13 (`# value =` comments);
# 11: TensorRT-RTX 1.7.1 (strongly typed only, the same renumbering). Checked by test_engines_fake_fidelity.
_VALUES_10: dict[str, dict[str, int]] = {
    "BuilderFlag": {
        "FP16": 0, "INT8": 1, "DEBUG": 2, "GPU_FALLBACK": 3, "REFIT": 4, "DISABLE_TIMING_CACHE": 5, "TF32": 6,
        "SPARSE_WEIGHTS": 7, "SAFETY_SCOPE": 8, "OBEY_PRECISION_CONSTRAINTS": 9, "PREFER_PRECISION_CONSTRAINTS": 10,
        "DIRECT_IO": 11, "REJECT_EMPTY_ALGORITHMS": 12, "VERSION_COMPATIBLE": 13, "EXCLUDE_LEAN_RUNTIME": 14,
        "FP8": 15, "ERROR_ON_TIMING_CACHE_MISS": 16, "BF16": 17, "DISABLE_COMPILATION_CACHE": 18, "STRIP_PLAN": 19,
        "REFIT_IDENTICAL": 20, "WEIGHT_STREAMING": 21, "INT4": 22, "REFIT_INDIVIDUAL": 23, "STRICT_NANS": 24,
        "MONITOR_MEMORY": 25, "FP4": 26, "EDITABLE_TIMING_CACHE": 27, "DISTRIBUTIVE_INDEPENDENCE": 28,
    },
    "NetworkDefinitionCreationFlag": {
        "EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1, "PREFER_JIT_PYTHON_PLUGINS": 2, "PREFER_AOT_PYTHON_PLUGINS": 3,
    },
    "MemoryPoolType": {"WORKSPACE": 0, "DLA_MANAGED_SRAM": 1, "DLA_LOCAL_DRAM": 2, "DLA_GLOBAL_DRAM": 3,
                       "TACTIC_DRAM": 4, "TACTIC_SHARED_MEMORY": 5},
}
_VALUES_11: dict[str, dict[str, int]] = {
    "BuilderFlag": {
        "DEBUG": 2, "GPU_FALLBACK": 3, "REFIT": 4, "DISABLE_TIMING_CACHE": 5, "TF32": 6, "SPARSE_WEIGHTS": 7,
        "SAFETY_SCOPE": 8, "DIRECT_IO": 11, "VERSION_COMPATIBLE": 12, "EXCLUDE_LEAN_RUNTIME": 13,
        "ERROR_ON_TIMING_CACHE_MISS": 15, "DISABLE_COMPILATION_CACHE": 17, "STRIP_PLAN": 18, "REFIT_IDENTICAL": 19,
        "WEIGHT_STREAMING": 20, "REFIT_INDIVIDUAL": 22, "STRICT_NANS": 23, "MONITOR_MEMORY": 24,
        "EDITABLE_TIMING_CACHE": 26, "DISTRIBUTIVE_INDEPENDENCE": 27,
    },
    "NetworkDefinitionCreationFlag": {"STRONGLY_TYPED": 0},  # deprecated, always on
    "MemoryPoolType": _VALUES_10["MemoryPoolType"],
}
_VALUES_COMMON: dict[str, dict[str, int]] = {
    "DataType": {"FLOAT": 0, "HALF": 1, "INT8": 2, "INT32": 3, "BOOL": 4, "UINT8": 5, "FP8": 6, "BF16": 7,
                 "INT64": 8, "INT4": 9, "FP4": 10, "E8M0": 11},
    "ProfilingVerbosity": {"LAYER_NAMES_ONLY": 0, "NONE": 1, "DETAILED": 2},
    "TensorFormat": {"LINEAR": 0, "CHW2": 1, "HWC8": 2, "CHW4": 3, "CHW16": 4, "CHW32": 5},
}


def _enum(cls_name: str, names: Iterable[str], values: dict[str, int] | None = None) -> type:
    """A pybind-like enum; members numbered as in the real module (`values`), by position otherwise."""
    members = {n: _EnumMember(cls_name, n, values[n] if values else i) for i, n in enumerate(names)}
    cls = type(cls_name, (), dict(members))
    cls.__members__ = dict(members)  # type: ignore[attr-defined]
    return cls


def _build_module() -> types.ModuleType:
    """Load fake_tensorrt_build.py next to this file (tests load these fakes by path, not as a package)."""
    path = Path(__file__).with_name("fake_tensorrt_build.py")
    spec = importlib.util.spec_from_file_location("fake_tensorrt_build", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _ver(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def make_fake_tensorrt(  # noqa: C901 - one closure per API generation keeps the fake readable
    version: str = "10.13.0.35",
    *,
    unsupported_ops: Iterable[str] = ("NonMaxSuppressionFake",),
) -> types.ModuleType:
    """Build a fake `tensorrt` module of `version` ("8.6.1.6", "10.13.0.35", "11.1.0.106")."""
    major, minor = _ver(version)
    unsupported = frozenset(unsupported_ops)
    mod = types.ModuleType("tensorrt")
    mod.__version__ = version  # type: ignore[attr-defined]

    # ---- enums (members per version) ---------------------------------------------------------------
    values = _VALUES_11 if major >= 11 else _VALUES_10
    flags = [
        "DEBUG",
        "GPU_FALLBACK",
        "REFIT",
        "DISABLE_TIMING_CACHE",
        "TF32",
        "SPARSE_WEIGHTS",
        "SAFETY_SCOPE",
        "DIRECT_IO",
        "VERSION_COMPATIBLE",
        "EXCLUDE_LEAN_RUNTIME",
        "ERROR_ON_TIMING_CACHE_MISS",
    ]
    weak = [
        "FP16",
        "INT8",
        "OBEY_PRECISION_CONSTRAINTS",
        "PREFER_PRECISION_CONSTRAINTS",
        "REJECT_EMPTY_ALGORITHMS",
        "FP8",
    ]
    if major >= 10:
        flags += [
            "STRIP_PLAN",
            "REFIT_IDENTICAL",
            "WEIGHT_STREAMING",
            "REFIT_INDIVIDUAL",
            "STRICT_NANS",
            "MONITOR_MEMORY",
            "EDITABLE_TIMING_CACHE",
            "DISABLE_COMPILATION_CACHE",
            "DISTRIBUTIVE_INDEPENDENCE",
        ]
        weak += ["BF16", "INT4", "FP4"]
    if major <= 10:
        flags += weak  # TensorRT 11 removed every weak-typing precision flag
    BuilderFlag = _enum("BuilderFlag", flags, values["BuilderFlag"])
    ndf = ["EXPLICIT_BATCH"] if major <= 10 else []
    if major == 10:
        ndf += ["STRONGLY_TYPED", "PREFER_JIT_PYTHON_PLUGINS", "PREFER_AOT_PYTHON_PLUGINS"]
    if major >= 11:
        ndf += ["STRONGLY_TYPED"]
    NetworkDefinitionCreationFlag = _enum(
        "NetworkDefinitionCreationFlag", ndf, values["NetworkDefinitionCreationFlag"]
    )
    dtypes = ["FLOAT", "HALF", "INT8", "INT32", "BOOL", "UINT8", "FP8"]
    if major >= 10:
        dtypes += ["BF16", "INT64", "INT4", "FP4", "E8M0"]
    DataType = _enum("DataType", dtypes, _VALUES_COMMON["DataType"])
    hw = ["NONE", "AMPERE_PLUS"] + (["SAME_COMPUTE_CAPABILITY"] if (major, minor) >= (10, 9) else [])
    HardwareCompatibilityLevel = _enum("HardwareCompatibilityLevel", hw)
    MemoryPoolType = _enum(
        "MemoryPoolType",
        [
            "WORKSPACE",
            "DLA_MANAGED_SRAM",
            "DLA_LOCAL_DRAM",
            "DLA_GLOBAL_DRAM",
            "TACTIC_DRAM",
            "TACTIC_SHARED_MEMORY",
        ],
        values["MemoryPoolType"],
    )
    ProfilingVerbosity = _enum("ProfilingVerbosity", ["LAYER_NAMES_ONLY", "NONE", "DETAILED"],
                               _VALUES_COMMON["ProfilingVerbosity"])
    LayerInformationFormat = _enum("LayerInformationFormat", ["ONELINE", "JSON"])
    TensorIOMode = _enum("TensorIOMode", ["NONE", "INPUT", "OUTPUT"])
    TensorFormat = _enum("TensorFormat", ["LINEAR", "CHW2", "HWC8", "CHW4", "CHW16", "CHW32"])
    ErrorCode = _enum(
        "ErrorCode",
        [
            "SUCCESS",
            "INTERNAL_ERROR",
            "MEM_ALLOC_FAILED",
            "MODEL_DESERIALIZE_FAILED",
            "INVALID_VALUE",
            "INVALID_GRAPH",
            "INVALID_NODE",
            "UNSUPPORTED_GRAPH",
            "UNSUPPORTED_NODE",
        ],
    )
    CalibrationAlgoType = _enum(
        "CalibrationAlgoType",
        [
            "LEGACY_CALIBRATION",
            "ENTROPY_CALIBRATION",
            "ENTROPY_CALIBRATION_2",
            "MINMAX_CALIBRATION",
        ],
    )
    Severity = _enum("Severity", ["INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE"])

    # ---- logging -------------------------------------------------------------------------------------
    class ILogger:
        def __init__(self) -> None:
            pass

        def log(self, severity: Any, msg: str) -> None:
            raise NotImplementedError

    ILogger.Severity = Severity  # type: ignore[attr-defined]
    for _n in Severity.__members__:  # type: ignore[attr-defined]
        setattr(ILogger, _n, getattr(Severity, _n))

    class Logger(ILogger):
        def __init__(self, min_severity: Any = Severity.WARNING) -> None:  # type: ignore[attr-defined]
            super().__init__()
            self.min_severity = min_severity

        def log(self, severity: Any, msg: str) -> None:
            pass

    def _log(logger: Any, sev: str, msg: str) -> None:
        logger.log(getattr(Severity, sev), msg)

    # ---- basic types -----------------------------------------------------------------------------------
    class Dims:
        def __init__(self, shape: list[int] | None = None) -> None:
            self._d = [int(x) for x in (shape or [])]

        def __len__(self) -> int:
            return len(self._d)

        def __getitem__(self, arg0: int) -> int:
            return self._d[arg0]

        def __eq__(self, arg0: object) -> bool:
            return list(arg0) == self._d if isinstance(arg0, list | tuple) else NotImplemented  # type: ignore[arg-type]

        def __repr__(self) -> str:
            return f"Dims({self._d})"

    class IHostMemory(bytes):  # bytes subclass: the only pure-Python way to offer the buffer protocol on 3.11
        @property
        def nbytes(self) -> int:
            return len(self)

    class ITensor:
        def __init__(self, name: str, dtype: Any, shape: list[int], is_input: bool, shape_tensor: bool = False) -> None:
            self.name = name
            self.dtype = dtype
            self.shape = Dims(shape)
            self._is_input = is_input
            self._shape_tensor = shape_tensor

        @property
        def is_network_input(self) -> bool:
            return self._is_input

        @property
        def is_network_output(self) -> bool:
            return not self._is_input

        @property
        def is_shape_tensor(self) -> bool:
            return self._shape_tensor

    class INetworkDefinition:
        def __init__(self, flags: int) -> None:
            self._flags = flags
            self._inputs: list[ITensor] = []
            self._outputs: list[ITensor] = []
            self._ops: list[tuple[str, str]] = []
            self._carried = "FP32"  # the precision the ONNX itself carries (what a strongly typed build runs)
            self.name = "network"

        @property
        def flags(self) -> int:
            return self._flags

        @property
        def num_inputs(self) -> int:
            return len(self._inputs)

        @property
        def num_outputs(self) -> int:
            return len(self._outputs)

        @property
        def num_layers(self) -> int:
            return len(self._ops)

        def get_input(self, index: int) -> ITensor:
            return self._inputs[index]

        def get_output(self, index: int) -> ITensor:
            return self._outputs[index]

        def get_flag(self, flag: Any) -> bool:
            if major >= 11 and flag.name == "STRONGLY_TYPED":
                return True  # always strongly typed (TensorRT-RTX reports True for create_network(0) too)
            return bool(self._flags & (1 << int(flag)))

    # ---- parser -------------------------------------------------------------------------------------
    class ParserError:
        def __init__(self, code: Any, desc: str, node: int, node_name: str, op: str) -> None:
            self._code, self._desc, self._node, self._node_name, self._op = code, desc, node, node_name, op

        def code(self) -> Any:
            return self._code

        def desc(self) -> str:
            return self._desc

        def file(self) -> str:
            return "ModelImporter.cpp"

        def func(self) -> str:
            return "parseGraph"

        def line(self) -> int:
            return 0

        def node(self) -> int:
            return self._node

        if major >= 10:

            def node_name(self) -> str:
                return self._node_name

            def node_operator(self) -> str:
                return self._op

            def local_function_stack(self) -> list[str]:
                return []

            def local_function_stack_size(self) -> int:
                return 0

        def __str__(self) -> str:
            return f"In node {self._node} ({self._op}): {self._desc}"

    class OnnxParser:
        def __init__(self, network: INetworkDefinition, logger: ILogger) -> None:
            self._network, self._logger = network, logger
            self._errors: list[ParserError] = []

        @property
        def num_errors(self) -> int:
            return len(self._errors)

        def get_error(self, index: int) -> ParserError:
            return self._errors[index]

        def clear_errors(self) -> None:
            self._errors.clear()

        def supports_operator(self, op_name: str) -> bool:
            return op_name not in unsupported

        def parse(self, model: bytes, path: str | None = None) -> bool:
            import onnx

            return self._import(onnx.load_from_string(bytes(model)))

        def parse_from_file(self, model: str) -> bool:
            import onnx

            return self._import(onnx.load(model))

        def _import(self, model: Any) -> bool:
            net = self._network
            explicit = major >= 10 or net.get_flag(NetworkDefinitionCreationFlag.EXPLICIT_BATCH)  # type: ignore[attr-defined]
            if not explicit:
                self._errors.append(
                    ParserError(
                        ErrorCode.INVALID_GRAPH,
                        "Network must have explicit batch",  # type: ignore[attr-defined]
                        -1,
                        "",
                        "",
                    )
                )
                return False
            for idx, node in enumerate(model.graph.node):
                if node.op_type in unsupported:
                    self._errors.append(
                        ParserError(
                            ErrorCode.UNSUPPORTED_NODE,
                            f"No importer registered for op: {node.op_type}",  # type: ignore[attr-defined]
                            idx,
                            node.name,
                            node.op_type,
                        )
                    )
                    return False
                net._ops.append((node.name or f"node_{idx}", node.op_type))
            inits = {i.name for i in model.graph.initializer}
            if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node):
                net._carried = "INT8"
            elif any(v.type.tensor_type.elem_type == 10 for v in [*model.graph.input, *model.graph.output]) or any(
                i.data_type == 10 for i in model.graph.initializer
            ):
                net._carried = "FP16"

            # Inputs TensorRT treats as shape tensors: 1-D integer inputs consumed as a shape.
            shape_uses = {"Reshape": 1, "Expand": 1, "Tile": 1, "ConstantOfShape": 0, "Resize": 3}
            shape_inputs = {n.input[i] for n in model.graph.node if (i := shape_uses.get(n.op_type, -1)) >= 0
                            and i < len(n.input)}

            def tensor(vi: Any, is_input: bool) -> ITensor:
                tt = vi.type.tensor_type
                dt = _ONNX_DTYPE.get(tt.elem_type, "FLOAT")
                if dt == "INT64" and major < 10:
                    _log(
                        self._logger,
                        "WARNING",
                        "Your ONNX model has been generated with INT64 weights, while "
                        "TensorRT does not natively support INT64. Attempting to cast down to INT32.",
                    )
                    dt = "INT32"
                shape = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in tt.shape.dim]
                is_shape = is_input and vi.name in shape_inputs and dt in ("INT32", "INT64") and len(shape) == 1
                return ITensor(vi.name, getattr(DataType, dt), shape, is_input, is_shape)

            net._inputs = [tensor(v, True) for v in model.graph.input if v.name not in inits]
            net._outputs = [tensor(v, False) for v in model.graph.output]
            return True

    # ---- config, builder, runtime, engine, calibrators (fake_tensorrt_build.py) ------------------------
    ctx = types.SimpleNamespace(
        version=version,
        major=major,
        minor=minor,
        BuilderFlag=BuilderFlag,
        NetworkDefinitionCreationFlag=NetworkDefinitionCreationFlag,
        DataType=DataType,
        HardwareCompatibilityLevel=HardwareCompatibilityLevel,
        ProfilingVerbosity=ProfilingVerbosity,
        TensorIOMode=TensorIOMode,
        TensorFormat=TensorFormat,
        CalibrationAlgoType=CalibrationAlgoType,
        Dims=Dims,
        IHostMemory=IHostMemory,
        INetworkDefinition=INetworkDefinition,
        ILogger=ILogger,
        log=_log,
    )
    names: dict[str, Any] = _build_module().make_build_classes(ctx)
    names.update(
        BuilderFlag=BuilderFlag,
        NetworkDefinitionCreationFlag=NetworkDefinitionCreationFlag,
        DataType=DataType,
        HardwareCompatibilityLevel=HardwareCompatibilityLevel,
        MemoryPoolType=MemoryPoolType,
        ProfilingVerbosity=ProfilingVerbosity,
        LayerInformationFormat=LayerInformationFormat,
        TensorIOMode=TensorIOMode,
        TensorFormat=TensorFormat,
        ErrorCode=ErrorCode,
        ILogger=ILogger,
        Logger=Logger,
        Dims=Dims,
        IHostMemory=IHostMemory,
        ITensor=ITensor,
        INetworkDefinition=INetworkDefinition,
        ParserError=ParserError,
        OnnxParser=OnnxParser,
    )
    for name, obj in names.items():
        if isinstance(obj, type) and not isinstance(obj, _EnumMember):
            obj.__name__ = obj.__qualname__ = name
        setattr(mod, name, obj)
    return mod
