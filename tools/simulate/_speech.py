"""Speech stimuli for the simulator: a numpy speech-like synthesiser with exact word and phone times, and
the acoustic drivers of the simulated auditory cortex (envelope, onsets, band envelopes).

The synthesiser is a small source-filter model: glottal pulse trains through formant resonators for vowels,
nasals and liquids; band-passed noise for fricatives; closure + burst for stops; a falling F0 contour per
sentence. It needs only numpy/scipy and is what CI uses (optional TTS is in :mod:`._tts`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray
from scipy import signal

from neurospeech.errors import ConfigError

from ._lexicon import ARTICULATORY, PHONES, Lexicon, Phone, seeded_rng

__all__ = ["AUDIO_SR", "N_BANDS", "Utterance", "acoustic_drivers", "synthesize_sentence"]

AUDIO_SR = 16000
N_BANDS = 8


@dataclass
class Utterance:
    """A synthesised sentence.

    Attributes
    ----------
    wav : array, shape (n,), float32
    sr : int
    words : list of (word, start_s, end_s)
        Exact times in the wav.
    phones : list of (symbol, start_s, end_s)
    """

    wav: NDArray[np.float32]
    sr: int
    words: list[tuple[str, float, float]] = field(default_factory=list)
    phones: list[tuple[str, float, float]] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return len(self.wav) / self.sr


@lru_cache(maxsize=64)
def _resonator(freq: float, bw: float, sr: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    r = np.exp(-np.pi * bw / sr)
    a = np.array([1.0, -2 * r * np.cos(2 * np.pi * freq / sr), r * r])
    b = np.array([a.sum()])  # unit gain at DC
    return b, a


@lru_cache(maxsize=32)
def _bandpass(lo: float, hi: float, sr: int) -> NDArray[np.float64]:
    return signal.butter(2, [lo, min(hi, sr / 2 * 0.95)], btype="bandpass", fs=sr, output="sos")


def _noise_band(ph: Phone) -> tuple[float, float]:
    if ph.noise_band is None:
        raise ConfigError(
            f"phone {ph.symbol!r} ({' '.join(ph.features)}) has no noise_band: stops and fricatives need their "
            "burst/frication band in Hz, e.g. (2000.0, 6000.0)"
        )
    return ph.noise_band


def _ramp(x: NDArray[np.float64], sr: int, ms: float = 12.0) -> NDArray[np.float64]:
    n = min(len(x) // 2, int(sr * ms / 1000))
    if n > 0:
        w = 0.5 - 0.5 * np.cos(np.pi * np.arange(n) / n)
        x[:n] *= w
        x[-n:] *= w[::-1]
    return x


def _voiced(n: int, f0: NDArray[np.float64], formants: tuple[float, ...], sr: int,
            rng: np.random.Generator) -> NDArray[np.float64]:
    phase = np.cumsum(f0 * (1 + 0.01 * rng.standard_normal(n)) / sr)
    src = np.diff(np.floor(phase), prepend=np.floor(phase[0])).astype(np.float64)  # a pulse per period
    src = signal.lfilter([1.0], [1.0, -0.95], src)  # glottal roll-off
    y = src - src.mean()
    out = np.zeros(n)
    for f, g, bw in zip(formants, (1.0, 0.6, 0.3), (80.0, 110.0, 160.0), strict=False):
        b, a = _resonator(float(f), bw, sr)
        out += g * signal.lfilter(b, a, y)
    return out


def synthesize_sentence(words: list[str], lexicon: Lexicon, key: str, voice: int = 0,
                        sr: int = AUDIO_SR, lead: float = 0.25, tail: float = 0.3) -> Utterance:
    """Synthesise a sentence with exact word/phone times.

    Parameters
    ----------
    words : list of str
        Words of the lexicon.
    lexicon : Lexicon
    key : str
        Seeds the prosody (durations, pauses, F0); same key -> same audio.
    voice : int
        Speaker (base F0 and formant scaling).
    sr : int
        Audio rate.
    lead, tail : float
        Silence before the first and after the last word, s.
    """
    rng = seeded_rng("utterance", key)
    base_f0 = (120.0, 190.0, 100.0, 220.0)[voice % 4]
    fscale = (1.0, 1.12, 0.94, 1.18)[voice % 4]
    pieces: list[NDArray[np.float64]] = [np.zeros(int(lead * sr))]
    t = len(pieces[0])
    out_words: list[tuple[str, float, float]] = []
    out_phones: list[tuple[str, float, float]] = []
    n_total = sum(len(lexicon.phones[lexicon.index(w)]) for w in words)
    k_phone = 0
    for wi, w in enumerate(words):
        w_start = t
        for sym in lexicon.phones[lexicon.index(w)]:
            ph = PHONES[sym]
            progress = k_phone / max(1, n_total - 1)
            f0_here = base_f0 * (1.15 - 0.3 * progress) * (1 + 0.05 * np.sin(2 * np.pi * wi / 3))
            if ph.is_vowel:
                dur = rng.uniform(0.08, 0.15)
            elif "stop" in ph.features:
                dur = rng.uniform(0.05, 0.08)
            elif "fricative" in ph.features:
                dur = rng.uniform(0.07, 0.12)
            else:
                dur = rng.uniform(0.05, 0.08)
            n = int(dur * sr)
            f0 = np.full(n, f0_here)
            formants = tuple(f * fscale for f in ph.formants)
            if ph.is_vowel:
                x = _voiced(n, f0, formants, sr, rng)
                x *= 1.0 / (np.std(x) + 1e-12) * 0.25
            elif "stop" in ph.features:
                x = np.zeros(n)
                nb = int(0.015 * sr)
                burst = signal.sosfilt(_bandpass(*_noise_band(ph), sr), rng.standard_normal(nb))
                burst *= np.exp(-np.arange(nb) / (0.004 * sr))
                x[n - nb:] = burst / (np.std(burst) + 1e-12) * 0.2
                if "voiced" in ph.features:
                    vb = _voiced(n - nb, f0[: n - nb], (250.0, 900.0, 2200.0), sr, rng)
                    x[: n - nb] += vb / (np.std(vb) + 1e-12) * 0.03
            elif "fricative" in ph.features:
                x = signal.sosfilt(_bandpass(*_noise_band(ph), sr), rng.standard_normal(n))
                x *= 1.0 / (np.std(x) + 1e-12) * (0.12 if "coronal" in ph.features else 0.06)
                if "voiced" in ph.features:
                    vb = _voiced(n, f0, (250.0, 1200.0, 2500.0), sr, rng)
                    x += vb / (np.std(vb) + 1e-12) * 0.06
            else:  # nasal, approximant
                x = _voiced(n, f0, formants, sr, rng)
                x *= 1.0 / (np.std(x) + 1e-12) * (0.08 if "nasal" in ph.features else 0.15)
            pieces.append(_ramp(x, sr, 8.0 if not ph.is_vowel else 15.0))
            out_phones.append((sym, t / sr, (t + n) / sr))
            t += n
            k_phone += 1
        out_words.append((w, w_start / sr, t / sr))
        gap = int(rng.choice([0.0, 0.02, 0.05, 0.09]) * sr)
        if gap and wi < len(words) - 1:
            pieces.append(np.zeros(gap))
            t += gap
    pieces.append(np.zeros(int(tail * sr)))
    wav = np.concatenate(pieces)
    wav = wav / (np.max(np.abs(wav)) + 1e-12) * 0.7
    return Utterance(wav=wav.astype(np.float32), sr=sr, words=out_words, phones=out_phones)


def _env(x: NDArray[np.float64], sr: int, sfreq: float, n_out: int) -> NDArray[np.float64]:
    sos = signal.butter(2, min(20.0, sfreq / 3), fs=sr, output="sos")
    e = signal.sosfiltfilt(sos, np.abs(x))
    idx = np.minimum((np.arange(n_out) / sfreq * sr).astype(np.int64), len(x) - 1)
    return np.clip(e[idx], 0, None)


def acoustic_drivers(wav: NDArray[np.floating], sr: int, sfreq: float) -> NDArray[np.float64]:
    """Acoustic drivers of the auditory sources at the simulation rate.

    Returns
    -------
    drivers : array, shape (2 + N_BANDS, n_out)
        Rows: compressed broadband envelope, its half-wave rectified derivative (onsets), and the compressed
        envelopes of ``N_BANDS`` log-spaced bands (150 Hz .. 7 kHz). ``n_out = ceil(len(wav) / sr * sfreq)``.
    """
    x = np.asarray(wav, dtype=np.float64)
    n_out = int(np.ceil(len(x) / sr * sfreq))
    env = _env(x, sr, sfreq, n_out) ** 0.3
    onset = np.clip(np.diff(env, prepend=env[0]), 0, None) * sfreq / 10.0
    edges = np.geomspace(150.0, 7000.0, N_BANDS + 1)
    bands = [_env(signal.sosfilt(_bandpass(lo, hi, sr), x), sr, sfreq, n_out) ** 0.3
             for lo, hi in itertools.pairwise(edges)]
    return np.vstack([env, onset, *bands])


def phone_matrix(phones: list[tuple[str, float, float]], sfreq: float, n_out: int) -> NDArray[np.float64]:
    """Articulatory feature vectors held over each phone, ``(len(ARTICULATORY), n_out)``."""
    m = np.zeros((len(ARTICULATORY), n_out))
    for sym, t0, t1 in phones:
        a, b = round(t0 * sfreq), max(round(t1 * sfreq), round(t0 * sfreq) + 1)
        m[:, a:min(b, n_out)] = PHONES[sym].vector()[:, None]
    return m
