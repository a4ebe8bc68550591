"""FuseMesh application: capture, inference worker (ONNX Runtime), viewer."""
