"""ONNX export, inference backends (torch, onnxruntime, tensorrt) and the engine cache."""
