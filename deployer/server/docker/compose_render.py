"""The `compose.yaml` generator (pure): one `triton` service with the same container as the docker runtime.

Image, command, ports bound to `settings.host`, the repository read-only at /models, shm size, NVIDIA's
ulimits, GPU reservation, labels, and a healthcheck on Triton's ready endpoint. Used by `deployer compose`
(the file committed next to a spec) and by `deployer.server.docker.compose.ComposeRuntime` (its own copy).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from deployer.server.base import ServerSettings
from deployer.server.docker.plan import (
    CONTAINER_PORTS,
    CONTAINER_REPOSITORY,
    NVIDIA_ULIMITS,
    container_command,
    gpu_request,
    image_of,
    managed_labels,
    parse_size,
)

__all__ = ["HEALTHCHECK_TEST", "SERVICE", "compose_document", "render_compose"]

SERVICE = "triton"
# python3 is in NGC's images and in deployer's CPU image (curl is not guaranteed); urlopen raises on
# any non-2xx answer, so the exit status is the readiness.
HEALTHCHECK_TEST: tuple[str, ...] = (
    "CMD",
    "python3",
    "-c",
    "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/v2/health/ready', timeout=3)",
)


def _repository_source(repository: Path) -> str:
    """Absolute paths as they are; relative ones relative to the compose file (`./...`)."""
    if repository.is_absolute():
        return str(repository)
    text = repository.as_posix()
    return text if text.startswith(("./", "../")) else f"./{text}"


def compose_document(
    settings: ServerSettings,
    *,
    project: str | None = None,
    load_models: bool = False,
    ulimits: tuple[tuple[str, int, int], ...] = NVIDIA_ULIMITS,
) -> dict[str, Any]:
    """The compose file as data.

    `load_models=True` adds `--load-model` flags so a plain `docker compose up` serves the models
    without deployer (the quickstart file); deployer itself loads them through the API so a failure
    names the model. With a relative `settings.state_dir` and repository (and an explicit `project`)
    the output does not depend on the machine, as a file committed to git must not.
    """
    image = image_of(settings)
    parse_size(settings.shm_size)  # validate now; compose would fail later and less clearly
    command = list(container_command(settings))
    if load_models:
        command.extend(f"--load-model={m}" for m in settings.models)
    labels = dict(managed_labels(settings.state_dir, project))
    service: dict[str, Any] = {
        "image": image,
        "command": command,
        "init": True,
        "ports": [f"{settings.host}:{getattr(settings, name)}:{cport}" for name, cport in CONTAINER_PORTS],
        "volumes": [
            {
                "type": "bind",
                "source": _repository_source(settings.repository),
                "target": CONTAINER_REPOSITORY,
                "read_only": True,
            }
        ],
        "shm_size": settings.shm_size.strip(),
        "ulimits": {name: {"soft": soft, "hard": hard} for name, soft, hard in ulimits},
        "labels": labels,
        "healthcheck": {
            "test": list(HEALTHCHECK_TEST),
            "interval": "5s",
            "timeout": "4s",
            "retries": 3,
            "start_period": f"{max(10, int(settings.startup_timeout_s))}s",
        },
    }
    if settings.env:
        service["environment"] = dict(settings.env)
    gpus = gpu_request(settings.gpus)
    if gpus is not None:
        device: dict[str, Any] = {"driver": gpus.driver}
        if gpus.device_ids:
            device["device_ids"] = list(gpus.device_ids)
        else:
            device["count"] = "all"
        device["capabilities"] = list(gpus.capabilities[0])
        service["deploy"] = {"resources": {"reservations": {"devices": [device]}}}
    return {
        "services": {SERVICE: service},
        # labelled so the project's network counts as ours (and is checked for leftovers)
        "networks": {"default": {"labels": dict(labels)}},
    }


def render_compose(
    settings: ServerSettings,
    *,
    project: str | None = None,
    load_models: bool = False,
    ulimits: tuple[tuple[str, int, int], ...] = NVIDIA_ULIMITS,
) -> str:
    """`compose.yaml` text for `settings` (pure; byte-stable for equal inputs).

    The repository path is written as given: absolute, or relative to the compose file's directory.
    """
    from ruamel.yaml import YAML
    from ruamel.yaml.scalarstring import DoubleQuotedScalarString as Quoted

    doc = compose_document(settings, project=project, load_models=load_models, ulimits=ulimits)
    service = doc["services"][SERVICE]
    # Compose v1 reads YAML 1.1: quote what could turn into a number or a boolean there
    service["ports"] = [Quoted(p) for p in service["ports"]]
    service["shm_size"] = Quoted(service["shm_size"])
    for mapping in (service["labels"], doc["networks"]["default"]["labels"], service.get("environment", {})):
        for key in mapping:
            mapping[key] = Quoted(str(mapping[key]))
    yaml = YAML(typ="rt", pure=True)
    yaml.default_flow_style = False
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    buf = io.StringIO()
    yaml.dump(doc, buf)
    gpu_note = "GPUs reserved below" if "deploy" in service else "no GPU requested (server.gpus)"
    header = (
        "# Generated by deployer from the spec's server settings; regenerate instead of editing.\n"
        f"# Triton in {settings.image.strip()}, {gpu_note}.\n"
        + (
            "# Models are loaded at start-up (--load-model): `docker compose up -d` is enough.\n"
            if load_models
            else "# Models are loaded by `deployer up` through Triton's repository API.\n"
        )
    )
    return header + buf.getvalue()
