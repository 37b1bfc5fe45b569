"""Speech representations (mel, whisper, wav2vec2) computed on whole audio files.

Every representation has frame ``k`` centred at ``k / sfreq_out`` s (120 Hz by default, the brain rate) and
``ceil(n_samples * sfreq_out / sr)`` frames. ``get_extractor(kind, **params)`` builds one;
``get_extractor(spec.kind, **spec.params)`` rebuilds the one a model contract names (model hashes checked).
torch/transformers (wav2vec2) are imported only when used; nothing is ever downloaded.
"""

from .cache import FeatureCache, fit_standardizer, read_audio
from .extractors import EXTRACTORS, FeatureExtractor, MelExtractor, get_extractor
from .mel import log_mel, mel_filterbank, n_output_frames
from .wav2vec2 import Wav2Vec2Extractor
from .whisper import WhisperEncoder, WhisperExtractor, default_whisper_dir, resample_frames, whisper_log_mel

__all__ = [
    "EXTRACTORS",
    "FeatureCache",
    "FeatureExtractor",
    "MelExtractor",
    "Wav2Vec2Extractor",
    "WhisperEncoder",
    "WhisperExtractor",
    "default_whisper_dir",
    "fit_standardizer",
    "get_extractor",
    "log_mel",
    "mel_filterbank",
    "n_output_frames",
    "read_audio",
    "resample_frames",
    "whisper_log_mel",
]
