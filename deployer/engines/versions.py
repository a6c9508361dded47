"""TensorRT versions: parsing, flavours, Triton release -> TensorRT table, engine/target consistency."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Literal

from deployer.errors import BuildError, UserError

from .request import BuildInfo

LOGGER = logging.getLogger(__name__)

_VERSION_RE = re.compile(r"^\s*(rtx-)?(\d+)\.(\d+)(?:\.(\d+))?(?:\.(\d+))?")
_RELEASE_RE = re.compile(r"^(\d{2})\.(\d{2})$")

Flavor = Literal["tensorrt", "rtx"]
RTX_PREFIX = "rtx-"


@dataclass(frozen=True)
class TrtVersion:
    """A parsed TensorRT version; missing components are None (e.g. "10.3" -> patch None).

    `flavor` "rtx" is TensorRT-RTX ("rtx-1.7.1.116"): its own version numbers, an API shaped like
    TensorRT 11 (strongly typed only: no EXPLICIT_BATCH, no FP16/INT8 builder flags, no calibrators),
    and plans that Triton's TensorRT backend cannot load.
    """

    major: int
    minor: int
    patch: int | None = None
    build: int | None = None
    flavor: Flavor = "tensorrt"

    def __str__(self) -> str:
        parts = [self.major, self.minor, self.patch, self.build]
        text = ".".join(str(p) for p in parts if p is not None)
        return RTX_PREFIX + text if self.flavor == "rtx" else text

    @property
    def api(self) -> tuple[int, int]:
        """The standard-TensorRT API generation whose rules apply (TensorRT-RTX 1.x behaves like 11.0)."""
        return (11, 0) if self.flavor == "rtx" else (self.major, self.minor)

    @property
    def api_major(self) -> int:
        """`api[0]`: 8, 10, 11 (RTX: 11)."""
        return self.api[0]

    @property
    def strongly_typed_only(self) -> bool:
        """No weak-typing precision flags: TensorRT >= 11 and TensorRT-RTX."""
        return self.api_major >= 11

    def matches(self, other: TrtVersion) -> bool:
        """Same flavour and equal on every component that both versions specify (10.3 matches 10.3.0.26)."""
        if self.flavor != other.flavor:
            return False
        for a, b in ((self.patch, other.patch), (self.build, other.build)):
            if a is not None and b is not None and a != b:
                return False
        return (self.major, self.minor) == (other.major, other.minor)

    def key(self) -> tuple[int, int, int, int]:
        """Sortable (major, minor, patch, build), missing components as 0."""
        return (self.major, self.minor, self.patch or 0, self.build or 0)


def parse_trt_version(text: str) -> TrtVersion:
    """Parse "10.13.0.35" / "8.6" / "10.0.1.6" / "rtx-1.7.1.116"; raises UserError for anything else."""
    m = _VERSION_RE.match(text)
    if not m:
        raise UserError(
            f"not a TensorRT version: {text!r}",
            hint='use the form MAJOR.MINOR[.PATCH[.BUILD]], e.g. "10.3.0" (TensorRT-RTX: "rtx-1.7.1")',
        )
    rtx, major, minor, patch, build = m.groups()
    return TrtVersion(
        int(major), int(minor), int(patch) if patch else None, int(build) if build else None,
        "rtx" if rtx else "tensorrt",
    )


@dataclass(frozen=True)
class TritonTrt:
    """TensorRT shipped in a Triton `-py3` release (and its matching `nvcr.io/nvidia/tensorrt` image)."""

    release: str
    trt: str
    verified: bool
    source: str


# Only entries with a source we could read are marked verified. The rest are best-effort and must be
# confirmed (NGC Frameworks Support Matrix, or `probe_trt_version` in the image) before relying on them:
# a mismatch against an unverified row only warns, and `target.tensorrt` in the spec overrides the row.
# Checked against /work/shared/reference/triton-tensorrt-brief.md D.2: 24.02 = 8.6.3 is the only -py3 row
# with a source (Model Navigator 0.8.1 support matrix); for 24.05 only the major (10) is sourced
# (server#7307, tensorrt_backend r24.05); every other -py3 row is in the brief's "from memory" list.
# The -trtllm-python-py3 images can pin a different TensorRT (server#8462): this table is for -py3 only.
# Not verifiable here: Triton's release notes from 22.08 on (e.g.
# https://docs.nvidia.com/deeplearning/triton-inference-server/release-notes/rel-24-08.html) no longer list
# the TensorRT version and refer to the Deep Learning Frameworks Support Matrix, which could not be read
# from this machine; the rows stay unverified (warn) until someone checks them there.
TRITON_TRT_TABLE: tuple[TritonTrt, ...] = (
    TritonTrt("23.04", "8.6.1", False, "memory; brief D.2 unverified list"),
    TritonTrt("24.01", "8.6.1", False, "memory; brief D.2 unverified list"),
    TritonTrt("24.02", "8.6.3", True, "Triton Model Navigator 0.8.1 support matrix (brief D.2)"),
    TritonTrt("24.03", "8.6.3", False, "memory; brief D.2 unverified list"),
    TritonTrt("24.04", "8.6.3", False, "memory; tensorrt_backend r24.04 lacks TRT 10 support (brief D.2)"),
    TritonTrt("24.05", "10.0.1", False, "major 10 verified (server#7307, backend r24.05); minor from trtllm table"),
    TritonTrt("24.06", "10.1.0", False, "memory; brief D.2 unverified list"),
    TritonTrt("24.07", "10.2.0", False, "memory; brief D.2 unverified list"),
    TritonTrt("24.08", "10.3.0", False, "memory; compatibility.md lists 10.3.0 for the trtllm image"),
    TritonTrt("24.09", "10.4.0", False, "memory; brief D.2 unverified list"),
    TritonTrt("24.10", "10.5.0", False, "memory; brief D.2 unverified list"),
    TritonTrt("24.11", "10.6.0", False, "memory; compatibility.md lists 10.6.0 for the trtllm image"),
    TritonTrt("24.12", "10.7.0", False, "memory; compatibility.md lists 10.7.0 for the trtllm image"),
    TritonTrt("25.01", "10.8.0", False, "memory; compatibility.md lists 10.8.0.43 for the trtllm image"),
    TritonTrt("25.02", "10.8.0", False, "memory; compatibility.md lists 10.8.0.43 for the trtllm image"),
    TritonTrt("25.03", "10.9.0", False, "memory; compatibility.md lists 10.9.0.34 for the trtllm image"),
    TritonTrt("25.04", "10.9.0", False, "memory; compatibility.md lists 10.9.0.34 for the trtllm image"),
)


_COMPAT = "triton-inference-server/server docs/introduction/compatibility.md"


def _trtllm_rows() -> tuple[TritonTrt, ...]:
    spans = (
        (("24.05",), "10.0.1.6"),
        (("24.06",), "10.0.1"),
        (("24.07",), "10.1.0"),
        (("24.08",), "10.3.0"),
        (("24.09", "24.10"), "10.4.0"),
        (("24.11",), "10.6.0"),
        (("24.12",), "10.7.0"),
        (("25.01", "25.02"), "10.8.0.43"),
        (("25.03", "25.04", "25.05"), "10.9.0.34"),
        (("25.06", "25.07"), "10.10.0.31"),
        (("25.08", "25.09", "25.10"), "10.11.0.33"),
        (("25.11", "25.12", "26.01", "26.02"), "10.13.3.9"),
        (("26.03", "26.04", "26.05", "26.06", "26.07"), "10.14.1.48"),
    )
    return tuple(TritonTrt(r, trt, True, _COMPAT) for releases, trt in spans for r in releases)


# The `-trtllm-python-py3` images (verified from Triton's compatibility table). They may pin a different
# TensorRT than the `-py3` image of the same release (server#8462): never mix the two tables.
TRITON_TRTLLM_TRT_TABLE: tuple[TritonTrt, ...] = _trtllm_rows()


def trt_version_for_triton(
    release: str, *, allow_unverified: bool = True, flavor: Literal["py3", "trtllm-python-py3"] = "py3"
) -> TritonTrt:
    """The TensorRT version of Triton release `release` ("24.08") for the image `flavor`.

    Raises:
        UserError: unknown release (or unverified entry with `allow_unverified=False`); the hint says how
            to find the version empirically.
    """
    how = (
        f'run `python3 -c "import tensorrt; print(tensorrt.__version__)"` in nvcr.io/nvidia/tensorrt:{release}-py3'
        " (deployer.engines.container.probe_trt_version) and pass it as target_trt_version"
    )
    if not _RELEASE_RE.match(release):
        raise UserError(f"not a Triton release tag: {release!r}", hint='use the YY.MM form, e.g. "24.08"')
    for entry in TRITON_TRT_TABLE if flavor == "py3" else TRITON_TRTLLM_TRT_TABLE:
        if entry.release == release:
            if not entry.verified and not allow_unverified:
                raise UserError(f"TensorRT version of Triton {release} is not verified ({entry.source})", hint=how)
            return entry
    raise UserError(f"no known TensorRT version for Triton release {release}", hint=how)


def trt_major(version: str) -> int:
    """Major number of a TensorRT version string."""
    return parse_trt_version(version).major


# Major-version steps a VERSION_COMPATIBLE plan survives, as NVIDIA documents them:
# https://docs.nvidia.com/deeplearning/tensorrt/10.16.1/inference-library/version-compatibility.html
#   "engines built with TensorRT 8 work with TensorRT 9 and TensorRT 10 runtimes", never older ones, and
#   "the plan must be built with a version at least 8.6 or higher, and the runtime must be 8.6 or higher";
# https://docs.nvidia.com/deeplearning/tensorrt/11.1.0/inference-library/engine-compatibility.html
#   "engines built with TensorRT 10 work with TensorRT 11", 11.0 plans with "11.1 and later 11.x".
# 8.x -> 11 is listed by neither page, so it is refused.
_VC_MAJOR_STEPS = frozenset({(8, 9), (8, 10), (9, 10), (10, 11)})
_VC_FIRST = (8, 6)


def _older(a: TrtVersion, b: TrtVersion) -> bool:
    """a < b on the components both specify ("10.3" is not older than "10.3.0.26")."""
    for x, y in zip((a.major, a.minor, a.patch, a.build), (b.major, b.minor, b.patch, b.build), strict=True):
        if x is None or y is None or x != y:
            return x is not None and y is not None and x < y
    return False


def version_compatible_runs_on(built: TrtVersion, runtime: TrtVersion) -> tuple[bool, str | None]:
    """Can a VERSION_COMPATIBLE plan built with `built` run on TensorRT `runtime`? (ok, why not)

    TensorRT's rule (the pages cited at `_VC_MAJOR_STEPS`): both versions >= 8.6, the runtime not older than
    the builder, and either the same major or a documented major step (8 -> 9/10, 9 -> 10, 10 -> 11).
    TensorRT-RTX plans never run on standard TensorRT.
    """
    if built.flavor != runtime.flavor:
        return False, f"TensorRT-RTX and standard TensorRT plans do not mix ({built} vs {runtime})"
    if built.flavor == "tensorrt" and min((built.major, built.minor), (runtime.major, runtime.minor)) < _VC_FIRST:
        return False, "version compatibility exists from TensorRT 8.6 on (builder and runtime)"
    if _older(runtime, built):
        return False, f"a version-compatible plan never runs on an older TensorRT ({runtime} < {built})"
    if built.major != runtime.major and (built.major, runtime.major) not in _VC_MAJOR_STEPS:
        return False, f"TensorRT documents no version compatibility from {built.major}.x to {runtime.major}.x"
    return True, None


def check_triton_can_serve(build_info: BuildInfo) -> None:
    """Refuse to publish a TensorRT-RTX plan for Triton: its TensorRT backend cannot deserialize it.

    Raises:
        BuildError: the plan was built by TensorRT-RTX (exit 1), with what to do instead.
    """
    if parse_trt_version(build_info.trt_version).flavor == "rtx" or build_info.flavor == "rtx":
        raise BuildError(
            f"engine {build_info.engine_path} for model {build_info.model_name!r} was built by TensorRT-RTX "
            f"({build_info.trt_version}); Triton's TensorRT backend links standard TensorRT and cannot load "
            "TensorRT-RTX plans, so it is not published",
            hint="build with the standard TensorRT of the target Triton release (container builder on a GPU "
            "machine), or deploy the ONNX with --fallback onnxruntime",
        )


def check_engine_matches_target(build_info: BuildInfo, target_trt_version: str, *, verified: bool = True) -> None:
    """Refuse to publish an engine whose TensorRT version cannot load on the serving Triton's.

    A plan deserializes only with the TensorRT version that built it ("Version tag does not match",
    brief D.1), unless it was built VERSION_COMPATIBLE: then `version_compatible_runs_on` decides.
    `verified=False` (the target came from an unverified row of the Triton table) only warns: the table
    may be wrong, and `target.tensorrt` in the spec overrides it.

    Raises:
        BuildError: the versions are incompatible (exit 1), with the fix in the hint; a TensorRT-RTX plan.
    """
    check_triton_can_serve(build_info)
    built = parse_trt_version(build_info.trt_version)
    target = parse_trt_version(target_trt_version)
    if built.matches(target):
        return
    why_not = None
    if "VERSION_COMPATIBLE" in build_info.flags:
        ok, why_not = version_compatible_runs_on(built, target)
        if ok:
            return
    message = (
        f"engine {build_info.engine_path} for model {build_info.model_name!r} was built with TensorRT {built} "
        f"but the target Triton runs TensorRT {target}" + (f" (version-compatible, but {why_not})" if why_not else "")
    )
    if not verified:
        LOGGER.warning("%s (the target's TensorRT version comes from an unverified table row: set target.tensorrt "
                       "to the version you confirmed to make this an error or silence it)", message)
        return
    raise BuildError(
        message,
        hint="rebuild inside the target's nvcr.io/nvidia/tensorrt:<YY.MM>-py3 image (container builder) "
        "or with the exactly matching tensorrt wheel (or build version_compatible with an older one)",
    )
