"""What flows from the pipeline to the encoder: a cut window (:class:`WindowCut`) and a checked one
(:class:`WindowJob`)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .ringbuffer import RingSpan

__all__ = ["WindowCut", "WindowJob"]


@dataclass
class WindowJob:
    """One window ready for the encoder (or flagged and skipped).

    Attributes
    ----------
    kind : str
        ``sliding`` or ``word``.
    x : array, shape (n_channels, n_times) float32, or None
        Model input (None: not decodable, see ``flags``).
    flags : list of str
    t_window_start, t_window_end : float
        LSL times of the first and last model-rate sample of the window (including the baseline part).
    t_newest_sample : float
        LSL stamp of the newest raw sample consumed when the window became complete.
    truth : dict or None
        ``{"segment_id", "word", ...}`` from a word marker.
    start : int
        Global ring index of the window's first sample.
    t_created : float
        ``time.perf_counter()`` when the window was cut (processing time starts here).
    """

    kind: str
    x: NDArray[np.float32] | None
    flags: list[str]
    t_window_start: float
    t_window_end: float
    t_newest_sample: float
    truth: dict[str, Any] | None = None
    start: int = 0
    t_created: float = field(default_factory=time.perf_counter)


@dataclass
class WindowCut:
    """A window copied out of the ring, not yet checked or scaled (see :meth:`OnlinePipeline.cut`)."""

    kind: str
    span: RingSpan
    truth: dict[str, Any] | None
    start: int
    t_created: float

