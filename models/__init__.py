"""neurospeech.models: brain encoder, contrastive trainer, ONNX export, candidate banks, WM RNN."""

__all__: list[str] = []
