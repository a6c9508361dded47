"""Docker engine helpers shared by the `docker` and `compose` runtimes: the client, images, deployer's
labelled resources, containers' logs and liveness, and the stop that unloads the models first.

Everything here only ever removes resources labelled `dev.deployer.managed=true`.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

from deployer.errors import EnvironmentProblem, MissingDependency
from deployer.server.backends import INVENTORY_SCRIPT, parse_inventory
from deployer.server.base import ServerState, StopReport
from deployer.server.docker.plan import LABEL_MANAGED, LABEL_PROJECT, image_hint, project_name
from deployer.server.lifecycle import Launched, unload_for_stop
from deployer.server.process import is_running
from deployer.server.state import clear_state, load_state

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 20  # after SIGTERM (Triton itself gives up after --exit-timeout-secs); then SIGKILL
CONTAINER_BACKENDS = "/opt/tritonserver/backends"  # Triton's default; deployer never overrides it


def docker_client(timeout_s: float = 60.0) -> Any:
    """A docker SDK client that has answered a ping; `EnvironmentProblem` when no engine answers."""
    try:
        from docker.client import DockerClient
    except ImportError as exc:
        raise MissingDependency(
            "the docker runtime needs the docker SDK, which is not installed",
            hint="pip install 'triton-deployer[docker]'",
        ) from exc
    where = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    try:
        client = DockerClient.from_env(timeout=int(timeout_s))
        client.ping()
    except Exception as exc:
        raise EnvironmentProblem(
            f"no Docker engine answers at {where}: {exc}",
            hint="start the Docker daemon (`sudo systemctl start docker`, or `sudo dockerd &`), "
            "or point DOCKER_HOST at a running one",
        ) from exc
    return client


def image_or_none(client: Any, ref: str) -> Any:
    """The image `ref`, or None when the engine has no such image."""
    from docker.errors import ImageNotFound

    try:
        return client.images.get(ref)
    except ImageNotFound:
        return None


def docker_build(client: Any, context: Path, tag: str, base_image: str, labels: dict[str, str]) -> str:
    """Build with the engine's builder, streaming its output to the log; return the image id."""
    from docker.errors import APIError

    lines: list[str] = []
    image_id = ""
    try:
        stream = client.api.build(
            path=str(context), tag=tag, buildargs={"BASE_IMAGE": base_image}, labels=labels,
            rm=True, forcerm=True, pull=False, decode=True,
        )  # fmt: skip
        for chunk in stream:
            if "stream" in chunk:
                text = str(chunk["stream"]).rstrip()
                if text:
                    lines.append(text)
                    log.info("build: %s", text)
            if "aux" in chunk and isinstance(chunk["aux"], dict) and "ID" in chunk["aux"]:
                image_id = str(chunk["aux"]["ID"])
            if "error" in chunk:
                raise EnvironmentProblem(
                    f"docker build of {tag} failed: {str(chunk['error']).strip()}",
                    details="\n".join(lines[-40:]),
                )
    except APIError as exc:
        raise EnvironmentProblem(f"docker build of {tag} failed: {exc}", details="\n".join(lines[-40:])) from exc
    return image_id or str(client.images.get(tag).id)


def require_image(client: Any, image: str) -> str:
    """The local image id of `image`; `EnvironmentProblem` naming the image and how to get it."""
    from docker.errors import ImageNotFound

    try:
        return str(client.images.get(image).id)
    except ImageNotFound as exc:
        raise EnvironmentProblem(
            f"Docker image {image} is not present on this machine", hint=image_hint(image)
        ) from exc


def is_ours(container: Any) -> bool:
    labels = container.labels or {}
    return bool(labels.get(LABEL_MANAGED) == "true")


def container_logs(container: Any, tail: int) -> str:
    try:
        data = container.logs(stdout=True, stderr=True, tail=tail)
    except Exception as exc:  # the log is a courtesy; never hide the real error behind it
        return f"<container log unavailable: {exc}>"
    return data.decode("utf-8", errors="replace") if isinstance(data, bytes) else str(data)


def save_log(container: Any, path: Path | None) -> None:
    if path is None:
        return
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(container_logs(container, 100_000), encoding="utf-8")


def remove_container(container: Any, log_path: Path | None, *, stop_timeout: int = STOP_TIMEOUT_S) -> None:
    """Stop (SIGTERM, then SIGKILL after `stop_timeout`), keep the log, remove. Idempotent."""
    from docker.errors import APIError, NotFound

    with contextlib.suppress(NotFound):
        container.reload()
        if container.status in ("running", "restarting", "paused"):
            with contextlib.suppress(APIError):
                container.stop(timeout=stop_timeout)
        save_log(container, log_path)
        container.remove(force=True, v=True)


def managed_resources(client: Any, project: str | None = None) -> dict[str, list[str]]:
    """Names of containers, networks and volumes labelled as deployer's (optionally one project's)."""
    filters = {"label": [f"{LABEL_MANAGED}=true"] + ([f"{LABEL_PROJECT}={project}"] if project else [])}
    return {
        "containers": [c.name for c in client.containers.list(all=True, filters=filters)],
        "networks": [n.name for n in client.networks.list(filters=filters)],
        "volumes": [v.name for v in client.volumes.list(filters=filters)],
    }


def remove_managed(client: Any, project: str | None = None) -> dict[str, list[str]]:
    """Remove every container, network and volume labelled as ours (optionally one project's)."""
    from docker.errors import APIError, NotFound

    filters = {"label": [f"{LABEL_MANAGED}=true"] + ([f"{LABEL_PROJECT}={project}"] if project else [])}
    removed: dict[str, list[str]] = {"containers": [], "networks": [], "volumes": []}
    for container in client.containers.list(all=True, filters=filters):
        remove_container(container, None, stop_timeout=5)
        removed["containers"].append(container.name)
    for kind, collection in (("networks", client.networks), ("volumes", client.volumes)):
        for item in collection.list(filters=filters):
            with contextlib.suppress(NotFound, APIError):
                item.remove()
                removed[kind].append(item.name)
    return removed


def refuse_if_running(client: Any, state_dir: Path) -> None:
    """`EnvironmentProblem` when a server for `state_dir` still runs (any runtime); otherwise remove the
    stopped leftovers of its project and forget a stale server.json."""
    previous = load_state(state_dir)
    project = project_name(state_dir)
    filters = {"label": [f"{LABEL_MANAGED}=true", f"{LABEL_PROJECT}={project}"]}
    running = client.containers.list(filters=filters)  # running only
    if running:
        raise EnvironmentProblem(
            f"a server started from {state_dir} is already running (container {running[0].name})",
            hint="run `deployer down` first",
        )
    if previous is not None and previous.runtime == "local" and is_running(previous.pid):
        raise EnvironmentProblem(
            f"a server started from {state_dir} is already running (local runtime, pid {previous.pid})",
            hint="run `deployer down` first",
        )
    remove_managed(client, project)
    if previous is not None:
        clear_state(state_dir)


_MEMLOCK_ALLOWED: dict[str, bool] = {}  # engine id -> may containers get memlock=-1


def engine_allows_memlock(client: Any, image: str) -> bool:
    """Whether this engine can give a container `memlock=-1` (probed once per engine and process).

    Engines without CAP_SYS_RESOURCE (rootless Docker, some sandboxes and CI runners) refuse it at
    container start. It only matters for pinned GPU memory, so deployer then runs with the engine's
    default limit instead of not at all, and says so.
    """
    from docker.errors import APIError, NotFound
    from docker.types import Ulimit

    engine = str(client.info().get("ID", "")) or "default"
    if engine in _MEMLOCK_ALLOWED:
        return _MEMLOCK_ALLOWED[engine]
    allowed = True
    probe = client.containers.create(
        image,
        entrypoint=["true"],
        command=[],
        ulimits=[Ulimit(name="memlock", soft=-1, hard=-1)],
        labels={LABEL_MANAGED: "true", LABEL_PROJECT: "deployer-memlock-probe"},
        network_disabled=True,
    )
    try:
        probe.start()
    except APIError as exc:
        allowed = "rlimit" not in str(exc)  # any other failure shows up again at the real start
    finally:
        with contextlib.suppress(NotFound, APIError):
            probe.remove(force=True)
    if not allowed:
        log.warning("the Docker engine refuses ulimit memlock=-1 (no CAP_SYS_RESOURCE); using its default limit")
    _MEMLOCK_ALLOWED[engine] = allowed
    return allowed


def container_running(container: Any) -> bool:
    from docker.errors import NotFound

    try:
        container.reload()
    except NotFound:
        return False
    return bool(container.status in ("created", "running", "restarting"))


def exit_note(container: Any) -> str:
    from docker.errors import NotFound

    try:
        container.reload()
    except NotFound:
        return ""
    if container.status in ("exited", "dead"):
        code = container.attrs.get("State", {}).get("ExitCode")
        return f" (container {container.name} exited with code {code})"
    return ""


def container_backends(container: Any) -> tuple[tuple[str, str], ...]:
    """(name, kind) of the backends in the running container's backend dir, read inside it with
    `INVENTORY_SCRIPT` (`docker exec`): the image's own directory is the truth, whatever its tag says.
    () when the image has no `sh` or the exec fails; the report then says the implementation is unknown."""
    from docker.errors import APIError

    try:
        result = container.exec_run(["sh", "-c", INVENTORY_SCRIPT, "sh", CONTAINER_BACKENDS], stdout=True, stderr=True)
    except APIError as exc:
        log.warning("cannot list the backends of container %s: %s", container.name, exc)
        return ()
    output = result.output.decode("utf-8", errors="replace") if isinstance(result.output, bytes) else ""
    found = parse_inventory(output)
    if not found:
        log.warning("no backends found in %s of container %s (exit %s): %s", CONTAINER_BACKENDS, container.name,
                    result.exit_code, output.strip()[:200])
    return found


def container_launched(container: Any, state: ServerState, describe: str) -> Launched:
    """What the shared lifecycle watches of a started container (both container runtimes)."""
    return Launched(
        state=state,
        describe=describe,
        alive=lambda: container_running(container),
        log_tail=lambda lines: container_logs(container, lines),
        backends=lambda: container_backends(container),
        exit_note=lambda: exit_note(container),
    )


def unload_before_stop(state: ServerState, container: Any) -> StopReport:
    """`lifecycle.unload_for_stop` while the container still runs (nothing to unload otherwise)."""
    return unload_for_stop(state) if container_running(container) else StopReport()
