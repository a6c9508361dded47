#!/usr/bin/env bash
# Idempotent CI provisioning for the `docker`-marked tests:
#   1. install docker.io / docker-compose / debootstrap with apt when missing (root only),
#   2. start dockerd in the background when no engine answers, wait until `docker info` works,
#   3. build deployer's CPU Triton image and the nginx balancer image (replicas on compose) when absent
#      or stale; reuse them when current.
# Safe to run on every CI job: each step is skipped when already done. Exits non-zero when the
# engine or the image cannot be had, so CI fails instead of skipping the docker tests.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "provision-docker: $*" >&2; }
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo -n "$@"; else
    log "need root for: $*"; return 1
  fi
}

if [ -x .venv/bin/python ]; then py="${PYTHON:-.venv/bin/python}"; else py="${PYTHON:-python3}"; fi

# -- 1. packages ---------------------------------------------------------------------------------
missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
if ! command -v docker-compose >/dev/null 2>&1 && ! docker compose version >/dev/null 2>&1; then
  missing+=(docker-compose)
fi
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing ${missing[*]} with apt"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# -- 2. engine -----------------------------------------------------------------------------------
if docker info >/dev/null 2>&1; then
  log "a Docker engine answers"
else
  if [ -n "${DOCKER_HOST:-}" ]; then
    log "DOCKER_HOST=$DOCKER_HOST does not answer; not starting a local dockerd"; exit 3
  fi
  # a dockerd that died leaves its pid file behind, and a new one refuses to start while it exists
  if [ -f /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
    as_root rm -f /var/run/docker.pid
  fi
  log "starting dockerd in the background (log: /var/log/dockerd.log)"
  as_root sh -c 'setsid dockerd >>/var/log/dockerd.log 2>&1 </dev/null &'
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  if ! docker info >/dev/null 2>&1; then
    log "dockerd did not answer within 60 s; last lines of /var/log/dockerd.log:"
    tail -n 30 /var/log/dockerd.log >&2 || true
    exit 3
  fi
  log "dockerd answers"
fi

# -- 3. CPU Triton image -------------------------------------------------------------------------
"$py" - <<'EOF'
import logging
import sys

from deployer.errors import DeployerError
from deployer.server.docker.balancer_image import build_balancer_image
from deployer.server.docker.cpu_image import build_cpu_image

logging.basicConfig(level=logging.INFO, format="provision-docker: %(message)s", stream=sys.stderr)
logging.getLogger("deployer.server.docker.cpu_image").setLevel(logging.INFO)
logging.getLogger("deployer.server.docker.balancer_image").setLevel(logging.INFO)
for build in (build_cpu_image, build_balancer_image):
    try:
        result = build()
    except DeployerError as exc:
        print(f"provision-docker: {exc.render()}", file=sys.stderr)
        sys.exit(int(exc.exit_code))
    action = "built" if result.built else "reused"
    print(
        f"provision-docker: {action} {result.tag} ({result.image_id[:19]}, inputs {result.inputs_digest[:12]}) "
        f"in {result.seconds:.1f} s",
        file=sys.stderr,
    )
EOF
