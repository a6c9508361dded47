"""deployer: from an ONNX file to a proven NVIDIA Triton deployment.

Library entry points (imported lazily so `import deployer` stays cheap):

- `load_deployment(spec, fallback=None)`: validate a spec into a `Deployment` (raises SpecError).
- `init_spec(model.onnx, ...)`: scaffold a spec.
- `render_all(dep)`, `plan(dep)`, `publish(dep)`: config.pbtxt and the versioned repository.
- `deploy(dep, ...)`, `up(dep)`, `down(dep)`, `status(dep)`, `smoke(dep)`: serving and proof.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_deployment": "deployer.spec",
    "Deployment": "deployer.spec",
    "init_spec": "deployer.init",
    "render_all": "deployer.pipeline",
    "plan": "deployer.pipeline",
    "publish": "deployer.pipeline",
    "deploy": "deployer.serve",
    "up": "deployer.serve",
    "down": "deployer.serve",
    "status": "deployer.serve",
    "smoke": "deployer.serve",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'deployer' has no attribute {name!r}")
