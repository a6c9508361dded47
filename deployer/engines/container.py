"""Build engines inside the NGC TensorRT image that matches the target Triton release.

Triton's own QA builds TensorRT models in `nvcr.io/nvidia/tensorrt:<same YY.MM>-py3` (brief D.1), so the
engine's TensorRT equals the server's by construction. We run our own builder module in that image
(this package's source is mounted read-only; it needs only the stdlib, numpy and tensorrt there),
through the docker SDK with a GPU device request, and record the exact `docker run` command plus the
request JSON next to the engine so anyone can reproduce the build.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import os
import shlex
import types
import typing
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from deployer._files import atomic_write
from deployer.errors import BuildError, MissingDependency

from .manifest import manifest_path, read_manifest, write_manifest
from .preflight import OnnxFacts
from .request import BuildInfo, BuildRequest, CalibrationSettings

LOGGER = logging.getLogger(__name__)

SRC = Path("/deployer/src")
IN = Path("/deployer/in")
OUT = Path("/deployer/out")
CACHE = Path("/deployer/cache")
CALIB = Path("/deployer/calib")
ACCURACY = Path("/deployer/accuracy")


def default_image(triton_release: str) -> str:
    """`nvcr.io/nvidia/tensorrt:<YY.MM>-py3` — the same tag Triton's QA uses for its TRT models."""
    return f"nvcr.io/nvidia/tensorrt:{triton_release}-py3"


@dataclass(frozen=True)
class Mount:
    """A bind mount."""

    host: Path
    container: Path
    read_only: bool = True


@dataclass(frozen=True)
class ContainerBuildPlan:
    """Everything `run_container_build` does, as data (also written as the reproduce script)."""

    image: str
    command: tuple[str, ...]
    mounts: tuple[Mount, ...]
    environment: dict[str, str]
    gpus: str  # "all", a device id list "0,1", or "none" (no GPU request: CPU smoke of the container path)
    request_json: dict[str, Any]  # the request with container paths, + precomputed ONNX facts
    request_file: Path  # host path of the request JSON (next to the engine)
    reproduce_file: Path  # host path of the reproduce script
    user: str | None

    def docker_argv(self) -> list[str]:
        """The equivalent `docker run` command line."""
        argv = ["docker", "run", "--rm"]
        if self.gpus != "none":
            argv += ["--gpus", self.gpus if self.gpus == "all" else f"device={self.gpus}"]
        if self.user:
            argv += ["--user", self.user]
        for m in self.mounts:
            argv += ["-v", f"{m.host}:{m.container}:{'ro' if m.read_only else 'rw'}"]
        for k, v in sorted(self.environment.items()):
            argv += ["-e", f"{k}={v}"]
        return [*argv, self.image, *self.command]


def _facts_json(facts: OnnxFacts) -> dict[str, Any]:
    return {
        "digest": facts.digest,
        "has_qdq": facts.has_qdq,
        "float_types": sorted(facts.float_types),
        "inputs": [asdict(i) for i in facts.inputs],
    }


def request_to_json(request: BuildRequest) -> dict[str, Any]:
    """A JSON-ready dict of a BuildRequest (paths as strings)."""
    doc = asdict(request)
    return json.loads(json.dumps(doc, default=str))  # type: ignore[no-any-return]


def request_from_json(doc: dict[str, Any]) -> BuildRequest:
    """Inverse of `request_to_json`: every field, decoded from the dataclass annotations (a field added to
    BuildRequest later cannot be silently dropped on its way into the container)."""
    value = _decode(BuildRequest, doc)
    assert isinstance(value, BuildRequest)
    return value


def _decode(tp: Any, value: Any) -> Any:
    """JSON value -> `tp` (dataclasses, Path, tuple[X, ...], X | None, Literal and plain scalars/dicts).

    Stdlib only: it runs inside the NGC image, which has no pydantic.
    """
    if value is None:
        return None
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        hints = typing.get_type_hints(tp)
        return tp(**{f.name: _decode(hints[f.name], value[f.name])
                     for f in dataclasses.fields(tp) if f.name in value})
    if tp is Path:
        return Path(value)
    if origin is tuple:
        item = args[0] if len(args) == 2 and args[1] is Ellipsis else None
        return tuple(_decode(item if item is not None else args[i], v) for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        return _decode(options[0], value) if len(options) == 1 else value
    return value


def plan_container_build(
    request: BuildRequest,
    facts: OnnxFacts,
    *,
    image: str,
    gpus: str = "all",
    user: str | None = None,
) -> ContainerBuildPlan:
    """Map host paths into the container and compute the command (pure).

    The ONNX directory is mounted (external data stays next to the model), the output directory and
    cache directory read-write, each calibration and accuracy file's directory read-only.
    """
    onnx_dir = request.onnx_path.resolve().parent
    out_dir = request.output_path.resolve().parent
    mounts = [
        # Only our package: mounting a whole site-packages would shadow the image's numpy/tensorrt.
        Mount(Path(__file__).resolve().parents[1], SRC / "deployer"),
        Mount(onnx_dir, IN),
        Mount(out_dir, OUT, read_only=False),
        Mount(request.cache_dir.resolve(), CACHE, read_only=False),
    ]
    calibration = request.calibration
    if calibration is not None:
        files: list[Path] = []
        for i, f in enumerate(calibration.data_files):
            mounts.append(Mount(f.resolve().parent, CALIB / str(i)))
            files.append(CALIB / str(i) / f.name)
        cache_path = calibration.cache_path
        calibration = CalibrationSettings(
            tuple(files),
            calibration.batch_size,
            calibration.max_batches,
            CACHE / "calibration" / cache_path.name if cache_path else None,
            calibration.algorithm,
        )
    accuracy = request.accuracy
    if accuracy is not None:  # evaluation data and labels, read-only like the calibration data
        def mounted(i: int, f: Path) -> Path:
            mounts.append(Mount(f.resolve().parent, ACCURACY / str(i)))
            return ACCURACY / str(i) / f.name

        data = tuple(mounted(i, f) for i, f in enumerate(accuracy.data_files))
        labels = mounted(len(data), accuracy.labels) if accuracy.labels else None
        accuracy = replace(accuracy, data_files=data, labels=labels)
    inside = replace(
        request,
        onnx_path=IN / request.onnx_path.name,
        output_path=OUT / request.output_path.name,
        cache_dir=CACHE,
        calibration=calibration,
        accuracy=accuracy,
    )
    doc = {"request": request_to_json(inside), "facts": _facts_json(facts), "image": image}
    request_file = request.output_path.with_name(request.output_path.name + ".request.json")
    command = ("python3", "-m", "deployer.engines.container_entry", str(OUT / request_file.name))
    return ContainerBuildPlan(
        image=image,
        command=command,
        mounts=tuple(mounts),
        environment={"PYTHONPATH": str(SRC), "PYTHONDONTWRITEBYTECODE": "1"},
        gpus=gpus,
        request_json=doc,
        request_file=request_file,
        reproduce_file=request.output_path.with_name(request.output_path.name + ".reproduce.sh"),
        user=user,
    )


def write_reproduce_files(plan: ContainerBuildPlan) -> None:
    """Write the request JSON and a `reproduce.sh` with the exact docker command (before running it)."""
    atomic_write(plan.request_file, json.dumps(plan.request_json, indent=2, sort_keys=True).encode())
    script = "#!/bin/sh\n# Rebuilds this engine exactly as `deployer build --builder container` did.\nset -e\n"
    script += shlex.join(plan.docker_argv()) + "\n"
    atomic_write(plan.reproduce_file, script.encode())
    plan.reproduce_file.chmod(0o755)
    LOGGER.info("Saving reproduce command to %s", plan.reproduce_file)


def _docker_client(client: Any | None) -> Any:
    if client is not None:
        return client
    try:
        docker = importlib.import_module("docker")  # untyped SDK; a repo-level docker/ dir confuses mypy
    except ImportError as exc:
        raise MissingDependency(
            "the container builder needs the docker SDK", hint="pip install 'triton-deployer[docker]'"
        ) from exc
    try:
        return docker.from_env()
    except Exception as exc:
        raise MissingDependency(
            f"cannot reach the Docker engine: {exc}", hint="start dockerd / check DOCKER_HOST"
        ) from exc


def run_container_build(plan: ContainerBuildPlan, *, client: Any | None = None, timeout_s: float = 7200) -> BuildInfo:
    """Run `plan` with the docker SDK (GPU device request); returns the manifest the build wrote.

    Raises:
        MissingDependency: no docker SDK / daemon (exit 3).
        BuildError: the container exited non-zero (last log lines in details) or wrote no manifest.
    """
    write_reproduce_files(plan)
    docker_types = importlib.import_module("docker.types")
    docker_client = _docker_client(client)
    try:
        return _run(plan, docker_client, docker_types, timeout_s)
    finally:
        if client is None:
            docker_client.close()


def _run(plan: ContainerBuildPlan, docker_client: Any, docker_types: Any, timeout_s: float) -> BuildInfo:
    devices = []
    if plan.gpus == "all":
        devices.append(docker_types.DeviceRequest(count=-1, capabilities=[["gpu"]]))
    elif plan.gpus != "none":
        devices.append(docker_types.DeviceRequest(device_ids=plan.gpus.split(","), capabilities=[["gpu"]]))
    volumes = {str(m.host): {"bind": str(m.container), "mode": "ro" if m.read_only else "rw"} for m in plan.mounts}
    LOGGER.info("building in %s: %s", plan.image, shlex.join(plan.docker_argv()))
    container = docker_client.containers.run(
        plan.image,
        list(plan.command),
        volumes=volumes,
        environment=plan.environment,
        device_requests=devices,
        user=plan.user,
        detach=True,
    )
    try:
        status = container.wait(timeout=timeout_s)
        logs = container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)
    code = int(status.get("StatusCode", 1)) if isinstance(status, dict) else 1
    if code != 0:
        tail = "\n".join(logs.splitlines()[-40:])
        raise BuildError(
            f"the build container {plan.image} exited with {code}",
            details=tail,
            hint=f"reproduce with {plan.reproduce_file}",
        )
    engine = plan.request_file.with_name(plan.request_file.name.removesuffix(".request.json"))
    if not manifest_path(engine).is_file():
        raise BuildError(f"the build container finished but wrote no manifest for {engine}")
    # The manifest was written with container paths; record host path, builder and image.
    info = replace(read_manifest(engine), engine_path=engine, builder="container", image=plan.image)
    write_manifest(info)
    return info


def default_user() -> str | None:
    """`uid:gid` so files written to the host mounts belong to the caller (None on non-POSIX)."""
    if hasattr(os, "getuid"):
        return f"{os.getuid()}:{os.getgid()}"
    return None


def probe_trt_version(image: str, *, client: Any | None = None) -> str:
    """The TensorRT version inside `image` (no GPU needed to import tensorrt).

    Raises:
        MissingDependency / BuildError: no docker, or tensorrt not importable in the image.
    """
    docker_client = _docker_client(client)
    try:
        out = docker_client.containers.run(
            image, ["python3", "-c", "import tensorrt; print(tensorrt.__version__)"], remove=True
        )
    except Exception as exc:
        raise BuildError(f"cannot read the TensorRT version of {image}: {exc}") from exc
    text = out.decode().strip() if isinstance(out, bytes) else str(out).strip()
    return text.splitlines()[-1]
