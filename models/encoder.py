"""Brain encoders: the ``paper`` preset (Défossez et al. 2022) and an ``efficient`` preset for real time.

Both map a preprocessed window ``(batch, n_channels, n_times)`` (343 samples at 120 Hz) and a subject index
``(batch,)`` to a latent ``(batch, out_dim, n_times // time_pool)`` in the *scoring representation* (see
:mod:`neurospeech.models.represent`): the speech features the CLIP loss compares it with.

Architecture (``paper``, as published)::

    spatial attention over 2-D sensor positions (Fourier embedding, 32x32 harmonics, 270 virtual channels,
        spatial dropout of radius 0.2 while training)
    -> 1x1 conv 270 -> 270 (bias) -> per-subject 270 x 270 matrix (no bias, identity init)
    -> 10 conv layers k=3, dilation 2**(k % 5), BatchNorm, GELU, residual on layers 1..9,
       a non-residual k=3 conv 320 -> 640 + GLU after layers 1, 3, 5, 7, 9
    -> head: 1x1 conv 320 -> 640, GELU, 1x1 transposed conv 640 -> out_dim

``efficient`` keeps the same front end (which folds into one ``C x D`` matrix for a fixed montage and subject,
see :meth:`BrainEncoder.folded_front`) with fewer virtual channels, one full-rate conv layer, then a strided
conv that brings the time axis down to the scoring frame rate (120 Hz / ``time_pool``) before the dilated
residual blocks; every later layer runs on 7x fewer time steps.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..errors import ConfigError

__all__ = [
    "PRESETS",
    "BrainEncoder",
    "EncoderConfig",
    "SpatialAttention",
    "SubjectLayer",
    "count_macs",
    "mask_front",
    "normalise_positions",
    "preset_config",
    "truncate_batch",
]


@dataclass(frozen=True)
class EncoderConfig:
    """Architecture of a :class:`BrainEncoder` (typed; ``PRESETS`` holds the named ones).

    Attributes
    ----------
    preset : str
        Name of the preset this config came from (``paper``, ``efficient``), kept for provenance.
    n_virtual : int
        Output channels of the spatial attention ("virtual sensors"; paper: 270).
    fourier_harmonics : int
        Harmonics per axis of the positional Fourier embedding (paper: 32 -> 2 * 32 * 32 = 2048 dims).
    pos_margin : float
        Positions in [0, 1] are embedded with period ``1 + 2 * pos_margin`` (i.e. mapped into [-0.2, 1.2]).
    spatial_dropout : float
        Radius (in normalised layout units) of the sensor disc dropped from the softmax while training.
    hidden : int
        Channels of the residual conv stack (paper: 320).
    n_blocks : int
        Number of residual dilated conv layers (paper: 10).
    dilation_cycle : int
        Dilation of layer ``k`` is ``2 ** (k % dilation_cycle)``.
    kernel : int
        Kernel size of the dilated convs (3).
    glu_every : int
        A non-residual conv ``hidden -> 2 * hidden`` + GLU after layers ``k`` with ``k % glu_every == 1``.
    glu_kernel : int
        Kernel of the GLU conv (paper: 3).
    head_hidden : int
        Hidden width of the output head (paper: 640).
    stem_layers : int
        ``efficient`` only: full-rate conv layers (``n_virtual`` channels) before the strided downsampling.
    downsample_in_stem : bool
        True: reduce the time axis by ``time_pool`` with a strided conv right after the stem (efficient).
        False: run the stack at full rate and average-pool at the end (paper, when ``time_pool > 1``).
    early_decisions : bool
        Accept windows whose not-yet-seen samples are NaN (:mod:`neurospeech.early`): the front end's output
        at those time steps is replaced by a learned ``unseen`` vector (``BrainEncoder.unseen``), so the trunk
        knows which part of the window is missing. Off (the default) for every model trained before.
    causal : bool
        Causal convolutions: every conv pads on the left only (``dilation * (kernel - 1)`` samples), so an
        output at time t depends on inputs up to t alone -- the precondition of a streaming encoder that
        reuses the previous hop's layer states (README, Early decisions). Off (the default): "same" padding,
        each output sees both ways; every model trained before.
    """

    preset: str = "paper"
    n_virtual: int = 270
    fourier_harmonics: int = 32
    pos_margin: float = 0.2
    spatial_dropout: float = 0.2
    hidden: int = 320
    n_blocks: int = 10
    dilation_cycle: int = 5
    kernel: int = 3
    glu_every: int = 2
    glu_kernel: int = 3
    head_hidden: int = 640
    stem_layers: int = 0
    downsample_in_stem: bool = False
    early_decisions: bool = False
    causal: bool = False

    def __post_init__(self) -> None:
        for f in ("n_virtual", "fourier_harmonics", "hidden", "n_blocks", "dilation_cycle", "kernel",
                  "glu_every", "glu_kernel", "head_hidden"):
            if int(getattr(self, f)) < 1:
                raise ConfigError(f"encoder {f} must be >= 1, got {getattr(self, f)!r}")
        if self.kernel % 2 == 0 or self.glu_kernel % 2 == 0:
            raise ConfigError(f"encoder kernels must be odd ('same' padding), got {self.kernel}, "
                f"{self.glu_kernel}")
        if not 0 <= self.spatial_dropout < 1:
            raise ConfigError(f"spatial_dropout radius must be in [0, 1), got {self.spatial_dropout!r}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("early_decisions", "causal"):  # additive: a run without them writes what older runs wrote
            if not getattr(self, key):
                d.pop(key)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EncoderConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown encoder settings {unknown}; known: {sorted(known)}")
        return cls(**d)


PRESETS: dict[str, EncoderConfig] = {
    "paper": EncoderConfig(preset="paper"),
    "efficient": EncoderConfig(
        preset="efficient", n_virtual=128, hidden=256, n_blocks=6, dilation_cycle=4, glu_kernel=1,
        head_hidden=512, stem_layers=1, downsample_in_stem=True,
    ),
}


def preset_config(name: str, **overrides: Any) -> EncoderConfig:
    """The named preset, with ``overrides`` applied (``ConfigError`` for an unknown name)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown encoder preset {name!r}; choose one of {sorted(PRESETS)}")
    return replace(PRESETS[name], **overrides) if overrides else PRESETS[name]


def normalise_positions(pos: np.ndarray) -> np.ndarray:
    """Min-max scale 2-D positions ``(C, 2)`` into [0, 1] per axis; rows with NaN stay NaN (no position)."""
    pos = np.asarray(pos, dtype=np.float64).reshape(-1, 2)
    ok = np.all(np.isfinite(pos), axis=1)
    out = np.full_like(pos, np.nan)
    if ok.any():
        lo = pos[ok].min(axis=0)
        span = pos[ok].max(axis=0) - lo
        span[span <= 0] = 1.0
        out[ok] = (pos[ok] - lo) / span
    return out


# ------------------------------------------------------------------------------------------------ layers
class SpatialAttention(nn.Module):
    """Softmax attention of ``n_out`` virtual channels over sensors, scored from their 2-D positions.

    Parameters
    ----------
    positions : array, shape (C, 2)
        Sensor positions scaled to [0, 1] (NaN: no position -> the sensor is never used).
    n_out : int
        Virtual channels.
    harmonics : int
        Fourier harmonics per axis; the embedding has ``2 * harmonics ** 2`` dims.
    margin : float
        Period of the embedding is ``1 + 2 * margin``.
    dropout_radius : float
        Training only: sensors within this distance of a random centre are removed from the softmax.
    """

    embedding: Tensor  # buffers (register_buffer), declared for type checkers
    positions: Tensor
    valid: Tensor

    def __init__(self, positions: np.ndarray, n_out: int, harmonics: int = 32, margin: float = 0.2,
                 dropout_radius: float = 0.2) -> None:
        super().__init__()
        pos = np.asarray(positions, dtype=np.float64).reshape(-1, 2)
        valid = np.all(np.isfinite(pos), axis=1)
        if not valid.any():
            raise ConfigError("spatial attention needs at least one sensor with a 2-D position")
        pos0 = np.where(valid[:, None], pos, 0.0)
        k = np.arange(harmonics, dtype=np.float64)
        kx, ky = np.meshgrid(k, k, indexing="ij")
        phase = 2 * math.pi * (pos0[:, 0, None] * kx.ravel()[None] + pos0[:, 1, None] * ky.ravel()[None])
        phase /= 1.0 + 2 * margin
        emb = np.concatenate([np.cos(phase), np.sin(phase)], axis=1)  # (C, 2 * H^2)
        self.register_buffer("embedding", torch.tensor(emb, dtype=torch.float32), persistent=False)
        self.register_buffer("positions", torch.tensor(pos0, dtype=torch.float32), persistent=False)
        self.register_buffer("valid", torch.tensor(valid), persistent=False)
        self.heads = nn.Parameter(torch.randn(n_out, emb.shape[1]) / math.sqrt(emb.shape[1]))
        self.n_in = pos.shape[0]
        self.n_out = n_out
        self.dropout_radius = float(dropout_radius)

    def weights(self, drop_centre: Tensor | None = None) -> Tensor:
        """Attention weights ``(n_out, C)`` (rows sum to 1); ``drop_centre`` (2,) removes a disc of
        sensors."""
        scores = self.heads @ self.embedding.T  # (n_out, C)
        mask = ~self.valid
        if drop_centre is not None:
            dropped = (self.positions - drop_centre).norm(dim=1) <= self.dropout_radius
            if bool((mask | dropped).all()):  # never drop every sensor
                dropped = torch.zeros_like(dropped)
            mask = mask | dropped
        scores = scores.masked_fill(mask[None, :], float("-inf"))
        return torch.softmax(scores, dim=1)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, T) -> (B, n_out, T)``."""
        centre = None
        if self.training and self.dropout_radius > 0:
            centre = torch.rand(2, device=x.device)
        return torch.einsum("oc,bct->bot", self.weights(centre), x)


class SubjectLayer(nn.Module):
    """One ``D x D`` matrix per subject (no bias), initialised to the identity."""

    def __init__(self, dim: int, n_subjects: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.eye(dim).repeat(n_subjects, 1, 1))

    def forward(self, x: Tensor, subject: Tensor) -> Tensor:
        """``x (B, D, T)``, ``subject (B,)`` int64 -> ``(B, D, T)``."""
        return torch.einsum("bij,bjt->bit", self.weight[subject], x)


class _ConvBNGelu(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int, dilation: int = 1, stride: int = 1,
                 residual: bool = False, causal: bool = False) -> None:
        super().__init__()
        span = 0 if stride > 1 else dilation * (kernel - 1)  # a strided conv's frame ends where it reads
        self.left = span if causal else 0
        pad = 0 if causal else span // 2
        self.conv = nn.Conv1d(c_in, c_out, kernel, padding=pad, dilation=dilation, stride=stride)
        self.bn = nn.BatchNorm1d(c_out)
        self.residual = residual and c_in == c_out and stride == 1

    def forward(self, x: Tensor) -> Tensor:
        y = F.gelu(self.bn(self.conv(F.pad(x, (self.left, 0)) if self.left else x)))
        return x + y if self.residual else y


class _GLUConv(nn.Module):
    def __init__(self, dim: int, kernel: int, causal: bool = False) -> None:
        super().__init__()
        self.left = kernel - 1 if causal else 0
        self.conv = nn.Conv1d(dim, 2 * dim, kernel, padding=0 if causal else kernel // 2)

    def forward(self, x: Tensor) -> Tensor:
        return F.glu(self.conv(F.pad(x, (self.left, 0)) if self.left else x), dim=1)


# ------------------------------------------------------------------------------------------------ encoder
class BrainEncoder(nn.Module):
    """Brain encoder (``paper`` or ``efficient``; see the module docstring).

    Parameters
    ----------
    config : EncoderConfig
        Architecture.
    positions : array, shape (C, 2)
        Sensor positions in [0, 1] (:func:`normalise_positions`).
    n_subjects : int
        Rows of the subject layer.
    out_dim : int
        Features of the scoring representation.
    time_pool : int
        Output has ``n_times // time_pool`` frames.
    """

    def __init__(self, config: EncoderConfig, positions: np.ndarray, n_subjects: int, out_dim: int,
                 time_pool: int = 1) -> None:
        super().__init__()
        if n_subjects < 1 or out_dim < 1 or time_pool < 1:
            raise ConfigError(
                f"encoder needs n_subjects, out_dim and time_pool >= 1, got {n_subjects}, {out_dim}, "
                f"{time_pool}"
            )
        self.config = config
        self.n_channels = int(np.asarray(positions).reshape(-1, 2).shape[0])
        self.n_subjects = int(n_subjects)
        self.out_dim = int(out_dim)
        self.time_pool = int(time_pool)
        d = config.n_virtual
        self.attention = SpatialAttention(positions, d, config.fourier_harmonics, config.pos_margin,
                                          config.spatial_dropout)
        self.initial = nn.Conv1d(d, d, 1)
        self.subject_layer = SubjectLayer(d, n_subjects)
        # early decisions: the learned front-end output of a not-yet-seen time step (random init, so that the
        # trunk can tell it from data from the first step; zero would look like a flat signal)
        self.unseen: nn.Parameter | None = (
            nn.Parameter(torch.randn(d) / math.sqrt(d)) if config.early_decisions else None)
        self.trunk = _Trunk(config, out_dim, time_pool)
        self.shared_frozen = False

    def freeze_shared(self) -> None:
        """Train only the subject layer from now on (``neurospeech adapt``).

        Every parameter but ``subject_layer.weight`` stops requiring gradients, and :meth:`train` keeps the
        trunk in eval mode, so its BatchNorm running statistics stay exactly as trained. The spatial
        attention still applies its spatial dropout in training mode (as in training), with frozen weights.
        """
        for name, p in self.named_parameters():
            p.requires_grad_(name == "subject_layer.weight")
        self.shared_frozen = True
        self.train(self.training)

    def train(self, mode: bool = True) -> BrainEncoder:
        """``nn.Module.train``; with :meth:`freeze_shared` the trunk stays in eval mode."""
        super().train(mode)
        if self.shared_frozen:
            self.trunk.eval()
        return self

    def front(self, x: Tensor, subject: Tensor) -> Tensor:
        """Spatial attention -> 1x1 conv -> subject layer: ``(B, C, T) -> (B, D, T)``."""
        return self.subject_layer(self.initial(self.attention(x)), subject)

    def forward(self, x: Tensor, subject: Tensor) -> Tensor:
        """``x (B, C, T)`` float32, ``subject (B,)`` int64 -> latent ``(B, out_dim, T // time_pool)``.

        With ``config.early_decisions`` a time step where any channel is NaN is *unseen*: its front-end output
        is the learned :attr:`unseen` vector (see :func:`mask_front`).
        """
        if x.ndim != 3 or x.shape[1] != self.n_channels:
            raise ConfigError(f"encoder expects input (batch, {self.n_channels}, time), got {tuple(x.shape)}")
        if self.unseen is None:
            return self.trunk(self.front(x, subject))
        return self.trunk(mask_front(x, lambda xs: self.front(xs, subject), self.unseen))

    @torch.no_grad()
    def folded_front(self) -> tuple[Tensor, Tensor]:
        """The eval-mode front end folded per subject: ``front(x, s) == M[s] @ x + b[s][:, None]``.

        Returns
        -------
        M : tensor, shape (n_subjects, D, C)
        b : tensor, shape (n_subjects, D)
        """
        a = self.attention.weights(None)  # (D, C)
        w1 = self.initial.weight[:, :, 0]  # (D, D)
        b1 = self.initial.bias  # (D,)
        if b1 is None:
            raise RuntimeError("folded_front needs the initial 1x1 convolution's bias (built with bias=True)")
        s = self.subject_layer.weight  # (S, D, D)
        return s @ (w1 @ a), s @ b1

    def output_frames(self, n_times: int) -> int:
        return n_times // self.time_pool


def mask_front(x: Tensor, front: Any, unseen: Tensor) -> Tensor:
    """Front end with unseen time steps masked: ``front(x with NaN -> 0)`` where seen, ``unseen`` elsewhere.

    Parameters
    ----------
    x : tensor, shape (B, C, T)
        Input; a time step with a NaN in any channel is unseen.
    front : callable
        ``(B, C, T) -> (B, D, T)`` (the torch front end, or the exported folded matrix).
    unseen : tensor, shape (D,)
        The learned vector of an unseen step.

    Returns
    -------
    tensor, shape (B, D, T)
    """
    # a NaN anywhere in a column makes its channel sum NaN: one reduction (ReduceSum + IsNaN in ONNX)
    gone = torch.isnan(x.sum(dim=1, keepdim=True))  # (B, 1, T)
    h = front(torch.where(gone, torch.zeros_like(x), x))
    return torch.where(gone, unseen[None, :, None].to(h.dtype), h)


def truncate_batch(x: Tensor, keep: Tensor) -> Tensor:
    """Training: a copy of ``x (B, C, T)`` with the samples from ``keep[b]`` on set to NaN (``keep (B,)``)."""
    t = torch.arange(x.shape[-1], device=x.device)
    gone = t[None, None, :] >= keep.to(x.device)[:, None, None]
    return x.masked_fill(gone, float("nan"))


class _Trunk(nn.Module):
    """Everything after the subject layer (shared by the torch model and the folded export)."""

    def __init__(self, cfg: EncoderConfig, out_dim: int, time_pool: int) -> None:
        super().__init__()
        d, h = cfg.n_virtual, cfg.hidden
        self.stem = nn.ModuleList(
            [_ConvBNGelu(d, d, cfg.kernel, residual=True, causal=cfg.causal) for _ in range(cfg.stem_layers)]
        )
        self.down: _ConvBNGelu | None = None
        c_in = d
        if cfg.downsample_in_stem and time_pool > 1:
            self.down = _ConvBNGelu(d, h, time_pool, stride=time_pool)
            c_in = h
        self.blocks = nn.ModuleList()
        self.glus = nn.ModuleDict()
        for k in range(cfg.n_blocks):
            dil = 2 ** (k % cfg.dilation_cycle)
            c = c_in if k == 0 else h
            self.blocks.append(_ConvBNGelu(c, h, cfg.kernel, dilation=dil, residual=k > 0, causal=cfg.causal))
            if k % cfg.glu_every == 1 % cfg.glu_every:
                self.glus[str(k)] = _GLUConv(h, cfg.glu_kernel, causal=cfg.causal)
        self.head_in = nn.Conv1d(h, cfg.head_hidden, 1)
        self.head_out: nn.Module = nn.ConvTranspose1d(cfg.head_hidden, out_dim, 1)  # export: the equal Conv1d
        self.final_pool = time_pool if (self.down is None and time_pool > 1) else 1

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.stem:
            x = layer(x)
        if self.down is not None:
            x = self.down(x)
        for k, block in enumerate(self.blocks):
            x = block(x)
            if str(k) in self.glus:
                x = self.glus[str(k)](x)
        x = self.head_out(F.gelu(self.head_in(x)))
        if self.final_pool > 1:
            x = F.avg_pool1d(x, self.final_pool, self.final_pool)
        return x


# ------------------------------------------------------------------------------------------------ MACs
def count_macs(model: BrainEncoder, n_times: int, folded: bool = True) -> dict[str, int]:
    """Multiply-accumulates of one window through ``model``, per part, counted with forward hooks.

    Parameters
    ----------
    model : BrainEncoder
        The encoder (its weights do not matter).
    n_times : int
        Window length (343).
    folded : bool
        True: the front end costs one ``D x C`` matrix per time step (fixed montage and subject, as exported).
        False: attention scores + weighted sum + 1x1 conv + subject layer, as published (scores counted once).

    Returns
    -------
    dict
        ``front``, ``stem``, ``dilated``, ``glu``, ``head``, ``pool`` and ``total`` MACs.
    """
    parts = {"front": 0, "stem": 0, "dilated": 0, "glu": 0, "head": 0}
    c, d = model.n_channels, model.config.n_virtual
    if folded:
        parts["front"] = c * d * n_times
    else:
        emb_dim = model.attention.embedding.shape[1]
        parts["front"] = d * emb_dim * c + c * d * n_times + 2 * d * d * n_times

    hooks = []
    trunk = model.trunk

    def conv_hook(name: str):
        def hook(mod: nn.Module, inp: tuple[Tensor, ...], out: Tensor) -> None:
            # Conv1d weight (out, in/groups, k), ConvTranspose1d (in, out/groups, k): MACs per output step
            w = mod.weight
            if not isinstance(w, Tensor):
                raise TypeError(f"{name}: a convolution without a weight tensor ({type(mod).__name__})")
            per = w.shape[0] * w.shape[1] * w.shape[2]
            t = out.shape[-1] if isinstance(mod, nn.Conv1d) else inp[0].shape[-1]
            parts[name] += int(per * t)
        return hook

    def conv_of(layer: nn.Module) -> nn.Module:
        conv = layer.conv
        if not isinstance(conv, nn.Module):
            raise TypeError(f"{type(layer).__name__}.conv is not a module")
        return conv

    for layer in trunk.stem:
        hooks.append(conv_of(layer).register_forward_hook(conv_hook("stem")))
    if trunk.down is not None:
        hooks.append(trunk.down.conv.register_forward_hook(conv_hook("stem")))
    for block in trunk.blocks:
        hooks.append(conv_of(block).register_forward_hook(conv_hook("dilated")))
    for glu in trunk.glus.values():
        hooks.append(conv_of(glu).register_forward_hook(conv_hook("glu")))
    hooks.append(trunk.head_in.register_forward_hook(conv_hook("head")))
    hooks.append(trunk.head_out.register_forward_hook(conv_hook("head")))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            trunk(torch.zeros(1, d, n_times))
    finally:
        for hk in hooks:
            hk.remove()
        model.train(was_training)
    parts["total"] = sum(parts.values())
    return parts
