"""``neurospeech evaluate``: retrieval accuracy of trained encoders and baselines on the test split.

Queries are test-split windows anchored at word onsets (sounds never heard in training); candidates are all
distinct test segments (one per ``segment_id``), scored as the service does (:class:`CandidateBank`: CLIP
score against normalised, flattened candidates in each model's scoring representation). Reported per subject
and overall, every accuracy with a 95 % bootstrap interval over test segments:

- *segment identification* top-1/5/10 (chance exactly k / candidates) and median rank;
- *word identity* top-1/10 (softmax summed per case-folded word); its chance is measured: the mean and 95 %
  interval of the metric under random scores (``chance.word_identity_*``) — frequent words win by default.

Methods in one report:

- every run given (e.g. the contrastive encoder, the same network trained with MSE = the paper's "Base");
- ``ridge-<features>``: the tuned backward ridge (:func:`neurospeech.models.baselines.ridge_scores`, the code
  ``neurospeech calibrate`` runs too), fitted per subject on training windows, penalty chosen on validation;
- ``random``: random scores; ``frequency``: a frequency-only decoder (candidates scored by how often their
  word occurs in training).

Windows (``data_cache``, as in training): all in memory, or, for a corpus larger than memory, cut ``batch_size`` at a
time from the memory-mapped preprocessed-recording cache (:func:`neurospeech.models._stream.stream_segments`); the
report is the same either way.

The contrastive runs' top-10 ratios to the tuned ridge (and to their MSE twin) come with paired bootstrap
intervals. Writes ``report.json``, ``report.md``, ``curves.png`` and ``topk.png``.

*Decision delay* (``early_delays``, issue 18): every run also decides from the data available at word onset +
0.5, 1.0, 1.5, 2.0 s (:func:`neurospeech.early.mask_unseen`: the samples after the delay are NaN, which a model
trained with ``early_decisions`` masks; a model without it gets them zero-filled and is labelled so, as the
reference of what training for it buys). Accuracy vs delay with 95 % bootstrap intervals, chance level and the
share of the full-window top-10 (paired bootstrap interval) go into ``report.json["early"]``, a table in
``report.md`` and ``early.png``, beside the evidence-limited reference (:func:`neurospeech.early.delay_curve`):
the share of the full-window top-10 that a decoder extracting evidence uniformly over the window would reach,
and the evidence share each measured top-10 implies.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data import Splits
from ..errors import ConfigError, DataFormatError
from ..metrics import (
    bootstrap_ci,
    bootstrap_ratio_ci,
    empirical_chance,
    rank_of_true,
    segment_topk_from_ranks,
    word_ranks,
    word_topk_from_ranks,
)
from ..preprocessing import PreprocessingSpec, RobustScaler, WindowSpec
from ..scoring import CandidateBank, normalise_candidates

__all__ = ["EvalConfig", "chance_levels", "evaluate", "score_methods"]

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
        Add the tuned ridge baseline (fitted on the first run's training windows and targets).
    random : bool
        Add the random and frequency-only baselines.
    max_ridge_windows : int
        Training windows per subject used by the ridge fit (one fit per subject; memory bound).
    ridge_components : int
        Channel PCA components of the ridge baseline (its cost grows with the cube of components x lags).
    feature_cache : str or None
        Feature cache (None: :func:`neurospeech.speech.cache.default_cache_dir`).
    seed : int
        Seed of the random baseline, bootstraps and ridge subsampling.
    n_boot : int
        Bootstrap resamples of every interval.
    chance_draws : int
        Random score matrices drawn for the empirical word-identity chance.
    centered : bool
        Also score every run with the hubness correction (each candidate's mean score over the validation
        windows subtracted): reported as ``<run>+centred``.
    early_delays : list of float
        Decision delays (s after the word onset) of the accuracy-vs-delay curve (empty: no curve).
    data_cache : {'auto', 'on', 'off'}
        As in training (:func:`neurospeech.models._data.segment_source`): ``on`` cuts the test (and centring)
        windows batch by batch from the memory-mapped preprocessed-recording cache
        (:mod:`neurospeech.models._stream`), so memory does not grow with the test split's hours of signal;
        ``off`` holds them all in memory; ``auto``: on for a public corpus, off for the project's BIDS. Both
        give the same report (tested).
    batch_size : int
        Windows per forward pass; with ``data_cache`` on, the brain windows in memory at a time.
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
    ridge_components: int = 64
    feature_cache: str | None = None
    seed: int = 0
    n_boot: int = 1000
    chance_draws: int = 200
    centered: bool = True
    progress: bool = True
    early_delays: list[float] = field(default_factory=lambda: [0.5, 1.0, 1.5, 2.0])
    data_cache: str = "auto"
    batch_size: int = 256


def _candidates(ts: Any, info: Any, out_shape: tuple[int, int], batch: int = 256
                ) -> tuple[CandidateBank, np.ndarray]:
    """Bank of the distinct test segments and the candidate index of every query.

    The targets are read ``batch`` rows at a time (a streamed set cuts and pools them per batch)."""
    uniq, first, inv = np.unique(ts.segment_id, return_index=True, return_inverse=True)
    feats = np.concatenate([ts.speech[first[i:i + batch]] for i in range(0, len(first), batch)])
    bank = CandidateBank(
        features=normalise_candidates(feats), ids=uniq.astype(str),
        words=ts.word[first].astype(str),
        sounds=info.sound[first].astype(str), sentences=info.sentence[first].astype(str),
        sound_times=info.sound_time[first].astype(np.float64), header={"output_shape": list(out_shape)},
    )
    return bank, inv.astype(np.int64)


def score_methods(scores: np.ndarray, true_index: np.ndarray, cand_words: np.ndarray, true_words: np.ndarray,
                  subjects: np.ndarray, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Metrics overall and per subject, every accuracy with a 95 % bootstrap interval over test segments.

    Parameters
    ----------
    scores : array, shape (n_queries, n_candidates)
    true_index : array of int, shape (n_queries,)
    cand_words : array of str, shape (n_candidates,)
    true_words, subjects : array of str, shape (n_queries,)

    Returns
    -------
    dict
        ``overall`` and ``per_subject`` blocks (segment ``top1/top5/top10`` with ``*_ci``, ``chance_top*``,
        ``word_identity_top1/top10`` with ``*_ci``, ``median_rank``), ``ranks`` and ``hits`` (per-query top-10
        hits, for paired ratios; removed before the report is written).
    """
    # every metric below is a function of the per-query ranks: the score matrix is ranked once, row block by
    # row block (neurospeech.metrics.ROW_BLOCK), and never copied per subject
    seg_rank = rank_of_true(scores, true_index)
    w_rank, n_words = word_ranks(scores, cand_words, true_words)
    n_c = int(np.shape(scores)[1])

    def block(sel: np.ndarray) -> dict[str, Any]:
        out = segment_topk_from_ranks(seg_rank[sel], n_c, ks=(1, 5, 10))
        word = word_topk_from_ranks(w_rank[sel], n_words, k=10)
        out.update({"word_identity_top1": word["top1"], "word_identity_top10": word["top10"],
                    "n_words": word["n_words"]})
        groups = true_index[sel]
        for k in (1, 5, 10):
            out[f"top{k}_ci"] = bootstrap_ci(seg_rank[sel] < k, groups, n_boot, seed)
        for k in (1, 10):
            out[f"word_identity_top{k}_ci"] = bootstrap_ci(w_rank[sel] < k, groups, n_boot, seed)
        return out

    out = {"overall": block(np.ones(len(scores), dtype=bool)),
           "per_subject": {str(s): block(subjects == s) for s in sorted(set(subjects.tolist()))}}
    top1 = np.argmax(scores, axis=1)
    share = np.bincount(top1, minlength=scores.shape[1]) / max(len(top1), 1)
    out["overall"]["hubness_max_top1_share"] = float(share.max())
    out["overall"]["hubness_top1_distinct"] = int(np.count_nonzero(share))
    out["ranks"] = seg_rank.tolist()
    out["hits"] = (seg_rank < 10).tolist()
    return out


def chance_levels(n_queries: int, n_candidates: int, cand_words: np.ndarray, true_words: np.ndarray,
                  n_draws: int = 200, seed: int = 0) -> dict[str, Any]:
    """Chance of every metric: exact for segment identification, empirical (random scores) for word identity.

    Returns
    -------
    dict
        ``segment_top{1,5,10}`` (k / n_candidates), ``word_identity_top{1,10}`` as ``{mean, lo, hi, n_draws}``
        (the central 95 % of the metric over ``n_draws`` random score matrices) and the naive
        ``word_identity_top10_naive`` (10 / vocabulary, *not* a chance level: shown to make the point).
    """
    def wk(k: int) -> Any:
        return lambda s: float(np.mean(word_ranks(s, cand_words, true_words)[0] < k))

    n_words = len({str(w).casefold() for w in cand_words})
    return {
        **{f"segment_top{k}": min(k, n_candidates) / n_candidates for k in (1, 5, 10)},
        "word_identity_top1": empirical_chance(wk(1), (n_queries, n_candidates), n_draws, seed + 1),
        "word_identity_top10": empirical_chance(wk(10), (n_queries, n_candidates), n_draws, seed + 1),
        "word_identity_top10_naive": min(10, n_words) / n_words,
        "n_words": n_words,
    }


def evaluate(cfg: EvalConfig) -> dict[str, Any]:
    """Evaluate runs and baselines; write the report files; return the report dict."""
    import torch

    from ..speech.cache import resolve_cache_dir
    from . import _data
    from .baselines import fit_ridges, frequency_scores, random_scores, ridge_scores, train_word_counts
    from .train import load_run, plot_curves, predict

    if not cfg.runs:
        raise ConfigError("evaluate needs at least one run directory (neurospeech evaluate RUN [RUN ...])")
    if cfg.batch_size < 1:
        raise ConfigError(f"evaluate batch_size must be at least 1 window, got {cfg.batch_size}; e.g. 256")
    t0 = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    loaded = [(Path(r), *load_run(r)) for r in cfg.runs]
    root = Path(cfg.data or loaded[0][2]["data"]["root"])
    cache = resolve_cache_dir(cfg.feature_cache)
    fmt = cfg.data_format or (None if cfg.data else loaded[0][2]["config"].get("data_format"))
    recordings = _data.find_recordings(root, None, None, fmt)
    # windows all in memory, or cut batch by batch from the memory-mapped preprocessed-recording cache
    seg_fn, seg_kw = _data.segment_source(cfg.data_cache, root, fmt, cfg.feature_cache)
    report: dict[str, Any] = {"data": str(root), "split": "test", "anchors": "word onsets", "methods": {},
                              "windows": "streamed from " + str(seg_kw["cache_dir"]) if seg_kw else "in memory"}
    test_cache: dict[str, Any] = {}
    histories: dict[str, list[dict[str, float]]] = {}
    first_targets = None
    first_scalers: dict[str, RobustScaler] = {}
    ref: dict[str, Any] = {}
    curves: dict[str, list[dict[str, Any]]] = {}
    early_modes: dict[str, str] = {}
    if cfg.early_delays:
        from ..early import check_delays

        check_delays(cfg.early_delays)

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
        splits = Splits.from_dict(meta["data"].get("split"))
        key = _test_set_key(meta, splits)
        if key not in test_cache:
            ts, _, info = seg_fn(recs, targets, "test", "word", subjects, window, spec,
                                 scalers=scalers, progress=cfg.progress, splits=splits, **seg_kw)
            test_cache[key] = (ts, info, _candidates(ts, info, tuple(meta["output_shape"]), cfg.batch_size))
        ts, info, (bank, true_idx) = test_cache[key]
        z = predict(model, ts.brain, ts.subject, torch.device("cpu"), cfg.batch_size)
        scores = bank.scores(z)
        res = score_methods(scores, true_idx, bank.words, ts.word, ts.subject_name, cfg.n_boot, cfg.seed)
        res.update({"run": str(run_dir), "model_sha256": meta["training"]["model_sha256"], "loss": c["loss"],
                    "preset": c["preset"], "features": meta["speech"]["kind"],
                    "output_shape": meta["output_shape"], "training": meta["training"]})
        report["methods"][name] = res
        histories[name] = meta.get("history", [])
        if cfg.early_delays:
            native = bool(meta["encoder"].get("early_decisions"))
            early_modes[name] = "masked (trained for early decisions)" if native else \
                "zero-filled (not trained for early decisions)"
            curves[name] = _early_curve(model, native, ts, bank, true_idx, window, cfg,
                                        np.asarray(res["ranks"]))
            log.info("%s: top-10 vs delay %s", name,
                     {r["delay_s"]: round(r["top10"], 3) for r in curves[name]})
        if first_targets is None:
            first_targets, first_scalers = targets, scalers
            ref = {"subjects": subjects, "window": window, "spec": spec, "recs": recs, "key": key,
                   "step": c.get("step", 0.5), "name": meta["speech"]["kind"], "splits": splits}
        log.info("%s: top-10 %.3f (chance %.3f, %d candidates)", name, res["overall"]["top10"],
                 res["overall"]["chance_top10"], res["overall"]["n_candidates"])
        if cfg.centered:
            # hubness correction measured on held-out data: subtract each candidate's mean score over the
            # validation windows (a reference set the test never sees), then score the test queries again
            try:
                va, _, _ = seg_fn(recs, targets, "val", "regular", subjects, window, spec,
                                  scalers=scalers, progress=cfg.progress, splits=splits,
                                  step=c.get("step", 0.5), **seg_kw)
            except DataFormatError as exc:
                log.warning("no validation windows for the centring reference: %s", exc)
            else:
                ref_mean = bank.scores(predict(model, va.brain, va.subject, torch.device("cpu"),
                                               cfg.batch_size)).mean(axis=0)
                cres = score_methods(scores - ref_mean[None, :], true_idx, bank.words, ts.word, ts.subject_name,
                                     cfg.n_boot, cfg.seed)
                cres.update({"run": str(run_dir), "loss": c["loss"], "preset": c["preset"],
                             "features": meta["speech"]["kind"], "correction": "candidate mean over "
                             f"{len(va)} validation windows subtracted", "reference_windows": len(va)})
                report["methods"][f"{name}+centred"] = cres

    ts, info, (bank, true_idx) = test_cache[ref["key"]]
    report["test_sounds"] = sorted(set(info.sound.tolist()))
    report["chance"] = chance_levels(len(ts), len(bank), bank.words, ts.word, cfg.chance_draws, cfg.seed)
    if cfg.random:
        scores = random_scores(len(ts), len(bank), cfg.seed)
        report["methods"]["random"] = score_methods(scores, true_idx, bank.words, ts.word, ts.subject_name,
                                                    cfg.n_boot, cfg.seed)
        counts = train_word_counts(ref["recs"], ref["splits"])
        scores = frequency_scores(bank.words, counts, len(ts), cfg.seed)
        report["methods"]["frequency"] = score_methods(scores, true_idx, bank.words, ts.word, ts.subject_name,
                                                       cfg.n_boot, cfg.seed)
    if cfg.ridge and first_targets is not None:
        decoders, _, rinfo = fit_ridges(ref["recs"], first_targets, ref["subjects"], ref["window"], ref["spec"],
                                        first_scalers, step=ref["step"], max_windows=cfg.max_ridge_windows,
                                        seed=cfg.seed, progress=cfg.progress,
                                        decoder={"n_components": cfg.ridge_components}, splits=ref["splits"])
        scores = ridge_scores(decoders, first_targets, ts.brain, ts.subject_name, bank)
        res = score_methods(scores, true_idx, bank.words, ts.word, ts.subject_name, cfg.n_boot, cfg.seed)
        res.update({"features": ref["name"], "baseline": "tuned backward ridge (lagged brain -> feature PCs)",
                    **rinfo})
        report["methods"][f"ridge-{ref['name']}"] = res
        log.info("ridge-%s: top-10 %.3f (alphas %s)", ref["name"], res["overall"]["top10"],
                 {s: v["alpha"] for s, v in rinfo["fits"].items()})

    if curves:
        report["early"] = {"methods": curves, "modes": early_modes, "metric": "segment identification",
                           "delays_s": [r["delay_s"] for r in next(iter(curves.values()))]}
    report["ratios"] = _ratios(report["methods"], true_idx, cfg.n_boot, cfg.seed)
    report["seconds"] = time.perf_counter() - t0
    ranks = {k: v.pop("ranks") for k, v in report["methods"].items()}
    for v in report["methods"].values():
        v.pop("hits")
    (out / "report.json").write_text(json.dumps(report, indent=1, sort_keys=True, default=_jd))
    (out / "report.md").write_text(_markdown(report))
    plot_curves(histories, out / "curves.png")
    _plot_topk(ranks, len(bank), out / "topk.png")
    if curves:
        _plot_early(curves, out / "early.png")
    log.info("report written to %s (%.1f s)", out, report["seconds"])
    return report


def _test_set_key(meta: dict[str, Any], splits: Splits) -> str:
    """Key of the test windows a run is evaluated on: runs with equal keys share one cut of the test split.

    Everything that changes the windows is in it, the preprocessing (e.g. ``resample_phase``) included: two
    runs trained with different filters are each evaluated on windows made with their own filter.
    """
    return json.dumps([meta["speech"], meta["representation"], meta["scalers"], list(meta["subjects"]),
                       meta["window"], meta["preprocessing"], splits.to_dict()], sort_keys=True)


def _early_curve(model: Any, native: bool, ts: Any, bank: CandidateBank, true_idx: np.ndarray,
                 window: WindowSpec, cfg: EvalConfig, full_ranks: np.ndarray) -> list[dict[str, Any]]:
    """Rows of :func:`neurospeech.early.delay_curve` for one run (``full_ranks``: its full-window ranks).

    ``native``: the model was trained for early decisions (unseen samples NaN, masked by the model); else the
    unseen samples are zero-filled (what a model that knows nothing of early decisions can be given).
    """
    import torch

    from ..early import check_delays, delay_curve, mask_unseen, n_seen
    from .train import predict

    ranks: dict[float, np.ndarray] = {}
    for d in check_delays(cfg.early_delays, window):
        zs = []
        b = cfg.batch_size
        for i in range(0, len(ts), b):  # batch by batch: the windows may be streamed from the cache
            x = mask_unseen(ts.brain[i:i + b], window, d)
            if not native:
                x[..., n_seen(window, d):] = 0.0
            zs.append(predict(model, x, ts.subject[i:i + b], torch.device("cpu"), b))
        ranks[d] = rank_of_true(bank.scores(np.concatenate(zs)), true_idx)
    ranks[float(window.tmax)] = full_ranks
    return delay_curve(ranks, true_idx, len(bank), cfg.n_boot, cfg.seed, window=window)


def _plot_early(curves: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """Top-10 vs decision delay with 95 % intervals, the uniform-evidence reference and chance (``early.png``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    top_hi = 0.0
    for name, rows in curves.items():
        d = np.array([r["delay_s"] for r in rows])
        top = np.array([100 * r["top10"] for r in rows])
        lo = np.array([100 * r["top10_ci"][0] for r in rows])
        hi = np.array([100 * r["top10_ci"][1] for r in rows])
        line = ax.errorbar(d, top, yerr=[top - lo, hi - top], marker="o", capsize=3, label=name)
        top_hi = max(top_hi, float(hi.max()))
        if "uniform_evidence_of_full" in rows[0]:  # what uniform evidence over the window would give
            ref = np.array([np.nan if r["uniform_evidence_of_full"] is None
                            else 100 * r["uniform_evidence_of_full"] * rows[-1]["top10"] for r in rows])
            ax.plot(d, ref, ls="--", color=line[0].get_color(), alpha=0.6,
                    label=f"{name}: uniform-evidence reference")
    rows0 = next(iter(curves.values()))
    ax.axhline(100 * rows0[0]["chance_top10"], color="k", ls=":", label="chance")
    ax.set(xlabel="decision time after word onset (s; last = full window)", ylabel="segment top-10 (%)",
           title="accuracy vs decision delay (95 % bootstrap CI)", ylim=(0, min(100.0, 1.25 * top_hi + 1)))
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _jd(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(type(o).__name__)


def _ratios(methods: dict[str, Any], groups: np.ndarray, n_boot: int, seed: int) -> dict[str, dict[str, Any]]:
    """Top-10 ratios of each contrastive run to the tuned ridge (same features) and to its regression twin,
    with paired bootstrap 95 % intervals over test segments (queries in ``groups``)."""
    out: dict[str, dict[str, Any]] = {}
    for name, r in methods.items():
        if r.get("loss") != "clip":
            continue
        refs = [f"ridge-{r['features']}", f"{r['preset']}-mse-{r['features']}"]
        for other in refs:
            if other not in methods or len(methods[other]["hits"]) != len(r["hits"]):
                continue
            top, base = r["overall"]["top10"], methods[other]["overall"]["top10"]
            lo, hi = bootstrap_ratio_ci(np.asarray(r["hits"]), np.asarray(methods[other]["hits"]), groups,
                                        n_boot, seed)
            out[f"{name} / {other}"] = {"ratio": top / base if base > 0 else float("inf"), "ci": [lo, hi]}
    return out


def _pc(v: float) -> str:
    return f"{100 * v:.1f}"


def _ci(o: dict[str, Any], key: str) -> str:
    lo, hi = o[f"{key}_ci"]
    return f"{_pc(o[key])} [{_pc(lo)}, {_pc(hi)}]"


def _markdown(report: dict[str, Any]) -> str:
    lines = [f"# Evaluation on {report['data']} (test split, word-onset anchors)", ""]
    anyr = next(iter(report["methods"].values()))["overall"]
    ch = report["chance"]
    w1, w10 = ch["word_identity_top1"], ch["word_identity_top10"]
    lines += [f"{anyr['n_queries']} queries, {anyr['n_candidates']} distinct candidate segments, "
              f"{ch['n_words']} distinct (case-folded) words. Brackets: 95 % bootstrap intervals over test segments.",
              "",
              f"Chance: segment identification top-1 {100 * ch['segment_top1']:.2f} %, top-10 "
              f"{100 * ch['segment_top10']:.2f} % (exact); word identity top-1 {_pc(w1['mean'])} % "
              f"[{_pc(w1['lo'])}, {_pc(w1['hi'])}], top-10 {_pc(w10['mean'])} % [{_pc(w10['lo'])}, {_pc(w10['hi'])}]"
              f" (random scores, {w10['n_draws']} draws; not 10 / vocabulary = "
              f"{100 * ch['word_identity_top10_naive']:.1f} %: frequent words collect probability).", ""]
    lines += ["| method | segment top-1 % | segment top-10 % | word identity top-1 % | word identity top-10 % "
              "| median rank | max top-1 share % |",
              "|---|---|---|---|---|---|---|"]
    for name, r in report["methods"].items():
        o = r["overall"]
        lines.append(f"| {name} | {_ci(o, 'top1')} | {_ci(o, 'top10')} | {_ci(o, 'word_identity_top1')} | "
                     f"{_ci(o, 'word_identity_top10')} | {o['median_rank']:.0f} | "
                     f"{100 * o['hubness_max_top1_share']:.0f} |")
    lines += ["", "## Per subject (segment top-10 %)", ""]
    subjects = sorted({s for r in report["methods"].values() for s in r["per_subject"]})
    lines += ["| method | " + " | ".join(f"sub-{s}" for s in subjects) + " |",
              "|---|" + "---|" * len(subjects)]
    for name, r in report["methods"].items():
        cells = [_ci(r["per_subject"][s], "top10") if s in r["per_subject"] else "-" for s in subjects]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    ridge = [(k, v) for k, v in report["methods"].items() if k.startswith("ridge-")]
    for name, r in ridge:
        alphas = {s: f"{v['alpha']:g}" for s, v in r["fits"].items()}
        lines += ["", f"{name}: response window {r['response_window_s']} s, alpha per subject {alphas} "
                  f"(chosen on validation windows; grid widened when at an edge), {r['train_windows']} training "
                  f"windows, {r['seconds']:.0f} s."]
    if report["ratios"]:
        lines += ["", "## Ratios (segment top-10, paired bootstrap 95 % interval)", ""]
        lines += [f"- {k}: {v['ratio']:.2f}x [{v['ci'][0]:.2f}, {v['ci'][1]:.2f}]" for k, v in report["ratios"].items()]
    if report.get("early"):
        from ..early import curve_markdown

        e = report["early"]
        lines += ["", "## Accuracy vs decision delay (segment top-10 %, 95 % bootstrap intervals)", "",
                  "Each decision uses only the data up to word onset + delay; the last column is the full window. "
                  "Modes: " + "; ".join(f"{k}: {v}" for k, v in e["modes"].items()) + ". "
                  "The uniform-evidence reference is the share of the full-window top-10 reached if evidence "
                  "accrues evenly over the window (equal-variance Gaussian scores, d' fitted to the full window, "
                  "d' x sqrt(share seen)); the implied evidence share inverts each measured top-10 the same way "
                  "(neurospeech.early.delay_curve).", ""]
        lines += curve_markdown(e["methods"])
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
