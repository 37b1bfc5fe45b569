"""Leave-one-subject-out calibration curve: ``neurospeech adapt-curve``.

On one dataset with subjects ``S``, for a held-out subject ``h``:

1. ``base``: train on ``S - {h}`` (:func:`neurospeech.models.train.train`), or a given finished run
   (``base_run``, ``--base-run``) that does not hold ``h``;
2. ``within``: train on every subject, ``h`` included (the within-subject reference), or a given finished
   run (``within_run``, ``--within-run``) that holds ``h``: a training that exists already is not repeated;
3. for each calibration length ``m``: ``m = 0`` is the zero-calibration model
   (:func:`neurospeech.models.adapt.with_mean_subject`: mean subject matrix, pooled scaler), ``m > 0``
   is :func:`neurospeech.models.adapt.adapt` of ``base`` on the first ``m`` minutes of ``h``'s recordings
   (``all``: every recording of ``h``);
4. every model is scored on ``h``'s test-split windows at word onsets against the distinct test segments
   of ``h`` (the ``evaluate`` protocol: CLIP scores against normalised, flattened candidates), segment top-10
   with chance ``10 / n_candidates`` and a bootstrap 95 % interval over queries.

Writes ``curve.json``, ``curve.md`` and ``curve.png`` into the output directory (runs under ``runs/``).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError

__all__ = ["CurveConfig", "adaptation_curve", "heldout_topk"]

log = logging.getLogger(__name__)


@dataclass
class CurveConfig:
    """Settings of ``neurospeech adapt-curve``.

    Attributes
    ----------
    data : str
        BIDS dataset with >= 2 subjects.
    held_out : str
        Subject left out of the base training.
    out : str
        Output directory.
    minutes : list of str
        Calibration lengths: numbers (0 = zero calibration) or ``all``.
    train : dict
        :class:`~neurospeech.models.train.TrainConfig` fields of both trainings (e.g. encoder size, epochs).
    adapt : dict
        :class:`~neurospeech.models.adapt.AdaptConfig` fields (lr, max_epochs, patience ...).
    base_run : str or None
        A finished run trained without ``held_out`` used as the base (None: train it into ``out/runs/base``).
    within_run : str or None
        A finished run trained with ``held_out`` used as the within-subject reference (None: train it into
        ``out/runs/within``).
    n_boot : int
        Bootstrap resamples of the queries.
    seed : int
        Seed of the bootstrap.
    progress : bool
        Progress bars.
    """

    data: str = ""
    held_out: str = ""
    out: str = "runs/adapt-curve"
    minutes: list[str] = field(default_factory=lambda: ["0", "2", "5", "all"])
    train: dict[str, Any] = field(default_factory=dict)
    adapt: dict[str, Any] = field(default_factory=dict)
    base_run: str | None = None
    within_run: str | None = None
    n_boot: int = 2000
    seed: int = 0
    progress: bool = False


def heldout_topk(model: Any, meta: dict[str, Any], data: str | Path, subject: str, k: int = 10,
                 n_boot: int = 2000, seed: int = 0, progress: bool = False) -> dict[str, Any]:
    """Segment top-k of ``model`` on ``subject``'s test split (word onsets), chance and bootstrap 95 % CI.

    Parameters
    ----------
    model : BrainEncoder
        Encoder whose ``meta["subjects"]`` include ``subject``.
    meta : dict
        Its run metadata (scalers, window, speech spec).
    data : path
        Dataset holding ``subject``'s recordings.
    """
    import torch

    from ..data import load_dataset
    from ..metrics import rank_of_true
    from ..preprocessing import PreprocessingSpec, RobustScaler, WindowSpec
    from ..scoring import normalise_candidates
    from ..speech.cache import resolve_cache_dir
    from . import _data
    from .train import predict

    root = Path(data)
    recs = [r for r in load_dataset(root) if r.subject == subject]
    targets = _data.SpeechTargets.from_spec(root, meta["speech"], meta["representation"],
                                            resolve_cache_dir(None))
    scalers = {s: RobustScaler.from_dict(v) for s, v in meta["scalers"].items()}
    ts, _, _ = _data.segments(recs, targets, "test", "word", list(meta["subjects"]),
                              WindowSpec.from_dict(meta["window"]), PreprocessingSpec.from_dict(meta["preprocessing"]),
                              scalers=scalers, progress=progress)
    z = predict(model, ts.brain, ts.subject, torch.device("cpu"))
    _, first, inv = np.unique(ts.segment_id, return_index=True, return_inverse=True)
    cands = normalise_candidates(ts.speech[first])
    scores = z.reshape(len(z), -1) @ cands.reshape(len(cands), -1).T
    hits = (rank_of_true(scores, inv.astype(np.int64)) < k).astype(np.float64)
    rng = np.random.default_rng(seed)
    boot = hits[rng.integers(0, len(hits), size=(n_boot, len(hits)))].mean(axis=1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    n_c = len(cands)
    return {f"top{k}": float(hits.mean()), "ci95": [float(lo), float(hi)], f"chance_top{k}": min(k, n_c) / n_c,
            "n_queries": len(hits), "n_candidates": n_c}


def _train_once(cfg: dict[str, Any], out: Path) -> Path:
    from .train import TrainConfig, train

    if (out / "meta.json").is_file():
        log.info("reusing the finished run %s", out)
        return out
    return train(TrainConfig.from_dict({**cfg, "out": str(out)}))


def _given_run(path: str, held_out: str, role: str) -> Path:
    """A finished run given as ``--base-run`` (must not hold ``held_out``) or ``--within-run`` (must)."""
    from ..errors import ArtifactError

    run = Path(path)
    meta_path = run / "meta.json"
    if not meta_path.is_file():
        raise ArtifactError(f"--{role}-run {path!r} is not a finished training run (no meta.json); "
                            "give a directory written by `neurospeech train`, or omit the option to train it")
    subjects = json.loads(meta_path.read_text()).get("subjects", [])
    if role == "base" and held_out in subjects:
        raise ConfigError(f"--base-run {path!r} was trained with the held-out subject {held_out!r} "
                          f"(subjects {subjects}); give a run trained without it (`train --subject ...`)")
    if role == "within" and held_out not in subjects:
        raise ConfigError(f"--within-run {path!r} was not trained with the held-out subject {held_out!r} "
                          f"(subjects {subjects}); give a run whose training included it")
    return run


def adaptation_curve(cfg: CurveConfig) -> dict[str, Any]:
    """Run the leave-one-subject-out curve (module docstring); returns the ``curve.json`` dict."""
    from ..data import load_dataset
    from .adapt import AdaptConfig, adapt, with_mean_subject
    from .train import load_run

    out = Path(cfg.out)
    subjects = sorted({r.subject for r in load_dataset(cfg.data)})
    if cfg.held_out not in subjects:
        raise ConfigError(f"--held-out {cfg.held_out!r} is not a subject of {cfg.data} ({subjects})")
    others = [s for s in subjects if s != cfg.held_out]
    if not others:
        raise ConfigError(f"{cfg.data} has only subject {cfg.held_out!r}; leave-one-out needs >= 2 subjects")
    minutes: list[float | None] = []
    for text in cfg.minutes:
        try:
            minutes.append(None if str(text) == "all" else float(text))
        except ValueError as exc:
            raise ConfigError(f"--minutes takes numbers or 'all', got {text!r}") from exc
    base_cfg = {"progress": cfg.progress, **cfg.train, "data": cfg.data}
    base_cpu: float | None = None
    within_cpu: float | None = None
    if cfg.base_run:
        base = _given_run(cfg.base_run, cfg.held_out, "base")
    else:
        t0 = time.process_time()
        base = _train_once({**base_cfg, "subjects": others}, out / "runs" / "base")
        base_cpu = time.process_time() - t0
    if cfg.within_run:
        within = _given_run(cfg.within_run, cfg.held_out, "within")
    else:
        t0 = time.process_time()
        within = _train_once({**base_cfg, "subjects": None}, out / "runs" / "within")
        within_cpu = time.process_time() - t0

    rows: list[dict[str, Any]] = []
    score: dict[str, Any] = {"n_boot": cfg.n_boot, "seed": cfg.seed, "progress": cfg.progress}
    model, meta = load_run(within)
    rows.append({"condition": "within-subject (trained with the held-out subject)", "minutes": None,
                 **heldout_topk(model, meta, cfg.data, cfg.held_out, **score)})
    base_model, base_meta = load_run(base)
    for m in minutes:
        if m == 0:
            zm, zmeta = with_mean_subject(base_model, base_meta, name=cfg.held_out)
            rows.append({"condition": "zero calibration (mean layer, pooled scaler)", "minutes": 0.0,
                         "train_windows": 0, "adapt_cpu_s": 0.0,
                         **heldout_topk(zm, zmeta, cfg.data, cfg.held_out, **score)})
            continue
        tag = "all" if m is None else f"{m:g}"
        run2 = out / "runs" / f"adapt-{tag}min"
        if not (run2 / "meta.json").is_file():
            adapt(AdaptConfig(**{"progress": cfg.progress, **cfg.adapt, "run": str(base), "data": cfg.data,
                                 "subject": cfg.held_out, "out": str(run2), "minutes": m}))
        am, ameta = load_run(run2)
        a = ameta["adaptation"]
        rows.append({"condition": f"adapt, {tag} min", "minutes": a["minutes_used"],
                     "train_windows": a["n_windows"]["train"], "adapt_cpu_s": a["cpu_seconds"],
                     "adapt_wall_s": a["wall_seconds"], "adapt_fit_s": a["fit_seconds"],
                     **heldout_topk(am, ameta, cfg.data, cfg.held_out, **score)})
    report = {"config": asdict(cfg), "subjects": subjects, "held_out": cfg.held_out,
              "trained_on": list(base_meta["subjects"]), "base_run": str(base), "within_run": str(within),
              "base_train_cpu_s": base_cpu, "within_train_cpu_s": within_cpu, "rows": rows}
    out.mkdir(parents=True, exist_ok=True)
    (out / "curve.json").write_text(json.dumps(report, indent=1))
    (out / "curve.md").write_text(_markdown(report))
    _plot(report, out / "curve.png")
    return report


def _markdown(rep: dict[str, Any]) -> str:
    lines = [f"# Leave-one-subject-out calibration: held-out subject {rep['held_out']} "
             f"(trained on {', '.join(rep['trained_on'])})", "",
             f"Base run {rep.get('base_run', '-')}; within-subject run {rep.get('within_run', '-')}.", "",
             "| condition | calibration min | train windows | segment top-10 | 95 % CI | chance | queries | "
             "candidates | adapt CPU s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rep["rows"]:
        mins = "-" if r["minutes"] is None else f"{r['minutes']:.2f}"
        cpu = "-" if r.get("adapt_cpu_s") is None else f"{r['adapt_cpu_s']:.1f}"
        lines.append(f"| {r['condition']} | {mins} | {r.get('train_windows', '-')} | {100 * r['top10']:.1f} % | "
                     f"{100 * r['ci95'][0]:.1f}-{100 * r['ci95'][1]:.1f} % | {100 * r['chance_top10']:.1f} % | "
                     f"{r['n_queries']} | {r['n_candidates']} | {cpu} |")
    return "\n".join(lines) + "\n"


def _plot(rep: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rep["rows"] if r["minutes"] is not None]
    within = [r for r in rep["rows"] if r["minutes"] is None]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    x = np.array([r["minutes"] for r in rows])
    y = np.array([100 * r["top10"] for r in rows])
    err = np.array([[100 * (r["top10"] - r["ci95"][0]), 100 * (r["ci95"][1] - r["top10"])] for r in rows]).T
    ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=f"held-out subject {rep['held_out']}, adapted")
    for w in within:
        ax.axhline(100 * w["top10"], color="g", ls="--", label="within-subject")
        ax.axhspan(100 * w["ci95"][0], 100 * w["ci95"][1], color="g", alpha=0.1)
    ax.axhline(100 * rows[0]["chance_top10"] if rows else 0, color="k", ls=":", label="chance")
    ax.set(xlabel="calibration (minutes of recording)", ylabel="segment top-10 (%)",
           title="new participant: top-10 vs calibration (95 % CI)")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
