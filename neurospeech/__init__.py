"""neurospeech: real-time decoding of perceived speech from M/EEG.

Subpackages
-----------
neurospeech.service   the live runtime (LSL acquisition, ONNX scoring, ZeroMQ publishing); never imports torch
neurospeech.models    brain encoder, trainer, export (PyTorch, the ``train`` extra), working-memory RNN
neurospeech.tools     simulate, replay, listen, bench, analyses
neurospeech.data      BIDS dataset format (reader / writer)
"""

from __future__ import annotations

from .errors import NeurospeechError

__version__ = "0.1.0"
__all__ = ["NeurospeechError", "__version__"]
