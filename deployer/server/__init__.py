"""Bring Triton up and down: `local` (tritonserver binary), `docker` (docker SDK) and `compose` runtimes."""
