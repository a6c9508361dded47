"""What the smoke suite checks: the input contract, as frozen dataclasses.

The spec layer maps a validated spec onto these; nothing here reads YAML. Shapes follow Triton's
conventions: `dims` are config dims (no batch dim), `ShapeRange` holds *full* request shapes (with the
batch dim first when the model batches), and -1 marks a variable dimension.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from deployer.dtypes import normalize_dtype
from deployer.errors import UserError
from deployer.tensors import ShapeRange

__all__ = [
    "Protocol",
    "ShapeRange",
    "Sla",
    "SmokeModel",
    "SmokeOptions",
    "SmokeOutput",
    "SmokeTensor",
]

Protocol = Literal["http", "grpc"]


def _dtype(name: str, dtype: str) -> str:
    try:
        return normalize_dtype(dtype)
    except ValueError as exc:
        raise UserError(f"tensor {name!r}: {exc}") from exc


# Why not the spec's `deployer.spec.Tensor`: smoke runs without a spec too (benchmarks and the runtime
# tests build targets by hand), so it validates and normalizes what it is given here; the spec's
# description carries config-only fields (format, optional, ragged batching, labels). The one mapping
# from a spec is deployer.smoke.from_spec.smoke_models; the shape range is the shared
# deployer.tensors.ShapeRange, not a copy.
@dataclass(frozen=True)
class SmokeTensor:
    """One model input.

    Attributes:
        name: tensor name as in the config (and the ONNX reference).
        dtype: any spelling `deployer.dtypes.normalize_dtype` accepts; stored canonical (`FP32`, `STRING`...).
        dims: config dims without the batch dim; -1 = variable.
        shapes: full shapes to test at; None = derive from `dims` (each -1 becomes 1; batch 1 / opt / max).
        value_range: `[low, high]` for synthetic values, inclusive (floats: uniform in [low, high));
            None = dtype default.
        fixed_value: fill the whole tensor with this value instead of random data (e.g. a mask of 1s).
        reshape: the config's `reshape` (shape the model sees, without the batch dim); applied to the
            request before it is fed to the ONNX Runtime reference, as Triton does for the model.
    """

    name: str
    dtype: str
    dims: tuple[int, ...]
    shapes: ShapeRange | None = None
    value_range: tuple[float, float] | None = None
    fixed_value: float | int | bool | str | None = None
    reshape: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", _dtype(self.name, self.dtype))
        object.__setattr__(self, "dims", tuple(int(d) for d in self.dims))
        r = self.shapes
        if r is not None and not (r.ordered and all(d >= 1 for d in r.min)):
            raise UserError(
                f"input {self.name!r}: shape range must satisfy 1 <= min <= opt <= max per dim: "
                f"min {r.min}, opt {r.opt}, max {r.max}"
            )
        if self.value_range is not None and not self.value_range[0] <= self.value_range[1]:
            raise UserError(f"input {self.name!r}: value_range {self.value_range} needs low <= high")


@dataclass(frozen=True)
class SmokeOutput:
    """One model output and how closely it must match the reference.

    Attributes:
        name: tensor name.
        dtype: canonical dtype (normalized like `SmokeTensor.dtype`).
        dims: config dims without the batch dim.
        atol / rtol: tolerances for `|served - ref| <= atol + rtol * |ref|`; None = default by precision
            (see `deployer.smoke.compare.default_tolerance`).
        reshape: the config's `reshape` (shape the model produces); the reference output is reshaped
            back to the served `dims` before comparison.
    """

    name: str
    dtype: str
    dims: tuple[int, ...]
    atol: float | None = None
    rtol: float | None = None
    reshape: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", _dtype(self.name, self.dtype))
        object.__setattr__(self, "dims", tuple(int(d) for d in self.dims))


@dataclass(frozen=True)
class Sla:
    """Optional performance gates; a violated gate fails the `perf` check. None = not gated."""

    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    min_throughput: float | None = None  # inferences/s (batch elements, not requests)


@dataclass(frozen=True)
class SmokeModel:
    """One deployed model and what we expect of it.

    Attributes:
        name: model name in the repository.
        inputs / outputs: the I/O we rendered into the config.
        max_batch_size: as rendered; 0 = no batching (request shapes are exactly `dims`).
        expected_config: the ModelConfig we rendered, as a proto-JSON dict (field names as in
            `model_config.proto`); compared with the served config. Empty = skip the config check.
        onnx_path: ONNX model run in-process with ONNX Runtime as the numeric reference;
            None = no numeric comparison (outputs are still shape- and dtype-checked).
        preferred_batch_sizes: extra batch sizes to run inference at (besides min/opt/max).
        dynamic_batching: whether the config enables the dynamic batcher (the batching check runs then).
        precision: engine build precision (`fp32`, `fp16`, `bf16`, `int8`, `best`); loosens default
            tolerances of float outputs when lower than the output dtype. None = the output dtype's own.
        golden: `.npz` with `inputs/<name>` and `outputs/<name>` arrays; served outputs must match them.
        sla: performance gates for the load test; None = report numbers only.
        version: model version to address; "" = the server's choice (latest).
    """

    name: str
    inputs: tuple[SmokeTensor, ...]
    outputs: tuple[SmokeOutput, ...]
    max_batch_size: int = 0
    expected_config: Mapping[str, Any] = field(default_factory=dict)
    onnx_path: Path | None = None
    preferred_batch_sizes: tuple[int, ...] = ()
    dynamic_batching: bool = False
    precision: str | None = None
    golden: Path | None = None
    sla: Sla | None = None
    version: str = ""

    def __post_init__(self) -> None:
        if self.max_batch_size < 0:
            raise UserError(f"model {self.name!r}: max_batch_size must be >= 0, got {self.max_batch_size}")
        bad = [b for b in self.preferred_batch_sizes if not 1 <= b <= max(self.max_batch_size, 1)]
        if bad:
            raise UserError(
                f"model {self.name!r}: preferred batch sizes {bad} outside 1..max_batch_size ({self.max_batch_size})"
            )


@dataclass(frozen=True)
class SmokeOptions:
    """How hard to test.

    Attributes:
        protocols: protocols to run inference over.
        concurrency: requests in flight during the load test.
        perf_protocol: protocol of the load test. "http" (default): pre-built binary HTTP/1.1 requests
            on raw keep-alive sockets, ~50-80 us of client CPU per request here. "grpc": asyncio gRPC with
            a pre-serialized request, ~350-420 us per request (gRPC's Python stack), which on a small
            box takes CPU from the server being measured.
        duration_s: load test duration; `max_requests` bounds it further (whichever comes first).
        max_requests: upper bound on load-test requests; None = time only.
        warmup_requests: requests sent before measuring (not counted).
        batch_size: batch size of each load-test request (batching models; 1 otherwise).
        load_processes: gRPC load only: client processes sharing `concurrency` (1 suits a client
            sharing few cores with the server; more for a many-core client).
        batching_requests: N concurrent batch-1 requests for the dynamic-batching check.
        timeout_s: per request / per API call deadline.
        seed: seed of all synthetic inputs (same seed -> same tensors).
        perf: run the load test at all.
        checks: names of check families to run (`ready`, `config`, `metadata`, `infer`, `golden`,
            `batching`, `perf`, `metrics`); None = all.
    """

    protocols: tuple[Protocol, ...] = ("http", "grpc")
    concurrency: int = 16
    perf_protocol: Protocol = "http"
    duration_s: float = 2.0
    max_requests: int | None = None
    warmup_requests: int = 20
    batch_size: int = 1
    load_processes: int = 1
    batching_requests: int = 64
    timeout_s: float = 60.0
    seed: int = 0
    perf: bool = True
    checks: frozenset[str] | None = None

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise UserError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.duration_s <= 0:
            raise UserError(f"duration_s must be > 0, got {self.duration_s}")
        if self.batching_requests < 2:
            raise UserError(f"batching_requests must be >= 2, got {self.batching_requests}")
        unknown = ({*self.protocols, self.perf_protocol}) - {"http", "grpc"}
        if unknown:
            raise UserError(f"unknown protocols {sorted(unknown)}; use 'http' and/or 'grpc'")

    def wants(self, family: str) -> bool:
        """Whether the check family `family` should run."""
        return self.checks is None or family in self.checks
