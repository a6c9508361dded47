"""Can the onnxruntime backend serve a tensorrt model instead (`--fallback onnxruntime`, CPU CI)?"""

from __future__ import annotations

from .request import BuildRequest


def onnxruntime_fallback_possible(request: BuildRequest) -> tuple[bool, str]:
    """Whether this model can be served by the onnxruntime backend instead (CPU CI), and why (not)."""
    try:
        import onnx
    except ImportError:  # pragma: no cover - onnx is a core dependency
        return False, "the onnx package is missing"
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False, "onnxruntime is not installed"
    if not request.onnx_path.is_file():
        return False, f"ONNX file not found: {request.onnx_path}"
    try:
        model = onnx.load(str(request.onnx_path), load_external_data=False)
    except Exception as exc:
        return False, f"cannot read ONNX {request.onnx_path}: {exc}"
    inits = {i.name for i in model.graph.initializer}
    if request.max_batch_size > 0:
        for vi in [*model.graph.input, *model.graph.output]:
            if vi.name in inits:
                continue
            dim = vi.type.tensor_type.shape.dim
            if not dim or (dim[0].HasField("dim_value") and dim[0].dim_value > 0):
                return False, (
                    f"onnxruntime batches only when dim 0 of every input/output is dynamic; {vi.name!r} is not "
                    f"(max_batch_size {request.max_batch_size})"
                )
    note = ""
    if request.precision not in ("fp32", "tf32"):
        note = f"; runs at the ONNX's own precision, not the requested {request.precision}"
    return True, "onnxruntime can serve this ONNX" + note
