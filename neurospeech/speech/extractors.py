"""Pluggable speech feature extractors: ``get_extractor('mel' | 'whisper' | 'wav2vec2', **params)``.

Every extractor maps a whole mono audio file to ``(F, n_frames)`` float32 features with frame ``k`` centred at
``k / sfreq_out`` s (120 Hz by default, the brain rate) and ``n_frames = ceil(n_samples * sfreq_out / sr)``.
Pretrained extractors are imported lazily so that ``mel`` works with numpy/scipy alone.
"""

from __future__ import annotations

import importlib
import json
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..errors import ConfigError
from .mel import log_mel

__all__ = ["EXTRACTORS", "FeatureExtractor", "MelExtractor", "get_extractor", "layer_range"]


class FeatureExtractor:
    """Base class of speech feature extractors.

    Attributes
    ----------
    kind : str
        Registry name (``mel``, ``whisper``, ``wav2vec2``).
    dim : int
        Feature dimension F.
    params : dict
        JSON-able settings that fully determine the output (with the model hash for pretrained models); part
        of the cache key and of the model contract's ``SpeechSpec.params``.
    sfreq_out : float
        Output frame rate in Hz.
    """

    kind: str = ""
    dim: int = 0
    sfreq_out: float = 120.0

    @property
    def params(self) -> dict[str, Any]:  # pragma: no cover - overridden
        raise NotImplementedError

    def cache_key(self) -> str:
        """Canonical JSON of ``kind`` + ``params`` without local paths (the :class:`FeatureCache` key).

        Model locations (``model_dir``, ``model_path``) are left out: the model's hash is in ``params``.
        """
        p = {k: v for k, v in self.params.items() if k not in ("model_dir", "model_path")}
        return json.dumps({"kind": self.kind, "params": p}, sort_keys=True, separators=(",", ":"))

    def __call__(self, wav: NDArray, sr: float) -> NDArray[np.float32]:
        """Features of a whole mono file.

        Parameters
        ----------
        wav : ndarray, shape (n,)
            Mono audio.
        sr : float
            Its sampling rate in Hz.

        Returns
        -------
        features : ndarray, shape (dim, ceil(n * sfreq_out / sr)), float32
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kind={self.kind!r}, dim={self.dim}, params={self.params})"


class MelExtractor(FeatureExtractor):
    """Log-mel spectrogram (:func:`neurospeech.speech.mel.log_mel`); no weights needed.

    Parameters
    ----------
    n_mels : int
        Mel bands (paper: 120).
    sfreq_out : float
        Output rate in Hz.
    win_length : float
        Analysis window in seconds.
    fmin, fmax : float
        Band edges in Hz (``fmax`` None: Nyquist of each file).
    floor : float
        Power floor of the log.
    """

    kind = "mel"

    def __init__(self, n_mels: int = 120, sfreq_out: float = 120.0, win_length: float = 0.025,
                 fmin: float = 0.0, fmax: float | None = None, floor: float = 1e-8) -> None:
        if int(n_mels) < 1:
            raise ConfigError(f"mel n_mels must be >= 1, got {n_mels!r}")
        if not float(sfreq_out) > 0:
            raise ConfigError(f"mel sfreq_out must be > 0 Hz, got {sfreq_out!r}")
        self.n_mels = int(n_mels)
        self.dim = self.n_mels
        self.sfreq_out = float(sfreq_out)
        self.win_length = float(win_length)
        self.fmin = float(fmin)
        self.fmax = None if fmax is None else float(fmax)
        self.floor = float(floor)

    @property
    def params(self) -> dict[str, Any]:
        return {"n_mels": self.n_mels, "sfreq_out": self.sfreq_out, "win_length": self.win_length,
                "fmin": self.fmin, "fmax": self.fmax, "floor": self.floor}

    def __call__(self, wav: NDArray, sr: float) -> NDArray[np.float32]:
        return log_mel(wav, sr, sfreq_out=self.sfreq_out, n_mels=self.n_mels, win_length=self.win_length,
                       fmin=self.fmin, fmax=self.fmax, floor=self.floor)


def layer_range(layers: Any, n_layers: int, kind: str) -> tuple[int, int]:
    """Normalise ``k`` or ``(lo, hi)`` to an inclusive range in ``0..n_layers`` (ConfigError otherwise)."""
    try:
        if np.ndim(layers) == 0:
            lo = hi = int(layers)
        elif len(layers) in (1, 2):
            lo, hi = int(layers[0]), int(layers[-1])
        else:
            raise ValueError(f"{len(layers)} values")
    except (TypeError, ValueError, IndexError) as exc:
        raise ConfigError(f"{kind} layers must be an int or (lo, hi), got {layers!r}") from exc
    if not 0 <= lo <= hi <= n_layers:
        raise ConfigError(f"{kind} layers {layers!r} out of range; use k or (lo, hi) with "
                          f"0 <= lo <= hi <= {n_layers} for this model")
    return lo, hi


# kind -> "module:class", imported on demand (pretrained extractors pull in ctranslate2 / transformers lazily)
EXTRACTORS: dict[str, str] = {
    "mel": "neurospeech.speech.extractors:MelExtractor",
    "whisper": "neurospeech.speech.whisper:WhisperExtractor",
    "wav2vec2": "neurospeech.speech.wav2vec2:Wav2Vec2Extractor",
}


def get_extractor(kind: str, **params: Any) -> FeatureExtractor:
    """Build a speech feature extractor by name.

    Parameters
    ----------
    kind : {'mel', 'whisper', 'wav2vec2'}
        Representation.
    **params
        Settings of that extractor (see its class); unknown names raise :class:`ConfigError`.

    Raises
    ------
    ConfigError
        Unknown kind (the message lists the allowed kinds) or invalid settings.
    """
    if kind not in EXTRACTORS:
        raise ConfigError(f"unknown speech feature kind {kind!r}; allowed kinds: {sorted(EXTRACTORS)}")
    module, attr = EXTRACTORS[kind].split(":")
    cls = getattr(importlib.import_module(module), attr)
    try:
        return cls(**params)
    except TypeError as exc:
        raise ConfigError(f"invalid settings for speech features {kind!r}: {exc}; "
                          f"see {cls.__module__}.{cls.__name__} for the accepted names") from exc
