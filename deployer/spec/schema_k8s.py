"""The `k8s:` section of the spec (`deployer k8s`)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from deployer.spec.schema_base import Float, Int, _Strict

# The Deployment, Service, HPA and PodDisruptionBudget share one name, and a Service name must be a DNS-1035
# label (a letter first), the strictest of the four; a namespace is a DNS-1123 label.
K8sName = Annotated[str, Field(pattern=r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$", max_length=63)]
K8sLabel = Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", max_length=63)]
K8sSubdomain = Annotated[
    str, Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$", max_length=253)
]
# A Kubernetes quantity as kubectl writes one ("2", "500m", "8Gi"): a string, so YAML never reads it as a number.
Quantity = Annotated[str, Field(pattern=r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")]


class K8sAutoscaling(_Strict):
    """The HorizontalPodAutoscaler (autoscaling/v2) on CPU utilization."""

    min_replicas: Int | None = Field(default=None, ge=1, le=1000, description="Default: the replicas.")
    max_replicas: Int = Field(default=4, ge=1, le=1000, description="Upper bound of the replicas.")
    target_cpu_utilization: Int = Field(
        default=80, ge=1, le=100, description="Average CPU utilization (% of the CPU request) the HPA keeps."
    )


class K8sKServe(_Strict):
    """Also render a KServe InferenceService for the Triton runtime (an alternative to the Deployment)."""

    service_account: K8sSubdomain = Field(
        description="ServiceAccount that carries the S3 secret and its serving.kserve.io/s3-* annotations "
        "(KServe's way to pass storage credentials)."
    )


class K8sSpec(_Strict):
    """Kubernetes manifests rendered by `deployer k8s` (no cluster is contacted)."""

    name: K8sName | None = Field(
        default=None, description="Name of every object (DNS-1035 label). Default: derived from the spec file name."
    )
    namespace: K8sLabel = Field(default="default", description="Namespace of every object.")
    image: str | None = Field(default=None, pattern=r"^\S+$", description="Triton image. Default: server.image, "
                              "else the NGC image of target.triton.")
    model_repository: str | None = Field(
        default=None, pattern=r"^s3://\S+$",
        description="The repository the pods load (`--model-repository`): s3://bucket/prefix, or "
        "s3://host:port/bucket/prefix for an S3-compatible store. Default: `repository` when it is s3://.",
    )
    s3_secret: K8sSubdomain | None = Field(
        default=None, description="Secret with the keys AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (and optional "
        "AWS_SESSION_TOKEN), referenced by the pods, never rendered. Default: <name>-s3.",
    )
    s3_region: str | None = Field(default=None, pattern=r"^[a-z0-9-]{1,40}$",
                                  description="AWS_DEFAULT_REGION of the pods (unset: Triton's default).")
    replicas: Int | None = Field(default=None, ge=1, le=1000,
                                  description="Pods of the Deployment. Default: server.replicas.")
    gpus: Int = Field(default=1, ge=0, le=64, description="nvidia.com/gpu per pod (0 = CPU-only pods).")
    cpu: Quantity = Field(default="2", description="CPU request (and what the HPA's utilization is relative to).")
    memory: Quantity = Field(default="8Gi", description="Memory request and limit.")
    shm_size: Quantity = Field(default="1Gi", description="Size of the /dev/shm memory volume.")
    startup_timeout: Float = Field(
        default=600.0, gt=0, le=86400,
        description="Seconds a pod may take to download and load every model before its startupProbe fails; "
        "liveness and readiness probes start only after it.",
    )
    autoscaling: K8sAutoscaling | None = Field(default_factory=K8sAutoscaling, description="null = no HPA.")
    max_unavailable: Int = Field(
        default=1, ge=1, description="PodDisruptionBudget: pods a voluntary disruption (drain) may take down at once."
    )
    kserve: K8sKServe | None = Field(default=None, description="Also render kserve/inferenceservice.yaml.")
