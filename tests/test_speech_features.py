"""wav2vec2 from a tiny local checkpoint, the feature cache and the standardiser."""

from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest
from scipy.io import wavfile

from neurospeech.errors import ArtifactError, ConfigError, DataFormatError
from neurospeech.speech import FeatureCache, fit_standardizer, get_extractor

SR = 16000


def _audio(seconds: float, seed: int = 0, sr: int = SR) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * sr)) / sr
    x = 0.2 * np.sin(2 * np.pi * (200 + 100 * np.sin(2 * np.pi * 0.5 * t)) * t)
    return (x * (np.sin(2 * np.pi * 2 * t) > 0) + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def tiny_w2v(tmp_path_factory):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
        conv_dim=(16,) * 7, conv_stride=(5, 2, 2, 2, 2, 2, 2), conv_kernel=(10, 3, 3, 3, 3, 2, 2),
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, vocab_size=8,
    )
    model = transformers.Wav2Vec2Model(cfg).eval()
    path = tmp_path_factory.mktemp("w2v") / "tiny"
    model.save_pretrained(path)
    return path, model


@pytest.mark.torch  # the tiny checkpoint is written with torch + transformers
def test_wav2vec2_tiny_checkpoint_round_trip(tiny_w2v):
    import torch

    path, model = tiny_w2v
    ex = get_extractor("wav2vec2", model_path=path, layers=(1, 3))
    assert ex.kind == "wav2vec2" and ex.dim == 32
    x = _audio(3.3, seed=1)
    F = ex(x, SR)
    assert F.shape == (32, int(np.ceil(3.3 * 120))) and F.dtype == np.float32
    # reference: the model run directly, layers 1..3 averaged, linearly interpolated to frame k at k/120 s
    xn = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    with torch.inference_mode():
        hs = model(torch.from_numpy(xn)[None], output_hidden_states=True).hidden_states
    t120 = np.arange(F.shape[1]) / 120
    inner = slice(6, -6)

    def ref(layers, offset=0.0125):
        r50 = torch.stack([hs[k][0] for k in layers]).mean(0).numpy().T  # (32, n50), frame j at j/50+12.5ms
        t50 = np.arange(r50.shape[1]) / 50 + offset
        return np.stack([np.interp(t120, t50, r) for r in r50])[:, inner]

    def rel_err(a, b):
        return np.linalg.norm(a[:, inner] - b) / np.linalg.norm(b)

    # a random network's features are nearly white in time, so polyphase vs linear interpolation differ by
    # ~20 %; the timing is right when the reference with the 12.5 ms frame centre fits best
    err = rel_err(F, ref((1, 2, 3)))
    assert err < 0.3
    assert rel_err(F, ref((1, 2, 3), offset=0.0)) > 2 * err
    assert rel_err(F, ref((1, 2, 3), offset=0.025)) > 1.5 * err
    other = get_extractor("wav2vec2", model_path=path, layers=0)(x, SR)
    assert rel_err(other, ref((0,))) < 0.3
    # the layers of a random network are close to each other: check the selection on what layers 1-3 add
    # to layer 0; averaging exactly layers 1..3 fits best
    gain = rel_err(F - other, ref((1, 2, 3)) - ref((0,)))
    assert gain < 0.25
    for wrong in [(1,), (2,), (3,), (1, 2), (2, 3)]:
        assert rel_err(F - other, ref(wrong) - ref((0,))) > 1.5 * gain, wrong
    # rebuild from params, hash checks
    assert get_extractor("wav2vec2", **ex.params).cache_key() == ex.cache_key()
    with pytest.raises(ArtifactError, match="hash"):
        get_extractor("wav2vec2", model_path=path, layers=1, model_sha256="f" * 64)
    with pytest.raises(ConfigError, match="0 <= lo <= hi <= 3"):
        get_extractor("wav2vec2", model_path=path, layers=(14, 18))


@pytest.mark.torch  # the tiny checkpoint is written with torch + transformers
def test_wav2vec2_without_torch_is_a_clear_error(tiny_w2v, monkeypatch):
    path, _ = tiny_w2v
    ex = get_extractor("wav2vec2", model_path=path, layers=1)
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ConfigError, match=r"neurospeech\[train,speech\]"):
        ex(_audio(1.0), SR)


def test_wav2vec2_missing_checkpoint(tmp_path):
    with pytest.raises(ArtifactError, match=r"config\.json"):
        get_extractor("wav2vec2", model_path=tmp_path)


class _Counting:
    """Wraps an extractor and counts the real computations."""

    def __init__(self, ex):
        self.ex, self.calls = ex, 0
        self.kind, self.dim = ex.kind, ex.dim

    @property
    def params(self):
        return self.ex.params

    def cache_key(self):
        return self.ex.cache_key()

    def __call__(self, wav, sr):
        self.calls += 1
        return self.ex(wav, sr)


def test_cache_hit_miss_and_keys(tmp_path):
    wav = tmp_path / "a.wav"
    wavfile.write(wav, SR, (_audio(1.5) * 32767).astype(np.int16))
    cache = FeatureCache(tmp_path / "cache")
    ex = _Counting(get_extractor("mel", n_mels=40))
    a = cache.get(ex, wav)
    assert a.shape == (40, 180) and ex.calls == 1 and cache.misses == 1
    b = cache.get(ex, wav)
    assert ex.calls == 1 and cache.hits == 1
    np.testing.assert_array_equal(a, b)
    # same content under another name: hit (keyed by content hash)
    shutil.copy(wav, tmp_path / "b.wav")
    cache.get(ex, tmp_path / "b.wav")
    assert ex.calls == 1
    # a fresh cache object on the same directory reads the stored file
    assert FeatureCache(tmp_path / "cache").get(ex, wav).shape == (40, 180) and ex.calls == 1
    # changed params -> new key, recomputed
    ex2 = _Counting(get_extractor("mel", n_mels=40, fmin=50.0))
    assert cache.path_for(ex2, wav) != cache.path_for(ex, wav)
    c = cache.get(ex2, wav)
    assert ex2.calls == 1 and not np.array_equal(c, a)
    # changed audio -> new key
    wavfile.write(wav, SR, (_audio(1.5, seed=5) * 32767).astype(np.int16))
    cache.get(ex, wav)
    assert ex.calls == 2
    stored = list((tmp_path / "cache" / "mel").rglob("*.npy"))
    assert len(stored) == 3
    with pytest.raises(DataFormatError, match="does not exist"):
        cache.get(ex, tmp_path / "missing.wav")


def test_fit_standardizer():
    rng = np.random.default_rng(0)
    arrays = [rng.normal(3.0, 2.0, size=(5, n)) for n in (10, 200, 37)]
    arrays.append(np.full((5, 4), 7.0))
    mean, std = fit_standardizer(arrays)
    cat = np.concatenate(arrays, axis=1)
    np.testing.assert_allclose(mean, cat.mean(axis=1), rtol=1e-5)
    np.testing.assert_allclose(std, cat.std(axis=1), rtol=1e-4)
    assert mean.dtype == std.dtype == np.float32
    _, s2 = fit_standardizer([np.ones((3, 5))])
    assert np.all(s2 > 0)
    with pytest.raises(DataFormatError):
        fit_standardizer([])
    with pytest.raises(DataFormatError):
        fit_standardizer([np.zeros((3, 4)), np.zeros((2, 4))])
