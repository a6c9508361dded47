"""Exit 0 when Triton's strict readiness endpoint answers 200 (used by HEALTHCHECK; needs only python3)."""

import os
import sys
import urllib.request

port = os.environ.get("TRITON_HTTP_PORT", "8000")
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=3) as response:
        sys.exit(0 if response.status == 200 else 1)
except Exception:
    sys.exit(1)
