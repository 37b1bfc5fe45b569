"""Whisper tiny.en encoder features (numpy forward pass) against ctranslate2, timing and chunking."""

from __future__ import annotations

import numpy as np
import pytest

from neurospeech.errors import ArtifactError, ConfigError
from neurospeech.speech import WhisperExtractor, default_whisper_dir, get_extractor, whisper_log_mel

SR = 16000


def _speechlike(seconds: float, seed: int = 0, sr: int = SR) -> np.ndarray:
    """Harmonic 'syllables' with varying pitch, gaps and a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * sr)) / sr
    f0 = 120 + 60 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 8))
    env = (np.sin(2 * np.pi * 3.1 * t + rng.uniform(0, 6)) > -0.2).astype(float)
    return (0.2 * x * env + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def extractor_all() -> WhisperExtractor:
    return WhisperExtractor(layers=(0, 4))


def test_last_layer_equals_ctranslate2_encode(extractor_all):
    ct2 = pytest.importorskip("ctranslate2")
    mel = whisper_log_mel(_speechlike(8.0))[:, :3000]
    ours = extractor_all.encoder.forward(mel)
    assert len(ours) == 5 and ours[-1].shape == (1500, 384)
    model = ct2.models.Whisper(str(default_whisper_dir()), device="cpu", compute_type="float32",
                               intra_threads=1)
    ref = np.array(model.encode(ct2.StorageView.from_array(np.ascontiguousarray(mel[None])), to_cpu=True))[0]
    assert ref.shape == (1500, 384)
    np.testing.assert_allclose(ours[-1], ref, atol=2e-3, rtol=0)
    # intermediate layers are genuinely different representations
    assert not np.allclose(ours[1], ref, atol=0.1)


@pytest.mark.torch  # the reference STFT is torch's
def test_log_mel_matches_whisper_recipe_with_torch_stft():
    torch = pytest.importorskip("torch")
    x = _speechlike(3.0, seed=1)
    ours = whisper_log_mel(x)
    audio = torch.from_numpy(np.concatenate([x, np.zeros(30 * SR, np.float32)]))
    stft = torch.stft(audio, 400, 160, window=torch.hann_window(400), return_complex=True)
    mag = stft[..., :-1].abs() ** 2
    from neurospeech.speech import mel_filterbank

    mel = torch.from_numpy(mel_filterbank(SR, 400, 80)) @ mag
    ref = torch.clamp(mel, min=1e-10).log10()
    ref = (torch.maximum(ref, ref.max() - 8.0) + 4.0) / 4.0
    assert ours.shape == tuple(ref.shape) == (80, 3300)
    np.testing.assert_allclose(ours, ref.numpy(), atol=1e-4)


def test_rate_length_and_timing():
    ex = get_extractor("whisper", layers=0)
    sr = 22050
    noise = 0.01 * np.random.default_rng(3).standard_normal(round(5.3 * sr)).astype(np.float32)
    t = np.arange(noise.size) / sr
    x = noise + (0.3 * np.sin(2 * np.pi * 440 * t) * (t >= 2.0)).astype(np.float32)
    F = ex(x, sr)
    assert F.shape == (384, int(np.ceil(5.3 * 120))) and F.dtype == np.float32
    assert ex.dim == 384 and ex.kind == "whisper"
    # layer 0 (convolutions + positions) is local in time: compare with the noise alone
    dev = np.linalg.norm(F - ex(noise, sr), axis=0)
    first = int(np.argmax(dev > dev.max() / 2))
    assert abs(first - 240) <= 4, first  # onset at 2.0 s -> frame 240 at 120 Hz


def test_long_file_chunk_stitching():
    ex = WhisperExtractor(layers=1, context=5.0)
    x = _speechlike(40.0, seed=2)
    x[round(3 * SR)] = 0.9  # the loudest sample in the first 30 s: same global mel clamp for the crops
    full = ex.encode_layers(x, SR)[1]
    assert full.shape == (384, 2000)
    head = ex.encode_layers(x[: 30 * SR], SR)[1]
    # chunk 1 keeps frames [0, 25 s): the same input but for the last STFT frames (which see the audio
    # after 30 s instead of zeros; attention is global, so everything moves a little)
    np.testing.assert_allclose(full[:, :1250], head[:, :1250], atol=5e-3)
    # chunk 2 (from 20 s) keeps frames from 25 s; compare with encoding the audio from 20 s on
    tail = ex.encode_layers(x[20 * SR :], SR)[1]
    a, b = full[:, 1250:2000], tail[:, 250:1000]
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.999
    # why the overlap: frames at a chunk's start (no left context) differ more from the full-context ones
    # (kept from chunk 1 here) than the frames kept from chunk 2 do
    edge = np.linalg.norm(full[:, 1000:1250] - tail[:, :250])
    kept = np.linalg.norm(a[:, :250] - b[:, :250])
    assert edge > 10 * kept, (edge, kept)


def test_params_rebuild_and_errors(extractor_all, tmp_path):
    ex = get_extractor("whisper", layers=[1, 2])
    p = ex.params
    assert p["layers"] == [1, 2] and len(p["model_sha256"]) == 64
    again = get_extractor("whisper", **p)
    assert again.cache_key() == ex.cache_key()
    assert get_extractor("whisper", layers=3).cache_key() != ex.cache_key()
    with pytest.raises(ArtifactError, match="sha256"):
        get_extractor("whisper", layers=1, model_sha256="0" * 64)
    with pytest.raises(ConfigError, match="0 <= lo <= hi <= 4"):
        get_extractor("whisper", layers=5)
    with pytest.raises(ArtifactError, match=r"model\.bin"):
        get_extractor("whisper", model_dir=tmp_path)
    (tmp_path / "model.bin").write_bytes(b"\x06\x00\x00")
    with pytest.raises(ArtifactError, match="truncated"):
        get_extractor("whisper", model_dir=tmp_path)
