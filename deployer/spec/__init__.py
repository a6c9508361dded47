"""The spec stage: load a YAML spec, validate it completely, resolve it into a `Deployment`."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from deployer.errors import SpecError, SpecIssue
from deployer.spec.loader import RawSpec, make_issue, read_yaml, validate_schema
from deployer.spec.model import Deployment, ResolvedModel, S3Location, Tensor
from deployer.spec.resolve import resolve_model, spec_base_dir
from deployer.spec.rules import Checker, check_names
from deployer.spec.schema import Spec

__all__ = ["Deployment", "RawSpec", "ResolvedModel", "S3Location", "Tensor", "deployment_from_raw", "load_deployment"]

log = logging.getLogger(__name__)


def load_deployment(path: Path | str, *, fallback: str | None = None) -> Deployment:
    """Load and fully validate a spec. Raises SpecError carrying every issue found.

    Args:
        path: the YAML spec.
        fallback: "onnxruntime" serves tensorrt models through ONNX Runtime (overrides the spec's setting).
    """
    return deployment_from_raw(read_yaml(Path(path)), fallback=fallback)


def deployment_from_raw(raw: RawSpec, *, fallback: str | None = None) -> Deployment:
    """`load_deployment` of an already parsed YAML tree (`raw.path` locates issues and relative paths).

    The tuner validates candidate settings this way, in memory, by the very rules a spec file meets.
    """
    spec, issues = validate_schema(raw)
    if spec is None:
        raise SpecError(issues)
    fallback = fallback or spec.fallback
    base = spec_base_dir(raw)
    issues.extend(check_names(raw, [m.name for m in spec.models]))
    models: list[ResolvedModel] = []
    for i in range(len(spec.models)):
        model, model_issues = resolve_model(raw, spec, i, base_dir=base, fallback=fallback)
        issues.extend(model_issues)
        if model is not None:
            models.append(model)
    issues.extend(Checker(raw, models).run())
    # Triton's own schema as a last net, for models our rules passed (else it repeats their findings).
    flagged = {i.path.split("]", 1)[0] + "]" for i in issues if i.path.startswith("models[")}
    issues.extend(_protobuf_check(raw, [m for m in models if f"models[{m.index}]" not in flagged]))
    if issues:
        raise SpecError(_dedupe(issues))
    template_dir = None
    if spec.templates:
        template_dir = (base / spec.templates) if not Path(spec.templates).is_absolute() else Path(spec.templates)
        if not template_dir.is_dir():
            raise SpecError([make_issue(raw, ("templates",), f"template directory not found: {template_dir}",
                                        "create it or remove `templates`", value=spec.templates, has_value=True)])
    remote, remote_issues = _remote(raw, spec)
    if remote_issues:
        raise SpecError(remote_issues)
    repo = Path(spec.repository).expanduser() if remote is None else Path(".deployer") / "s3-not-a-directory"
    return Deployment(
        spec_path=raw.path.resolve(),
        spec=spec,
        spec_sha256=raw.sha256,
        repository=repo if repo.is_absolute() else base / repo,
        template_dir=template_dir,
        models=tuple(models),
        remote=remote,
    )


_BUCKET = re.compile(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]")  # S3's bucket naming rules
_SEGMENT = re.compile(r"[A-Za-z0-9_.\-]+")


def _remote(raw: RawSpec, spec: Spec) -> tuple[S3Location | None, list[SpecIssue]]:
    """The S3 location of `repository: s3://bucket/prefix` (None for a directory), or what is wrong."""
    opts = spec.repository_s3
    if not spec.repository.startswith("s3://"):
        if opts is None:
            return None, []
        return None, [make_issue(raw, ("repository_s3",), "repository_s3 is set but `repository` is not s3://...",
                                 "write `repository: s3://bucket/prefix`, or remove repository_s3")]
    bucket, _, prefix = spec.repository[len("s3://"):].partition("/")
    prefix = prefix.strip("/")
    segments = prefix.split("/") if prefix else []
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        return None, [make_issue(raw, ("repository",), f"invalid S3 bucket name {bucket!r}",
                                 "3-63 lowercase letters, digits, '.' or '-': s3://bucket/prefix",
                                 value=spec.repository, has_value=True)]
    if any(seg in {".", ".."} or not _SEGMENT.fullmatch(seg) for seg in segments):
        return None, [make_issue(raw, ("repository",), f"invalid S3 prefix {prefix!r}",
                                 "use letters, digits, '_', '-', '.' separated by single '/'",
                                 value=spec.repository, has_value=True)]
    if opts is None:
        return S3Location(bucket, prefix), []
    return S3Location(bucket, prefix, opts.endpoint, opts.region, opts.profile, opts.lock_lease), []


def _protobuf_check(raw: RawSpec, models: list[ResolvedModel]) -> list[SpecIssue]:
    """Every config must parse with Triton's own schema (catches bad `config_overrides` keys too)."""
    from deployer.config import pb

    issues = []
    for m in models:
        try:
            pb.from_mapping(m.config)
        except pb.ParseError as exc:
            first = str(exc).splitlines()[0]
            where: tuple[str, ...] = ("config_overrides",) if m.spec.config_overrides else ()
            field = re.search(r'has no field named "([^"]+)"', first)
            if field and where and field.group(1) in (m.spec.config_overrides or {}):
                where = (*where, field.group(1))
            issues.append(make_issue(raw, ("models", m.index, *where), f"not a valid Triton ModelConfig: {first}",
                                     "use ModelConfig field names from model_config.proto", of_key=bool(field)))
    return issues


def _dedupe(issues: list[SpecIssue]) -> list[SpecIssue]:
    seen, out = set(), []
    for i in issues:
        key = (i.path, i.message)
        if key not in seen:
            seen.add(key)
            out.append(i)
    return sorted(out, key=lambda i: (i.line or 10**9, i.column))
