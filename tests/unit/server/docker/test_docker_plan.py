"""The docker runtime's pure planning (ContainerSpec) and the CPU image's build inputs. No engine needed."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from deployer.errors import ExitCode, UserError
from deployer.server.base import ServerSettings
from deployer.server.docker.cpu_image import CPU_IMAGE, NGC_IMAGE, cpu_image_inputs, recipe_dir
from deployer.server.docker.plan import (
    LABEL_MANAGED,
    LABEL_PROJECT,
    LABEL_STATE_DIR,
    NVIDIA_ULIMITS,
    GpuRequest,
    container_command,
    gpu_request,
    image_hint,
    parse_size,
    plan_container,
    project_name,
    without_memlock,
)


def _settings(tmp_path: Path, **overrides: object) -> ServerSettings:
    base: dict[str, object] = {
        "runtime": "docker",
        "repository": tmp_path / "repo",
        "models": ("a", "b"),
        "state_dir": tmp_path / "proj" / ".deployer",
        "http_port": 18000,
        "grpc_port": 18001,
        "metrics_port": 18002,
    }
    base.update(overrides)
    return ServerSettings(**base)  # type: ignore[arg-type]


def test_spec_publishes_host_ports_on_the_configured_address_to_tritons_defaults(tmp_path: Path) -> None:
    spec = plan_container(_settings(tmp_path))
    assert spec.ports == ((8000, "127.0.0.1", 18000), (8001, "127.0.0.1", 18001), (8002, "127.0.0.1", 18002))
    spec = plan_container(_settings(tmp_path, host="0.0.0.0"))
    assert {host for _, host, _ in spec.ports} == {"0.0.0.0"}


def test_command_is_explicit_mode_on_models_mount_with_default_backend_dirs(tmp_path: Path) -> None:
    command = container_command(_settings(tmp_path, log_verbose=1, extra_args=("--rate-limit=off",)))
    assert command[0] == "tritonserver"
    assert "--model-repository=/models" in command
    assert "--model-control-mode=explicit" in command
    assert "--http-port=8000" in command and "--grpc-port=8001" in command and "--metrics-port=8002" in command
    assert "--http-address=0.0.0.0" in command
    assert "--log-verbose=1" in command and "--rate-limit=off" in command
    # the image's own /opt/tritonserver/{backends,caches} are used; models are loaded via the API
    assert not any(a.startswith(("--backend-directory", "--cache-directory", "--load-model")) for a in command)


def test_repository_is_mounted_read_only_with_labels_shm_and_nvidia_ulimits(tmp_path: Path) -> None:
    pytest.importorskip("docker")
    settings = _settings(tmp_path, shm_size="2g", env=(("OMP_NUM_THREADS", "1"),))
    spec = plan_container(settings)
    kwargs = spec.run_kwargs()
    (mount,) = kwargs["mounts"]
    assert mount["Target"] == "/models" and mount["Source"] == str(tmp_path / "repo")
    assert mount["ReadOnly"] is True and mount["Type"] == "bind"
    assert kwargs["shm_size"] == 2 * 1024**3
    assert {u["Name"]: (u["Soft"], u["Hard"]) for u in kwargs["ulimits"]} == {
        "memlock": (-1, -1),
        "stack": (67108864, 67108864),
    }
    assert kwargs["ports"]["8000/tcp"] == ("127.0.0.1", 18000)
    assert kwargs["environment"] == {"OMP_NUM_THREADS": "1"}
    assert kwargs["init"] is True and "device_requests" not in kwargs
    labels = kwargs["labels"]
    assert labels[LABEL_MANAGED] == "true"
    assert labels[LABEL_PROJECT] == spec.name == project_name(settings.state_dir)
    assert labels[LABEL_STATE_DIR] == str(settings.state_dir)


@pytest.mark.parametrize(
    ("gpus", "expected"),
    [
        ((), None),
        ("all", GpuRequest(count=-1)),
        (("all",), GpuRequest(count=-1)),
        (("0", "2"), GpuRequest(device_ids=("0", "2"))),
        (("GPU-6c2f1a0b-aaaa",), GpuRequest(device_ids=("GPU-6c2f1a0b-aaaa",))),
    ],
)
def test_gpu_requests(gpus: object, expected: GpuRequest | None) -> None:
    assert gpu_request(gpus) == expected  # type: ignore[arg-type]


def test_gpu_device_request_reaches_the_sdk(tmp_path: Path) -> None:
    pytest.importorskip("docker")
    (request,) = plan_container(_settings(tmp_path, gpus=("1",))).run_kwargs()["device_requests"]
    assert request["DeviceIDs"] == ["1"] and request["Capabilities"] == [["gpu"]]
    (request,) = plan_container(_settings(tmp_path, gpus="all")).run_kwargs()["device_requests"]
    assert request["Count"] == -1


@pytest.mark.parametrize("gpus", [("all", "0"), ("",), ("0;rm",)])
def test_bad_gpu_values_are_user_errors(gpus: tuple[str, ...]) -> None:
    with pytest.raises(UserError) as info:
        gpu_request(gpus)
    assert info.value.exit_code == ExitCode.BAD_INPUT


@pytest.mark.parametrize(("text", "size"), [("1g", 1024**3), ("512m", 512 * 1024**2), ("64k", 65536), ("100", 100)])
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "0", "1t", "-1g", "lots"])
def test_bad_shm_size_is_a_user_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(UserError, match="shm_size"):
        plan_container(_settings(tmp_path, shm_size=text))


def test_relative_repository_and_empty_image_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="absolute"):
        plan_container(_settings(tmp_path, repository=Path("model_repository")))
    with pytest.raises(UserError, match="image"):
        plan_container(_settings(tmp_path, image=" "))


def test_project_name_is_stable_readable_and_distinct(tmp_path: Path) -> None:
    a = project_name(tmp_path / "shop" / ".deployer")
    assert a == project_name(tmp_path / "shop" / ".deployer")
    assert a.startswith("deployer-shop-")
    assert a != project_name(tmp_path / "other" / "shop" / ".deployer")
    assert project_name(tmp_path / "My Project!").startswith("deployer-my-project-")


def test_without_memlock_keeps_the_other_ulimits(tmp_path: Path) -> None:
    spec = plan_container(_settings(tmp_path))
    assert spec.ulimits == NVIDIA_ULIMITS
    assert without_memlock(spec).ulimits == (("stack", 67108864, 67108864),)


def test_missing_image_hints_say_how_to_get_each_kind() -> None:
    assert "docker login nvcr.io" in image_hint(NGC_IMAGE) and f"docker pull {NGC_IMAGE}" in image_hint(NGC_IMAGE)
    assert "deployer image build-cpu" in image_hint(CPU_IMAGE)
    assert "docker pull example/triton:1" in image_hint("example/triton:1")


# -- CPU image inputs --------------------------------------------------------------------------------


def test_requirements_are_pinned_with_hashes() -> None:
    lines = [line.split("#", 1)[0].strip() for line in (recipe_dir() / "requirements.txt").read_text().splitlines()]
    reqs = [line for line in lines if line]
    assert any(r.startswith("nvidia-pytriton==0.7.0 ") for r in reqs)
    assert any(r.startswith("numpy==1.") for r in reqs), "numpy<2 like the host venv"
    for req in reqs:
        assert "==" in req and "--hash=sha256:" in req, req


def test_inputs_digest_changes_with_every_input_and_only_then(tmp_path: Path) -> None:
    recipe = tmp_path / "docker"
    shutil.copytree(recipe_dir(), recipe)
    first = cpu_image_inputs("base:1", "sha256:aaa", recipe=recipe)
    assert first.digest == cpu_image_inputs("base:1", "sha256:aaa", recipe=recipe).digest
    assert {name for name, _ in first.files} >= {"Dockerfile", "requirements.txt", "onnxruntime/model.py"}
    assert first.digest != cpu_image_inputs("base:1", "sha256:bbb", recipe=recipe).digest
    dockerfile = recipe / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text() + "\n# changed\n")
    assert first.digest != cpu_image_inputs("base:1", "sha256:aaa", recipe=recipe).digest
    changed = replace(first, files=(*first.files[:-1], ("onnxruntime/model.py", b"other")))
    assert changed.digest != first.digest
