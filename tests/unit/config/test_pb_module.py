"""`model_config_module` loads Triton's generated schema without the gRPC client, and the client later
reuses that very module (one registration in protobuf's pool, one ModelConfig class)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]

CHECK = """
import sys
from deployer.config import pb
cfg = pb.parse_pbtxt('name: "m" max_batch_size: 4 backend: "python"')
assert cfg.max_batch_size == 4
assert "grpc" not in sys.modules and "tritonclient.grpc" not in sys.modules, sorted(sys.modules)
module = pb.model_config_module()
import tritonclient.grpc as client
from tritonclient.grpc import model_config_pb2
import tritonclient.grpc.model_config_pb2 as again
assert module is model_config_pb2 is again
response = client.service_pb2.ModelConfigResponse()
assert type(response.config) is module.ModelConfig  # what smoke reads from the server is our type
response.config.CopyFrom(cfg)
print("ok")
"""


def test_schema_without_the_grpc_client_then_shared_with_it() -> None:
    proc = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_validate_imports_neither_grpc_nor_onnxruntime_nor_jinja2() -> None:
    code = (
        "import sys\nsys.argv = ['deployer', 'validate', 'examples/quickstart/deployer.yaml']\n"
        "from deployer.cli import main\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
        "heavy = {'grpc', 'onnxruntime', 'jinja2', 'tritonclient.grpc', 'tritonclient.http'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
