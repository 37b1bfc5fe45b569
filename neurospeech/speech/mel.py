"""Log-mel spectrograms on an explicit output time grid (numpy/scipy only, no weights).

Frame ``k`` of every representation in :mod:`neurospeech.speech` is centred at ``t = k / sfreq_out`` seconds
from the first audio sample, and a file of ``n`` samples at ``sr`` Hz gives
``n_output_frames(n, sr, sfreq_out) = ceil(n * sfreq_out / sr)`` frames (the frames whose centre lies inside
the audio). Analysis windows reaching outside the audio see zeros.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from ..errors import ConfigError, DataFormatError

__all__ = ["hz_to_mel", "log_mel", "mel_filterbank", "mel_to_hz", "n_output_frames"]


def n_output_frames(n_samples: int, sr: float, sfreq_out: float) -> int:
    """Number of feature frames for ``n_samples`` of audio: ``ceil(n_samples * sfreq_out / sr)``."""
    return math.ceil(n_samples * sfreq_out / sr - 1e-9)


# ---------------------------------------------------------------------------- mel scale (Slaney, as librosa)
_F_SP = 200.0 / 3  # Hz per mel below the break
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = math.log(6.4) / 27.0


def hz_to_mel(f: NDArray | float, htk: bool = False) -> NDArray:
    """Frequency in Hz to mel (Slaney's scale by default, ``htk=True`` for 2595 log10(1 + f/700))."""
    f = np.asarray(f, dtype=np.float64)
    if htk:
        return 2595.0 * np.log10(1.0 + f / 700.0)
    mel = f / _F_SP
    log_part = _MIN_LOG_MEL + np.log(np.maximum(f, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
    return np.where(f >= _MIN_LOG_HZ, log_part, mel)


def mel_to_hz(m: NDArray | float, htk: bool = False) -> NDArray:
    """Inverse of :func:`hz_to_mel`."""
    m = np.asarray(m, dtype=np.float64)
    if htk:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    lin = _F_SP * m
    log_part = _MIN_LOG_HZ * np.exp(_LOGSTEP * (m - _MIN_LOG_MEL))
    return np.where(m >= _MIN_LOG_MEL, log_part, lin)


def mel_filterbank(
    sr: float, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None,
    htk: bool = False, norm: str | None = "slaney",
) -> NDArray[np.float32]:
    """Triangular mel filterbank, identical to ``librosa.filters.mel`` (which Whisper uses).

    Parameters
    ----------
    sr : float
        Audio sampling rate in Hz.
    n_fft : int
        FFT length; the filters act on the ``n_fft // 2 + 1`` bins of ``rfft``.
    n_mels : int
        Number of bands.
    fmin, fmax : float
        Band edges in Hz (``fmax`` None: ``sr / 2``).
    htk : bool
        HTK mel formula instead of Slaney's.
    norm : 'slaney' or None
        ``'slaney'`` scales each triangle to unit area (constant energy per band).

    Returns
    -------
    weights : ndarray, shape (n_mels, n_fft // 2 + 1), float32
    """
    fmax = sr / 2.0 if fmax is None else float(fmax)
    if not 0 <= fmin < fmax <= sr / 2.0 + 1e-6:
        raise ConfigError(f"mel band edges must satisfy 0 <= fmin < fmax <= sr/2, got fmin={fmin}, "
                          f"fmax={fmax}, sr={sr}")
    if n_mels < 1 or n_fft < 2:
        raise ConfigError(f"n_mels must be >= 1 and n_fft >= 2, got n_mels={n_mels}, n_fft={n_fft}")
    fftfreqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(fmin, htk), hz_to_mel(fmax, htk), n_mels + 2), htk)
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fftfreqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    if norm == "slaney":
        weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, None]
    elif norm is not None:
        raise ConfigError(f"mel norm must be 'slaney' or None, got {norm!r}")
    return weights.astype(np.float32)


# ---------------------------------------------------------------------------- spectrogram
def _check_wav(wav: NDArray, sr: float) -> NDArray[np.float32]:
    x = np.asarray(wav)
    if x.ndim == 2 and 1 in x.shape:
        x = x.reshape(-1)
    if x.ndim != 1:
        raise DataFormatError(f"audio must be mono, shape (n,), got shape {x.shape}; "
                              "average the channels first")
    if not (sr > 0 and math.isfinite(sr)):
        raise ConfigError(f"audio sampling rate must be a positive number of Hz, got {sr!r}")
    if x.size == 0:
        raise DataFormatError("audio is empty (0 samples)")
    x = x.astype(np.float32, copy=False)
    if not np.all(np.isfinite(x)):
        raise DataFormatError("audio contains NaN or infinite samples")
    return x


def log_mel(
    wav: NDArray,
    sr: float,
    sfreq_out: float = 120.0,
    n_mels: int = 120,
    win_length: float = 0.025,
    n_fft: int | None = None,
    fmin: float = 0.0,
    fmax: float | None = None,
    floor: float = 1e-8,
    chunk_frames: int = 4096,
) -> NDArray[np.float32]:
    """Natural-log mel power spectrogram with frame ``k`` centred at ``k / sfreq_out`` s.

    Parameters
    ----------
    wav : ndarray, shape (n,)
        Mono audio (float, nominally in [-1, 1]).
    sr : float
        Audio sampling rate in Hz.
    sfreq_out : float
        Frame rate in Hz (120 = the brain rate).
    n_mels : int
        Mel bands (paper: 120).
    win_length : float
        Hann analysis window length in seconds.
    n_fft : int or None
        FFT length (zero-padded window); None: the next power of two >= max(window, 64 ms), fine enough that
        no low mel band is empty.
    fmin, fmax : float
        Mel band edges in Hz (``fmax`` None: ``sr / 2``).
    floor : float
        Power floor before the log (``log(max(power, floor))``): silence maps to ``log(floor)``. Power is
        normalised by the window energy: a unit-amplitude sine gives a peak band log-power of
        about 1.4, silence ``log(1e-8) = -18.4``.
    chunk_frames : int
        Frames per FFT batch (bounds memory on long files).

    Returns
    -------
    logmel : ndarray, shape (n_mels, n_frames), float32
        ``n_frames = ceil(n * sfreq_out / sr)``.
    """
    x = _check_wav(wav, sr)
    if not (sfreq_out > 0 and math.isfinite(sfreq_out)):
        raise ConfigError(f"sfreq_out must be a positive number of Hz, got {sfreq_out!r}")
    if not floor > 0:
        raise ConfigError(f"log floor must be > 0, got {floor!r}")
    win = max(2, round(win_length * sr))
    if n_fft is None:
        n_fft = 1 << math.ceil(math.log2(max(win, 0.064 * sr)))
    if n_fft < win:
        raise ConfigError(f"n_fft ({n_fft}) must be >= the window length in samples ({win})")
    fb = mel_filterbank(sr, n_fft, n_mels, fmin, fmax)
    window = np.hanning(win + 2)[1:-1].astype(np.float32)  # periodic-like, no zero end points
    norm = 1.0 / float(np.sum(window**2))
    n_frames = n_output_frames(x.size, sr, sfreq_out)
    half = win // 2
    pad = np.zeros(x.size + 2 * win + math.ceil(sr / sfreq_out) + 1, dtype=np.float32)
    pad[win : win + x.size] = x
    centres = np.rint(np.arange(n_frames) * (sr / sfreq_out)).astype(np.int64)
    out = np.empty((n_mels, n_frames), dtype=np.float32)
    offs = np.arange(win) - half + win
    for s in range(0, n_frames, chunk_frames):
        c = centres[s : s + chunk_frames]
        frames = pad[c[:, None] + offs[None, :]] * window
        power = np.abs(np.fft.rfft(frames, n=n_fft, axis=1)) ** 2 * norm
        out[:, s : s + len(c)] = np.log(np.maximum(fb @ power.T.astype(np.float32), floor))
    return out
