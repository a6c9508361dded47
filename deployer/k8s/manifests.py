"""Kubernetes manifests for a validated spec, built as data (pure: nothing is written or contacted).

One Triton per pod loads the whole S3 repository at startup (explicit model control, `--load-model` per
model, `--exit-on-error=true`: a model that fails to load fails the pod instead of serving a partial set).
Probes follow the load: the startupProbe waits `k8s.startup_timeout` for /v2/health/ready (strict
readiness: every model loaded), and only then do liveness (/v2/health/live) and readiness run, so a long
download never gets a loading pod killed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from deployer.errors import UserError
from deployer.server.argv import tritonserver_argv
from deployer.server.base import with_server_defaults
from deployer.server.from_spec import server_settings
from deployer.spec import Deployment
from deployer.spec.schema_k8s import K8sSpec

__all__ = ["GRPC_PORT", "HTTP_PORT", "METRICS_PORT", "K8sPlan", "Manifest", "derive_name", "plan_manifests"]

HTTP_PORT, GRPC_PORT, METRICS_PORT = 8000, 8001, 8002
CONTAINER = "tritonserver"
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_STARTUP_PERIOD_S = 10


@dataclass(frozen=True)
class Manifest:
    """One object and the file (relative to the output directory) it is written to."""

    filename: str
    body: Mapping[str, Any]

    @property
    def kind(self) -> str:
        return str(self.body["kind"])


@dataclass(frozen=True)
class K8sPlan:
    """Everything `deployer k8s` writes, and what the user must still provide."""

    name: str
    namespace: str
    model_repository: str
    s3_secret: str
    spec_sha256: str
    manifests: tuple[Manifest, ...]
    notes: tuple[str, ...] = ()


def derive_name(stem: str) -> str:
    """A DNS-1035 label from a spec file name (`My Spec_v2` -> `my-spec-v2`, `7b` -> `triton-7b`)."""
    name = re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9-]+", "-", stem.lower())).strip("-")
    if name and not name[0].isalpha():
        name = f"triton-{name}"
    name = name[:63].rstrip("-")
    if not _DNS1035.match(name):
        raise UserError(
            f"cannot derive a Kubernetes name from the spec file name {stem!r}",
            hint="set k8s.name: a DNS-1035 label (lowercase letters, digits and '-', a letter first, at most 63)",
        )
    return name


def _model_repository(dep: Deployment, k: K8sSpec) -> str:
    if k.model_repository:
        return k.model_repository
    if dep.remote is not None:  # the URL Triton reads, with repository_s3.endpoint as s3://host:port/...
        return dep.remote.triton_url
    raise UserError(
        f"the pods cannot read the local repository {dep.spec.repository!r}",
        hint="set k8s.model_repository: s3://bucket/prefix (s3://host:port/bucket/prefix for an S3-compatible "
        "store), or use an s3:// repository, and publish to it",
    )


def _replicas(dep: Deployment, k: K8sSpec) -> int:
    # k8s.replicas overrides: a cluster usually runs another count than the local fleet of `server.replicas`
    return k.replicas if k.replicas is not None else dep.spec.server.replicas


def _argv(dep: Deployment, repository: str) -> list[str]:
    """tritonserver's argv, from the same settings and whitelist as every other runtime."""
    settings = with_server_defaults(server_settings(dep, runtime="docker"))
    settings = replace(settings, host="0.0.0.0", http_port=HTTP_PORT, grpc_port=GRPC_PORT,
                       metrics_port=METRICS_PORT)
    argv = tritonserver_argv(settings, binary="tritonserver", repository=repository, backend_dir=None,
                             cache_dir=None, exit_on_error=True)
    return argv + [f"--load-model={m}" for m in settings.models]


def _probe(path: str, *, period: int, timeout: int, failures: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": "http"}, "periodSeconds": period, "timeoutSeconds": timeout,
            "failureThreshold": failures}


def _resources(k: K8sSpec) -> dict[str, Any]:
    limits: dict[str, Any] = {"memory": k.memory}
    if k.gpus:
        limits["nvidia.com/gpu"] = k.gpus  # extended resource: requests default to the limit
    return {"requests": {"cpu": k.cpu, "memory": k.memory}, "limits": limits}


def _deployment(dep: Deployment, k: K8sSpec, meta: dict[str, Any], selector: dict[str, str], repository: str,
                secret: str) -> dict[str, Any]:
    argv = _argv(dep, repository)
    env: list[dict[str, Any]] = [
        {"name": key,
         "valueFrom": {"secretKeyRef": {"name": secret, "key": key, **({"optional": True} if opt else {})}}}
        for key, opt in (("AWS_ACCESS_KEY_ID", False), ("AWS_SECRET_ACCESS_KEY", False), ("AWS_SESSION_TOKEN", True))
    ]
    if k.s3_region:
        env.append({"name": "AWS_DEFAULT_REGION", "value": k.s3_region})
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": k.image or server_settings(dep, runtime="docker").image,
        "command": argv[:1],
        "args": argv[1:],
        "ports": [{"name": n, "containerPort": p, "protocol": "TCP"}
                  for n, p in (("http", HTTP_PORT), ("grpc", GRPC_PORT), ("metrics", METRICS_PORT))],
        "env": env,
        "resources": _resources(k),
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
        "startupProbe": _probe("/v2/health/ready", period=_STARTUP_PERIOD_S, timeout=5,
                               failures=max(1, math.ceil(k.startup_timeout / _STARTUP_PERIOD_S))),
        "readinessProbe": _probe("/v2/health/ready", period=5, timeout=3, failures=3),
        "livenessProbe": _probe("/v2/health/live", period=10, timeout=5, failures=6),
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
    }
    pod: dict[str, Any] = {
        "containers": [container],
        # Triton's model-load buffers and the python backend's tensors live in /dev/shm; the default is 64 MiB.
        "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": k.shm_size}}],
    }
    if k.gpus:
        pod["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": _replicas(dep, k),
            "selector": {"matchLabels": selector},
            # a new pod must be ready (every model loaded) before an old one goes: no capacity dip on rollout
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                # a changed spec changes the annotation, so `kubectl apply` rolls the pods
                "metadata": {"labels": meta["labels"],
                             "annotations": {"triton-deployer/spec-sha256": dep.spec_sha256}},
                "spec": pod,
            },
        },
    }


def _service(meta: dict[str, Any], selector: dict[str, str]) -> dict[str, Any]:
    ports = [
        {"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP"},
        {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "protocol": "TCP",
         "appProtocol": "kubernetes.io/h2c"},
        {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"},
    ]
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta,
            "spec": {"type": "ClusterIP", "selector": selector, "ports": ports}}


def _autoscaling_bounds(dep: Deployment, k: K8sSpec) -> tuple[int, int] | None:
    if k.autoscaling is None:
        return None
    low = k.autoscaling.min_replicas or _replicas(dep, k)
    high = k.autoscaling.max_replicas
    if low > high:
        raise UserError(
            f"k8s.autoscaling: min_replicas {low} is above max_replicas {high}",
            hint="raise k8s.autoscaling.max_replicas (min_replicas defaults to the replicas)",
        )
    return low, high


def _hpa(name: str, meta: dict[str, Any], k: K8sSpec, bounds: tuple[int, int]) -> dict[str, Any]:
    assert k.autoscaling is not None
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": meta,
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": bounds[0],
            "maxReplicas": bounds[1],
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                "type": "Utilization", "averageUtilization": k.autoscaling.target_cpu_utilization}}}],
            # a pod takes minutes to load its models: do not give capacity back on a short lull
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
        },
    }


def _pdb(meta: dict[str, Any], selector: dict[str, str], k: K8sSpec) -> dict[str, Any]:
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": meta,
            "spec": {"maxUnavailable": k.max_unavailable, "selector": {"matchLabels": selector}}}


def kserve_storage_uri(repository: str) -> tuple[str, str | None]:
    """KServe's `storageUri` (s3://bucket/prefix) and the endpoint Triton's URL carried (s3://host:port/...)."""
    rest = repository[len("s3://"):]
    scheme = ""
    for prefix in ("http://", "https://"):
        if rest.startswith(prefix):
            scheme, rest = prefix, rest[len(prefix):]
    head, _, tail = rest.partition("/")
    if ":" in head or scheme:
        return f"s3://{tail}", scheme + head
    return repository, None


def _inference_service(dep: Deployment, k: K8sSpec, meta: dict[str, Any], repository: str,
                       bounds: tuple[int, int] | None) -> tuple[dict[str, Any], str | None]:
    assert k.kserve is not None
    storage, endpoint = kserve_storage_uri(repository)
    # KServe's Triton runtime sets the model store and ports itself; these add the model control and checks.
    argv = _argv(dep, "/mnt/models")
    managed = ("--model-repository=", "--http-", "--grpc-", "--metrics-port=", "--metrics-address=")
    args = [a for a in argv[1:] if not a.startswith(managed)]
    model: dict[str, Any] = {
        "modelFormat": {"name": "triton"},
        "storageUri": storage,
        "runtimeVersion": f"{dep.spec.target.triton}-py3",
        "args": args,
        "resources": _resources(k),
    }
    predictor: dict[str, Any] = {"serviceAccountName": k.kserve.service_account, "model": model}
    replicas = bounds or (_replicas(dep, k), _replicas(dep, k))
    predictor["minReplicas"], predictor["maxReplicas"] = replicas
    body = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService", "metadata": meta,
            "spec": {"predictor": predictor}}
    return body, endpoint


def plan_manifests(dep: Deployment) -> K8sPlan:
    """The manifests for `dep` (its `k8s:` section, defaults when absent). Raises UserError (exit 2)."""
    k = dep.spec.k8s or K8sSpec()
    name = k.name or derive_name(dep.spec_path.stem)
    repository = _model_repository(dep, k)
    secret = k.s3_secret or f"{name}-s3"
    selector = {"app.kubernetes.io/name": "triton", "app.kubernetes.io/instance": name}
    labels = {**selector, "app.kubernetes.io/managed-by": "triton-deployer"}
    meta = {"name": name, "namespace": k.namespace, "labels": labels}
    bounds = _autoscaling_bounds(dep, k)
    manifests = [
        Manifest("deployment.yaml", _deployment(dep, k, meta, selector, repository, secret)),
        Manifest("service.yaml", _service(meta, selector)),
    ]
    if bounds is not None:
        manifests.append(Manifest("hpa.yaml", _hpa(name, meta, k, bounds)))
    manifests.append(Manifest("pdb.yaml", _pdb(meta, selector, k)))
    notes = [f"the pods read the S3 credentials from Secret {secret!r} in namespace {k.namespace!r}: "
             f"kubectl -n {k.namespace} create secret generic {secret} --from-literal=AWS_ACCESS_KEY_ID=... "
             "--from-literal=AWS_SECRET_ACCESS_KEY=..."]
    if k.kserve is not None:
        body, endpoint = _inference_service(dep, k, meta, repository, bounds)
        # in its own directory: `kubectl apply -f DIR` (not recursive) must not start a second Triton
        manifests.append(Manifest("kserve/inferenceservice.yaml", body))
        notes.append("kserve/inferenceservice.yaml is an alternative to the Deployment (apply one or the other); "
                     f"KServe reads the S3 credentials through ServiceAccount {k.kserve.service_account!r}"
                     + (f", whose serving.kserve.io/s3-endpoint annotation must be {endpoint!r}" if endpoint else ""))
    return K8sPlan(name=name, namespace=k.namespace, model_repository=repository, s3_secret=secret,
                   spec_sha256=dep.spec_sha256, manifests=tuple(manifests), notes=tuple(notes))
