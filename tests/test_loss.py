"""CLIP loss (paper) and regression loss: hand computations and properties."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pytest
from _lazy import lazy

from neurospeech.errors import ConfigError

pytestmark = pytest.mark.torch  # tests/_lazy.py: collected without torch, run with it
if TYPE_CHECKING:
    import torch
    from neurospeech.models.loss import ClipLoss, RegressionLoss, clip_scores, make_loss
else:
    torch = lazy("torch")
    ClipLoss = lazy("neurospeech.models.loss", "ClipLoss")
    RegressionLoss = lazy("neurospeech.models.loss", "RegressionLoss")
    clip_scores = lazy("neurospeech.models.loss", "clip_scores")
    make_loss = lazy("neurospeech.models.loss", "make_loss")


def _hand_clip(z: np.ndarray, y: np.ndarray) -> float:
    """Cross-entropy brain -> speech written out with Python loops."""
    n = len(z)
    total = 0.0
    for i in range(n):
        scores = []
        for j in range(n):
            yj = y[j].ravel()
            scores.append(float(np.dot(z[i].ravel(), yj) / math.sqrt(float(np.dot(yj, yj)))))
        m = max(scores)
        lse = m + math.log(sum(math.exp(s - m) for s in scores))
        total += lse - scores[i]
    return total / n


def test_clip_loss_matches_hand_computation():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(5, 3, 4))
    y = rng.normal(size=(5, 3, 4))
    got = float(ClipLoss()(torch.tensor(z), torch.tensor(y)))
    assert got == pytest.approx(_hand_clip(z, y), rel=1e-10)


def test_clip_scores_normalise_only_speech():
    rng = np.random.default_rng(1)
    z = torch.tensor(rng.normal(size=(2, 3, 4)))
    y = torch.tensor(rng.normal(size=(3, 3, 4)))
    s = clip_scores(z, y)
    # scaling a candidate does not change its scores; scaling the latent scales them
    s2 = clip_scores(z, y * torch.tensor([1.0, 7.0, 0.1])[:, None, None])
    assert torch.allclose(s, s2)
    assert torch.allclose(clip_scores(3 * z, y), 3 * s)


def test_clip_loss_low_when_latent_equals_target():
    rng = np.random.default_rng(2)
    y = torch.tensor(rng.normal(size=(8, 4, 6)))
    aligned = float(ClipLoss()(10 * y, y))
    shuffled = float(ClipLoss()(10 * y[torch.randperm(8, generator=torch.Generator().manual_seed(0))], y))
    assert aligned < 0.01 < shuffled


def test_clip_loss_gradient_flows_to_latent_only():
    z = torch.randn(4, 2, 3, requires_grad=True)
    y = torch.randn(4, 2, 3)
    ClipLoss()(z, y).backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def test_gather_without_process_group_is_plain_loss():
    z, y = torch.randn(6, 2, 3), torch.randn(6, 2, 3)
    assert float(ClipLoss(gather=True)(z, y)) == pytest.approx(float(ClipLoss()(z, y)))


def test_regression_loss_and_factory():
    z, y = torch.ones(2, 3, 4), torch.zeros(2, 3, 4)
    assert float(RegressionLoss()(z, y)) == pytest.approx(1.0)
    assert isinstance(make_loss("clip"), ClipLoss)
    assert isinstance(make_loss("mse"), RegressionLoss)
    with pytest.raises(ConfigError):
        make_loss("hinge")
    with pytest.raises(ConfigError):
        ClipLoss()(torch.zeros(2, 3, 4), torch.zeros(2, 3, 5))
