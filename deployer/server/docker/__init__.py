"""Triton in Docker: the engine client (`client`), the container as pure data (`plan`), the `docker`
runtime (`runtime`), the `compose` runtime and its file (`compose`, `compose_render`) and deployer's
registry-free CPU image (`cpu_image`). Nothing is re-exported: importing this package does not import
the docker SDK, which every module here imports lazily."""
