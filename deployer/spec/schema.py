"""The YAML spec as strict pydantic models (the edge of the system: unknown keys are rejected).

Key names follow Triton's `model_config.proto` wherever Triton has a name for the knob, so a Triton user
recognises them (`max_batch_size`, `preferred_batch_size`, `max_queue_delay_microseconds`, ...).
Every field's description is the reference documentation (`deployer schema`, docs/spec.md).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from deployer.spec.schema_base import (
    INT32_MAX,
    UINT32_MAX,
    UINT64_MAX,
    Bool,
    Float,
    GpuId,
    Int,
    Int32,
    Int64,
    Shape,
    _Strict,
)
from deployer.spec.schema_k8s import K8sSpec
from deployer.spec.schema_tune import TuneSpec

# --------------------------------------------------------------------------- tensors


class ShapeRange(_Strict):
    """Full shapes (batch dimension included when the model batches) an input is exercised with."""

    min: Shape = Field(description="Smallest shape (TensorRT profile min; smoke tests run it).")
    opt: Shape = Field(description="Typical shape (TensorRT profile opt).")
    max: Shape = Field(description="Largest shape (TensorRT profile max; must cover max_batch_size).")


class Tolerance(_Strict):
    """Output comparison tolerance against the ONNX Runtime reference: |a-b| <= atol + rtol*|b|."""

    atol: Float | None = Field(default=None, ge=0, description="Absolute tolerance. Default by precision.")
    rtol: Float | None = Field(default=None, ge=0, description="Relative tolerance. Default by precision.")


class InputSpec(_Strict):
    """A model input (Triton `ModelInput`)."""

    name: str = Field(description="Tensor name, exactly as in the model.")
    dtype: str = Field(description="Data type: FP32, FP16, INT64, STRING/BYTES, BOOL ... (TYPE_ prefix optional).")
    dims: list[Int64] = Field(
        description="Shape without the batch dimension when max_batch_size > 0; -1 = variable size."
    )
    reshape: list[Int64] | None = Field(
        default=None, description="Shape the model receives, when it differs from dims ([] = scalar)."
    )
    format: Literal["NONE", "NCHW", "NHWC"] | None = Field(
        default=None, description="Image layout hint (NCHW/NHWC need exactly 3 dims)."
    )
    optional: Bool = Field(default=False, description="The input may be omitted from requests.")
    is_shape_tensor: Bool = Field(default=False, description="TensorRT shape tensor (tensorrt only).")
    allow_ragged_batch: Bool = Field(default=False, description="Batch requests of different shapes.")
    value_range: tuple[Float, Float] | None = Field(
        default=None, description="Smoke tests draw synthetic values from [low, high]."
    )
    value: Float | Int | str | Bool | None = Field(
        default=None, description="Smoke tests send this fixed value for every element."
    )


class OutputSpec(_Strict):
    """A model output (Triton `ModelOutput`)."""

    name: str = Field(description="Tensor name, exactly as in the model.")
    dtype: str = Field(description="Data type, as for inputs.")
    dims: list[Int64] = Field(description="Shape without the batch dimension when max_batch_size > 0.")
    reshape: list[Int64] | None = Field(default=None, description="Shape the model produces, when it differs.")
    label_filename: str | None = Field(default=None, description="Classification labels file in the model dir.")
    is_shape_tensor: Bool = Field(default=False, description="TensorRT shape tensor (tensorrt only).")
    tolerance: Tolerance | None = Field(default=None, description="Comparison tolerance in smoke tests.")


# --------------------------------------------------------------------------- scheduling


class QueuePolicy(_Strict):
    """Triton `ModelQueuePolicy`."""

    timeout_action: Literal["REJECT", "DELAY"] = Field(default="REJECT", description="On timeout.")
    default_timeout_microseconds: Int = Field(default=0, ge=0, le=UINT64_MAX, description="0 = no timeout.")
    allow_timeout_override: Bool = Field(default=False, description="Requests may set a shorter timeout.")
    max_queue_size: Int = Field(default=0, ge=0, le=UINT32_MAX, description="0 = unbounded.")


class DynamicBatching(_Strict):
    """Triton `dynamic_batching`: server-side batching of independent requests."""

    preferred_batch_size: list[Int32] = Field(
        default_factory=list, description="Batch sizes to form preferentially; each <= max_batch_size."
    )
    max_queue_delay_microseconds: Int = Field(
        default=0, ge=0, le=UINT64_MAX, description="How long a request may wait for a batch to fill."
    )
    preserve_ordering: Bool = Field(default=False, description="Responses in request order.")
    priority_levels: Int = Field(default=0, ge=0, le=UINT64_MAX, description="Number of priority levels (0 = off).")
    default_priority_level: Int = Field(
        default=0, ge=0, le=UINT64_MAX, description="Priority of requests that set none."
    )
    default_queue_policy: QueuePolicy | None = Field(default=None, description="Queue policy.")
    priority_queue_policy: dict[Int, QueuePolicy] = Field(
        default_factory=dict, description="Queue policy per priority level (1..priority_levels)."
    )


class SequenceControl(_Strict):
    """One control of a sequence control input."""

    kind: Literal[
        "CONTROL_SEQUENCE_START", "CONTROL_SEQUENCE_READY", "CONTROL_SEQUENCE_END", "CONTROL_SEQUENCE_CORRID"
    ]
    int32_false_true: list[Int32] = Field(default_factory=list)
    fp32_false_true: list[Float] = Field(default_factory=list)
    bool_false_true: list[Bool] = Field(default_factory=list)
    data_type: str | None = Field(default=None, description="For CONTROL_SEQUENCE_CORRID.")


class SequenceControlInput(_Strict):
    """A model input that receives sequence control signals."""

    name: str
    control: list[SequenceControl]


class SequenceInitialState(_Strict):
    """Initial value of an implicit state tensor."""

    name: str
    data_type: str
    dims: list[Int64]
    zero_data: Bool | None = None
    data_file: str | None = None


class SequenceState(_Strict):
    """Implicit state carried between requests of a sequence."""

    input_name: str
    output_name: str
    data_type: str
    dims: list[Int64]
    initial_state: list[SequenceInitialState] = Field(default_factory=list)
    use_same_buffer_for_input_output: Bool = False
    use_growable_memory: Bool = False


class SequenceDirect(_Strict):
    """Direct strategy: each sequence pinned to a batch slot."""

    max_queue_delay_microseconds: Int = Field(default=0, ge=0, le=UINT64_MAX)
    minimum_slot_utilization: Float = Field(default=0.0, ge=0.0, le=1.0)


class SequenceOldest(_Strict):
    """Oldest strategy: dynamic batching across the oldest sequences."""

    max_candidate_sequences: Int = Field(default=0, ge=0, le=INT32_MAX)
    preferred_batch_size: list[Int32] = Field(default_factory=list)
    max_queue_delay_microseconds: Int = Field(default=0, ge=0, le=UINT64_MAX)
    preserve_ordering: Bool = False


class SequenceBatching(_Strict):
    """Triton `sequence_batching` for stateful models."""

    direct: SequenceDirect | None = None
    oldest: SequenceOldest | None = None
    max_sequence_idle_microseconds: Int = Field(default=0, ge=0, le=UINT64_MAX, description="0 = Triton's 1 s default.")
    control_input: list[SequenceControlInput] = Field(default_factory=list)
    state: list[SequenceState] = Field(default_factory=list)
    iterative_sequence: Bool = False


class EnsembleStep(_Strict):
    """One step of an ensemble: a composing model and its tensor wiring."""

    model: str = Field(description="Name of the composing model (a model in this spec or already served).")
    version: Int = Field(default=-1, description="-1 = latest, else a version >= 1.")
    inputs: dict[str, str] = Field(description="Composing model input -> ensemble tensor.")
    outputs: dict[str, str] = Field(description="Composing model output -> ensemble tensor.")


class Ensemble(_Strict):
    """Triton `ensemble_scheduling`."""

    steps: list[EnsembleStep] = Field(min_length=1)
    max_inflight_requests: Int = Field(default=0, ge=0, le=UINT32_MAX, description="0 = unlimited.")


class InstanceGroup(_Strict):
    """Triton `instance_group`: where and how many model instances run."""

    name: str | None = None
    kind: Literal["AUTO", "CPU", "GPU", "MODEL"] = Field(default="AUTO", description="Device kind.")
    count: Int = Field(default=1, ge=1, le=INT32_MAX, description="Instances (per GPU for kind GPU).")
    gpus: list[GpuId] = Field(default_factory=list, description="GPU ids >= 0 (kind GPU only).")
    profile: list[str] = Field(default_factory=list, description="TensorRT optimization profiles to use.")
    passive: Bool = False
    host_policy: str | None = None

    @field_validator("kind", mode="before")
    @classmethod
    def _strip_kind_prefix(cls, value: Any) -> Any:
        if isinstance(value, str) and value.upper().startswith("KIND_"):
            return value[5:].upper()
        return value.upper() if isinstance(value, str) else value


class WarmupInput(_Strict):
    """One input of a warmup request."""

    dtype: str
    dims: list[Int64]
    zero_data: Bool | None = None
    random_data: Bool | None = None
    input_data_file: str | None = None


class Warmup(_Strict):
    """Triton `model_warmup`: requests run before the model is reported ready."""

    name: str
    batch_size: Int = Field(default=1, ge=1, le=UINT32_MAX)
    inputs: dict[str, WarmupInput]
    count: Int = Field(default=1, ge=1, le=UINT32_MAX)


class VersionPolicy(_Strict):
    """Which versions Triton serves. Give exactly one of latest / all / specific."""

    latest: Int | None = Field(default=None, ge=1, le=UINT32_MAX, description="Serve the newest N versions.")
    all: Bool | None = Field(default=None, description="Serve every version.")
    specific: list[Int] | None = Field(default=None, description="Serve exactly these versions.")


class GraphOptimization(_Strict):
    """ONNX Runtime / TF graph optimization level."""

    level: Int32 = 0


class ExecutionAccelerator(_Strict):
    """An execution accelerator (e.g. ONNX Runtime's tensorrt/cuda/openvino EPs)."""

    name: str
    parameters: dict[str, str] = Field(default_factory=dict)


class ExecutionAccelerators(_Strict):
    """Execution accelerators by device."""

    gpu_execution_accelerator: list[ExecutionAccelerator] = Field(default_factory=list)
    cpu_execution_accelerator: list[ExecutionAccelerator] = Field(default_factory=list)


class CudaOptimization(_Strict):
    """TensorRT-backend CUDA options."""

    graphs: Bool = False
    busy_wait_events: Bool = False
    output_copy_stream: Bool = False


class Optimization(_Strict):
    """Triton `optimization` (ModelOptimizationPolicy)."""

    graph: GraphOptimization | None = None
    priority: Literal["PRIORITY_DEFAULT", "PRIORITY_MAX", "PRIORITY_MIN"] | None = None
    cuda: CudaOptimization | None = None
    execution_accelerators: ExecutionAccelerators | None = None
    input_pinned_memory: Bool | None = None
    output_pinned_memory: Bool | None = None
    gather_kernel_buffer_threshold: Int | None = Field(default=None, ge=0, le=UINT32_MAX)
    eager_batching: Bool | None = None


# --------------------------------------------------------------------------- engines


class Calibration(_Strict):
    """INT8 calibration samples: for TensorRT's calibrator (<= 10, weakly typed) or the ONNX's Q/DQ quantization."""

    data: list[str] = Field(min_length=1, description=".npy/.npz files with representative inputs.")
    batch_size: Int = Field(default=8, ge=1)
    max_batches: Int | None = Field(default=None, ge=1, description="Stop after this many batches.")


class EngineOptions(_Strict):
    """TensorRT build options (backend: tensorrt)."""

    workspace_mb: Int | None = Field(default=None, ge=1, description="Builder workspace pool limit.")
    version_compatible: Bool = False
    hardware_compatibility: Literal["none", "ampere_plus", "same_compute_capability"] = "none"
    refit: Bool = False
    builder: Literal["local", "container"] = Field(
        default="local", description="Build in-process, or inside the NGC image that matches the target."
    )
    compute_capabilities: list[str] = Field(
        default_factory=list,
        description="Build one engine per GPU arch, e.g. ['8.6', '8.9'] (cc_model_filenames). TensorRT-RTX "
        "targets each ahead of time; standard TensorRT only the GPU it runs on (others are an error).",
    )
    strongly_typed: Bool | None = Field(
        default=None,
        description="Strongly typed network: the precision is put into the ONNX first (fp16 conversion, int8 "
        "Q/DQ from the calibration data). Default: on for TensorRT 11 and TensorRT-RTX (always), off for <= 10.",
    )


class Accuracy(_Strict):
    """Accuracy budget of an fp16/int8 model, measured against fp32 on ONNX Runtime CPU before the build."""

    data: list[str] = Field(
        default_factory=list,
        description=".npy/.npz evaluation inputs, disjoint from the calibration data. Default: int8 holds out "
        "the last `holdout` calibration samples, fp16 uses the calibration data, else synthetic inputs.",
    )
    labels: str | None = Field(default=None, description=".npy of int class labels, one per evaluation sample.")
    max_samples: Int = Field(default=256, ge=1, description="Evaluate on at most this many samples.")
    holdout: Int = Field(default=64, ge=1, description="int8 without `data`: calibration samples kept out.")
    min_top1_agreement: Float | None = Field(
        default=None, ge=0, le=1, description="Classifiers: fraction of samples whose top-1 class is unchanged."
    )
    max_accuracy_drop: Float | None = Field(
        default=None, ge=0, le=1, description="Classifiers with labels: fp32 accuracy minus converted accuracy."
    )
    max_abs_error: Float | None = Field(default=None, ge=0, description="Max abs(converted - fp32) over outputs.")
    max_rel_error: Float | None = Field(
        default=None, ge=0, description="Max abs(converted - fp32) / max abs(fp32) over outputs."
    )


class ModelSmoke(_Strict):
    """Per-model smoke-test settings."""

    skip: Bool = Field(default=False, description="Do not smoke-test this model.")
    golden: str | None = Field(default=None, description=".npz with inputs and expected outputs.")
    compare: Bool = Field(default=True, description="Compare outputs with ONNX Runtime.")


# --------------------------------------------------------------------------- models

Backend = Literal["onnxruntime", "tensorrt", "python", "ensemble"]
Precision = Literal["fp32", "tf32", "fp16", "bf16", "int8", "fp8"]


class _ModelKnobs(_Strict):
    """Fields allowed both in `defaults` and in each model."""

    backend: Backend | None = Field(default=None, description="Serving backend. Default: from the source file.")
    max_batch_size: Int | None = Field(
        default=None, ge=0, le=INT32_MAX, description="0 = no Triton batching. Default: 8 if the model batches, else 0."
    )
    precision: Precision | None = Field(default=None, description="TensorRT precision. Default fp32.")
    dynamic_batching: DynamicBatching | None = None
    sequence_batching: SequenceBatching | None = None
    instance_group: list[InstanceGroup] | None = None
    model_warmup: list[Warmup] | None = None
    response_cache: Bool | None = Field(default=None, description="Cache responses (needs server cache).")
    version_policy: VersionPolicy | None = None
    keep_versions: Int | None = Field(
        default=None, ge=1, description="Versions kept on disk after publish (default 3, at least latest N)."
    )
    parameters: dict[str, str] | None = Field(default=None, description="Backend parameters (string values).")
    optimization: Optimization | None = None
    decoupled: Bool | None = Field(default=None, description="Decoupled transaction policy (0..N responses).")
    engine: EngineOptions | None = None
    smoke: ModelSmoke | None = None
    tune: TuneSpec | None = Field(default=None, description="`deployer tune` settings (mappings merge from "
                                  "`defaults`).")


class ModelSpec(_ModelKnobs):
    """One model to deploy."""

    name: str = Field(description="Model name = directory name in the repository.")
    source: str | None = Field(
        default=None, description="Model file, relative to the spec: .onnx (onnxruntime/tensorrt) or .py."
    )
    version: Int | Literal["auto"] = Field(default="auto", description="Version number, or auto-increment.")
    inputs: list[InputSpec] | None = Field(default=None, description="Default: read from the ONNX file.")
    outputs: list[OutputSpec] | None = Field(default=None, description="Default: read from the ONNX file.")
    shapes: dict[str, ShapeRange] | None = Field(
        default=None, description="Per input: min/opt/max full shapes (needed for dynamic non-batch dims)."
    )
    profiles: list[dict[str, ShapeRange]] | None = Field(
        default=None, description="Several TensorRT optimization profiles (instead of shapes)."
    )
    calibration: Calibration | None = None
    accuracy: Accuracy | None = None
    ensemble: Ensemble | None = None
    config_overrides: dict[str, Any] | None = Field(
        default=None,
        description="ModelConfig fields (proto-JSON form) merged last, for knobs the spec does not model. A knob "
        "it does model is checked like its typed key; name, backend and platform cannot change what the model is.",
    )


class ModelDefaults(_ModelKnobs):
    """Values applied to every model (a model's own keys win; mappings merge)."""


# --------------------------------------------------------------------------- server, target, smoke


class Target(_Strict):
    """What the deployment must run on."""

    # pydantic matches `pattern` with the Rust regex engine, where `$` is the end of the text (Python's `$`
    # would also match before a final newline); the JSON Schema's ECMAScript engine reads it the same way.
    triton: str = Field(default="24.10", pattern=r"^\d{2}\.\d{2}$", description="Triton release (NGC YY.MM).")
    tensorrt: str | None = Field(default=None, description="TensorRT version the engines must match.")


class ServerSpec(_Strict):
    """How to run Triton."""

    runtime: Literal["local", "docker", "compose"] = Field(default="local", description="Runtime.")
    host: str = Field(default="127.0.0.1", description="Address ports bind to.")
    http_port: Int = Field(default=8000, ge=1, le=65535)
    grpc_port: Int = Field(default=8001, ge=1, le=65535)
    metrics_port: Int = Field(default=8002, ge=1, le=65535)
    startup_timeout: Float = Field(default=120.0, gt=0, description="Seconds to wait for readiness.")
    tritonserver: str | None = Field(default=None, description="local: path of a tritonserver binary.")
    image: str | None = Field(default=None, description="docker/compose image. Default: NGC image of target.")
    gpus: Literal["all", "none"] | list[GpuId] = Field(default="none", description="GPUs for containers (ids >= 0).")
    shm_size: str = Field(default="1g", description="Container shared memory.")
    log_verbose: Int = Field(default=0, ge=0)
    response_cache_mb: Int = Field(default=64, ge=1, description="Cache size when a model enables it.")
    args: list[str] = Field(default_factory=list, description="Extra tritonserver flags (whitelisted).")
    backend_config: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-]+,[^=,\s][^=\s]*=\S.*$", max_length=4096)]] = (
        Field(default_factory=list, description="tritonserver --backend-config values, '<backend>,<setting>=<value>' "
              "(e.g. 'python,shm-default-byte-size=16777216'); deployer adds what its models need."))
    replicas: Int = Field(default=1, ge=1, le=64, description=(
        "Triton servers on the shared repository; more than 1 puts nginx in front (one HTTP and one gRPC "
        "endpoint on host:http_port/grpc_port)."))


class Sla(_Strict):
    """Service-level gates checked by the smoke latency test."""

    p99_ms: Float | None = Field(default=None, gt=0)
    p50_ms: Float | None = Field(default=None, gt=0)
    min_throughput: Float | None = Field(default=None, gt=0, description="Inferences per second.")


class SmokeSpec(_Strict):
    """Smoke-test settings."""

    protocols: list[Literal["http", "grpc"]] = Field(default=["http", "grpc"], description="Protocols to test.")
    concurrency: Int = Field(default=16, ge=1)
    duration: Float = Field(default=2.0, gt=0, description="Seconds of load for latency/throughput.")
    batching_requests: Int = Field(default=64, ge=2, description="Concurrent requests for the batching proof.")
    timeout: Float = Field(default=60.0, gt=0)
    seed: Int = 0
    sla: Sla | None = None


class RepositoryS3(_Strict):
    """How to reach an `s3://bucket/prefix` repository. Credentials are never part of the spec: they come from
    the environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN) or an AWS profile,
    for deployer and, through its environment only, for the Triton server."""

    endpoint: str | None = Field(
        default=None, pattern=r"^https?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?$",
        description="S3-compatible store, e.g. http://127.0.0.1:8333 (SeaweedFS, MinIO); unset = AWS.",
    )
    region: str = Field(default="us-east-1", pattern=r"^[a-z0-9-]{1,40}$", description="Bucket region.")
    profile: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.\-]{1,64}$",
                                description="AWS profile (~/.aws) for deployer's own requests; unset = environment.")
    lock_lease: Float = Field(
        default=30.0, gt=0, le=3600,
        description="Seconds a publish/rollback holds the repository lock object without renewing it; a killed "
        "run's lock is taken over after this.",
    )


class Spec(_Strict):
    """A deployment: where the repository lives, how to serve it, and the models."""

    repository: str = Field(
        default="model_repository",
        description="Model repository: a dir relative to the spec, or s3://bucket/prefix (see repository_s3).",
    )
    repository_s3: RepositoryS3 | None = Field(
        default=None, description="Endpoint, region, profile and lock lease of an s3:// repository."
    )
    target: Target = Field(default_factory=Target)
    server: ServerSpec = Field(default_factory=ServerSpec)
    smoke: SmokeSpec = Field(default_factory=SmokeSpec)
    templates: str | None = Field(default=None, description="Your own config.pbtxt template directory.")
    fallback: Literal["onnxruntime"] | None = Field(
        default=None, description="Serve tensorrt models through onnxruntime when TensorRT is unavailable."
    )
    defaults: ModelDefaults | None = None
    k8s: K8sSpec | None = Field(default=None, description="Kubernetes manifests (`deployer k8s`).")
    models: list[ModelSpec] = Field(min_length=1)
