"""Build deployer's nginx balancer image without any container registry (`deployer image build-balancer`).

Recipe: `docker/balancer/Dockerfile`, on the same Debian bookworm base as the CPU Triton image
(`ensure_base_image`: debootstrap + `docker import`); nginx-light comes from Debian's apt repository
inside the build. The image is labelled with a SHA-256 of its inputs (the Dockerfile and the base
image id); an existing image with the same label is reused, so provisioning is cheap in every CI job.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from deployer.server.docker.client import docker_build, docker_client, image_or_none
from deployer.server.docker.cpu_image import (
    BASE_IMAGE,
    LABEL_INPUTS,
    LABEL_KIND,
    ImageBuild,
    default_cache_dir,
    ensure_base_image,
    recipe_dir,
)
from deployer.server.docker.plan import BALANCER_IMAGE

__all__ = ["BALANCER_IMAGE", "balancer_inputs_digest", "balancer_recipe", "build_balancer_image"]

log = logging.getLogger(__name__)

_KIND = "nginx-balancer"


def balancer_recipe() -> Path:
    """The balancer's Dockerfile (next to the CPU image's recipe)."""
    return recipe_dir() / "balancer" / "Dockerfile"


def balancer_inputs_digest(dockerfile: bytes, base_image_id: str) -> str:
    """The cache key: what the image is built from (pure)."""
    h = hashlib.sha256(b"Dockerfile\0" + hashlib.sha256(dockerfile).digest())
    h.update(b"base\0" + base_image_id.encode())
    return h.hexdigest()


def build_balancer_image(*, tag: str = BALANCER_IMAGE, force: bool = False, client: Any = None,
                         cache_dir: Path | None = None) -> ImageBuild:
    """Build (or reuse, when its inputs are unchanged) the balancer image; concurrent calls are
    serialized by a lock in the cache dir, like the CPU image's."""
    from filelock import FileLock

    t0 = time.monotonic()
    client = client or docker_client()
    cache = cache_dir or default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache / "build.lock"), timeout=3600):
        base_id, base_built = ensure_base_image(client, BASE_IMAGE, work_dir=cache)
        dockerfile = balancer_recipe().read_bytes()
        digest = balancer_inputs_digest(dockerfile, base_id)
        current = image_or_none(client, tag)
        if current is not None and not force and (current.labels or {}).get(LABEL_INPUTS) == digest:
            log.info("image %s is current (inputs %s); reusing it", tag, digest[:12])
            return ImageBuild(tag, str(current.id), digest, False, base_built, time.monotonic() - t0)
        context = Path(tempfile.mkdtemp(prefix="balancer-context-", dir=cache))
        try:
            (context / "Dockerfile").write_bytes(dockerfile)
            labels = {LABEL_INPUTS: digest, LABEL_KIND: _KIND,
                      "org.opencontainers.image.title": "nginx load balancer for deployer's Triton replicas"}
            image_id = docker_build(client, context, tag, BASE_IMAGE, labels)
        finally:
            shutil.rmtree(context, ignore_errors=True)
            # the image a rebuild replaced is dangling now: drop it (ours only, by its kind label)
            try:
                client.images.prune(filters={"dangling": True, "label": f"{LABEL_KIND}={_KIND}"})
            except Exception as exc:  # pruning is housekeeping; never hide the build's outcome
                log.warning("pruning replaced balancer images failed: %s", exc)
    seconds = time.monotonic() - t0
    log.info("built %s (%s) in %.0f s", tag, image_id[:19], seconds)
    return ImageBuild(tag, image_id, digest, True, base_built, seconds)
