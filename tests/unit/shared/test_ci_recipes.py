"""examples/ci/: the GitHub Actions workflow and the GitLab CI job users copy.

Checked offline against the official schemas (check-jsonschema's vendored copies), for what they
install and publish, and by running their shell commands on a copy of examples/quickstart: the local
variant against the real tritonserver, the CPU-image variant against the Docker engine.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import tomllib
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[3]
CI = ROOT / "examples" / "ci"
GITHUB = CI / "github-actions.yml"
GITLAB = CI / "gitlab-ci.yml"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]

# variant -> (GitHub job, GitLab job, --runtime, JUnit file)
VARIANTS = {
    "local": ("local", "deployer-local", "local", "reports/deployer-local.xml"),
    "cpu-image": ("cpu-image", "deployer-cpu-image", "docker", "reports/deployer-cpu.xml"),
}
INSTALL = re.compile(r"pip install \"(?P<dist>[a-z0-9-]+)\[(?P<extras>[a-z,]+)\]==\$\{DEPLOYER_VERSION\}\"")


def _load(path: Path) -> dict[str, Any]:
    data = YAML(typ="safe", pure=True).load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _github_steps(job: str) -> list[dict[str, Any]]:
    return list(_load(GITHUB)["jobs"][job]["steps"])


def _lines(script: str | list[str]) -> list[str]:
    """Shell lines of a `run:` block or a `script:` list, without comments and blanks."""
    raw = script.splitlines() if isinstance(script, str) else [str(s) for s in script]
    return [line.strip() for line in raw if line.strip() and not line.strip().startswith("#")]


def github_commands(job: str) -> tuple[list[str], list[str]]:
    """(install lines, every other `run:` line in order) of a GitHub job."""
    install, other = [], []
    for step in _github_steps(job):
        if "run" in step:
            lines = _lines(step["run"])
            (install if any("pip install" in line for line in lines) else other).extend(lines)
    return install, other


def gitlab_commands(job: str) -> tuple[list[str], list[str]]:
    """(before_script: the install, script) of a GitLab job."""
    spec = _load(GITLAB)[job]
    return _lines(spec["before_script"]), _lines(spec["script"])


def _check_jsonschema(schema: str, path: Path) -> subprocess.CompletedProcess[str]:
    # a dead proxy: any attempt to reach the network fails the check instead of passing silently
    env = {**os.environ, "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}
    env.pop("REQUESTS_CA_BUNDLE", None)
    argv = [sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, str(path)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False, env=env)


# -- schemas ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("schema", "path"), [("vendor.github-workflows", GITHUB), ("vendor.gitlab-ci", GITLAB)])
def test_recipe_matches_the_official_schema_offline(schema: str, path: Path) -> None:
    proc = _check_jsonschema(schema, path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok -- validation done" in proc.stdout


def test_the_schema_check_rejects_broken_recipes(tmp_path: Path) -> None:
    """The validator bites: a step with both `run` and `uses`, a JUnit report that is not a path."""
    bad_gh = tmp_path / "gh.yml"
    bad_gh.write_text(GITHUB.read_text().replace("      - name: Install deployer\n",
                                                 "      - name: Install deployer\n        uses: actions/checkout@v6\n",
                                                 1))
    bad_gl = tmp_path / "gl.yml"
    bad_gl.write_text(GITLAB.read_text().replace("junit: reports/deployer-local.xml", "junit: {path: x}", 1))
    for schema, path in (("vendor.github-workflows", bad_gh), ("vendor.gitlab-ci", bad_gl)):
        proc = _check_jsonschema(schema, path)
        assert proc.returncode == 1 and "Schema validation errors" in proc.stdout, (schema, proc.stdout, proc.stderr)


# -- what they install and publish -----------------------------------------------------------------


def test_recipes_install_this_distribution_pinned_to_the_current_version() -> None:
    github_env, gitlab_vars = _load(GITHUB)["env"], _load(GITLAB)["variables"]
    assert github_env["DEPLOYER_VERSION"] == gitlab_vars["DEPLOYER_VERSION"] == PROJECT["version"]
    extras_known = set(PROJECT["optional-dependencies"])
    for variant, (gh_job, gl_job, runtime, _) in VARIANTS.items():
        for install in (github_commands(gh_job)[0], gitlab_commands(gl_job)[0]):
            found = [m for line in install for m in INSTALL.finditer(line)]
            assert len(found) == 1, (variant, install)
            assert found[0]["dist"] == PROJECT["name"] == "triton-deployer"
            extras = set(found[0]["extras"].split(","))
            assert extras <= extras_known
            assert ("local" in extras) == (runtime == "local") and ("docker" in extras) == (runtime == "docker")


def test_github_jobs_upload_and_report_the_junit_file_deploy_writes() -> None:
    assert _load(GITHUB)["permissions"]["checks"] == "write"  # the test reporter creates a check run
    for gh_job, _, runtime, junit in VARIANTS.values():
        steps = _github_steps(gh_job)
        deploy = [line for line in github_commands(gh_job)[1] if line.startswith("deployer deploy")]
        assert deploy == [f'deployer deploy "$SPEC" --runtime {runtime} --junit {junit} '
                          f"--json {junit.replace('.xml', '.json')}"]
        uploads = [s for s in steps if str(s.get("uses", "")).startswith("actions/upload-artifact@")]
        reporters = [s for s in steps if str(s.get("uses", "")).startswith("dorny/test-reporter@")]
        assert len(uploads) == len(reporters) == 1
        assert junit.startswith(uploads[0]["with"]["path"])
        assert reporters[0]["with"]["path"] == junit and reporters[0]["with"]["reporter"] == "java-junit"
        for step in (*uploads, *reporters):
            assert step["if"] == "${{ !cancelled() }}"  # a failed deploy still publishes its report
        assert steps.index(uploads[0]) > max(i for i, s in enumerate(steps) if "run" in s)


def test_gitlab_jobs_publish_the_junit_file_deploy_writes() -> None:
    for _, gl_job, runtime, junit in VARIANTS.values():
        job = _load(GITLAB)[gl_job]
        assert [line for line in gitlab_commands(gl_job)[1] if line.startswith("deployer deploy")] == [
            f'deployer deploy "$SPEC" --runtime {runtime} --junit {junit} --json {junit.replace(".xml", ".json")}'
        ]
        assert job["artifacts"]["reports"]["junit"] == junit
        assert job["artifacts"]["when"] == "always"


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_github_and_gitlab_run_the_same_commands(variant: str) -> None:
    """So running one list here covers both files."""
    gh_job, gl_job, _, _ = VARIANTS[variant]
    assert github_commands(gh_job)[1] == gitlab_commands(gl_job)[1]
    assert _load(GITHUB)["env"]["SPEC"] == _load(GITLAB)["variables"]["SPEC"]
    assert _load(GITHUB)["env"]["DEPLOYER_BASE_IMAGE"] == _load(GITLAB)["variables"]["DEPLOYER_BASE_IMAGE"]


# -- running the commands --------------------------------------------------------------------------


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _workspace(tmp_path: Path) -> Path:
    """A repository like a user's: the quickstart's spec and models, on free ports."""
    work = tmp_path / "repo"
    shutil.copytree(ROOT / "examples" / "quickstart", work / "examples" / "quickstart",
                    ignore=shutil.ignore_patterns("__pycache__"))
    spec = work / "examples" / "quickstart" / "deployer.yaml"
    text = spec.read_text(encoding="utf-8")
    for key, port in zip(("http_port", "grpc_port", "metrics_port"), _free_ports(3), strict=True):
        text, n = re.subn(rf"(?m)^(\s*{key}:\s*)\d+", rf"\g<1>{port}", text)
        assert n == 1, key
    spec.write_text(text, encoding="utf-8")
    return work


def _run_recipe(variant: str, tmp_path: Path, overrides: Mapping[str, str]) -> Path:
    gh_job, _, _, junit = VARIANTS[variant]
    work = _workspace(tmp_path)
    env = {**os.environ, **{k: str(v) for k, v in _load(GITHUB)["env"].items()}}
    env.update(SPEC="examples/quickstart/deployer.yaml", **overrides)
    # The install step stands replaced by this checkout's installation (the same `deployer` command).
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    script = "\n".join(github_commands(gh_job)[1])
    proc = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script], cwd=work, env=env,
                          capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, f"$ {script}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    assert re.search(r"^deployer \S+ \(triton-deployer\)$", proc.stdout, re.M), proc.stdout
    report = work / junit
    assert report.is_file() and report.with_suffix(".json").is_file()
    return report


def _assert_passing_junit(report: Path) -> None:
    root = ET.parse(report).getroot()
    assert root.tag == "testsuites"
    cases = root.findall(".//testcase")
    assert len(cases) >= 5, [c.get("name") for c in cases]
    assert not root.findall(".//failure") and not root.findall(".//error")
    suites = {s.get("name") for s in root.findall("testsuite")}
    assert any("classifier" in (name or "") for name in suites), suites


@pytest.mark.triton
@pytest.mark.slow
def test_the_local_recipe_deploys_the_quickstart(tmp_path: Path) -> None:
    _assert_passing_junit(_run_recipe("local", tmp_path, {}))


@pytest.mark.docker
@pytest.mark.slow
def test_the_cpu_image_recipe_deploys_the_quickstart(tmp_path: Path) -> None:
    # no Docker Hub here: an empty DEPLOYER_BASE_IMAGE is the recipe's documented debootstrap base
    _assert_passing_junit(_run_recipe("cpu-image", tmp_path, {"DEPLOYER_BASE_IMAGE": ""}))
