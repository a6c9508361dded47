"""The `tune:` section of the spec (`deployer tune`)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from deployer.spec.schema_base import INT32_MAX, UINT32_MAX, UINT64_MAX, Float, Int, Int32, Shape, _Strict


class TuneRange(_Strict):
    """An inclusive integer range; the tuner picks values on its ladder inside it."""

    min: Int = Field(ge=0, le=INT32_MAX, description="Smallest value tried.")
    max: Int = Field(ge=0, le=INT32_MAX, description="Largest value tried.")

    @model_validator(mode="after")
    def _ordered(self) -> TuneRange:
        if self.min > self.max:
            raise ValueError(f"min {self.min} > max {self.max}")
        return self


class TuneLoad(_Strict):
    """The load each candidate is measured under (closed loop: concurrency; open loop: rates)."""

    concurrency: list[Annotated[Int, Field(ge=1, le=4096)]] | None = Field(
        default=None, min_length=1,
        description="Closed-loop client counts. Default: [smoke.concurrency] unless `rates` are given.")
    rates: list[Annotated[Float, Field(gt=0)]] = Field(
        default_factory=list, description="Open-loop arrival rates (requests/s); latency counts from the "
        "intended send time.")
    arrival: Literal["constant", "poisson"] = Field(default="constant", description="Open-loop arrivals.")
    batch_size: Int = Field(default=1, ge=1, le=INT32_MAX,
                            description="Batch dimension of each request (models that batch).")
    shapes: dict[str, Shape] | None = Field(
        default=None, description="Full request shape per input (batch first). Default: the opt shape of the "
        "first profile, else the smoke inputs' shape, with the batch dim set to `batch_size`.")
    warmup_s: Float = Field(default=1.0, ge=0, description="Seconds of load before measuring.")
    window_s: Float = Field(default=2.0, gt=0, description="Length of one measurement window.")
    max_windows: Int = Field(default=6, ge=3, le=1000,
                             description="Windows until 3 in a row agree within 10 %, at most this many.")
    protocol: Literal["http", "grpc"] = Field(
        default="http", description="Protocol of the load: binary KServe v2 HTTP, or gRPC streams "
        "(`ModelStreamInfer`, one request in flight each; by URL give `--grpc-url`).")


class TuneSpace(_Strict):
    """What the tuner may change. Unset axes get a default ladder bounded by the model and its profile."""

    max_batch_size: list[Annotated[Int, Field(ge=1, le=INT32_MAX)]] | TuneRange | None = Field(
        default=None, description="Values or range. Default: powers of two up to the profile's max batch "
        "(else max(32, the spec's value)), above the smallest batch the spec's shapes need.")
    preferred_batch_size: list[list[Annotated[Int32, Field(ge=1)]]] | None = Field(
        default=None, description="Sets to try, [] = none; sets with a size above max_batch_size are skipped. "
        "Default: [] (Triton then prefers max_batch_size) and [max_batch_size / 2, max_batch_size].")
    max_queue_delay_microseconds: list[Annotated[Int, Field(ge=0, le=UINT64_MAX)]] | TuneRange | None = Field(
        default=None, description="Values or range. Default: 0, 100, 250, 500, 1000, 2000, 5000, 10000 "
        "(and the spec's value).")
    instance_count: list[Annotated[Int, Field(ge=1, le=INT32_MAX)]] | TuneRange | None = Field(
        default=None, description="Instances per instance group. Default: 1 to 3 (and the spec's value).")
    max_queue_size: list[Annotated[Int, Field(ge=0, le=UINT32_MAX)]] | None = Field(
        default=None, description="Queue policy max_queue_size values (0 = unbounded). Default: not tuned.")
    default_timeout_microseconds: list[Annotated[Int, Field(ge=0, le=UINT64_MAX)]] | None = Field(
        default=None, description="Queue policy timeouts (0 = none). Default: not tuned.")


class TuneBudget(_Strict):
    """When the search stops (whichever comes first)."""

    trials: Int = Field(default=20, ge=1, le=10000, description="Measured candidates, the original included.")
    minutes: Float | None = Field(default=None, gt=0, description="Wall-clock limit of the search.")


class TuneSpec(_Strict):
    """`deployer tune`: the objective, the load, the search space and the budget."""

    objective: Literal["max_throughput", "min_latency"] = Field(
        default="max_throughput", description="max_throughput under `p99_ms`, or min_latency (p99) above "
        "`min_throughput`.")
    p99_ms: Float | None = Field(default=None, gt=0, description="max_throughput: p99 latency budget (ms). "
                                 "Default: smoke.sla.p99_ms, else none.")
    min_throughput: Float | None = Field(default=None, gt=0, description="min_latency: throughput floor "
                                         "(inferences/s). Default: smoke.sla.min_throughput, else none.")
    load: TuneLoad = Field(default_factory=TuneLoad, description="The load candidates are measured under.")
    space: TuneSpace = Field(default_factory=TuneSpace, description="The search space.")
    budget: TuneBudget = Field(default_factory=TuneBudget, description="Trials and/or minutes.")

    @model_validator(mode="after")
    def _objective_fits(self) -> TuneSpec:
        if self.objective == "max_throughput" and self.min_throughput is not None:
            raise ValueError("min_throughput is the floor of objective min_latency; max_throughput takes p99_ms")
        if self.objective == "min_latency" and self.p99_ms is not None:
            raise ValueError("p99_ms is the budget of objective max_throughput; min_latency takes min_throughput")
        return self
