"""Training losses: the paper's CLIP loss (brain -> speech) and the regression loss of its "Base" model.

CLIP (Défossez et al. 2022): for brain latents ``Z_i`` and speech segments ``Y_j`` (both ``F x T``),
``score(i, j) = <Z_i, Y_j> / ||Y_j||_F`` (only the speech side is normalised, no temperature) and the loss is
the cross-entropy of picking ``Y_i`` among every ``Y_j`` of the batch. With ``gather=True`` the speech
candidates of every process are gathered (``torch.distributed.all_gather``), so the negatives -- and hence the
loss -- do not depend on how many processes share the global batch. Speech features are fixed targets (they
carry
no gradient), so gathering them loses nothing.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn import functional as F

from ..errors import ConfigError

__all__ = ["ClipLoss", "RegressionLoss", "clip_scores", "gather_candidates", "make_loss"]


def _normalise(y: Tensor) -> Tensor:
    flat = y.reshape(len(y), -1)
    return flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)


def clip_scores(z: Tensor, y: Tensor) -> Tensor:
    """Scores ``(n_z, n_y)``: ``sum(Z_i * Y_j) / ||Y_j||_F`` for ``z (n_z, F, T)``, ``y (n_y, F, T)``."""
    return z.reshape(len(z), -1) @ _normalise(y).T


def gather_candidates(y: Tensor) -> tuple[Tensor, int]:
    """All-gather ``y (B_local, ...)`` from every process (sizes may differ).

    Returns
    -------
    y_all : tensor, shape (B_total, ...)
        Candidates of rank 0, then rank 1, ... (detached).
    offset : int
        Index of this process's first row in ``y_all``.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return y.detach(), 0
    world, rank = dist.get_world_size(), dist.get_rank()
    n = torch.tensor([len(y)], device=y.device, dtype=torch.int64)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    counts = [int(s.item()) for s in sizes]
    m = max(counts)
    padded = torch.zeros((m, *y.shape[1:]), dtype=y.dtype, device=y.device)
    padded[: len(y)] = y.detach()
    bufs = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(bufs, padded.contiguous())
    y_all = torch.cat([b[:c] for b, c in zip(bufs, counts, strict=True)], dim=0)
    return y_all, sum(counts[:rank])


class ClipLoss(nn.Module):
    """CLIP loss brain -> speech (see the module docstring).

    Parameters
    ----------
    gather : bool
        Use the speech segments of every process as negatives (needs an initialised process group; a single
        process behaves exactly as without gathering).
    """

    def __init__(self, gather: bool = False) -> None:
        super().__init__()
        self.gather = gather

    def forward(self, z: Tensor, y: Tensor) -> Tensor:
        """Mean cross-entropy over the local queries ``z (B, F, T)`` against candidates ``y (B, F, T)``."""
        if z.shape != y.shape:
            raise ConfigError(f"latent {tuple(z.shape)} and speech {tuple(y.shape)} shapes differ")
        if self.gather:
            y_all, offset = gather_candidates(y)
        else:
            y_all, offset = y, 0
        logits = clip_scores(z, y_all)
        target = torch.arange(len(z), device=z.device) + offset
        return F.cross_entropy(logits, target)


class RegressionLoss(nn.Module):
    """Mean squared error between latent and speech features (the paper's regression "Base" model)."""

    def forward(self, z: Tensor, y: Tensor) -> Tensor:
        if z.shape != y.shape:
            raise ConfigError(f"latent {tuple(z.shape)} and speech {tuple(y.shape)} shapes differ")
        return F.mse_loss(z, y)


def make_loss(kind: str, gather: bool = False) -> nn.Module:
    """``'clip'`` -> :class:`ClipLoss`, ``'mse'`` -> :class:`RegressionLoss`."""
    if kind == "clip":
        return ClipLoss(gather=gather)
    if kind == "mse":
        return RegressionLoss()
    raise ConfigError(f"unknown loss {kind!r}; use 'clip' (contrastive, paper) or 'mse' (regression base)")
