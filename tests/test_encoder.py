"""Brain encoder presets: shapes, published size/cost, spatial attention, subject layer, folding."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pytest
from _lazy import lazy

from neurospeech.errors import ConfigError

pytestmark = pytest.mark.torch  # tests/_lazy.py: collected without torch, run with it
if TYPE_CHECKING:
    import torch
    from neurospeech.models.encoder import (
        BrainEncoder,
        EncoderConfig,
        SpatialAttention,
        count_macs,
        normalise_positions,
        preset_config,
    )
else:
    torch = lazy("torch")
    BrainEncoder = lazy("neurospeech.models.encoder", "BrainEncoder")
    EncoderConfig = lazy("neurospeech.models.encoder", "EncoderConfig")
    SpatialAttention = lazy("neurospeech.models.encoder", "SpatialAttention")
    count_macs = lazy("neurospeech.models.encoder", "count_macs")
    normalise_positions = lazy("neurospeech.models.encoder", "normalise_positions")
    preset_config = lazy("neurospeech.models.encoder", "preset_config")

T = 343


def _positions(c: int, seed: int = 0) -> np.ndarray:
    return normalise_positions(np.random.default_rng(seed).normal(size=(c, 2)))


@pytest.mark.parametrize(("preset", "out_dim", "pool", "t_out"), [
    ("paper", 24, 1, 343), ("paper", 16, 7, 49), ("efficient", 16, 7, 49), ("efficient", 16, 1, 343),
])
def test_shapes(preset, out_dim, pool, t_out):
    cfg = preset_config(preset, n_virtual=16, hidden=24, head_hidden=32, fourier_harmonics=4)
    m = BrainEncoder(cfg, _positions(10), n_subjects=3, out_dim=out_dim, time_pool=pool)
    z = m(torch.randn(2, 10, T), torch.tensor([0, 2]))
    assert z.shape == (2, out_dim, t_out)
    assert m.output_frames(T) == t_out


def test_paper_preset_matches_published_size_and_cost():
    """9.57 M parameters and 2.57 G MACs per window for 208 channels, 27 subjects, F = 1024."""
    m = BrainEncoder(preset_config("paper"), _positions(208), n_subjects=27, out_dim=1024)
    n_params = sum(p.numel() for p in m.parameters())
    assert n_params == pytest.approx(9.57e6, rel=0.01)
    macs = count_macs(m, T, folded=False)
    assert macs["total"] == pytest.approx(2.57e9, rel=0.01)
    assert macs["dilated"] == pytest.approx(1.04e9, rel=0.01)
    assert macs["glu"] == pytest.approx(1.05e9, rel=0.01)
    assert macs["head"] == pytest.approx(0.30e9, rel=0.02)
    assert len(m.trunk.blocks) == 10 and len(m.trunk.glus) == 5
    assert [b.conv.dilation[0] for b in m.trunk.blocks] == [1, 2, 4, 8, 16, 1, 2, 4, 8, 16]
    assert [b.residual for b in m.trunk.blocks] == [False] + [True] * 9


def test_efficient_preset_cost_is_a_fraction_of_paper():
    pos = _positions(208)
    paper = BrainEncoder(preset_config("paper"), pos, 27, 384, 1)
    eff = BrainEncoder(preset_config("efficient"), pos, 27, 64, 7)
    p = count_macs(paper, T)["total"] + 10_000 * 384 * 343
    e = count_macs(eff, T)["total"] + 10_000 * 64 * 49
    assert e * 8 <= p


def test_spatial_attention_softmax_missing_positions_and_dropout():
    pos = _positions(6)
    pos[2] = np.nan  # no position: never attended
    att = SpatialAttention(pos, n_out=5, harmonics=4, dropout_radius=0.3)
    w = att.weights()
    assert w.shape == (5, 6)
    assert torch.allclose(w.sum(1), torch.ones(5))
    assert torch.all(w[:, 2] == 0)
    centre = torch.tensor(pos[0], dtype=torch.float32)
    wd = att.weights(centre)
    near = np.linalg.norm(np.nan_to_num(pos, nan=9) - pos[0], axis=1) <= 0.3
    assert torch.all(wd[:, torch.tensor(near)] == 0)
    assert torch.allclose(wd.sum(1), torch.ones(5))
    # Fourier embedding: 2 * H^2 dims
    assert att.embedding.shape == (6, 2 * 16)


def test_subject_layer_is_identity_at_init_and_subject_specific():
    cfg = preset_config("efficient", n_virtual=8, hidden=16, head_hidden=16, fourier_harmonics=2)
    m = BrainEncoder(cfg, _positions(5), n_subjects=2, out_dim=4, time_pool=7).eval()
    x = torch.randn(1, 5, T)
    a = m.front(x, torch.tensor([0]))
    b = m.front(x, torch.tensor([1]))
    assert torch.allclose(a, b)
    with torch.no_grad():
        m.subject_layer.weight[1] *= 2
    assert not torch.allclose(m.front(x, torch.tensor([0])), m.front(x, torch.tensor([1])))


def test_folded_front_equals_front():
    cfg = preset_config("paper", n_virtual=12, hidden=16, head_hidden=16, fourier_harmonics=3)
    m = BrainEncoder(cfg, _positions(7), n_subjects=3, out_dim=4).eval()
    with torch.no_grad():
        m.subject_layer.weight.add_(0.1 * torch.randn_like(m.subject_layer.weight))
    mat, bias = m.folded_front()
    assert mat.shape == (3, 12, 7) and bias.shape == (3, 12)
    x = torch.randn(4, 7, T)
    s = torch.tensor([0, 1, 2, 1])
    ref = m.front(x, s)
    folded = torch.einsum("bdc,bct->bdt", mat[s], x) + bias[s][:, :, None]
    assert torch.allclose(ref, folded, atol=1e-5)


def test_config_validation():
    with pytest.raises(ConfigError):
        preset_config("huge")
    with pytest.raises(ConfigError):
        EncoderConfig(kernel=4)
    with pytest.raises(ConfigError):
        EncoderConfig.from_dict({"bogus": 1})
    with pytest.raises(ConfigError):
        BrainEncoder(preset_config("paper"), _positions(4), 1, 8)(torch.randn(1, 5, T), torch.tensor([0]))


@pytest.mark.parametrize("preset", ["paper", "efficient"])
def test_causal_encoder_output_depends_on_the_past_only(preset):
    """causal=True: changing the input from sample 7 m on leaves every output frame before m as it was (the
    precondition of a streaming encoder); the default "same" padding lets a later sample reach earlier frames."""
    x = torch.randn(1, 10, T)
    later = x.clone()
    m_frame = 20
    later[..., 7 * m_frame:] += torch.randn(1, 10, T - 7 * m_frame)
    subj = torch.tensor([1])
    for causal in (True, False):
        cfg = preset_config(preset, n_virtual=16, hidden=24, head_hidden=32, fourier_harmonics=4, causal=causal)
        m = BrainEncoder(cfg, _positions(10), n_subjects=3, out_dim=8, time_pool=7).eval()
        with torch.no_grad():
            a, b = m(x, subj), m(later, subj)
        assert a.shape == (1, 8, 49)
        same = torch.allclose(a[..., :m_frame], b[..., :m_frame], atol=1e-6)
        assert same is causal, (preset, causal)
        assert not torch.allclose(a[..., m_frame:], b[..., m_frame:])
    assert "causal" not in preset_config(preset).to_dict()  # additive: older runs' configs are unchanged
    assert preset_config(preset, causal=True).to_dict()["causal"] is True
