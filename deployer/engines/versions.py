"""TensorRT versions: parsing, Triton release -> TensorRT table, engine/target consistency."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from deployer.errors import BuildError, UserError

from .request import BuildInfo

_VERSION_RE = re.compile(r"^\s*(\d+)\.(\d+)(?:\.(\d+))?(?:\.(\d+))?")
_RELEASE_RE = re.compile(r"^(\d{2})\.(\d{2})$")


@dataclass(frozen=True)
class TrtVersion:
    """A parsed TensorRT version; missing components are None (e.g. "10.3" -> patch None)."""

    major: int
    minor: int
    patch: int | None = None
    build: int | None = None

    def __str__(self) -> str:
        parts = [self.major, self.minor, self.patch, self.build]
        return ".".join(str(p) for p in parts if p is not None)

    def matches(self, other: TrtVersion) -> bool:
        """Equal on every component that both versions specify (10.3 matches 10.3.0.26)."""
        for a, b in ((self.patch, other.patch), (self.build, other.build)):
            if a is not None and b is not None and a != b:
                return False
        return (self.major, self.minor) == (other.major, other.minor)


def parse_trt_version(text: str) -> TrtVersion:
    """Parse "10.13.0.35" / "8.6" / "10.0.1.6"; raises UserError for anything else."""
    m = _VERSION_RE.match(text)
    if not m:
        raise UserError(
            f"not a TensorRT version: {text!r}",
            hint='use the form MAJOR.MINOR[.PATCH[.BUILD]], e.g. "10.3.0"',
        )
    major, minor, patch, build = m.groups()
    return TrtVersion(int(major), int(minor), int(patch) if patch else None, int(build) if build else None)


@dataclass(frozen=True)
class TritonTrt:
    """TensorRT shipped in a Triton `-py3` release (and its matching `nvcr.io/nvidia/tensorrt` image)."""

    release: str
    trt: str
    verified: bool
    source: str


# Only entries with a source we could read are marked verified. The rest are best-effort and must be
# confirmed (NGC Frameworks Support Matrix, or `probe_trt_version` in the image) before relying on them.
# The -trtllm-python-py3 images can pin a different TensorRT (server#8462): this table is for -py3 only.
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


def check_engine_matches_target(build_info: BuildInfo, target_trt_version: str) -> None:
    """Refuse to publish an engine whose TensorRT version differs from the serving Triton's.

    A plan deserializes only with the TensorRT version that built it ("Version tag does not match",
    brief D.1) unless it was built version-compatible, which this check does not assume.

    Raises:
        BuildError: the versions differ (exit 1), with the fix in the hint.
    """
    built = parse_trt_version(build_info.trt_version)
    target = parse_trt_version(target_trt_version)
    if built.matches(target):
        return
    raise BuildError(
        f"engine {build_info.engine_path} for model {build_info.model_name!r} was built with TensorRT {built} "
        f"but the target Triton runs TensorRT {target}",
        hint="rebuild inside the target's nvcr.io/nvidia/tensorrt:<YY.MM>-py3 image (container builder) "
        "or with the exactly matching tensorrt wheel",
    )
