"""Export: ONNX (fp32, int8, fp16) and TensorRT artifacts, each checked against PyTorch."""
