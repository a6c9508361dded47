"""Entry point run *inside* the NGC TensorRT image by the container builder.

`python3 -m deployer.engines.container_entry /deployer/out/<engine>.request.json`
Reads the request and the host-computed ONNX facts, builds in-process with the image's TensorRT and
writes the engine + manifest into the mounted output directory. Exit codes follow deployer.errors.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from deployer.errors import DeployerError

from .builder import build_engine
from .container import request_from_json
from .plan import NetworkInput
from .preflight import OnnxFacts


def main(argv: list[str]) -> int:
    """Build the engine described by the request file `argv[0]`; returns the process exit code."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if len(argv) != 1:
        sys.stderr.write("usage: python3 -m deployer.engines.container_entry REQUEST.json\n")
        return 2
    doc = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    request = request_from_json(doc["request"])
    f = doc["facts"]
    facts = OnnxFacts(
        digest=f["digest"],
        inputs=tuple(NetworkInput(i["name"], tuple(i["shape"]), i["dtype"], i["is_shape_tensor"]) for i in f["inputs"]),
        has_qdq=f["has_qdq"],
        float_types=frozenset(f["float_types"]),
    )
    try:
        result = build_engine(request, onnx_facts=facts)
    except DeployerError as exc:
        sys.stderr.write(exc.render() + "\n")
        return int(exc.exit_code)
    sys.stderr.write(f"built {result.info.engine_path} (TensorRT {result.info.trt_version})\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
