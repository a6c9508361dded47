"""The validated deployment as frozen dataclasses: what every later stage consumes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deployer.onnx.info import OnnxInfo
from deployer.spec.schema import ModelSpec, Spec
from deployer.tensors import ShapeRange

PLATFORMS: dict[str, str | None] = {
    "onnxruntime": "onnxruntime_onnx",
    "tensorrt": "tensorrt_plan",
    "python": None,
    "ensemble": "ensemble",
}
DEFAULT_FILENAMES: dict[str, str | None] = {
    "onnxruntime": "model.onnx",
    "tensorrt": "model.plan",
    "python": "model.py",
    "ensemble": None,
}


@dataclass(frozen=True)
class Tensor:
    """An input or output as it will be configured in Triton."""

    name: str
    dtype: str  # canonical (deployer.dtypes), e.g. FP32, STRING
    dims: tuple[int, ...]  # without the batch dim when the model batches
    reshape: tuple[int, ...] | None = None
    optional: bool = False
    format: str | None = None
    is_shape_tensor: bool = False
    allow_ragged_batch: bool = False
    label_filename: str | None = None
    value_range: tuple[float, float] | None = None
    value: float | int | str | bool | None = None
    atol: float | None = None
    rtol: float | None = None


@dataclass(frozen=True)
class ResolvedModel:
    """One model with everything defaulted and checked."""

    index: int  # position in spec.models (for error paths)
    name: str
    backend: str  # what serves it: onnxruntime | tensorrt | python | ensemble
    requested_backend: str  # what the spec asked for (differs under --fallback onnxruntime)
    source: Path | None
    version: int | None  # None = auto
    max_batch_size: int
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    profiles: tuple[Mapping[str, ShapeRange], ...]  # first = the shapes smoke tests use
    precision: str
    keep_versions: int | None
    config: Mapping[str, Any]  # ModelConfig in proto-JSON form (proto field names)
    spec: ModelSpec  # with its config_overrides folded in (deployer.spec.overrides)
    onnx: OnnxInfo | None = None
    # Spec path -> config_overrides path of values that came from the overrides, so issues point there.
    relocations: Mapping[tuple[str | int, ...], tuple[str | int, ...]] = field(default_factory=dict)

    @property
    def platform(self) -> str | None:
        """Triton platform string."""
        return PLATFORMS[self.backend]

    @property
    def default_filename(self) -> str | None:
        """File name in the version directory."""
        return DEFAULT_FILENAMES[self.backend]

    @property
    def shapes(self) -> Mapping[str, ShapeRange]:
        """Shapes of the first profile."""
        return self.profiles[0] if self.profiles else {}

    @property
    def batching(self) -> bool:
        """Triton batches this model (implicit leading batch dim)."""
        return self.max_batch_size > 0


@dataclass(frozen=True)
class S3Location:
    """An `s3://bucket/prefix` repository and how to reach it (never credentials: environment/profile only)."""

    bucket: str
    prefix: str  # no leading or trailing "/"; "" = the bucket root
    endpoint: str | None = None  # http(s)://host[:port] of an S3-compatible store; None = AWS
    region: str = "us-east-1"
    profile: str | None = None
    lock_lease_s: float = 30.0

    @property
    def url(self) -> str:
        """`s3://bucket/prefix`, as written in the spec."""
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def key(self, rel: str = "") -> str:
        """The object key of `rel` (a POSIX path inside the repository)."""
        return "/".join(p for p in (self.prefix, rel) if p)

    @property
    def triton_url(self) -> str:
        """`--model-repository` for Triton: `s3://host:port/bucket/prefix` for a custom http endpoint,
        `s3://https://host:port/...` for https, `s3://bucket/prefix` for AWS."""
        path = "/".join(p for p in (self.bucket, self.prefix) if p)
        if self.endpoint is None:
            return f"s3://{path}"
        scheme, _, hostport = self.endpoint.partition("://")
        return f"s3://{hostport}/{path}" if scheme == "http" else f"s3://https://{hostport}/{path}"


@dataclass(frozen=True)
class Deployment:
    """A whole validated spec."""

    spec_path: Path
    spec: Spec
    spec_sha256: str
    repository: Path
    template_dir: Path | None
    models: tuple[ResolvedModel, ...]
    # Set for `repository: s3://...`; `repository` is then a local path deployer never writes to.
    remote: S3Location | None = None
    warnings: tuple[str, ...] = field(default=())

    def model(self, name: str) -> ResolvedModel:
        """The model called `name`."""
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(name)

    def resolve_path(self, value: str) -> Path:
        """A path from the spec, relative to the spec file's directory."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self.spec_path.parent / p)
