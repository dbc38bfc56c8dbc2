"""Files going out and coming back: checkpoints, run folders, loading trained models, ONNX export
and the PyTorch twin.  The safetensors and atomic-write primitives are in ``dcnn.utils.files``."""
