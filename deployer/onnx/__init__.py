"""ONNX models: reading the graph (info), running it with ONNX Runtime (probe)."""
