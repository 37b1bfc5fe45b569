"""Baselines shared by ``neurospeech evaluate`` and ``neurospeech calibrate`` (one code path, one number).

- :func:`fit_ridges` + :func:`ridge_scores`: the tuned backward ridge
  (:class:`neurospeech.models.ridge.RidgeDecoder`), one fit per subject on training windows (regular
  anchors, train split), penalty chosen on validation windows (regular anchors, val split), test word
  windows scored against the candidate bank exactly like the network's output (prediction pooled to the
  scoring representation, CLIP score).
- :func:`random_scores` and :func:`frequency_scores`: chance baselines (random scores; a candidate's score
  is how often its word occurs among the training words, so frequent words win: the frequency-only decoder).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..errors import DataFormatError
from ..preprocessing import PreprocessingSpec, RobustScaler, WindowSpec
from ..scoring import CandidateBank
from .ridge import RidgeDecoder

__all__ = ["fit_ridges", "frequency_scores", "random_scores", "ridge_scores", "train_word_counts"]

log = logging.getLogger(__name__)


def fit_ridges(recs: list[Any], targets: Any, subjects: list[str], window: WindowSpec, spec: PreprocessingSpec,
               scalers: dict[str, RobustScaler] | None, *, step: float = 0.5, max_windows: int | None = 4000,
               seed: int = 0, progress: bool = False, tmin: float = -0.2, tmax: float = 0.8,
               decoder: dict[str, Any] | None = None, splits: Any = None
               ) -> tuple[dict[str, RidgeDecoder], dict[str, RobustScaler], dict[str, Any]]:
    """One tuned :class:`RidgeDecoder` per subject (training windows; penalty chosen on validation windows).

    Parameters
    ----------
    recs : list of Recording
        The dataset's recordings (of ``subjects``).
    targets : SpeechTargets
        Speech targets (the scoring representation's projection at the full frame rate).
    subjects : list of str
        Subject list of the model (index order).
    window, spec : WindowSpec, PreprocessingSpec
    scalers : dict or None
        Per-subject robust scalers (None: fitted on each subject's training windows as the trainer does).
    step : float
        Spacing of training/validation anchors (s).
    max_windows : int or None
        Training windows per subject.
    tmin, tmax : float
        Brain response window of the lags (s, relative to the speech frame).
    decoder : dict or None
        Extra :class:`RidgeDecoder` settings.
    splits : callable or None
        ``sound -> split`` (None: the dataset's own ``splits.json`` or the hash split).

    Returns
    -------
    decoders : dict of subject -> RidgeDecoder
    scalers : dict of subject -> RobustScaler
        The scalers used (given or fitted).
    info : dict
        Per-subject alpha, grid extensions, windows; settings; seconds.
    """
    from . import _data

    t0 = time.perf_counter()
    info: dict[str, Any] = {"fits": {}, "response_window_s": [tmin, tmax], "train_windows": 0}
    decoders: dict[str, RidgeDecoder] = {}
    used: dict[str, RobustScaler] = {}
    for subj in subjects:
        srecs = [r for r in recs if r.subject == subj]
        if not srecs:
            continue
        sc = None if scalers is None else {subj: scalers[subj]}
        tr, fitted, _ = _data.segments(srecs, targets, "train", "regular", subjects, window, spec, step=step,
                                       scalers=sc, max_windows=max_windows, seed=seed, progress=progress,
                                       pool=False, splits=splits)
        used.update(fitted)
        xv: NDArray[np.float32] | None
        yv: NDArray[np.float32] | None
        try:
            va, _, _ = _data.segments(srecs, targets, "val", "regular", subjects, window, spec, step=step,
                                      scalers=fitted, seed=seed, progress=progress, pool=False,
                                      splits=splits)
            xv, yv = va.brain, va.speech
        except DataFormatError as exc:  # no validation sounds for this subject: hold out training windows
            log.warning("ridge baseline: no validation windows for subject %s (%s); alpha is chosen on held-out "
                        "training windows", subj, exc)
            xv = yv = None
        dec = RidgeDecoder.for_response(tmin, tmax, window.sfreq, window.lag, seed=seed, **(decoder or {}))
        dec.fit(tr.brain, tr.speech, xv, yv)
        decoders[subj] = dec
        info["fits"][subj] = {"alpha": dec.alpha_, "grid_extensions": dec.grid_extensions_,
                                     "alpha_at_edge": dec.alpha_at_edge_, "train_windows": len(tr),
                                     "val_windows": 0 if xv is None else len(xv)}
        info["train_windows"] += len(tr)
        info["decoder"] = dec.settings()
        del tr
    info["seconds"] = time.perf_counter() - t0
    return decoders, used, info


def ridge_scores(decoders: dict[str, RidgeDecoder], targets: Any, test_brain: NDArray[np.float32],
                 test_subjects: NDArray[np.str_], bank: CandidateBank) -> NDArray[np.float32]:
    """Scores ``(n_test, n_candidates)`` of per-subject decoders, as the network's output is scored.

    ``test_brain (n_test, C, T)``: preprocessed test windows; ``test_subjects (n_test,)``: their subjects.
    The prediction is pooled to the scoring representation and CLIP-scored against the bank.
    """
    scores = np.full((len(test_brain), len(bank)), -np.inf, dtype=np.float32)
    names = np.asarray(test_subjects)
    for subj, dec in decoders.items():
        rows = np.flatnonzero(names == subj)
        for b in range(0, len(rows), 256):
            r = rows[b:b + 256]
            scores[r] = bank.scores(targets.representation.pool(dec.predict(test_brain[r])))
    missing = sorted(set(names.tolist()) - set(decoders))
    if missing:
        raise DataFormatError(f"no ridge decoder for test subjects {missing}")
    return scores


def random_scores(n_queries: int, n_candidates: int, seed: int = 0) -> NDArray[np.float32]:
    """Independent standard-normal scores ``(n_queries, n_candidates)``."""
    return np.random.default_rng(seed).normal(size=(n_queries, n_candidates)).astype(np.float32)


def train_word_counts(recs: list[Any], split_fn: Any) -> Counter[str]:
    """Case-folded word counts of the training split (``split_fn(sound) == 'train'``)."""
    counts: Counter[str] = Counter()
    for r in recs:
        w = r.load_events().words()
        for word, sound in zip(w.word, w.sound, strict=True):
            if split_fn(str(sound)) == "train" and str(word):
                counts[str(word).casefold()] += 1
    return counts


def frequency_scores(cand_words: NDArray[np.str_], counts: Counter[str], n_queries: int, seed: int = 0,
                     ) -> NDArray[np.float32]:
    """The frequency-only decoder: every query scores a candidate by log(1 + training count of its word).

    A tiny random jitter breaks ties between candidates of equal count (otherwise the pessimistic tie rule of
    the metrics would rank every tied true candidate last).
    """
    base = np.log1p(np.array([counts.get(str(w).casefold(), 0) for w in cand_words], dtype=np.float64))
    jitter = np.random.default_rng(seed).uniform(0, 1e-3, size=(n_queries, len(cand_words)))
    return (base[None, :] + jitter).astype(np.float32)
