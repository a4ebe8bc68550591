"""FuseMesh training: synthetic data, dataset readers, training loops, evaluation and ONNX export."""
