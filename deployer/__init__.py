"""deployer: from an ONNX file to a proven NVIDIA Triton deployment."""

__version__ = "0.1.0"
