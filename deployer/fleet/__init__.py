"""N Triton replicas on one shared repository behind nginx, and rolling updates across them."""
