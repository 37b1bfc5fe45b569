"""Per-session scaling: re-estimate the subject's robust scaler from the first seconds of the live stream.

The model contract carries each subject's :class:`~neurospeech.preprocessing.RobustScaler` (per channel the
median and the 25-75 % inter-quartile range of baselined windows) fitted on the training (or calibration)
session. Another session of the same person has other gains (head position in the helmet, electrode
impedances, an amplifier setting): a 3x gain makes every scaled value 3x larger, so the encoder sees data
unlike its training and the quality checks, whose thresholds are relative to the scaler (``flat_rel`` x IQR,
``artefact_threshold`` in scaled units), are off by the same factor.

:class:`SessionRescaler` collects the first ``seconds`` of clean model-rate data (samples computed from
non-finite input are left out; segments are kept apart), then fits the scaler with the statistic the trainer
uses (:func:`session_scaler`: windows every 0.5 s, baselined and lag-dropped by
:func:`~neurospeech.preprocessing.preprocess_window`, at most 200 of them drawn with the trainer's seed, then
:meth:`RobustScaler.fit <neurospeech.preprocessing.RobustScaler.fit>`) and switches to it. Windows whose last
sample is older than the switch keep the training scaler and are flagged ``scaler:training`` (the switch
point is a sample index: the end of the chunk that completes the N seconds, whichever thread assesses the
window). The first N seconds are taken exactly however the stream is chunked, so ``serve`` and
``decode-file`` fit the same scaler on the same data. A channel flat over the collected data keeps its
training statistics. The flat and artefact thresholds follow the new scaler (they are relative to it).
Collecting holds N s of model-rate data (``N * 120 * n_channels * 4`` bytes: 8.8 MB for 60 s of 306
channels); the fit works on 32 channels at a time.

After a stream loss, the stream that comes back may be a new acquisition session with another gain (an
amplifier restarted, a new recording block): :meth:`SessionRescaler.restart`, called when the service reconnects,
re-estimates the scaler from the first N s of clean data after the reconnection, exactly as at start: windows
ending after the reconnection and before the new switch use the training scaler and are flagged
``scaler:training``; windows ending before the reconnection keep the scaler of their own session. The status
counts the estimates (``estimations``), says when the last was made (``estimated_at``, Unix time) and keeps the
last ones (``history``: gain, windows, time).

``--rescale-seconds N`` (``[quality] rescale_seconds``) turns it on; unset, it is on (60 s) for a subject the
contract marks as adapted (``training.adapted_subjects``, written at export for a subject calibrated by
``neurospeech adapt`` or the zero-calibration ``mean`` subject) and off otherwise; 0 turns it off.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..errors import ConfigError
from ..preprocessing import RobustScaler, WindowSpec, preprocess_window

__all__ = ["DEFAULT_ADAPTED_SECONDS", "SessionRescaler", "attach_rescaler", "scaler_status", "session_scaler"]

log = logging.getLogger(__name__)

#: seconds re-estimated by default for an adapted subject (training fits up to 200 windows 0.5 s apart)
DEFAULT_ADAPTED_SECONDS = 60.0
_STEP_S = 0.5
_MAX_WINDOWS = 200
_BLOCK = 32  # channels per block while fitting: bounded memory (the windows of 32 channels at a time)


def session_scaler(
    pieces: list[NDArray[np.float32]],
    window: WindowSpec,
    training: RobustScaler,
    step_s: float = _STEP_S,
    max_windows: int = _MAX_WINDOWS,
) -> tuple[RobustScaler, dict[str, Any]]:
    """Fit a robust scaler on continuous model-rate data, as the trainer fits one on a recording.

    Parameters
    ----------
    pieces : list of array, shape (n_channels, n_samples_k)
        Continuous stretches of model-rate data (not baselined); windows are cut within each piece.
    window : WindowSpec
        Window geometry (baseline, lag).
    training : RobustScaler
        The contract's scaler: kept for channels flat over ``pieces``.
    step_s : float
        Seconds between window starts (the trainer's regular anchors: 0.5 s).
    max_windows : int
        Windows drawn at most (the trainer's 200, same seed).

    Returns
    -------
    scaler : RobustScaler
    info : dict
        ``n_windows``, ``kept_training`` (channels flat in the session: training statistics kept),
        ``gain_vs_training`` (median over channels of session IQR / training IQR).

    Raises
    ------
    ValueError
        If no piece holds a whole window.
    """
    n_win = window.n_window
    step = max(1, round(step_s * window.sfreq))
    starts = [(k, s) for k, p in enumerate(pieces) for s in range(0, p.shape[1] - n_win + 1, step)]
    if not starts:
        raise ValueError(f"no stretch of clean data holds a whole window ({n_win} samples)")
    if len(starts) > max_windows:  # the draw RobustScaler.fit makes, done here on indices (no copy of the rest)
        rng = np.random.default_rng(0)
        starts = [starts[i] for i in np.sort(rng.choice(len(starts), max_windows, replace=False))]
    n_ch = pieces[0].shape[0]
    center = np.empty(n_ch)
    scale = np.empty(n_ch)
    flat = np.zeros(n_ch, dtype=bool)
    for c0 in range(0, n_ch, _BLOCK):
        c1 = min(n_ch, c0 + _BLOCK)
        w = np.stack([pieces[k][c0:c1, s : s + n_win] for k, s in starts])  # (n, block, n_window)
        fitted = RobustScaler.fit(preprocess_window(w, window), max_windows=None)
        center[c0:c1], scale[c0:c1] = fitted.center, fitted.scale
        flat[c0:c1] = (w.max(axis=(0, 2)) - w.min(axis=(0, 2))) <= 0
    center[flat], scale[flat] = training.center[flat], training.scale[flat]
    ratio = scale[~flat] / training.scale[~flat]
    gain = float(np.median(ratio)) if len(ratio) else 1.0
    return RobustScaler(center=center, scale=scale), {
        "n_windows": len(starts), "kept_training": [int(i) for i in np.flatnonzero(flat)], "gain_vs_training": gain}


#: estimates kept in the status's ``history``
_HISTORY = 10


class SessionRescaler:
    """Collects the first ``seconds`` of clean model-rate data, then switches to a scaler fitted on them; again
    after each :meth:`restart` (a reconnection).

    :meth:`feed` and :meth:`restart` run in the thread that writes the ring (after each write; at a
    reconnection), :meth:`scaler_for` in the threads that assess windows.

    Parameters
    ----------
    training : RobustScaler
        The contract's scaler of the subject (used until the switch).
    window : WindowSpec
    seconds : float
        Clean data to collect (>= one window).
    names : list of str
        Channel names (for the log).
    reason : str
        Why rescaling is on (for the log and the status).
    horizon : int or None
        Samples the ring keeps: the scalers of stretches older than that are forgotten at a restart.
    """

    def __init__(
        self, training: RobustScaler, window: WindowSpec, seconds: float, names: list[str], reason: str = "",
        horizon: int | None = None,
    ) -> None:
        self.horizon = horizon
        self.training = training
        self.window = window
        self.seconds = float(seconds)
        self.names = names
        self.reason = reason
        self._need0 = max(round(self.seconds * window.sfreq), window.n_window)
        self._need = self._need0
        self._pieces: list[list[NDArray[np.float32]]] = [[]]
        self._seg: int | None = None
        self._n = 0
        self._lock = threading.Lock()
        self._collecting = True
        self.session: RobustScaler | None = None  # the scaler of the current acquisition session, once fitted
        self.switch_index: int | None = None  # ring index of the first sample after the collected data
        self.info: dict[str, Any] = {}
        # (first ring index a window may end at, scaler, pending): the scaler of each stretch of the ring, in order
        self._epochs: list[tuple[int, RobustScaler, bool]] = [(0, training, True)]
        self.estimations = 0
        self.restarts = 0
        self.estimated_at: float | None = None  # Unix time of the last estimate
        self.history: list[dict[str, Any]] = []

    @property
    def done(self) -> bool:
        """The scaler of the current session is fitted (False while (re-)estimating)."""
        return not self._collecting

    def restart(self, count: int, why: str = "reconnected") -> None:
        """Re-estimate from the first ``seconds`` of clean data from ring index ``count`` on (a new session).

        Windows ending at ``count`` or later use the training scaler, flagged pending, until the new fit;
        windows ending earlier keep the scaler they had. Data collected for an unfinished estimate is dropped.
        """
        with self._lock:
            self._collecting = True
            self.session = None
            self.info = {}
            ep = [e for e in self._epochs if e[0] < count]
            if self.horizon is not None:  # no window can end before count - horizon any more
                ep = [e for i, e in enumerate(ep) if i + 1 == len(ep) or ep[i + 1][0] > count - self.horizon]
            self._epochs = [*ep, (count, self.training, True)]
            self.restarts += 1
        self._pieces, self._seg, self._n, self._need = [[]], None, 0, self._need0
        log.info("per-session scaling: stream %s; the scaler is re-estimated from the first %g s of clean data "
                 "(training scaler meanwhile)", why, self.seconds)

    def feed(self, y: NDArray[np.float32], bad: NDArray[np.bool_] | None, seg: int, count: int) -> None:
        """Take model-rate samples just written to the ring.

        Parameters
        ----------
        y : array, shape (n_channels, n)
            The samples.
        bad : array of bool, shape (n, n_channels), or None
            Samples computed from non-finite input (left out: they split the data into pieces).
        seg : int
            Their segment (a new segment starts a new piece).
        count : int
            The ring's sample count after the write (the index of the next sample).
        """
        if not self._collecting:
            return
        if seg != self._seg:
            self._seg = seg
            self._pieces.append([])
        if bad is None:
            runs = [(0, y.shape[1])]
        else:
            good = ~bad.any(axis=1)
            edges = np.flatnonzero(np.diff(np.concatenate(([False], good, [False])).astype(np.int8)))
            runs = list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))
        for a, b in runs:
            b = min(b, a + self._need - self._n)  # exactly the first N s: the same scaler however chunked
            if b <= a:
                break
            if a > 0:
                self._pieces.append([])
            self._pieces[-1].append(np.array(y[:, a:b], dtype=np.float32))
            self._n += b - a
            if b < y.shape[1]:
                self._pieces.append([])
        if self._n >= self._need:
            self._fit(count)

    def _fit(self, count: int) -> None:
        pieces = [np.concatenate(p, axis=1) for p in self._pieces if p]
        try:
            scaler, info = session_scaler(pieces, self.window, self.training)
        except ValueError:  # clean data in stretches shorter than a window so far: keep collecting
            self._need += round(self.window.sfreq)
            return
        now = time.time()
        with self._lock:
            self.session, self.info, self.switch_index = scaler, info, count
            self._epochs.append((count, scaler, False))
            self._collecting = False
            self.estimations += 1
            self.estimated_at = now
            self.history = [*self.history, {"gain_vs_training": info["gain_vs_training"],
                                            "n_windows": info["n_windows"], "at": now}][-_HISTORY:]
        self._pieces = [[]]
        kept = [self.names[i] for i in info["kept_training"]]
        log.info(
            "session scaler #%d fitted on %.1f s of clean data (%d windows)%s: median gain vs training %.3g; "
            "windows ending from here on use it%s",
            self.estimations, self._n / self.window.sfreq, info["n_windows"],
            f" ({self.reason})" if self.reason else "", info["gain_vs_training"],
            f"; flat in this session, training scale kept: {kept[:10]}" if kept else "",
        )

    def scaler_for(self, start: int) -> tuple[RobustScaler, bool]:
        """The scaler for the window starting at ring index ``start``, and whether a switch is still pending
        (the training scaler while the scaler of the window's session is being estimated)."""
        end = start + self.window.n_window - 1
        with self._lock:
            k = bisect.bisect_right(self._epochs, end, key=lambda e: e[0]) - 1
            _, scaler, pending = self._epochs[max(k, 0)]
            return scaler, pending

    def status(self) -> dict[str, Any]:
        """``{"source": "training"|"session", "seconds", "collected_s", "gain_vs_training", "n_windows",
        "reason", "estimations", "restarts", "estimated_at", "history"}`` (``gain_vs_training`` and
        ``n_windows`` of the current session's estimate: None while it is being made)."""
        with self._lock:
            done = not self._collecting
            return {
                "source": "session" if done else "training",
                "seconds": self.seconds,
                "collected_s": self._n / self.window.sfreq,
                "gain_vs_training": self.info.get("gain_vs_training") if done else None,
                "n_windows": self.info.get("n_windows") if done else None,
                "reason": self.reason,
                "estimations": self.estimations,
                "restarts": self.restarts,
                "estimated_at": self.estimated_at,
                "history": [dict(h) for h in self.history],
            }


def attach_rescaler(pipeline: Any, settings: Any, contract: Any, subject: str) -> SessionRescaler | None:
    """Turn per-session scaling on for ``pipeline`` when the settings (or the contract) ask for it.

    ``settings.rescale_seconds``: None -> :data:`DEFAULT_ADAPTED_SECONDS` for a subject listed in the
    contract's ``training["adapted_subjects"]``, else off; 0 -> off; N > 0 -> on.

    Raises
    ------
    ConfigError
        ``rescale_seconds`` shorter than one window of the model.
    """
    seconds = getattr(settings, "rescale_seconds", None)
    adapted = (contract.training or {}).get("adapted_subjects") or {}
    if seconds is None:
        if subject not in adapted:
            return None
        seconds = DEFAULT_ADAPTED_SECONDS
        reason = f"subject {subject!r} adapted ({adapted[subject].get('kind', 'adapt')}): on by default"
    elif seconds <= 0:
        return None
    else:
        reason = "rescale_seconds set"
    w = contract.window
    if seconds * w.sfreq < w.n_window:
        raise ConfigError(
            f"rescale_seconds = {seconds:g} is shorter than one model window ({w.n_window / w.sfreq:.3g} s); "
            f"give at least {w.n_window / w.sfreq:.3g} s (e.g. --rescale-seconds 60), or 0 to turn it off"
        )
    ring = getattr(pipeline, "ring", None)
    r = SessionRescaler(pipeline.scaler, w, seconds, list(pipeline.names), reason,
                        horizon=None if ring is None else int(ring.capacity))
    pipeline.rescaler = r
    log.info("per-session scaling on (%s): the scaler is re-estimated from the first %g s of clean data",
             reason, seconds)
    return r


def scaler_status(pipeline: Any) -> dict[str, Any]:
    """The status heartbeat's ``scaler`` field for ``pipeline``."""
    r = getattr(pipeline, "rescaler", None)
    if r is None:
        return {"source": "training", "seconds": 0.0, "collected_s": 0.0, "gain_vs_training": None,
                "n_windows": None, "reason": "off", "estimations": 0, "restarts": 0, "estimated_at": None,
                "history": []}
    return r.status()
