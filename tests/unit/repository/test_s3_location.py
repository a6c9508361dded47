"""Pure parts of s3:// repositories: spec validation, the Triton URL, object keys (no store needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployer.errors import SpecError
from deployer.spec import S3Location, load_deployment


def _spec(tmp_path: Path, repository: str, s3: str = "") -> Path:
    (tmp_path / "m.py").write_text("")
    spec = tmp_path / "deployer.yaml"
    spec.write_text(
        f"repository: {repository}\n{s3}"
        "models:\n  - name: m\n    backend: python\n    source: m.py\n    max_batch_size: 0\n"
        "    inputs: [{name: x, dtype: FP32, dims: [1]}]\n    outputs: [{name: y, dtype: FP32, dims: [1]}]\n"
    )
    return spec


def test_s3_repository_with_endpoint(tmp_path: Path) -> None:
    dep = load_deployment(_spec(tmp_path, "s3://models/prod/v", "repository_s3: {endpoint: 'http://127.0.0.1:8333'}\n"))
    assert dep.remote == S3Location("models", "prod/v", "http://127.0.0.1:8333")
    assert dep.remote.triton_url == "s3://127.0.0.1:8333/models/prod/v"
    assert dep.remote.key("m/config.pbtxt") == "prod/v/m/config.pbtxt"
    assert dep.remote.url == "s3://models/prod/v"


def test_triton_url_forms() -> None:
    assert S3Location("b1b", "").triton_url == "s3://b1b"
    assert S3Location("b1b", "p", "https://s3.example.com:443").triton_url == "s3://https://s3.example.com:443/b1b/p"
    assert S3Location("b1b", "").key("x") == "x"


@pytest.mark.parametrize(("repository", "s3", "message"), [
    ("s3://A_B/p", "", "invalid S3 bucket name"),
    ("s3://bucket/a/../b", "", "invalid S3 prefix"),
    ("s3://bucket/p", "repository_s3: {endpoint: 'ftp://x'}\n", "repository_s3.endpoint"),
    ("s3://bucket/p", "repository_s3: {secret_key: 'x'}\n", "secret_key"),  # strict: no credential keys
    ("repo", "repository_s3: {region: us-east-1}\n", "repository_s3 is set"),
])
def test_bad_s3_specs_are_located_errors(tmp_path: Path, repository: str, s3: str, message: str) -> None:
    with pytest.raises(SpecError) as err:
        load_deployment(_spec(tmp_path, repository, s3))
    assert message in err.value.render(), err.value.render()
