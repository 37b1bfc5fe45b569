"""Log-mel features and the extractor registry (numpy only)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from neurospeech.errors import ConfigError, DataFormatError
from neurospeech.speech import get_extractor, log_mel, mel_filterbank, n_output_frames


def _tone_burst(sr: int, dur: float, t0: float, t1: float, freq: float) -> np.ndarray:
    t = np.arange(round(sr * dur)) / sr
    x = np.zeros_like(t, dtype=np.float32)
    m = (t >= t0) & (t < t1)
    x[m] = np.sin(2 * np.pi * freq * t[m])
    return x


@pytest.mark.parametrize("sr", [16000, 22050, 44100])
def test_tone_burst_at_right_frames(sr):
    x = _tone_burst(sr, 2.0, 0.5, 1.25, 1000.0)
    L = log_mel(x, sr, sfreq_out=120.0, n_mels=120)
    assert L.shape == (120, n_output_frames(x.size, sr, 120.0)) == (120, 240)
    assert L.dtype == np.float32
    energy = L.max(axis=0)
    loud = energy > (energy.max() + energy.min()) / 2
    on = np.flatnonzero(loud)
    # 25 ms window: a frame is loud when more than half its window overlaps the burst (frame k at k/120 s)
    assert abs(on[0] - 0.5 * 120) <= 1
    assert abs(on[-1] - 1.25 * 120) <= 1
    assert np.all(loud[on[0] : on[-1] + 1])
    # the band holding 1 kHz is the loudest one during the burst
    fb = mel_filterbank(sr, 4096, 120)
    expected_band = int(np.argmax(fb[:, round(1000 * 4096 / sr)]))
    assert abs(int(np.argmax(L[:, 100])) - expected_band) <= 1
    # silence sits at the floor
    assert np.allclose(L[:, :50], np.log(1e-8))


def test_frame_count_and_timing_for_odd_lengths():
    sr = 16000
    for n in (1, 133, 134, 16000, 16001):
        L = log_mel(np.ones(n, np.float32) * 0.1, sr)
        assert L.shape[1] == int(np.ceil(n * 120 / sr))
    # impulse at 0.3 s -> the loudest frame is 36
    x = np.zeros(sr, np.float32)
    x[round(0.3 * sr)] = 1.0
    assert int(np.argmax(log_mel(x, sr).mean(axis=0))) == 36


def test_filterbank_shape_no_empty_bands():
    fb = mel_filterbank(16000, 1024, 120)
    assert fb.shape == (120, 513)
    assert np.all(fb.sum(axis=1) > 0)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(DataFormatError, match="mono"):
        log_mel(np.zeros((2, 100)), 16000)
    with pytest.raises(DataFormatError, match="empty"):
        log_mel(np.zeros(0), 16000)
    with pytest.raises(ConfigError, match="sampling rate"):
        log_mel(np.zeros(100), 0)


def test_registry_unknown_kind_names_allowed_kinds():
    with pytest.raises(ConfigError) as ei:
        get_extractor("mfcc")
    msg = str(ei.value)
    assert "mfcc" in msg and "mel" in msg and "whisper" in msg and "wav2vec2" in msg
    with pytest.raises(ConfigError, match="n_mel"):
        get_extractor("mel", n_mel=3)


def test_mel_extractor_attributes():
    ex = get_extractor("mel", n_mels=40)
    assert ex.kind == "mel" and ex.dim == 40
    json.dumps(ex.params)
    x = _tone_burst(16000, 1.0, 0.2, 0.4, 500.0)
    F = ex(x, 16000)
    assert F.shape == (40, 120) and F.dtype == np.float32
    assert ex.cache_key() != get_extractor("mel", n_mels=41).cache_key()
