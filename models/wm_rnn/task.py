"""The retro-cue working-memory task of Piwek, Stokes & Summerfield (2023).

Two colours are shown at step 0, one per location, each coded by ``n_channels`` (17) von Mises tuning curves
(kappa 5, peak 1, centres ``-pi + 2 pi k / 17``). A pre-cue delay follows, then a one-hot retro-cue
(2 channels) names the location to report, then a post-cue delay; the network reports the cued colour
at the last step.
Inputs have ``2 * 17 + 2 = 36`` channels. With 16 colours per location and 2 cue locations there are
``16 * 16 * 2 = 512`` trial types.

This module is numpy only (no torch), so the trial tables can be used by the analysis code too.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np

from neurospeech.errors import ConfigError

__all__ = [
    "TaskConfig",
    "TrialSet",
    "circ_dist",
    "make_inputs",
    "make_trials",
    "output_centres",
    "von_mises_code",
    "wrap",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskConfig:
    """Settings of the retro-cue task.

    Attributes
    ----------
    n_channels : int
        Von Mises channels per location and output channels (17).
    n_colours : int
        Colours per location (16), evenly spaced on ``[-pi, pi)``.
    kappa, peak : float
        Von Mises concentration and peak height of the input tuning curves.
    pre_cue_delay, post_cue_delay : int
        Delay lengths in steps. Colours at step 0, cue at step ``1 + pre_cue_delay``, output at the last step
        ``1 + pre_cue_delay + post_cue_delay``. The paper's experiment 1 uses 7 and 7; experiment 2 keeps the
        total delay at 14 and varies the post-cue delay (see :meth:`experiment2`).
    cue_validity : float
        Probability that the probed colour is the cued one (1.0: always valid; 0.5: uninformative cue).
    """

    n_channels: int = 17
    n_colours: int = 16
    kappa: float = 5.0
    peak: float = 1.0
    pre_cue_delay: int = 7
    post_cue_delay: int = 7
    cue_validity: float = 1.0

    def __post_init__(self) -> None:
        if self.n_channels < 3:
            raise ConfigError(f"n_channels must be >= 3, got {self.n_channels}; the paper uses 17")
        if self.n_colours < 4:
            raise ConfigError(
                f"n_colours must be >= 4 (4 colour bins), got {self.n_colours}; the paper uses 16"
            )
        if self.pre_cue_delay < 0 or self.post_cue_delay < 0:
            raise ConfigError(
                f"delays must be >= 0 steps, got pre_cue_delay={self.pre_cue_delay}, "
                f"post_cue_delay={self.post_cue_delay}"
            )
        if not 0.0 <= self.cue_validity <= 1.0:
            raise ConfigError(f"cue_validity must lie in [0, 1], got {self.cue_validity}")
        if self.kappa <= 0 or self.peak <= 0:
            raise ConfigError(f"kappa and peak must be > 0, got kappa={self.kappa}, peak={self.peak}")

    @classmethod
    def experiment2(cls, post_cue_delay: int, total_delay: int = 14, **kwargs: object) -> TaskConfig:
        """Experiment 2 of the paper: total delay fixed (14), post-cue delay varied (0-7)."""
        if not 0 <= post_cue_delay <= total_delay:
            raise ConfigError(f"post_cue_delay must lie in [0, {total_delay}], got {post_cue_delay}")
        return cls(pre_cue_delay=total_delay - post_cue_delay, post_cue_delay=post_cue_delay, **kwargs)  # type: ignore[arg-type]

    @property
    def n_inputs(self) -> int:
        return 2 * self.n_channels + 2

    @property
    def cue_step(self) -> int:
        return 1 + self.pre_cue_delay

    @property
    def n_steps(self) -> int:
        return 2 + self.pre_cue_delay + self.post_cue_delay

    @property
    def pre_cue_step(self) -> int:
        """Last step of the pre-cue delay (the step before the cue; 0 when there is no pre-cue delay)."""
        return max(self.cue_step - 1, 0)

    @property
    def post_cue_step(self) -> int:
        """Last step of the trial (end of the post-cue delay), where the output is read."""
        return self.n_steps - 1

    def to_dict(self) -> dict:
        return asdict(self)


def wrap(x: np.ndarray | float) -> np.ndarray:
    """Wrap angles to ``[-pi, pi)``."""
    return (np.asarray(x, dtype=float) + np.pi) % (2 * np.pi) - np.pi


def circ_dist(a: np.ndarray | float, b: np.ndarray | float) -> np.ndarray:
    """Absolute circular distance ``|wrap(a - b)|`` in ``[0, pi]`` (broadcasts)."""
    return np.abs(wrap(np.asarray(a, dtype=float) - np.asarray(b, dtype=float)))


def output_centres(n_channels: int = 17) -> np.ndarray:
    """Preferred colours of the channels, ``-pi + 2 pi k / n`` (shape ``(n,)``)."""
    return -np.pi + 2 * np.pi * np.arange(n_channels) / n_channels


def colour_values(n_colours: int = 16) -> np.ndarray:
    """The colours of the task, evenly spaced on ``[-pi, pi)`` (shape ``(n_colours,)``)."""
    return -np.pi + 2 * np.pi * np.arange(n_colours) / n_colours


def von_mises_code(
    colours: np.ndarray, n_channels: int = 17, kappa: float = 5.0, peak: float = 1.0
) -> np.ndarray:
    """Population code of colours by von Mises tuning curves.

    Parameters
    ----------
    colours : ndarray, shape (n,)
        Angles in radians.

    Returns
    -------
    ndarray, shape (n, n_channels)
        ``peak * exp(kappa * (cos(c - mu_k) - 1))``: 1 at the channel centred on the colour.
    """
    c = np.asarray(colours, dtype=float).reshape(-1, 1)
    mu = output_centres(n_channels)[None, :]
    return peak * np.exp(kappa * (np.cos(c - mu) - 1.0))


@dataclass
class TrialSet:
    """A table of trials (all arrays of length ``n``).

    Attributes
    ----------
    colour1, colour2 : ndarray (n,)
        Colours (radians) at location 1 and 2.
    cued : ndarray (n,) int
        Cued location (0 or 1).
    probed : ndarray (n,) int
        Location whose colour must be reported (== ``cued`` on valid trials).
    """

    colour1: np.ndarray
    colour2: np.ndarray
    cued: np.ndarray
    probed: np.ndarray

    def __len__(self) -> int:
        return len(self.colour1)

    @property
    def target(self) -> np.ndarray:
        """The colour to report (radians), shape (n,)."""
        return np.where(self.probed == 0, self.colour1, self.colour2)

    @property
    def cued_colour(self) -> np.ndarray:
        return np.where(self.cued == 0, self.colour1, self.colour2)

    @property
    def uncued_colour(self) -> np.ndarray:
        return np.where(self.cued == 0, self.colour2, self.colour1)

    @property
    def valid(self) -> np.ndarray:
        return self.cued == self.probed


def make_trials(cfg: TaskConfig, rng: np.random.Generator | None = None, n_repeats: int = 1) -> TrialSet:
    """All ``n_colours**2 * 2`` trial types (512 by default), repeated ``n_repeats`` times.

    With ``cue_validity < 1`` the probed location differs from the cued one on a random fraction
    ``1 - cue_validity`` of trials (drawn from ``rng``).
    """
    if n_repeats < 1:
        raise ConfigError(f"n_repeats must be >= 1, got {n_repeats}")
    cols = colour_values(cfg.n_colours)
    c1, c2, cue = np.meshgrid(cols, cols, np.arange(2), indexing="ij")
    c1, c2, cue = (np.tile(a.ravel(), n_repeats) for a in (c1, c2, cue))
    cue = cue.astype(np.int64)
    probed = cue.copy()
    if cfg.cue_validity < 1.0:
        rng = rng if rng is not None else np.random.default_rng(0)
        invalid = rng.random(len(cue)) >= cfg.cue_validity
        probed[invalid] = 1 - cue[invalid]
    return TrialSet(colour1=c1, colour2=c2, cued=cue, probed=probed)


def make_inputs(cfg: TaskConfig, trials: TrialSet) -> np.ndarray:
    """Input sequences of the trials.

    Returns
    -------
    ndarray, shape (n_steps, n_trials, 36), float32
        Channels 0-16: colour at location 1; 17-33: colour at location 2 (both at step 0 only);
        34-35: the one-hot retro-cue at ``cfg.cue_step``.
    """
    n = len(trials)
    x = np.zeros((cfg.n_steps, n, cfg.n_inputs), dtype=np.float32)
    k = cfg.n_channels
    x[0, :, :k] = von_mises_code(trials.colour1, k, cfg.kappa, cfg.peak)
    x[0, :, k : 2 * k] = von_mises_code(trials.colour2, k, cfg.kappa, cfg.peak)
    x[cfg.cue_step, np.arange(n), 2 * k + trials.cued] = 1.0
    return x
