"""``neurospeech evaluate``: retrieval accuracy of trained encoders and baselines on the test split.

Queries are test-split windows anchored at word onsets (sounds never heard in training); candidates are all
distinct test segments (one per ``segment_id``), scored as the service does (:class:`CandidateBank`: CLIP
score against normalised, flattened candidates in each model's scoring representation). Reported per subject
and overall: segment top-1/top-5/top-10 with the number of candidates and chance, word-level top-10
(probabilities summed per word), median rank.

Methods in one report:

- every run given (e.g. the contrastive encoder, the same network trained with MSE = the paper's "Base",
  the contrastive encoder with mel targets);
- ``random``: random scores (empirical chance);
- ``ridge-<features>``: :class:`neurospeech.models.ridge.RidgeDecoder` from brain windows to the first run's
  targets (same projection; fitted on training windows, pooled like the encoder output before scoring).

Writes ``report.json``, ``report.md``, ``curves.png`` (training curves of the runs) and ``topk.png``
(accuracy vs k).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..metrics import rank_of_true, segment_topk, word_topk
from ..preprocessing import PreprocessingSpec, RobustScaler, WindowSpec
from ..scoring import CandidateBank, normalise_candidates

__all__ = ["EvalConfig", "evaluate", "score_methods"]

log = logging.getLogger(__name__)


@dataclass
class EvalConfig:
    """Settings of ``neurospeech evaluate``.

    Attributes
    ----------
    runs : list of str
        Run directories written by ``neurospeech train``.
    out : str
        Report directory.
    data : str or None
        Dataset root (None: the first run's).
    data_format : str or None
        Layout of ``data`` (:mod:`neurospeech.data.formats`); None: the first run's when ``data`` is None, else
        detected.
    ridge : bool
        Add the ridge baseline (fitted on the first run's training windows and targets).
    random : bool
        Add random scores.
    max_ridge_windows : int
        Training windows per subject used by the ridge fit (one fit per subject; memory bound).
    feature_cache : str or None
        Feature cache (None: ``<data>/derivatives/neurospeech-features``).
    seed : int
        Seed of the random baseline and ridge subsampling.
    progress : bool
        Progress bars.
    """

    runs: list[str] = field(default_factory=list)
    out: str = "runs/eval"
    data: str | None = None
    data_format: str | None = None
    ridge: bool = True
    random: bool = True
    max_ridge_windows: int = 4000
    feature_cache: str | None = None
    seed: int = 0
    progress: bool = True


def _candidates(ts: Any, info: Any, out_shape: tuple[int, int]) -> tuple[CandidateBank, np.ndarray]:
    """Bank of the distinct test segments and the candidate index of every query."""
    uniq, first, inv = np.unique(ts.segment_id, return_index=True, return_inverse=True)
    bank = CandidateBank(
        features=normalise_candidates(ts.speech[first]), ids=uniq.astype(str),
        words=ts.word[first].astype(str),
        sounds=info.sound[first].astype(str), sentences=info.sentence[first].astype(str),
        sound_times=info.sound_time[first].astype(np.float64), header={"output_shape": list(out_shape)},
    )
    return bank, inv.astype(np.int64)


def score_methods(scores: np.ndarray, true_index: np.ndarray, cand_words: np.ndarray, true_words: np.ndarray,
                  subjects: np.ndarray) -> dict[str, Any]:
    """Metrics overall and per subject (segment top-1/5/10, word top-10, ranks for the top-k curve)."""
    def block(sel: np.ndarray) -> dict[str, Any]:
        seg = segment_topk(scores[sel], true_index[sel], ks=(1, 5, 10))
        word = word_topk(scores[sel], cand_words, true_words[sel], k=10)
        return {**seg, "word_top1": word["top1"], "word_top10": word["top10"],
                "word_chance_top10": word["chance_top10"], "n_words": word["n_words"]}

    out = {"overall": block(np.ones(len(scores), dtype=bool)),
           "per_subject": {str(s): block(subjects == s) for s in sorted(set(subjects.tolist()))}}
    out["ranks"] = rank_of_true(scores, true_index).tolist()
    return out


def evaluate(cfg: EvalConfig) -> dict[str, Any]:
    """Evaluate runs and baselines; write the report files; return the report dict."""
    import torch

    from . import _data
    from .train import load_run, plot_curves, predict

    if not cfg.runs:
        raise ConfigError("evaluate needs at least one run directory (neurospeech evaluate RUN [RUN ...])")
    t0 = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    loaded = [(Path(r), *load_run(r)) for r in cfg.runs]
    root = Path(cfg.data or loaded[0][2]["data"]["root"])
    cache = Path(cfg.feature_cache) if cfg.feature_cache else root / "derivatives" / "neurospeech-features"
    fmt = cfg.data_format or (None if cfg.data else loaded[0][2]["config"].get("data_format"))
    recordings = _data.find_recordings(root, None, None, fmt)
    report: dict[str, Any] = {"data": str(root), "split": "test", "anchors": "word onsets", "methods": {}}
    test_cache: dict[str, Any] = {}
    histories: dict[str, list[dict[str, float]]] = {}
    first_targets = None
    first_scalers: dict[str, RobustScaler] = {}
    ref: dict[str, Any] = {}

    for run_dir, model, meta in loaded:
        c = meta["config"]
        name = f"{c['preset']}-{c['loss']}-{meta['speech']['kind']}"
        if name in report["methods"]:
            name = f"{name}-{run_dir.name}"
        targets = _data.SpeechTargets.from_spec(root, meta["speech"], meta["representation"], cache)
        scalers = {s: RobustScaler.from_dict(v) for s, v in meta["scalers"].items()}
        subjects = list(meta["subjects"])
        window = WindowSpec.from_dict(meta["window"])
        spec = PreprocessingSpec.from_dict(meta["preprocessing"])
        recs = [r for r in recordings if r.subject in subjects]
        key = json.dumps([meta["speech"], meta["representation"], meta["scalers"], subjects, meta["window"]],
                         sort_keys=True)
        if key not in test_cache:
            ts, _, info = _data.segments(recs, targets, "test", "word", subjects, window, spec,
                                         scalers=scalers, progress=cfg.progress)
            test_cache[key] = (ts, info, _candidates(ts, info, tuple(meta["output_shape"])))
        ts, info, (bank, true_idx) = test_cache[key]
        z = predict(model, ts.brain, ts.subject, torch.device("cpu"))
        scores = bank.scores(z)
        res = score_methods(scores, true_idx, bank.words, ts.word, ts.subject_name)
        res.update({"run": str(run_dir), "model_sha256": meta["training"]["model_sha256"], "loss": c["loss"],
                    "preset": c["preset"], "features": meta["speech"]["kind"],
                    "output_shape": meta["output_shape"], "training": meta["training"]})
        report["methods"][name] = res
        histories[name] = meta.get("history", [])
        if first_targets is None:
            first_targets, first_scalers = targets, scalers
            ref = {"subjects": subjects, "window": window, "spec": spec, "recs": recs, "key": key,
                   "step": c.get("step", 0.5), "name": meta["speech"]["kind"]}
        log.info("%s: top-10 %.3f (chance %.3f, %d candidates)", name, res["overall"]["top10"],
                 res["overall"]["chance_top10"], res["overall"]["n_candidates"])

    ts, info, (bank, true_idx) = test_cache[ref["key"]]
    report["test_sounds"] = sorted(set(info.sound.tolist()))
    if cfg.random:
        rng = np.random.default_rng(cfg.seed)
        scores = rng.normal(size=(len(ts), len(bank))).astype(np.float32)
        report["methods"]["random"] = score_methods(scores, true_idx, bank.words, ts.word, ts.subject_name)
    if cfg.ridge and first_targets is not None:
        from .ridge import RidgeDecoder

        t_r = time.perf_counter()
        # one linear decoder per subject (each head has its own forward model), as the paper's linear baseline
        scores = np.full((len(ts), len(bank)), -np.inf, dtype=np.float32)
        alphas: dict[str, Any] = {}
        n_tr = 0
        subj_names = np.asarray(ts.subject_name)
        for subj in ref["subjects"]:
            rows = np.flatnonzero(subj_names == subj)
            if rows.size == 0:
                continue
            recs = [r for r in ref["recs"] if r.subject == subj]
            tr, _, _ = _data.segments(recs, first_targets, "train", "regular", ref["subjects"],
                                      ref["window"], ref["spec"], step=ref["step"], scalers=first_scalers,
                                      max_windows=cfg.max_ridge_windows, seed=cfg.seed, progress=cfg.progress,
                                      pool=False)
            ridge = RidgeDecoder().fit(tr.brain, tr.speech)
            n_tr += len(tr)
            del tr
            pred = first_targets.representation.pool(ridge.predict(ts.brain[rows]))
            scores[rows] = bank.scores(pred)
            alphas[subj] = getattr(ridge, "alpha_", None)
        res = score_methods(scores, true_idx, bank.words, ts.word, ts.subject_name)
        res.update({"features": ref["name"], "alpha": alphas, "per_subject_fit": True,
                    "train_windows": n_tr, "seconds": time.perf_counter() - t_r})
        report["methods"][f"ridge-{ref['name']}"] = res

    report["ratios"] = _ratios(report["methods"])
    report["seconds"] = time.perf_counter() - t0
    ranks = {k: v.pop("ranks") for k, v in report["methods"].items()}
    (out / "report.json").write_text(json.dumps(report, indent=1, sort_keys=True, default=_jd))
    (out / "report.md").write_text(_markdown(report))
    plot_curves(histories, out / "curves.png")
    _plot_topk(ranks, len(bank), out / "topk.png")
    log.info("report written to %s (%.1f s)", out, report["seconds"])
    return report


def _jd(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(type(o).__name__)


def _ratios(methods: dict[str, Any]) -> dict[str, float]:
    """Top-10 ratios of each contrastive run to ridge (same features) and to its regression twin."""
    out: dict[str, float] = {}
    for name, r in methods.items():
        if r.get("loss") != "clip":
            continue
        top = r["overall"]["top10"]
        ridge = methods.get(f"ridge-{r['features']}")
        if ridge is not None and ridge["overall"]["top10"] > 0:
            out[f"{name} / ridge-{r['features']}"] = top / ridge["overall"]["top10"]
        twin = f"{r['preset']}-mse-{r['features']}"
        if twin in methods and methods[twin]["overall"]["top10"] > 0:
            out[f"{name} / {twin}"] = top / methods[twin]["overall"]["top10"]
    return out


def _markdown(report: dict[str, Any]) -> str:
    lines = [f"# Evaluation on {report['data']} (test split, word-onset anchors)", ""]
    anyr = next(iter(report["methods"].values()))["overall"]
    lines += [f"{anyr['n_queries']} queries, {anyr['n_candidates']} distinct candidate segments; "
              f"chance top-1 {100 * anyr['chance_top1']:.2f} %, top-10 {100 * anyr['chance_top10']:.2f} %; "
              f"word-level chance top-10 {100 * anyr['word_chance_top10']:.2f} % ({anyr['n_words']} words).",
              ""]
    lines += ["| method | top-1 % | top-5 % | top-10 % | word top-10 % | median rank | candidates |",
              "|---|---|---|---|---|---|---|"]
    for name, r in report["methods"].items():
        o = r["overall"]
        lines.append(f"| {name} | {100 * o['top1']:.1f} | {100 * o['top5']:.1f} | {100 * o['top10']:.1f} | "
                     f"{100 * o['word_top10']:.1f} | {o['median_rank']:.0f} | {o['n_candidates']} |")
    lines += ["", "## Per subject (segment top-10 %)", ""]
    subjects = sorted({s for r in report["methods"].values() for s in r["per_subject"]})
    lines += ["| method | " + " | ".join(f"sub-{s}" for s in subjects) + " |",
              "|---|" + "---|" * len(subjects)]
    for name, r in report["methods"].items():
        cells = [f"{100 * r['per_subject'][s]['top10']:.1f}" if s in r["per_subject"] else "-"
                 for s in subjects]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if report["ratios"]:
        lines += ["", "## Ratios (top-10)", ""]
        lines += [f"- {k}: {v:.2f}x" for k, v in report["ratios"].items()]
    lines += ["", f"Evaluated in {report['seconds']:.0f} s.", ""]
    return "\n".join(lines)


def _plot_topk(ranks: dict[str, list[int]], n_candidates: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = np.unique(np.clip(np.round(np.logspace(0, np.log10(max(n_candidates, 2)), 40)), 1, n_candidates))
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for name, r_list in ranks.items():
        r = np.asarray(r_list)
        ax.plot(ks, [100 * np.mean(r < k) for k in ks], label=name)
    ax.plot(ks, 100 * ks / n_candidates, "k:",
        label="chance")
    ax.set(xscale="log", xlabel="k", ylabel="top-k accuracy (%)",
           title=f"segment top-k ({n_candidates} candidates)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
