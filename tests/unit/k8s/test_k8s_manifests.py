"""`deployer k8s`: the manifests validate against the Kubernetes schemas (kubernetes-validate, strict, the
newest release it ships), equal the golden files, and survive YAML 1.1 and 1.2 parsers unchanged.

No cluster exists here; KServe's InferenceService has no offline schema, so its structure is pinned by its
golden file and the checks below.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml as pyyaml
from ruamel.yaml import YAML

from deployer.errors import UserError
from deployer.k8s import derive_name, plan_manifests, render_stream, render_texts, write_manifests
from deployer.k8s.manifests import kserve_storage_uri
from deployer.k8s.write import HEADER
from deployer.k8s.yamlout import ambiguous, dump
from deployer.spec import load_deployment

DATA = Path(__file__).resolve().parents[2] / "data"
SPEC = DATA / "specs" / "k8s.yaml"
GOLDEN = DATA / "golden" / "k8s"
DEPLOYER = Path(sys.executable).parent / "deployer"
K8S_VERSION = kubernetes_validate.utils.latest_version()


def _spec(tmp_path: Path, k8s: str, name: str = "spec.yaml", repository: str = "model_repository") -> Path:
    shutil.copytree(DATA / "specs" / "models", tmp_path / "models", dirs_exist_ok=True)
    spec = tmp_path / name
    spec.write_text(f"repository: {repository}\nmodels:\n  - name: relu\n    source: models/relu.onnx\n{k8s}",
                    encoding="utf-8")
    return spec


def _load_both(text: str) -> tuple[Any, Any]:
    return pyyaml.safe_load(text), YAML(typ="safe", pure=True).load(text)


def test_golden_spec_validates_strictly_and_equals_the_golden_files() -> None:
    plan = plan_manifests(load_deployment(SPEC, fallback="onnxruntime"))
    texts = render_texts(plan)
    assert sorted(texts) == ["deployment.yaml", "hpa.yaml", "kserve/inferenceservice.yaml", "pdb.yaml",
                             "service.yaml"]
    for m in plan.manifests:
        text = texts[m.filename]
        v11, v12 = _load_both(text)
        assert v11 == v12 == m.body, m.filename  # what kubectl (YAML 1.1) reads is what was planned
        if m.kind != "InferenceService":
            kubernetes_validate.validate(v11, K8S_VERSION, strict=True)
        if os.environ.get("UPDATE_GOLDEN"):
            (GOLDEN / m.filename).parent.mkdir(parents=True, exist_ok=True)
            (GOLDEN / m.filename).write_text(text, encoding="utf-8")
        assert text == (GOLDEN / m.filename).read_text(encoding="utf-8"), f"{m.filename}: UPDATE_GOLDEN=1 to refresh"


def test_strict_validation_catches_a_wrong_field() -> None:
    # the validator really checks: a field the schema lacks is refused in strict mode
    plan = plan_manifests(load_deployment(SPEC, fallback="onnxruntime"))
    body = pyyaml.safe_load(render_texts(plan)["service.yaml"])
    body["spec"]["portz"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(body, K8S_VERSION, strict=True)


def test_deployment_loads_every_model_explicitly_and_takes_credentials_from_the_secret_only() -> None:
    plan = plan_manifests(load_deployment(SPEC, fallback="onnxruntime"))
    deployment = plan.manifests[0].body
    pod = deployment["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    args = c["args"]
    assert "--model-control-mode=explicit" in args and "--exit-on-error=true" in args
    assert [a for a in args if a.startswith("--load-model=")] == ["--load-model=relu", "--load-model=add"]
    assert "--model-repository=s3://seaweed.storage:8333/models/prod" in args
    creds = {e["name"]: e for e in c["env"] if e["name"].startswith("AWS_") and e["name"] != "AWS_DEFAULT_REGION"}
    assert set(creds) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}
    assert all("value" not in e and e["valueFrom"]["secretKeyRef"]["name"] == "triton-s3" for e in creds.values())
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["volumes"][0]["emptyDir"] == {"medium": "Memory", "sizeLimit": "2Gi"}
    # startup allows the whole load time (900 s) before liveness may restart the pod
    start = c["startupProbe"]
    assert start["periodSeconds"] * start["failureThreshold"] >= 900
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert deployment["spec"]["replicas"] == 2


def test_kserve_inference_service_structure() -> None:
    plan = plan_manifests(load_deployment(SPEC, fallback="onnxruntime"))
    isvc = next(m.body for m in plan.manifests if m.kind == "InferenceService")
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    predictor = isvc["spec"]["predictor"]
    assert predictor["serviceAccountName"] == "triton-s3-reader"
    assert predictor["model"]["modelFormat"] == {"name": "triton"}
    assert predictor["model"]["storageUri"] == "s3://models/prod"  # the endpoint goes to the ServiceAccount
    managed = ("--model-repository", "--http-port", "--grpc-port")
    assert not any(a.startswith(managed) for a in predictor["model"]["args"])
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (2, 6)
    assert any("s3-endpoint annotation must be 'seaweed.storage:8333'" in n for n in plan.notes)
    # the stream for `kubectl apply -f -` leaves the alternative out (it would start a second Triton)
    assert "InferenceService" not in render_stream(plan)


@pytest.mark.parametrize(("url", "expected"), [
    ("s3://bucket/prefix", ("s3://bucket/prefix", None)),
    ("s3://127.0.0.1:8333/bucket/p", ("s3://bucket/p", "127.0.0.1:8333")),
    ("s3://https://store.example:443/bucket/p", ("s3://bucket/p", "https://store.example:443")),
])
def test_kserve_storage_uri(url: str, expected: tuple[str, str | None]) -> None:
    assert kserve_storage_uri(url) == expected


@pytest.mark.parametrize("value", ["on", "yes", "no", "y", "true", "null", "1e3", "017", "0o17", "1.0", "0x1f", "1:20"])
def test_yaml_1_1_and_1_2_lookalikes_come_back_as_strings(value: str) -> None:
    assert ambiguous(value)
    doc = {"metadata": {"namespace": value}, "args": [value]}
    assert _load_both(dump(doc)) == (doc, doc)


def test_hostile_strings_are_escaped_not_pasted() -> None:
    doc = {"a": "x\nkind: Secret", "b": "# not a comment", "c": "'\"", "d": "{x: 1}", "e": "- item"}
    assert _load_both(dump(doc)) == (doc, doc)


@pytest.mark.parametrize(("stem", "name"), [("My Spec_v2", "my-spec-v2"), ("7b", "triton-7b"),
                                           ("a" * 80, "a" * 63), ("x--y", "x-y")])
def test_derive_name(stem: str, name: str) -> None:
    assert derive_name(stem) == name


def test_underivable_name_is_a_clear_user_error() -> None:
    with pytest.raises(UserError, match="cannot derive a Kubernetes name") as exc:
        derive_name("___")
    assert "set k8s.name" in exc.value.render()


def test_defaults_cpu_pods_no_hpa_and_s3_repository(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "k8s: {gpus: 0, autoscaling: null}\n", name="7B_Model.yaml", repository="s3://bkt/models")
    plan = plan_manifests(load_deployment(spec, fallback="onnxruntime"))
    assert plan.name == "triton-7b-model" and plan.s3_secret == "triton-7b-model-s3"
    assert [m.kind for m in plan.manifests] == ["Deployment", "Service", "PodDisruptionBudget"]
    (c,) = plan.manifests[0].body["spec"]["template"]["spec"]["containers"]
    assert "nvidia.com/gpu" not in c["resources"]["limits"] and "--model-repository=s3://bkt/models" in c["args"]
    for m in plan.manifests:
        kubernetes_validate.validate(pyyaml.safe_load(render_texts(plan)[m.filename]), K8S_VERSION, strict=True)


def test_an_s3_compatible_endpoint_is_in_the_url_the_pods_load(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "repository_s3: {endpoint: 'http://seaweed.store:8333'}\n", repository="s3://bkt/models")
    plan = plan_manifests(load_deployment(spec, fallback="onnxruntime"))
    (c,) = plan.manifests[0].body["spec"]["template"]["spec"]["containers"]
    assert "--model-repository=s3://seaweed.store:8333/bkt/models" in c["args"], c["args"]


def test_local_repository_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cannot read the local repository"):
        plan_manifests(load_deployment(_spec(tmp_path, ""), fallback="onnxruntime"))


def test_min_above_max_replicas_is_refused(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "k8s: {model_repository: 's3://b/p', replicas: 5}\n")
    with pytest.raises(UserError, match="min_replicas 5 is above max_replicas 4"):
        plan_manifests(load_deployment(spec, fallback="onnxruntime"))


def test_rewrite_removes_stale_manifests_and_keeps_foreign_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_manifests(plan_manifests(load_deployment(SPEC, fallback="onnxruntime")), out)
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    spec = _spec(tmp_path, "k8s: {model_repository: 's3://b/p', autoscaling: null}\n")
    written = write_manifests(plan_manifests(load_deployment(spec, fallback="onnxruntime")), out)
    assert sorted(p.name for p in written) == ["deployment.yaml", "pdb.yaml", "service.yaml"]
    assert not (out / "hpa.yaml").exists() and not (out / "kserve" / "inferenceservice.yaml").exists()
    assert (out / "notes.txt").read_text(encoding="utf-8") == "mine"
    assert all(p.read_text(encoding="utf-8").startswith(HEADER) for p in written)
    (out / "service.yaml").write_text("hand-written\n", encoding="utf-8")
    with pytest.raises(UserError, match="was not written by"):
        write_manifests(plan_manifests(load_deployment(spec, fallback="onnxruntime")), out)
    assert (out / "service.yaml").read_text(encoding="utf-8") == "hand-written\n"


@pytest.mark.parametrize("link", ["kserve", "deployment.yaml"])
def test_a_planted_symlink_in_the_output_is_refused_and_nothing_is_written(tmp_path: Path, link: str) -> None:
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (elsewhere / "precious").write_text("keep", encoding="utf-8")
    (out / link).symlink_to(elsewhere if link == "kserve" else elsewhere / "precious")
    with pytest.raises(UserError, match="symbolic link"):
        write_manifests(plan_manifests(load_deployment(SPEC, fallback="onnxruntime")), out)
    assert sorted(p.name for p in elsewhere.iterdir()) == ["precious"]
    assert (elsewhere / "precious").read_text(encoding="utf-8") == "keep"
    assert sorted(p.name for p in out.iterdir()) == [link]  # nothing written beside the link


def _run(*args: str | Path, code: int) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(DEPLOYER), *map(str, args)], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == code, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def test_cli_writes_the_manifests_and_refuses_bad_names_with_exit_2(tmp_path: Path) -> None:
    out = tmp_path / "manifests"
    proc = _run("k8s", SPEC, "-o", out, code=0)
    assert "wrote" in proc.stdout and "create secret generic triton-s3" in proc.stdout
    for name in ("deployment.yaml", "service.yaml", "hpa.yaml", "pdb.yaml", "kserve/inferenceservice.yaml"):
        assert (out / name).read_text(encoding="utf-8") == (GOLDEN / name).read_text(encoding="utf-8")
    printed = _run("k8s", SPEC, code=0).stdout
    assert [d["kind"] for d in pyyaml.safe_load_all(printed)] == [
        "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"]

    bad = _spec(tmp_path, "k8s: {name: Triton_Prod, model_repository: 's3://b/p'}\n")
    proc = _run("k8s", bad, "-o", tmp_path / "bad", code=2)
    assert "k8s.name" in proc.stderr
    assert not (tmp_path / "bad").exists()  # nothing half-written
    proc = _run("k8s", _spec(tmp_path, ""), "-o", tmp_path / "local", code=2)
    assert "k8s.model_repository" in proc.stderr and not (tmp_path / "local").exists()
