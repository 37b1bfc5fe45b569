"""neurospeech.service: the live runtime. It must never import torch (a test checks this)."""

__all__: list[str] = []
