"""neurospeech.models: brain encoder, contrastive trainer, ONNX export, candidate banks, working-memory RNN."""

__all__: list[str] = []
