"""``neurospeech calibrate``: how well the standard linear baseline decodes a dataset, before any training.

The same code as the ridge row of ``neurospeech evaluate`` (:func:`neurospeech.models.baselines.ridge_scores`)
on the same windows: targets built as the trainer builds them (extractor, standardisation and PCA on the
training sounds, the trainer's defaults ``score_dim=64``, ``time_pool=7``), robust scalers fitted per subject
on training windows as the trainer fits them, test word windows scored against every distinct test segment.
With the same settings it reports the number ``evaluate`` reports for a run trained on this dataset.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from ..data import Splits
from ..preprocessing import PreprocessingSpec, WindowSpec
from .baselines import fit_ridges, frequency_scores, ridge_scores, train_word_counts

__all__ = ["run_calibration"]

log = logging.getLogger(__name__)


def run_calibration(root: str | Path, subjects: list[str] | None = None, max_train: int | None = 4000,
                    features: str = "mel", feature_params: dict[str, Any] | None = None,
                    score_dim: int | None = 64, time_pool: int = 7, lag: float = 0.15, step: float = 0.5,
                    tmin: float = -0.2, tmax: float = 0.8, feature_cache: str | Path | None = None,
                    decoder: dict[str, Any] | None = None, seed: int = 0, n_boot: int = 1000,
                    chance_draws: int = 200, progress: bool = False, split_file: str | Path | None = None,
                    split_fractions: tuple[float, float, float] | None = None,
                    data_format: str | None = None) -> dict[str, Any]:
    """Tuned-ridge calibration of a dataset (see the module docstring).

    Parameters
    ----------
    root : path
        BIDS dataset root.
    subjects : list of str or None
        Subjects (None: all).
    max_train : int or None
        Training windows per subject (``evaluate --max-ridge-windows``).
    features, feature_params, score_dim, time_pool, lag, step
        As in :class:`neurospeech.models.train.TrainConfig`.
    tmin, tmax : float
        Brain response window of the ridge lags (s).
    feature_cache : path or None
        Feature cache (None: the user cache, never the dataset folder).
    decoder : dict or None
        Extra :class:`neurospeech.models.ridge.RidgeDecoder` settings.
    split_file, split_fractions
        The split (None: the dataset's ``splits.json`` when present, else the 0.7/0.1/0.2 hash split).
    data_format : str or None
        Layout of ``root`` (:mod:`neurospeech.data.formats`; None: detected).

    Returns
    -------
    dict
        Segment identification ``top1``/``top5``/``top10`` with chance and intervals, word identity, the
        frequency-only baseline, per-subject alphas, settings, ``seconds``.
    """
    from ..speech.cache import resolve_cache_dir
    from . import _data
    from .evaluate import _candidates, chance_levels, score_methods

    t0 = time.perf_counter()
    root = Path(root)
    recs = _data.find_recordings(root, subjects, None, data_format)
    subj = sorted({r.subject for r in recs})
    window, spec = WindowSpec(lag=lag), PreprocessingSpec()
    splits = Splits.for_dataset(root, split_file, split_fractions)
    targets = _data.make_speech_targets(root, recs, features, dict(feature_params or {}), score_dim, time_pool,
                                        resolve_cache_dir(feature_cache), progress=progress, splits=splits)
    decoders, scalers, rinfo = fit_ridges(recs, targets, subj, window, spec, None, step=step,
                                          max_windows=max_train, seed=seed, progress=progress, tmin=tmin,
                                          tmax=tmax, decoder=decoder, splits=splits)
    ts, _, info = _data.segments(recs, targets, "test", "word", subj, window, spec, scalers=scalers,
                                 progress=progress, splits=splits)
    n_frames = targets.representation.out_frames(window.n_times)
    bank, true_idx = _candidates(ts, info, (targets.representation.out_dim, n_frames))
    scores = ridge_scores(decoders, targets, ts.brain, ts.subject_name, bank)
    res = score_methods(scores, true_idx, bank.words, ts.word, ts.subject_name, n_boot, seed)
    res.pop("ranks")
    res.pop("hits")
    freq = score_methods(frequency_scores(bank.words, train_word_counts(recs, splits), len(ts), seed),
                         true_idx, bank.words, ts.word, ts.subject_name, n_boot, seed)["overall"]
    out: dict[str, Any] = {"dataset": str(root), "decoder": "tuned backward ridge", "features": features,
                           "score_dim": score_dim, "time_pool": time_pool, "max_train": max_train,
                           "split": {k: v for k, v in splits.to_dict().items() if k != "assigned"},
                           **res["overall"], "per_subject": res["per_subject"], "ridge": rinfo,
                           "chance": chance_levels(len(ts), len(bank), bank.words, ts.word, chance_draws, seed),
                           "frequency_baseline": freq}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    log.info("calibration: segment top-10 %.3f (chance %.3f, %d candidates)", out["top10"],
             out["chance_top10"], out["n_candidates"])
    return out
