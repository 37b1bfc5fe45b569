"""Readers for the noise-limits analysis: npz/csv feature tables and word epochs of our BIDS datasets."""

from __future__ import annotations

import csv
import itertools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from neurospeech.errors import ConfigError, DataFormatError

__all__ = [
    "FeatureTable",
    "epochs_features",
    "read_csv_table",
    "read_npz_table",
    "read_table",
    "word_labels",
]

log = logging.getLogger(__name__)


@dataclass
class FeatureTable:
    """Trials x features with labels, from any source.

    Attributes
    ----------
    X : ndarray, shape (n_trials, n_features)
    y : ndarray, shape (n_trials,)
        Labels (numeric or strings; continuous values are binned by the analysis).
    group : ndarray, shape (n_trials,), or None
        Nuisance group.
    bin_width : float or None
        Physical width of one label step, when known.
    unit : str or None
    X_ref : ndarray, shape (n_samples, n_features), or None
        Reference noise samples for whitening (e.g. pre-stimulus baseline).
    feature_names : list of str
    meta : dict
    """

    X: NDArray[np.float64]
    y: NDArray[Any]
    group: NDArray[Any] | None = None
    bin_width: float | None = None
    unit: str | None = None
    X_ref: NDArray[np.float64] | None = None
    feature_names: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)


def read_npz_table(path: str | Path) -> FeatureTable:
    """Read an ``.npz`` with ``X`` (trials x features) and ``y``; optional ``group``, ``bin_width``, ``unit``,
    ``X_ref`` and ``feature_names`` (never unpickled)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise DataFormatError(
            f"cannot read {path} as a numpy .npz without pickles: {exc}; write it with "
            f"np.savez(path, X=..., y=...) using plain arrays"
        ) from exc
    missing = [k for k in ("X", "y") if k not in data]
    if missing:
        raise DataFormatError(
            f"{path} lacks the arrays {missing} (has {sorted(data)}); save X (trials x "
            f"features) and y (one label per trial)"
        )
    bw = data.get("bin_width")
    unit = data.get("unit")
    names = data.get("feature_names")
    return FeatureTable(
        X=data["X"],
        y=data["y"],
        group=data.get("group"),
        bin_width=None if bw is None else float(bw),
        unit=None if unit is None else str(unit),
        X_ref=data.get("X_ref"),
        feature_names=[] if names is None else [str(n) for n in names],
        meta={"source": str(path)},
    )


def read_csv_table(
    path: str | Path, label_column: str = "y", group_column: str | None = None
) -> FeatureTable:
    """Read a CSV with a header: one row per trial, ``label_column`` (and ``group_column``), every other
    column a numeric feature."""
    path = Path(path)
    try:
        with path.open(newline="") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataFormatError(f"cannot read {path} as CSV text: {exc}") from exc
    if len(rows) < 2:
        raise DataFormatError(f"{path} has {len(rows)} line(s); need a header and one row per trial")
    header = [h.strip() for h in rows[0]]
    if label_column not in header:
        raise DataFormatError(
            f"{path} has no label column {label_column!r} (columns: {header[:10]}...); "
            f"name it with --label-column"
        )
    if group_column is not None and group_column not in header:
        raise DataFormatError(f"{path} has no group column {group_column!r}; check --group-column")
    body = rows[1:]
    bad = [i + 2 for i, r in enumerate(body) if len(r) != len(header)]
    if bad:
        raise DataFormatError(
            f"{path}: line {bad[0]} has a different number of fields than the header "
            f"({len(header)}); {len(bad)} such lines; fix the file"
        )
    li = header.index(label_column)
    gi = header.index(group_column) if group_column is not None else None
    fcols = [i for i in range(len(header)) if i not in (li, gi)]
    try:
        X = np.array([[float(r[i]) if r[i].strip() else np.nan for i in fcols] for r in body])
    except ValueError as exc:
        raise DataFormatError(
            f"{path}: a feature value is not a number ({exc}); every column except the "
            f"label/group columns must be numeric"
        ) from exc
    ys = [r[li] for r in body]
    try:
        y: NDArray[Any] = np.array([float(v) for v in ys])
    except ValueError:
        y = np.array(ys)
    group = None if gi is None else np.array([r[gi] for r in body])
    return FeatureTable(
        X=X, y=y, group=group, feature_names=[header[i] for i in fcols], meta={"source": str(path)}
    )


def read_table(path: str | Path, label_column: str = "y", group_column: str | None = None) -> FeatureTable:
    """Read ``.npz`` or ``.csv`` by extension."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"input {str(path)!r} does not exist; give an .npz/.csv file or --bids ROOT")
    if path.suffix == ".npz":
        return read_npz_table(path)
    if path.suffix in (".csv", ".txt"):
        return read_csv_table(path, label_column, group_column)
    raise DataFormatError(f"input {path.name!r} has an unknown extension {path.suffix!r}; use .npz or .csv")


def _word_loudness(root: Path, sound: str, start: float, duration: float) -> float:
    from neurospeech.data import read_wav

    wav, sr = _WAVS.get(sound) or _WAVS.setdefault(sound, read_wav(root / sound))
    a, b = round(start * sr), round((start + max(duration, 1e-3)) * sr)
    seg = wav[a : max(b, a + 1)]
    return float(10 * np.log10(np.mean(seg.astype(np.float64) ** 2) + 1e-12))


_WAVS: dict[str, tuple[NDArray[np.float32], int]] = {}


def word_labels(
    words: Any, label: str, root: Path, min_repeats: int = 4, usable: NDArray[np.bool_] | None = None
) -> tuple[NDArray[np.bool_], NDArray[Any]]:
    """Labels of word events and which words to keep.

    Parameters
    ----------
    words : neurospeech.data.Events
        Word rows of one run.
    label : str
        ``"word"`` (identity; words with fewer than ``min_repeats`` usable occurrences are dropped),
        ``"duration"`` (s) or ``"loudness"`` (dB, from the stimulus wav).
    root : Path
        Dataset root (stimulus paths are relative to it).
    min_repeats : int
    usable : ndarray of bool, optional
        Words whose epochs fit in the recording (counted for the repetitions).

    Returns
    -------
    keep : ndarray of bool, shape (n_words,)
    y : ndarray, shape (n_words,)
    """
    if label not in ("word", "duration", "loudness"):
        raise ConfigError(f"label={label!r} is unknown; use 'word', 'duration' or 'loudness'")
    usable = np.ones(len(words), bool) if usable is None else usable
    if label == "word":
        vals, counts = np.unique(words.word[usable], return_counts=True)
        keep = usable & np.isin(words.word, vals[counts >= min_repeats])
        return keep, words.word.astype(str)
    if label == "duration":
        return usable.copy(), words.duration.astype(np.float64)
    y = np.array(
        [
            _word_loudness(root, s, t, d)
            for s, t, d in zip(words.sound, words.sound_time, words.duration, strict=True)
        ]
    )
    return usable.copy(), y


def epochs_features(
    root: str | Path,
    *,
    label: str = "word",
    subjects: list[str] | None = None,
    tasks: list[str] | None = None,
    tmin: float = 0.1,
    tmax: float = 0.5,
    baseline: tuple[float, float] = (-0.2, 0.0),
    n_time_bins: int = 1,
    min_repeats: int = 4,
) -> FeatureTable:
    """Sensor features of word epochs from a BIDS dataset (:func:`neurospeech.data.load_dataset`).

    Each word onset gives one trial: the baseline-corrected signal of every good sensor averaged in
    ``n_time_bins`` equal windows of ``[tmin, tmax]`` s (features = sensors x time bins), divided by each
    sensor's SD over the run (dimensionless; SI units differ by 10^6 between MEG and EEG). The pre-stimulus
    baseline samples are kept as the whitening reference (field spread; see the analysis module doc).
    Runs of several subjects are stacked with the subject as nuisance group, when they share their sensors.

    Parameters
    ----------
    root : path
        Dataset root.
    label : str
        ``"word"`` (word identity, categorical; words heard fewer than ``min_repeats`` times per subject are
        dropped), ``"duration"`` (word duration, s) or ``"loudness"`` (word level, dB, from the stimulus wav):
        continuous labels are binned by the analysis.
    subjects, tasks : list of str, optional
    tmin, tmax : float
        Response window after word onset (s).
    baseline : (float, float)
        Baseline window (s) subtracted per epoch and sensor.
    n_time_bins : int
        Time windows per sensor.
    min_repeats : int
        Minimum repetitions of a word (per subject) for ``label="word"``.

    Returns
    -------
    FeatureTable
    """
    import mne

    from neurospeech.data import load_dataset

    if label not in ("word", "duration", "loudness"):
        raise ConfigError(f"label={label!r} is unknown; use 'word', 'duration' or 'loudness'")
    if not tmax > tmin or n_time_bins < 1:
        raise ConfigError(
            f"window [{tmin}, {tmax}] s with {n_time_bins} bins is invalid; give tmin < tmax, "
            f"n_time_bins >= 1"
        )
    root = Path(root)
    recs = load_dataset(root, subjects=subjects, tasks=tasks)
    X_parts, y_parts, g_parts, ref_parts = [], [], [], []
    channels: list[str] | None = None
    bads: set[str] = set()
    for rec in recs:
        raw = rec.load_raw()
        bads |= set(raw.info["bads"])
    for rec in recs:
        raw = rec.load_raw()
        good = [c for c in raw.ch_names if c not in bads]
        if channels is None:
            channels = good
        elif good != channels:
            raise DataFormatError(
                f"run {rec.name} has other sensors than the first run ({len(good)} vs "
                f"{len(channels)} good channels); analyse one subject at a time (--subjects)"
            )
        raw.pick(good)
        words = rec.load_events().words()
        sf = raw.info["sfreq"]
        onsets = np.round(words.onset * sf).astype(np.int64)
        keep = (onsets + int(np.ceil(tmax * sf)) < raw.n_times) & (
            onsets + int(np.floor(baseline[0] * sf)) >= 0
        )
        keep_lab, y_all = word_labels(words, label, root, min_repeats, keep)
        keep &= keep_lab
        idx = np.flatnonzero(keep)
        if idx.size == 0:
            log.warning("run %s: no usable word epochs", rec.name)
            continue
        ev = np.column_stack([onsets[idx] + raw.first_samp, np.zeros(idx.size, int), np.ones(idx.size, int)])
        epochs = mne.Epochs(
            raw,
            ev,
            tmin=baseline[0],
            tmax=tmax,
            baseline=baseline,
            preload=True,
            reject=None,
            flat=None,
            proj=False,
            event_repeated="drop",
            verbose="error",
        )
        idx = idx[epochs.selection]  # events MNE kept (a repeated onset sample is dropped)
        data = epochs.get_data(copy=False)  # (n_epochs, n_channels, n_times)
        scale = raw.get_data().std(axis=1)
        scale[scale == 0] = 1.0
        data = data / scale[None, :, None]
        times = epochs.times
        edges = np.linspace(tmin, tmax, n_time_bins + 1)
        feats = [
            data[
                :, :, (times >= a) & (times < b) if k < n_time_bins - 1 else (times >= a) & (times <= b)
            ].mean(axis=2)
            for k, (a, b) in enumerate(itertools.pairwise(edges))
        ]
        X_parts.append(np.concatenate(feats, axis=1) if n_time_bins > 1 else feats[0])
        base = data[:, :, (times >= baseline[0]) & (times <= baseline[1])]
        ref_parts.append(np.tile(base.transpose(0, 2, 1).reshape(-1, base.shape[1]), (1, n_time_bins)))
        y_parts.append(y_all[idx])
        g_parts.append(np.full(idx.size, f"sub-{rec.subject}"))
    if not X_parts or channels is None:
        raise DataFormatError(
            f"no word epochs found in {root} (label={label!r}, min_repeats={min_repeats}); "
            f"check the events files or lower --min-repeats"
        )
    names = channels if n_time_bins == 1 else [f"{c}@{k}" for k in range(n_time_bins) for c in channels]
    group = np.concatenate(g_parts)
    return FeatureTable(
        X=np.concatenate(X_parts),
        y=np.concatenate(y_parts),
        group=group if np.unique(group).size > 1 else None,
        unit=None,
        X_ref=np.concatenate(ref_parts),
        feature_names=list(names),
        meta={
            "source": str(root),
            "label": label,
            "window_s": [tmin, tmax],
            "baseline_s": list(baseline),
            "n_time_bins": n_time_bins,
            "runs": [r.name for r in recs],
            "bads": sorted(bads),
        },
    )
