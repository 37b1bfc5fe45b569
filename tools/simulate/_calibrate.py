"""Calibration: per-subject ridge regression (lagged brain -> log-mel) scored by segment retrieval.

Queries are the test-split word windows of every subject; candidates are all distinct test segments; the
score is the CLIP score of the paper (``sum(pred * Y) / ||Y||``, :mod:`neurospeech.scoring`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from neurospeech.models.ridge import RidgeDecoder
from numpy.typing import NDArray

from neurospeech.data import load_dataset, read_wav
from neurospeech.data.segments import SegmentSet, build_segments
from neurospeech.errors import DataFormatError
from neurospeech.metrics import segment_topk, word_topk
from neurospeech.scoring import normalise_candidates

__all__ = ["mel_features", "ridge_retrieval", "run_calibration"]

log = logging.getLogger(__name__)


def mel_features(root: Path) -> Callable[[str], NDArray[np.float32]]:
    """``sound -> (120, n_frames)`` log-mel at 120 Hz (:func:`neurospeech.speech.log_mel`), memoised."""
    from neurospeech.speech import log_mel

    @cache
    def feats(sound: str) -> NDArray[np.float32]:
        wav, sr = read_wav(root / sound)
        return log_mel(wav, sr)

    return feats


def ridge_retrieval(train: SegmentSet, test: SegmentSet, candidates: SegmentSet,
                    decoder: RidgeDecoder) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Fit on ``train``, score ``test`` against ``candidates``; returns (scores, true indices)."""
    decoder.fit(train.brain, train.speech)
    pred = decoder.predict(test.brain).reshape(len(test), -1).astype(np.float32)
    cand = normalise_candidates(candidates.speech)
    scores = pred @ cand.T
    pos = {sid: i for i, sid in enumerate(candidates.segment_id)}
    true = np.array([pos[s] for s in test.segment_id], dtype=np.int64)
    return scores.astype(np.float64), true


def run_calibration(root: str | Path, subjects: list[str] | None = None, max_train: int = 6000,
                    features: Callable[[str], NDArray[Any]] | None = None, lags: int = 40,
                    lag_start: int = -12, n_components: int = 64) -> dict[str, Any]:
    """Per-subject ridge calibration of a dataset (see module docstring).

    Parameters
    ----------
    root : path
        Dataset root.
    subjects : list of str or None
        Subjects to use (None: all).
    max_train : int
        At most this many training windows per subject (spread over its runs).
    features : callable or None
        Speech features (default: 120-band log-mel at 120 Hz).
    lags, lag_start : int
        Ridge lags in 120-Hz samples relative to the (already 150-ms shifted) brain window.
    n_components : int
        Channel PCA components kept by the ridge decoder.
    """
    t0 = time.perf_counter()
    root = Path(root)
    recs = load_dataset(root, subjects=subjects)
    feats = features or mel_features(root)
    subj_ids = sorted({r.subject for r in recs})
    per_subject: dict[str, Any] = {}
    tests: list[SegmentSet] = []
    all_scores: list[NDArray[np.float64]] = []
    trues: list[NDArray[np.int64]] = []
    cand: SegmentSet | None = None
    for subj in subj_ids:
        srecs = [r for r in recs if r.subject == subj]
        per_rec = max(1, max_train // len(srecs))
        train, scalers = build_segments(srecs, feats, split="train", max_per_recording=per_rec,
                                        progress=False)
        test, _ = build_segments(srecs, feats, split="test", scalers=scalers,
                                 speech_stats=(train.speech_mean, train.speech_std), progress=False)
        if len(train) == 0 or len(test) == 0:
            raise DataFormatError(f"subject {subj} has no train or no test windows; the dataset is too small")
        if cand is None:
            cand = test.select(test.unique_segments())
        else:  # union of distinct test segments over subjects
            merged = [cand, test]
            ids = np.concatenate([m.segment_id for m in merged])
            _, first = np.unique(ids, return_index=True)
            if len(first) > len(cand):
                cand = _concat(merged).select(np.sort(first))
        tests.append(test)
        dec = RidgeDecoder(lags=lags, lag_start=lag_start, lag_step=2, n_components=n_components)
        dec.fit(train.brain, train.speech)
        per_subject[subj] = {"n_train": len(train), "n_test": len(test), "alpha": dec.alpha_}
        del train
        per_subject[subj]["_decoder"] = dec
    if cand is None:
        raise DataFormatError(f"no subjects found under {root}")
    cnorm = normalise_candidates(cand.speech)
    pos = {sid: i for i, sid in enumerate(cand.segment_id)}
    for subj, test in zip(subj_ids, tests, strict=True):
        dec = per_subject[subj].pop("_decoder")
        pred = dec.predict(test.brain).reshape(len(test), -1)
        sc = (pred @ cnorm.T).astype(np.float64)
        tr = np.array([pos[s] for s in test.segment_id], dtype=np.int64)
        per_subject[subj].update(segment_topk(sc, tr))
        all_scores.append(sc)
        trues.append(tr)
    scores = np.concatenate(all_scores)
    true = np.concatenate(trues)
    res: dict[str, Any] = {"dataset": str(root), "decoder": "ridge", "target": "log-mel (120 bands)",
                           "lags": lags, "lag_start": lag_start, "lag_step": 2, "n_components": n_components,
                           "max_train": max_train}
    res.update(segment_topk(scores, true))
    words = np.concatenate([t.word for t in tests])
    res["word"] = word_topk(scores, cand.word, words, k=10)
    res["per_subject"] = per_subject
    res["seconds"] = round(time.perf_counter() - t0, 1)
    log.info("calibration: %s", {k: v for k, v in res.items() if k != "per_subject"})
    return res


def _concat(sets: list[SegmentSet]) -> SegmentSet:
    first = sets[0]
    kw = {k: np.concatenate([getattr(s, k) for s in sets]) for k in SegmentSet._PER_ROW}
    return SegmentSet(**kw, channels=first.channels, window=first.window, spec=first.spec,
                      speech_mean=first.speech_mean, speech_std=first.speech_std)
