"""Kubernetes manifests from the spec (`deployer k8s`): planned as data, written in one place.

No cluster is contacted; tests validate the manifests offline against the Kubernetes JSON schemas
(kubernetes-validate, strict) and golden files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from deployer.k8s.manifests import K8sPlan, Manifest, derive_name, plan_manifests
from deployer.k8s.write import render_stream, render_texts, write_manifests
from deployer.spec import Deployment

__all__ = [
    "K8sPlan",
    "K8sResult",
    "Manifest",
    "derive_name",
    "k8s",
    "plan_manifests",
    "render_stream",
    "render_texts",
    "write_manifests",
]


@dataclass(frozen=True)
class K8sResult:
    """What `deployer k8s` made: the plan, and the files written or the stream to print."""

    plan: K8sPlan
    written: tuple[Path, ...] = field(default=())
    stream: str | None = None  # set when no output directory was given


def k8s(dep: Deployment, out_dir: Path | None = None) -> K8sResult:
    """Plan the manifests for `dep`; write them into `out_dir`, or return them as one YAML stream."""
    plan = plan_manifests(dep)
    if out_dir is None:
        return K8sResult(plan, stream=render_stream(plan))
    return K8sResult(plan, written=tuple(write_manifests(plan, out_dir)))
