"""Build-side classes of the FAKE `tensorrt` module (see fake_tensorrt.py): config, builder, runtime, engine.

Split from fake_tensorrt.py only to keep files short; `make_build_classes` is called by `make_fake_tensorrt`.
"""

from __future__ import annotations

import json
from typing import Any


def make_build_classes(ctx: Any) -> dict[str, Any]:  # noqa: C901 - class bodies differ per API generation
    """Classes for one fake version; `ctx` carries the version, knobs and the module's basic types."""
    version: str = ctx.version
    major: int = ctx.major
    minor: int = ctx.minor
    BuilderFlag = ctx.BuilderFlag
    NetworkDefinitionCreationFlag = ctx.NetworkDefinitionCreationFlag
    DataType = ctx.DataType
    HardwareCompatibilityLevel = ctx.HardwareCompatibilityLevel
    ProfilingVerbosity = ctx.ProfilingVerbosity
    TensorIOMode = ctx.TensorIOMode
    TensorFormat = ctx.TensorFormat
    CalibrationAlgoType = ctx.CalibrationAlgoType
    Dims = ctx.Dims
    IHostMemory = ctx.IHostMemory
    INetworkDefinition = ctx.INetworkDefinition
    ILogger = ctx.ILogger
    _log = ctx.log
    del minor
    ctx_logger: list[Any] = [None]  # the last Builder's logger: config methods log through it, as TensorRT does

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
            try:
                doc = json.loads(raw)
                return ITimingCache(doc["header"], doc["entries"])
            except (ValueError, KeyError, TypeError):
                # Like the real module: log at ERROR and hand back an empty cache (no exception).
                _log(ctx_logger[0], "ERROR", "fake: could not deserialize the timing cache")
                return ITimingCache(header, {})

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
            ctx_logger[0] = logger

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
            # No layer formats: the fake runs no kernels, so it cannot say which precision layers would run in
            # (echoing the requested flag would make any precision check pass by construction). The engine
            # inspector reports layer names only; verify_precision is tested on documented JSON instead.
            plan = {
                "fake_tensorrt_plan": version,
                "io": [[t.name, t.dtype.name, list(t.shape._d), True, t.is_shape_tensor] for t in network._inputs]
                + [[t.name, t.dtype.name, list(t.shape._d), False, False] for t in network._outputs],
                "profiles": [{n: [list(d._d) for d in s] for n, s in p._shapes.items()} for p in config._profiles],
                "layers": [n for n, _ in network._ops],
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
            return bool(self._io[name][4])

        if major >= 10:

            def get_tensor_profile_values(self, name: int, profile_index: str) -> list[list[int]]:
                # The real binding's parameter *names* are swapped (its docstring: `name: SupportsInt,
                # profile_index: str`): the profile index comes first, the tensor name second.
                if not isinstance(name, int) or not isinstance(profile_index, str):
                    raise TypeError("get_tensor_profile_values(): incompatible function arguments (int, str)")
                return [list(d) for d in self._plan["profiles"][name][profile_index]]

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
        IOptimizationProfile=IOptimizationProfile,
        ITimingCache=ITimingCache,
        IBuilderConfig=IBuilderConfig,
        Builder=Builder,
        EngineInspector=EngineInspector,
        ICudaEngine=ICudaEngine,
        Runtime=Runtime,
    )
    return names
