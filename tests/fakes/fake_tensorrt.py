"""FAKE `tensorrt` module for unit tests — not TensorRT. No GPU, no kernels, no real engines.

`make_fake_tensorrt(version)` returns a module object that imitates the TensorRT Python API of
8.6 / 10.x / 11.x closely enough to drive `deployer.engines`:

* it exposes only names that `tensorrt-stubs` (10.13) declares, with the stubs' parameter names
  (tests/unit/engines/test_engines_fake_fidelity.py checks this against the .pyi files);
* members are present or absent per version as in the brief's part C table: 8.6 has EXPLICIT_BATCH but no
  STRONGLY_TYPED / BF16 / STRIP_PLAN / INT64 / ParserError.node_name; 11.x has no FP16/INT8/BF16/FP8
  builder flags, no EXPLICIT_BATCH, no calibrators or int8_calibrator;
* behaviour: the parser reads the ONNX with `onnx` (inputs, outputs, ops; INT64 IO becomes INT32 below 10),
  the builder refuses dynamic inputs without profiles and precision flags on strongly typed networks,
  runs INT8 calibrators, fills the timing cache, and serializes a JSON "plan" that the fake Runtime
  deserializes only with the same version.

Knobs: `unsupported_ops` (parser rejects them), `fp32_fallback` (layers stay fp32 whatever the flags say,
like the silent fallback in roboflow/rf-detr#1453).
"""

from __future__ import annotations

import json
import types
from collections.abc import Iterable
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


def _enum(cls_name: str, names: Iterable[str]) -> type:
    members = {n: _EnumMember(cls_name, n, i) for i, n in enumerate(names)}
    cls = type(cls_name, (), dict(members))
    cls.__members__ = dict(members)  # type: ignore[attr-defined]
    return cls


def _ver(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def make_fake_tensorrt(  # noqa: C901 - one closure per API generation keeps the fake readable
    version: str = "10.13.0.35",
    *,
    unsupported_ops: Iterable[str] = ("NonMaxSuppressionFake",),
    fp32_fallback: bool = False,
) -> types.ModuleType:
    """Build a fake `tensorrt` module of `version` ("8.6.1.6", "10.13.0.35", "11.1.0.106")."""
    major, minor = _ver(version)
    unsupported = frozenset(unsupported_ops)
    mod = types.ModuleType("tensorrt")
    mod.__version__ = version  # type: ignore[attr-defined]

    # ---- enums (members per version) ---------------------------------------------------------------
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
    BuilderFlag = _enum("BuilderFlag", flags)
    ndf = ["EXPLICIT_BATCH"] if major <= 10 else []
    if major >= 10:
        ndf += ["STRONGLY_TYPED", "PREFER_JIT_PYTHON_PLUGINS", "PREFER_AOT_PYTHON_PLUGINS"]
    NetworkDefinitionCreationFlag = _enum("NetworkDefinitionCreationFlag", ndf)
    dtypes = ["FLOAT", "HALF", "INT8", "INT32", "BOOL", "UINT8", "FP8"]
    if major >= 10:
        dtypes += ["BF16", "INT64", "INT4", "FP4", "E8M0"]
    DataType = _enum("DataType", dtypes)
    hw = ["NONE", "AMPERE_PLUS"] + (["SAME_COMPUTE_CAPABILITY"] if (major, minor) >= (10, 9) else [])
    HardwareCompatibilityLevel = _enum("HardwareCompatibilityLevel", hw)
    MemoryPoolType = _enum(
        "MemoryPoolType",
        [
            "WORKSPACE",
            "DLA_MANAGED_SRAM",
            "DLA_LOCAL_DRAM",
            "DLA_GLOBAL_DRAM",
            "TACTIC_SHARED_MEMORY",
            "TACTIC_DRAM",
        ],
    )
    ProfilingVerbosity = _enum("ProfilingVerbosity", ["LAYER_NAMES_ONLY", "NONE", "DETAILED"])
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
        def __init__(self, name: str, dtype: Any, shape: list[int], is_input: bool) -> None:
            self.name = name
            self.dtype = dtype
            self.shape = Dims(shape)
            self._is_input = is_input

        @property
        def is_network_input(self) -> bool:
            return self._is_input

        @property
        def is_network_output(self) -> bool:
            return not self._is_input

        @property
        def is_shape_tensor(self) -> bool:
            return False

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
                return ITensor(vi.name, getattr(DataType, dt), shape, is_input)

            net._inputs = [tensor(v, True) for v in model.graph.input if v.name not in inits]
            net._outputs = [tensor(v, False) for v in model.graph.output]
            return True

    # ---- profiles, timing cache, config -------------------------------------------------------------
    class IOptimizationProfile:
        def __init__(self) -> None:
            self._shapes: dict[str, list[Dims]] = {}

        def set_shape(self, input: str, min: Dims, opt: Dims, max: Dims) -> None:
            self._shapes[input] = [min, opt, max]

        def get_shape(self, input: str) -> list[Dims]:
            return self._shapes.get(input, [])

        def set_shape_input(self, input: str, min: list[int], opt: list[int], max: list[int]) -> None:
            self._shapes[input] = [Dims(min), Dims(opt), Dims(max)]

        def __bool__(self) -> bool:
            return True

    class ITimingCache:
        def __init__(self, header: str, entries: dict[str, str]) -> None:
            self._header, self._entries = header, dict(entries)

        def serialize(self) -> IHostMemory:
            return IHostMemory(json.dumps({"header": self._header, "entries": self._entries}, sort_keys=True).encode())

        def combine(self, input_cache: ITimingCache, ignore_mismatch: bool) -> bool:
            if input_cache._header != self._header and not ignore_mismatch:
                return False
            for k, v in input_cache._entries.items():
                self._entries.setdefault(k, v)
            return True

        def reset(self) -> bool:
            self._entries.clear()
            return True

    header = f"fake-trt-{version}"

    class IBuilderConfig:
        def __init__(self) -> None:
            self._flags: set[str] = {"TF32"}  # TF32 is on by default in TensorRT
            self._pools: dict[str, int] = {}
            self._profiles: list[IOptimizationProfile] = []
            self._timing: ITimingCache | None = None
            self.hardware_compatibility_level = HardwareCompatibilityLevel.NONE  # type: ignore[attr-defined]
            self.builder_optimization_level = 3
            self.profiling_verbosity = ProfilingVerbosity.LAYER_NAMES_ONLY  # type: ignore[attr-defined]
            if major <= 10:
                self.int8_calibrator: Any = None
                self._calib_profile: IOptimizationProfile | None = None

        @property
        def flags(self) -> int:
            return sum(1 << int(getattr(BuilderFlag, f)) for f in self._flags)

        def set_flag(self, flag: Any) -> None:
            self._flags.add(flag.name)

        def clear_flag(self, flag: Any) -> None:
            self._flags.discard(flag.name)

        def get_flag(self, flag: Any) -> bool:
            return flag.name in self._flags

        def set_memory_pool_limit(self, pool: Any, pool_size: int) -> None:
            self._pools[pool.name] = pool_size

        def get_memory_pool_limit(self, pool: Any) -> int:
            return self._pools.get(pool.name, 1 << 34)

        def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
            self._profiles.append(profile)
            return len(self._profiles) - 1

        @property
        def num_optimization_profiles(self) -> int:
            return len(self._profiles)

        def create_timing_cache(self, serialized_timing_cache: bytes) -> ITimingCache:
            raw = bytes(serialized_timing_cache)
            if not raw:
                return ITimingCache(header, {})
            doc = json.loads(raw)
            return ITimingCache(doc["header"], doc["entries"])

        def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
            if cache._header != header and not ignore_mismatch:
                return False
            self._timing = cache
            return True

        def get_timing_cache(self) -> ITimingCache:
            if self._timing is None:
                self._timing = ITimingCache(header, {})
            return self._timing

        if major <= 10:

            def set_calibration_profile(self, profile: IOptimizationProfile) -> bool:
                self._calib_profile = profile
                return True

            def get_calibration_profile(self) -> IOptimizationProfile | None:
                return self._calib_profile

    # ---- builder --------------------------------------------------------------------------------------
    class Builder:
        def __init__(self, logger: ILogger) -> None:
            self._logger = logger
            self.max_threads = 1

        @property
        def logger(self) -> ILogger:
            return self._logger

        if major <= 10:

            @property
            def platform_has_fast_fp16(self) -> bool:
                return True

        def create_network(self, flags: int = 0) -> INetworkDefinition:
            return INetworkDefinition(flags)

        def create_builder_config(self) -> IBuilderConfig:
            return IBuilderConfig()

        def create_optimization_profile(self) -> IOptimizationProfile:
            return IOptimizationProfile()

        def build_serialized_network(self, network: INetworkDefinition, config: IBuilderConfig) -> IHostMemory | None:
            err = self._check(network, config)
            if err:
                _log(self._logger, "ERROR", err)
                return None  # the real binding returns None and logs the reason
            if "INT8" in config._flags and getattr(config, "int8_calibrator", None) is not None:
                self._calibrate(network, config.int8_calibrator)
            timing = config.get_timing_cache()
            for name, op in network._ops:
                timing._entries.setdefault(f"{op}:{name}:{sorted(config._flags)}", "tactic-0")
            precision = "FP32"
            strongly = major >= 11 or (major >= 10 and network.get_flag(NetworkDefinitionCreationFlag.STRONGLY_TYPED))  # type: ignore[attr-defined]
            if strongly:
                precision = network._carried
            elif not fp32_fallback:
                for flag in ("INT8", "FP8", "FP16", "BF16"):
                    if flag in config._flags:
                        precision = flag
                        break
            detailed = config.profiling_verbosity == ProfilingVerbosity.DETAILED  # type: ignore[attr-defined]
            plan = {
                "fake_tensorrt_plan": version,
                "io": [[t.name, t.dtype.name, list(t.shape._d), True] for t in network._inputs]
                + [[t.name, t.dtype.name, list(t.shape._d), False] for t in network._outputs],
                "profiles": [{n: [list(d._d) for d in s] for n, s in p._shapes.items()} for p in config._profiles],
                "layers": [
                    {
                        "Name": n,
                        "LayerType": op,
                        "Outputs": [{"Format/Datatype": f"Row major linear {precision} format"}],
                    }
                    if detailed
                    else n
                    for n, op in network._ops
                ],
                "flags": sorted(config._flags),
            }
            return IHostMemory(json.dumps(plan).encode())

        def _check(self, network: INetworkDefinition, config: IBuilderConfig) -> str | None:
            strongly = major >= 11 or (major >= 10 and network.get_flag(NetworkDefinitionCreationFlag.STRONGLY_TYPED))  # type: ignore[attr-defined]
            for f in ("FP16", "BF16", "INT8", "FP8"):
                if strongly and f in config._flags:
                    return (
                        "Error Code 3: API Usage Error (Parameter check failed, condition: "
                        f"!config.getFlag(BuilderFlag::k{f}))"
                    )
            dynamic = [t for t in network._inputs if -1 in t.shape._d]
            if dynamic and not config._profiles:
                return "Network has dynamic or shape inputs, but no optimization profile has been defined."
            for i, prof in enumerate(config._profiles):
                for t in dynamic:
                    if t.name not in prof._shapes:
                        return f"Optimization profile {i} has no shapes for dynamic input {t.name}"
            return None

        def _calibrate(self, network: INetworkDefinition, calib: Any) -> None:
            if calib.read_calibration_cache() is not None:
                return
            names = [t.name for t in network._inputs]
            count = 0
            while True:
                ptrs = calib.get_batch(names)
                if not ptrs:
                    break
                if len(ptrs) != len(names):
                    raise RuntimeError("calibrator returned the wrong number of device pointers")
                count += 1
            calib.write_calibration_cache(IHostMemory(f"fake-calibration-table batches={count}".encode()))

    # ---- runtime / engine ------------------------------------------------------------------------------
    class EngineInspector:
        def __init__(self, plan: dict[str, Any]) -> None:
            self._plan = plan

        def get_engine_information(self, format: Any) -> str:
            return json.dumps({"Layers": self._plan["layers"], "Bindings": [io[0] for io in self._plan["io"]]})

        def get_layer_information(self, layer_index: int, format: Any) -> str:
            return json.dumps(self._plan["layers"][layer_index])

    class ICudaEngine:
        def __init__(self, plan: dict[str, Any]) -> None:
            self._plan = plan
            self._io = {io[0]: io for io in plan["io"]}
            self._order = [io[0] for io in plan["io"]]

        @property
        def num_io_tensors(self) -> int:
            return len(self._order)

        @property
        def num_optimization_profiles(self) -> int:
            return max(1, len(self._plan["profiles"]))

        @property
        def num_layers(self) -> int:
            return len(self._plan["layers"])

        def get_tensor_name(self, index: int) -> str:
            return self._order[index]

        def get_tensor_mode(self, name: str) -> Any:
            return TensorIOMode.INPUT if self._io[name][3] else TensorIOMode.OUTPUT  # type: ignore[attr-defined]

        def get_tensor_dtype(self, name: str) -> Any:
            return getattr(DataType, self._io[name][1])

        def get_tensor_shape(self, name: str) -> Dims:
            return Dims(self._io[name][2])

        def get_tensor_format(self, name: str, profile_index: int = 0) -> Any:
            return TensorFormat.LINEAR  # type: ignore[attr-defined]

        def is_shape_inference_io(self, name: str) -> bool:
            return False

        def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[Dims]:
            profiles = self._plan["profiles"]
            if not profiles:  # static engine: TensorRT reports the fixed shape three times
                return [Dims(self._io[name][2])] * 3
            return [Dims(d) for d in profiles[profile_index][name]]

        def create_engine_inspector(self) -> EngineInspector:
            return EngineInspector(self._plan)

        def serialize(self) -> IHostMemory:
            return IHostMemory(json.dumps(self._plan).encode())

    class Runtime:
        def __init__(self, logger: ILogger) -> None:
            self._logger = logger
            self.engine_host_code_allowed = False

        def deserialize_cuda_engine(self, serialized_engine: bytes) -> ICudaEngine | None:
            try:
                plan = json.loads(bytes(serialized_engine))
                built = plan["fake_tensorrt_plan"]
            except (ValueError, KeyError, TypeError):
                _log(self._logger, "ERROR", "1: [stdArchiveReader.cpp] Serialization assertion magicTagRead failed")
                return None
            if built != version:
                _log(
                    self._logger,
                    "ERROR",
                    f"Serialization assertion stdVersionRead == kSERIALIZATION_VERSION failed."
                    f"Version tag does not match. Note: Current Version: {version}, Serialized Engine Version: {built}",
                )
                return None
            return ICudaEngine(plan)

    # ---- calibrators (removed in 11) -------------------------------------------------------------------
    names: dict[str, Any] = {}
    if major <= 10:

        class IInt8Calibrator:
            def __init__(self) -> None:
                pass

            def get_algorithm(self) -> Any:
                return CalibrationAlgoType.ENTROPY_CALIBRATION_2  # type: ignore[attr-defined]

        class IInt8EntropyCalibrator2(IInt8Calibrator):
            pass

        class IInt8MinMaxCalibrator(IInt8Calibrator):
            def get_algorithm(self) -> Any:
                return CalibrationAlgoType.MINMAX_CALIBRATION  # type: ignore[attr-defined]

        names.update(
            IInt8Calibrator=IInt8Calibrator,
            IInt8EntropyCalibrator2=IInt8EntropyCalibrator2,
            IInt8MinMaxCalibrator=IInt8MinMaxCalibrator,
            CalibrationAlgoType=CalibrationAlgoType,
        )

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
        IOptimizationProfile=IOptimizationProfile,
        ITimingCache=ITimingCache,
        IBuilderConfig=IBuilderConfig,
        Builder=Builder,
        EngineInspector=EngineInspector,
        ICudaEngine=ICudaEngine,
        Runtime=Runtime,
    )
    for name, obj in names.items():
        if isinstance(obj, type) and not isinstance(obj, _EnumMember):
            obj.__name__ = obj.__qualname__ = name
        setattr(mod, name, obj)
    return mod
