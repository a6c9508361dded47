"""Triton model configs: render config.pbtxt from templates and prove it (render), compare with a served one (diff)."""
