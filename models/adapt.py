"""A new participant: ``neurospeech adapt`` (calibration) and the zero-calibration ``mean`` subject.

The brain encoder has one ``D x D`` subject matrix per training subject (:class:`SubjectLayer`); everything
else (spatial attention, 1x1 conv, trunk, head) is shared. For a person who was not in the training set:

**Calibration** (:func:`adapt`). Starting from a trained run, a new subject row is appended, initialised to the
mean of the trained subjects' matrices, and optimised with the training's CLIP loss and
:func:`neurospeech.models.train.fit` at lr 1e-2; the shared weights are fine-tuned beside it at a rate a
thousand times smaller (``shared_lr`` 1e-5, BatchNorm in training mode), so the new run is tuned to the new
person while the trained subjects' rows and scalers stay as they were. ``shared_lr=0`` freezes the shared
weights instead (no gradients, BatchNorm in eval mode: weights and running statistics stay bit-identical, so
every trained subject decodes exactly as before; ``adapt`` checks it). Fitting the shared weights too was
measured better at every calibration length on meg-bench (four subjects, held-out 02; README): 2 / 5 / 10 min
9.9 / 15.3 / 19.0 % segment top-10 against 8.5 / 12.0 / 17.4 % frozen (10 min, seed 1: 20.1 %), at 1.2x the
CPU time per epoch; larger rates over-fit the calibration (10 min: 3e-5 13.1 %, 1e-4 7.2 %). Both rates decay
to 0 along a half cosine over the epochs (``lr_schedule``, default since session 13): 10 min, seeds 0 / 1 / 2,
20.9 / 22.0 / 22.2 % against 19.0 / 20.1 / 20.2 % with constant rates, same CPU. Person-specific and
re-estimated as well:

- the robust scaler (per-channel median / IQR), fitted on the calibration data exactly as training fits one
  per subject (:func:`neurospeech.models._data.segments`, train-split regular anchors);
- nothing else for the same montage: sensor positions are device coordinates of the montage (the same for
  every person measured on that system), and the speech standardisation / scoring projection belong to the
  speech side. A calibration recording must hold every model channel (picked by name, reordered; extra
  channels ignored); a missing one is refused (``DataFormatError``, exit 3).

``minutes`` limits the calibration to the first ``minutes`` of recording time (runs in BIDS order, each
cropped); of these, windows of train-split sounds are fitted, val-split sounds drive early stopping, and
test-split sounds (:func:`neurospeech.data.split_of`) are never used, so an evaluation on the test split stays
clean. A calibration without val-split sounds (e.g. the first minutes of a recording that plays its train
sounds first, as the simulator's do) runs ``max_epochs`` epochs and keeps the last, with no validation pass.
``val_fraction > 0`` holds out that share of its train-split *sounds* instead (a sha256 hash of the sound, so
every window of one sound is on one side) for early stopping; it is off by default because on meg-bench
(leave-one-subject-out, 10 min, held-out subject 02) stopping on 15 % of the sounds (172 windows) stopped after
1-4 epochs and gave 8.8 % segment top-10 (95 % CI 7.2-10.4), against 12.0 % (10.1-13.9) for 20 epochs without a
validation pass (session 11). Held-out windows' brain data may overlap a neighbouring fitted sound's by up to
one window; the test split is untouched either way.

Optimisation (two-subject meg-bench, frozen shared weights, session 11): Adam, lr 1e-2, batches of 64
windows, 20 epochs: 12.0 % in 202 s of CPU for 10 min (now 15 epochs, with the shared fine-tuning); batches
of 256 (the training's): 10.2 % (20 epochs) and 9.2 % (40 epochs); batches of 32: 9.4 %;
lr 3e-2 with batches of 256: 5.2 % (with the 15 % hold-out).

The output is a complete run directory (``meta.json``, ``best.pt``, ``checkpoint.pt``, ``config.json``,
``curves.png``, ``adapt_curves.png``): ``export RUN2 --subject NEW`` and ``evaluate RUN2`` treat ``NEW`` like a
training subject. ``meta["adaptation"]`` records the source run, the calibration data and minutes, windows,
history and CPU time.

**Zero calibration** (:func:`with_mean_subject`; ``neurospeech export RUN --subject mean``). A subject-agnostic
model: the subject matrix is the mean of the trained subjects' matrices, and the robust scaler is pooled from
the trained subjects' scalers: per channel the mean of their medians and the geometric mean of their IQRs
(IQRs are scale factors, so they are averaged in log space). The name ``mean`` is reserved (``adapt`` refuses
it as a new subject's name).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ArtifactError, ConfigError, DataFormatError
from ..preprocessing import PreprocessingSpec, RobustScaler, WindowSpec
from ..speech.cache import resolve_cache_dir
from .encoder import BrainEncoder

__all__ = ["MEAN_SUBJECT", "AdaptConfig", "adapt", "pooled_scaler", "with_mean_subject"]

log = logging.getLogger(__name__)

MEAN_SUBJECT = "mean"


@dataclass
class AdaptConfig:
    """Settings of ``neurospeech adapt``.

    Attributes
    ----------
    run : str
        Trained multi-subject run directory (``neurospeech train``).
    data : str
        BIDS dataset holding the new subject's calibration recording(s).
    subject : str
        The new subject (BIDS label in ``data``; must not be in the run, nor ``mean``).
    out : str
        New run directory (must not hold a finished run).
    minutes : float or None
        Use only the first ``minutes`` of recording time (None: everything).
    tasks : list of str or None
        Restrict the calibration recordings to these tasks.
    lr : float
        Adam learning rate of the subject row.
    shared_lr : float
        Adam learning rate of the shared weights (trunk, spatial attention, heads), fine-tuned on the calibration
        beside the new row: the new run is then tuned to the new person (the trained subjects' rows and scalers
        stay as they were, their decoding changes slightly). 0: frozen, only the subject row and the scaler are
        fitted, and every other subject decodes bit-identically. The default 1e-5 (with 15 epochs) and its
        measurement: the module docstring.
    max_epochs, patience : int
        Epochs (passes over the calibration windows) and early-stopping patience on the val-split loss.
    val_fraction : float
        Share of the calibration's train-split sounds held out for early stopping when the calibration holds
        no val-split sound (0, the default: no early stopping, ``max_epochs`` epochs, the last kept).
    batch_size : int or None
        Batch of calibration windows, capped by their number (None: the run's training batch).
    step : float or None
        Spacing in seconds of the calibration's regular window anchors (None: the run's training ``step``).
    lr_schedule : {"cosine", "constant"}
        Both rates decay to 0 along a half cosine over the ``max_epochs`` epochs (default; measured in the
        module docstring), or stay constant.
    seed : int
        Seed of batch order and spatial dropout.
    threads : int or None
        torch CPU threads.
    feature_cache : str or None
        Feature cache directory (None: ``$NEUROSPEECH_CACHE`` or the user cache; never the dataset folder unless
        given).
    progress : bool
        Progress bars.
    """

    run: str = ""
    data: str = ""
    subject: str = ""
    out: str = ""
    minutes: float | None = None
    tasks: list[str] | None = None
    lr: float = 1e-2
    shared_lr: float = 1e-5
    max_epochs: int = 15
    patience: int = 4
    val_fraction: float = 0.0
    batch_size: int | None = 64
    step: float | None = None
    lr_schedule: str = "cosine"
    seed: int = 0
    threads: int | None = None
    feature_cache: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if not self.subject:
            raise ConfigError("adapt needs --subject NEW (the new participant's BIDS label)")
        if self.subject == MEAN_SUBJECT:
            raise ConfigError(f"subject name {MEAN_SUBJECT!r} is reserved for the zero-calibration model; "
                              "use the participant's BIDS label")
        if self.minutes is not None and not self.minutes > 0:
            raise ConfigError(f"--minutes must be > 0 (or omitted: all the calibration), got {self.minutes}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if not self.shared_lr >= 0:
            raise ConfigError(f"shared_lr must be >= 0 (0: shared weights frozen), got {self.shared_lr}")
        if self.max_epochs < 1 or self.patience < 1:
            raise ConfigError(f"max_epochs and patience must be >= 1, got {self.max_epochs}, {self.patience}")
        if not 0.0 <= self.val_fraction < 0.5:
            raise ConfigError(f"val_fraction must be in [0, 0.5) (share of calibration sounds held out for early "
                              f"stopping; 0: none), got {self.val_fraction}")
        if self.step is not None and not self.step > 0:
            raise ConfigError(f"step must be > 0 seconds (or None: the run's), got {self.step}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ConfigError(f"lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}")
        if self.batch_size is not None and self.batch_size < 2:
            raise ConfigError(f"batch_size must be >= 2 (the CLIP loss needs negatives), got {self.batch_size}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------------------------ zero-cal
def pooled_scaler(scalers: dict[str, Any]) -> RobustScaler:
    """The zero-calibration scaler: per channel, mean of the subjects' medians, geometric mean of their IQRs.

    Parameters
    ----------
    scalers : dict
        Subject -> scaler dict (``{"center": (C,), "scale": (C,)}``) or :class:`RobustScaler`.
    """
    fitted = [s if isinstance(s, RobustScaler) else RobustScaler.from_dict(s) for s in scalers.values()]
    if not fitted:
        raise ArtifactError("the run holds no robust scalers; it cannot give a zero-calibration model")
    centers = np.stack([s.center for s in fitted])
    scales = np.stack([s.scale for s in fitted])
    return RobustScaler(center=centers.mean(axis=0), scale=np.exp(np.log(scales).mean(axis=0)))


def _grow(model: BrainEncoder, meta: dict[str, Any], new_row: torch.Tensor) -> BrainEncoder:
    """A copy of ``model`` with one more subject row (``new_row`` ``(D, D)``), same trained weights else.

    The sensor positions come from the run's channels exactly as :func:`~neurospeech.models.train.load_run`
    computes them, so the (non-persistent) attention embedding is bit-identical too.
    """
    from ..contract import ChannelSpec
    from .train import _positions

    pos = _positions([ChannelSpec.from_dict(c) for c in meta["channels"]])
    grown = BrainEncoder(model.config, pos, model.n_subjects + 1, model.out_dim,
                         model.time_pool)
    state = model.state_dict()
    state["subject_layer.weight"] = torch.cat([state["subject_layer.weight"], new_row[None]], dim=0)
    grown.load_state_dict(state)
    return grown.eval()


def with_mean_subject(model: BrainEncoder, meta: dict[str, Any], name: str = MEAN_SUBJECT
                      ) -> tuple[BrainEncoder, dict[str, Any]]:
    """The run's model and metadata with a zero-calibration subject ``name`` appended.

    Its subject matrix is the mean of the trained ones and its scaler :func:`pooled_scaler`.

    Returns
    -------
    model : BrainEncoder
        ``n_subjects + 1`` rows (eval mode).
    meta : dict
        A copy with ``subjects``, ``scalers``, ``training.model_sha256`` updated and ``zero_calibration`` added.
    """
    from .train import model_sha256

    if name in meta["subjects"]:
        raise ConfigError(f"subject {name!r} is already in the run (known: {meta['subjects']})")
    w = model.subject_layer.weight.detach()
    grown = _grow(model, meta, w.mean(dim=0))
    meta2 = json.loads(json.dumps(meta))
    meta2["subjects"] = [*meta["subjects"], name]
    meta2["scalers"][name] = pooled_scaler(meta["scalers"]).to_dict()
    meta2["training"]["source_model_sha256"] = meta["training"]["model_sha256"]
    meta2["training"]["model_sha256"] = model_sha256(grown)
    meta2["zero_calibration"] = {
        "subject": name,
        "subject_layer": f"mean of the {len(meta['subjects'])} trained subjects' matrices",
        "scaler": "per channel: mean of the trained subjects' medians, geometric mean of their IQRs",
        "from_subjects": list(meta["subjects"]),
    }
    return grown, meta2


# ------------------------------------------------------------------------------------------------ data
class _CalibrationRecording:
    """A recording seen through the model's channels and a time budget (duck-types ``Recording``)."""

    def __init__(self, rec: Any, channels: list[str], tmax: float | None) -> None:
        self._rec = rec
        self._channels = channels
        self.tmax = tmax

    def __getattr__(self, name: str) -> Any:
        return getattr(self._rec, name)

    def load_raw(self, preload: bool = True) -> Any:
        raw = self._rec.load_raw(preload=preload)
        have = set(raw.ch_names)
        missing = [c for c in self._channels if c not in have]
        if missing:
            raise DataFormatError(
                f"calibration recording {self._rec.name} lacks {len(missing)} of the model's "
                f"{len(self._channels)} channels (e.g. {missing[:5]}); record with the montage the model "
                "was trained on (channels are matched by name)")
        raw.pick(self._channels)
        raw.reorder_channels(self._channels)
        if self.tmax is not None and self.tmax < raw.times[-1]:
            raw.crop(tmax=self.tmax)
        return raw

    def load_events(self) -> Any:
        ev = self._rec.load_events()
        if self.tmax is None:
            return ev
        keep = ev.onset < self.tmax
        ev = ev.select(keep)
        end = np.minimum(ev.onset + ev.duration, self.tmax)
        return dataclasses.replace(ev, duration=end - ev.onset)


def _duration_s(rec: Any) -> float:
    """Length of a recording in seconds (header only when mne-bids can read it)."""
    import mne_bids

    try:
        raw = mne_bids.read_raw_bids(rec.bids_path, verbose="error")
    except Exception:  # any reader problem: fall back to the project's reader (raises a clear error)
        raw = rec.load_raw()
    return float(raw.n_times / raw.info["sfreq"])


def calibration_recordings(data: str | Path, subject: str, channels: list[str], minutes: float | None,
                           tasks: list[str] | None = None) -> tuple[list[Any], float]:
    """The new subject's recordings, limited to the first ``minutes`` of recording time.

    Returns
    -------
    recordings : list
        Recording-like objects (model channels in the model's order, cropped).
    seconds : float
        Recording time used.
    """
    from ..data import load_dataset

    everyone = load_dataset(data, tasks=tasks)
    recs = [r for r in everyone if r.subject == subject]
    if not recs:
        known = sorted({r.subject for r in everyone})
        raise ConfigError(f"no recordings of subject {subject!r} in {data} (subjects there: {known}); "
                          "pass --subject with one of these")
    budget = None if minutes is None else 60.0 * minutes
    out: list[Any] = []
    used = 0.0
    for r in recs:
        dur = _duration_s(r)
        if budget is None:
            out.append(_CalibrationRecording(r, channels, None))
            used += dur
            continue
        left = budget - used
        if left <= 0:
            break
        out.append(_CalibrationRecording(r, channels, left if left < dur else None))
        used += min(dur, left)
    return out, used


# ------------------------------------------------------------------------------------------------ adapt
def _hold_out_sounds(windows: Any, sounds: np.ndarray, fraction: float, seed: int) -> tuple[Any, Any, str]:
    """Split calibration windows by sound into (fit, early-stopping) sets.

    Parameters
    ----------
    windows : TensorSet
        The calibration's train-split windows, ``len(windows) == len(sounds)``.
    sounds : ndarray of str, shape (n_windows,)
        Sound of each window.
    fraction : float
        Share of the distinct sounds held out (sha256 of seed and sound; 0: none).
    seed : int
        Part of the hash, so another seed holds out other sounds.

    Returns
    -------
    fit, stop : TensorSet
        ``stop is fit`` when nothing was held out (``adapt`` then runs ``max_epochs`` with no validation pass).
    description : str
    """
    from ..data._ids import stable_uniform

    names = sorted(set(sounds.tolist()))
    u = {s: stable_uniform("calibration-val", seed, s) for s in names}
    rank = sorted(names, key=u.__getitem__)
    # at least one sound held out and at least two fitted; none when there are fewer than three
    n_held = min(max(1, sum(v < fraction for v in u.values())), len(names) - 2) if fraction > 0 else 0
    held = set(rank[:max(n_held, 0)])
    mask = np.array([s in held for s in sounds.tolist()], dtype=bool)
    if mask.sum() >= 2 and (~mask).sum() >= 2:
        log.info("no val-split sounds in the calibration: %d of its %d sounds (%d windows) held out for early "
                 "stopping", len(held), len(names), int(mask.sum()))
        return (windows.select(np.flatnonzero(~mask)), windows.select(np.flatnonzero(mask)),
                f"loss on {len(held)} of the calibration's {len(names)} train-split sounds held out "
                f"(val_fraction {fraction:g}; no val-split sounds)")
    if fraction > 0:
        log.warning("no val-split sounds in the calibration and too few sounds (%d) to hold any out: no early "
                    "stopping", len(names))
    return windows, windows, "none (no val-split sounds in the calibration, none held out)"


def adapt(cfg: AdaptConfig) -> Path:
    """Calibrate a new subject on a trained run (see the module docstring); returns the new run directory."""
    from . import _data
    from .train import (
        TrainConfig,
        _atomic_save,
        _resolve_device,
        _safe_load,
        fit,
        load_run,
        model_sha256,
        plot_curves,
    )

    t0, c0 = time.perf_counter(), time.process_time()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    src = Path(cfg.run)
    if not src.is_dir():
        raise ArtifactError(f"run {str(src)!r} does not exist; give a directory written by `neurospeech train`")
    model, meta = load_run(src)
    if cfg.subject in meta["subjects"]:
        raise ConfigError(f"subject {cfg.subject!r} is already in run {src} (subjects {meta['subjects']}); "
                          "a training subject needs no calibration: export it with --subject")
    out = Path(cfg.out)
    if not cfg.out:
        raise ConfigError("adapt needs --out RUN2 (a new run directory)")
    if out.resolve() == src.resolve() or (out / "meta.json").exists():
        raise ConfigError(f"--out {str(out)!r} already holds a run; give a new directory")
    data = Path(cfg.data)
    if not data.is_dir():
        raise DataFormatError(f"calibration dataset {str(data)!r} is not a directory; give a BIDS root")

    channels = [c["name"] for c in meta["channels"]]
    recs, seconds = calibration_recordings(data, cfg.subject, channels, cfg.minutes, cfg.tasks)
    subjects = [*meta["subjects"], cfg.subject]
    run_cfg = meta["config"]
    cache = resolve_cache_dir(cfg.feature_cache)
    targets = _data.SpeechTargets.from_spec(data, meta["speech"], meta["representation"], cache)
    window = WindowSpec.from_dict(meta["window"])
    spec = PreprocessingSpec.from_dict(meta["preprocessing"])
    step = float(cfg.step if cfg.step is not None else run_cfg.get("step", 0.5))
    train_set, scalers, info = _data.segments(recs, targets, "train", "regular", subjects, window, spec,
                                              step=step, progress=cfg.progress)
    try:
        val_set, _, _ = _data.segments(recs, targets, "val", "regular", subjects, window, spec, step=step,
                                       scalers=scalers, progress=cfg.progress)
        stopping = "val-split loss of the calibration"
        if len(val_set) < 2:
            raise DataFormatError(f"{len(val_set)} val window")
    except DataFormatError:
        train_set, val_set, stopping = _hold_out_sounds(train_set, info.sound, cfg.val_fraction, cfg.seed)
        if val_set is train_set:  # nothing held out: a fixed budget of max_epochs, no validation pass
            log.info("no val-split sounds in the calibration: %d epochs, the last kept", cfg.max_epochs)
            val_set = None
            stopping = f"none: {cfg.max_epochs} epochs, the last kept (no val-split sounds in the calibration)"
    t_data = time.perf_counter() - t0

    with torch.no_grad():
        init_row = model.subject_layer.weight.mean(dim=0)
    grown = _grow(model, meta, init_row)
    if cfg.shared_lr == 0:
        grown.freeze_shared()
    before = {k: v.clone() for k, v in grown.state_dict().items()}
    bs = min(cfg.batch_size or int(run_cfg.get("batch_size", 256)), len(train_set))
    if bs < 2:
        raise DataFormatError(f"only {len(train_set)} calibration window(s) of train-split speech in "
                              f"{seconds / 60:.2f} min; give more --minutes")
    fit_cfg = TrainConfig.from_dict({
        **run_cfg, "data": str(data), "out": str(out), "subjects": [cfg.subject], "tasks": cfg.tasks,
        "lr": cfg.lr, "weight_decay": 0.0, "max_epochs": cfg.max_epochs, "patience": cfg.patience,
        "batch_size": bs, "batches_per_epoch": None, "seed": cfg.seed, "device": "cpu", "resume": False,
        "progress": cfg.progress, "threads": cfg.threads, "max_train_windows": None,
    })
    out.mkdir(parents=True, exist_ok=True)
    t_fit = time.perf_counter()
    rates = {name: cfg.shared_lr for name, _ in grown.named_parameters() if name != "subject_layer.weight"}
    history = fit(grown, train_set, val_set, fit_cfg, out, _resolve_device("cpu", 0), lr_by_param=rates,
                  cosine=cfg.lr_schedule == "cosine")
    fit_s = time.perf_counter() - t_fit

    best = out / "best.pt"
    if best.is_file():
        grown.load_state_dict(_safe_load(best)["model"])
    grown.eval()
    after = grown.state_dict()
    n_old = len(meta["subjects"])
    for k, v in after.items():
        if k == "subject_layer.weight":
            same = torch.equal(v[:n_old], before[k][:n_old])
        elif cfg.shared_lr > 0:
            continue
        else:
            same = torch.equal(v, before[k])
        if not same:  # an invariant of the frozen fit, not an input check
            raise RuntimeError(f"adaptation changed the shared parameter {k!r}; this is a bug")
    digest = model_sha256(grown)
    kept = len(history) - 1 if val_set is None else int(np.nanargmin([h["val_loss"] for h in history]))
    _atomic_save({"model": grown.state_dict(), "epoch": kept, "val_loss": float(history[kept]["val_loss"])}, best)

    row_change = float((grown.subject_layer.weight.detach()[-1] - init_row).norm() / init_row.norm())
    new_meta = json.loads(json.dumps(meta))
    new_meta["subjects"] = subjects
    new_meta["scalers"][cfg.subject] = scalers[cfg.subject].to_dict()
    new_meta["training"]["source_model_sha256"] = meta["training"]["model_sha256"]
    new_meta["training"]["model_sha256"] = digest
    new_meta["adaptation"] = {
        "source_run": str(src.resolve()),
        "subject": cfg.subject,
        "data": str(data.resolve()),
        "recordings": [r.name for r in recs],
        "minutes_requested": cfg.minutes,
        "minutes_used": seconds / 60.0,
        "n_windows": {"train": len(train_set), "val": 0 if val_set is None else len(val_set)},
        "fitted": ["subject_layer row (init: mean of the trained subjects' matrices)", "robust scaler",
                   *([f"shared weights (lr {cfg.shared_lr:g})"] if cfg.shared_lr > 0 else [])],
        "early_stopping": stopping,
        "init_row_relative_change": row_change,
        "history": history,
        "config": cfg.to_dict(),
        "data_seconds": t_data,
        "fit_seconds": fit_s,
        "cpu_seconds": time.process_time() - c0,
        "wall_seconds": time.perf_counter() - t0,
        "torch_threads": torch.get_num_threads(),
    }
    (out / "meta.json").write_text(json.dumps(new_meta, indent=1, sort_keys=True))
    (out / "config.json").write_text(json.dumps(meta["config"], indent=1, sort_keys=True))
    (out / "adapt.json").write_text(json.dumps(cfg.to_dict(), indent=1, sort_keys=True))
    if (src / "curves.png").is_file():
        shutil.copyfile(src / "curves.png", out / "curves.png")
    plot_curves({f"adapt sub-{cfg.subject}": history}, out / "adapt_curves.png")
    log.info("adapted subject %s on %.2f min (%d train windows): row change %.3f, %.1f s CPU, run %s",
             cfg.subject, seconds / 60, len(train_set), row_change, new_meta["adaptation"]["cpu_seconds"], out)
    return out
