"""deployer: from an ONNX file to a proven NVIDIA Triton deployment.

Library entry points (imported lazily so `import deployer` stays cheap):

- `Pipeline.load(spec)`: the whole pipeline over one spec, stage by stage (see deployer.pipeline).
- `load_deployment(spec, fallback=None)`: validate a spec into a `Deployment` (raises SpecError).
- `init_spec(model.onnx, ...)`: scaffold a spec.
- `build(dep)`, `render_all(dep)`, `plan(dep)`, `publish(dep)`, `rollback(dep, model)`: engines,
  config.pbtxt and the versioned repository.
- `deploy(dep, ...)`, `up(dep)`, `down(dep)`, `status(dep)`, `smoke(dep)`: serving and proof.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_deployment": "deployer.spec",
    "Deployment": "deployer.spec",
    "init_spec": "deployer.spec.init",
    "Pipeline": "deployer.pipeline",
    "build": "deployer.pipeline",
    "render_all": "deployer.pipeline",
    "plan": "deployer.pipeline",
    "publish": "deployer.pipeline",
    "rollback": "deployer.pipeline",
    "deploy": "deployer.pipeline",
    "up": "deployer.pipeline",
    "down": "deployer.pipeline",
    "status": "deployer.pipeline",
    "smoke": "deployer.pipeline",
    "tune": "deployer.pipeline",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'deployer' has no attribute {name!r}")
