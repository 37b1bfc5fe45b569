"""Vanilla ReLU RNN of Piwek et al. (2023), its loss and its read-out."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from neurospeech.errors import DataFormatError

from .task import output_centres

__all__ = ["WMRNN", "circular_weighted_loss", "decode_colour", "target_onehot", "uniform_loss"]


class WMRNN(nn.Module):
    """``h_t = relu(W_in x_t + W_rec h_{t-1} + b + eps_t)``, ``eps_t ~ N(0, noise_sd^2)``; softmax read-out.

    Parameters
    ----------
    n_inputs : int
        36 for the standard task.
    n_hidden : int
        200 in the paper.
    n_outputs : int
        17 colour channels.
    noise_sd : float
        Standard deviation of the hidden noise (0.07), applied in training and evaluation unless
        ``forward(..., noise=False)``.
    rec_gain : float
        ``W_rec`` is initialised as ``rec_gain`` times a random orthogonal matrix (1.0: plain orthogonal).
    """

    def __init__(
        self,
        n_inputs: int = 36,
        n_hidden: int = 200,
        n_outputs: int = 17,
        noise_sd: float = 0.07,
        rec_gain: float = 1.0,
    ) -> None:
        super().__init__()
        self.n_hidden = n_hidden
        self.noise_sd = noise_sd
        self.inp = nn.Linear(n_inputs, n_hidden, bias=True)
        self.rec = nn.Linear(n_hidden, n_hidden, bias=False)
        self.out = nn.Linear(n_hidden, n_outputs, bias=True)
        nn.init.orthogonal_(self.rec.weight, gain=rec_gain)

    def forward(
        self, x: torch.Tensor, noise: bool = True, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the network.

        Parameters
        ----------
        x : Tensor, shape (n_steps, batch, n_inputs)

        Returns
        -------
        probs : Tensor, shape (batch, n_outputs)
            Softmax output at the last step.
        hidden : Tensor, shape (n_steps, batch, n_hidden)
            Hidden states at every step.
        """
        if x.ndim != 3 or x.shape[-1] != self.inp.in_features:
            raise DataFormatError(
                f"RNN input must have shape (n_steps, batch, {self.inp.in_features}), got {tuple(x.shape)}"
            )
        drive = self.inp(x)
        h = torch.zeros(x.shape[1], self.n_hidden, dtype=x.dtype, device=x.device)
        states = []
        for t in range(x.shape[0]):
            pre = drive[t] + self.rec(h)
            if noise and self.noise_sd > 0:
                pre = pre + self.noise_sd * torch.randn(pre.shape, generator=generator, dtype=pre.dtype)
            h = torch.relu(pre)
            states.append(h)
        hidden = torch.stack(states)
        return torch.softmax(self.out(h), dim=-1), hidden


def target_onehot(target: torch.Tensor, n_channels: int = 17) -> torch.Tensor:
    """One-hot target at the output channel nearest to each target colour, shape (batch, n)."""
    centres = torch.as_tensor(output_centres(n_channels), dtype=target.dtype)
    d = torch.remainder(centres[None, :] - target[:, None] + math.pi, 2 * math.pi) - math.pi
    idx = d.abs().argmin(dim=1)
    return torch.nn.functional.one_hot(idx, n_channels).to(target.dtype)


def circular_weighted_loss(probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Loss of Piwek et al.: ``(1/K) sum_k [d_circ(phi_k, c) (y_k - yhat_k)]^2``, averaged over the batch.

    ``y`` is the softmax output, ``yhat`` the one-hot target at the channel nearest to the reported colour
    ``c`` and ``d_circ(phi_k, c)`` the circular distance (radians) between channel ``k``'s centre and ``c``:
    errors are weighted by how far from the true colour they are.

    Parameters
    ----------
    probs : Tensor, shape (batch, K)
    target : Tensor, shape (batch,)
        Target colours in radians.
    """
    if probs.ndim != 2 or target.ndim != 1 or probs.shape[0] != target.shape[0]:
        raise DataFormatError(
            f"loss needs probs (batch, K) and target (batch,), got {tuple(probs.shape)} and "
            f"{tuple(target.shape)}"
        )
    k = probs.shape[1]
    centres = torch.as_tensor(output_centres(k), dtype=probs.dtype)
    d = (torch.remainder(centres[None, :] - target[:, None] + math.pi, 2 * math.pi) - math.pi).abs()
    yhat = target_onehot(target, k).to(probs.dtype)
    return ((d * (probs - yhat)) ** 2).mean()


def uniform_loss(n_channels: int = 17, n_colours: int = 16) -> float:
    """Loss of a network that outputs ``1/K`` on every channel (the plateau), averaged over colours."""
    cols = -math.pi + 2 * math.pi * torch.arange(n_colours, dtype=torch.float64) / n_colours
    p = torch.full((n_colours, n_channels), 1.0 / n_channels, dtype=torch.float64)
    return float(circular_weighted_loss(p, cols))


def decode_colour(probs: np.ndarray | torch.Tensor) -> np.ndarray:
    """Reported colour: the angle of the population vector ``sum_k y_k exp(i phi_k)``, shape (batch,)."""
    p = probs.detach().cpu().numpy() if isinstance(probs, torch.Tensor) else np.asarray(probs)
    centres = output_centres(p.shape[1])
    return np.angle(p @ np.exp(1j * centres))
