#!/usr/bin/env bash
# Idempotent: installs `wrk` (the reference HTTP load generator for benchmarks/loadgen_vs_wrk.py) with
# apt when it is missing and we are root; otherwise says what to do and leaves the machine alone.
set -euo pipefail
command -v wrk >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "provision-wrk: installing wrk with apt" >&2
  env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends wrk \
    || { env DEBIAN_FRONTEND=noninteractive apt-get update -q \
         && env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends wrk; }
else
  echo "provision-wrk: wrk not found and not root with apt; benchmarks/loadgen_vs_wrk.py needs: apt-get install -y wrk" >&2
fi
