"""Model-ready windows: brain windows (shared preprocessing) paired with speech-feature windows.

Every signal-processing step is :mod:`neurospeech.preprocessing` (the same code the live service runs):
``preprocess_continuous -> extract_windows -> preprocess_window`` with the subject's :class:`RobustScaler`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import mne
import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm

from ..contract import ChannelSpec
from ..errors import ConfigError, DataFormatError
from ..preprocessing import (
    PreprocessingSpec,
    RobustScaler,
    WindowSpec,
    extract_windows,
    preprocess_continuous,
    preprocess_window,
)
from ._dataset import Recording
from ._events import Events
from ._ids import Splits, segment_id, stable_uniform

__all__ = ["SegmentSet", "build_segments", "channel_specs", "sensor_positions", "speech_window"]

log = logging.getLogger(__name__)

_UNITS = {"mag": "T", "grad": "T/m", "eeg": "V"}


@dataclass
class SegmentSet:
    """Paired brain / speech windows.

    Attributes
    ----------
    brain : array, shape (n, C, T), float32
        Preprocessed brain windows (T = ``window.n_times``, 343).
    speech : array, shape (n, F, T), float32
        Standardised speech features over ``anchor sound_time + [tmin, tmax - lag]``, zero outside the wav.
    subject, segment_id, word, sound, sentence, recording : array of str, shape (n,)
    sound_time, anchor_time : array of float64, shape (n,)
        Anchor time in the wav, and on the recording's raw.times clock.
    channels : list of ChannelSpec
    window : WindowSpec
    spec : PreprocessingSpec
    speech_mean, speech_std : array, shape (F,)
        The standardisation applied to the speech features.
    """

    brain: NDArray[np.float32]
    speech: NDArray[np.float32]
    subject: NDArray[np.str_]
    segment_id: NDArray[np.str_]
    word: NDArray[np.str_]
    sound: NDArray[np.str_]
    sentence: NDArray[np.str_]
    recording: NDArray[np.str_]
    sound_time: NDArray[np.float64]
    anchor_time: NDArray[np.float64]
    channels: list[ChannelSpec]
    window: WindowSpec = field(default_factory=WindowSpec)
    spec: PreprocessingSpec = field(default_factory=PreprocessingSpec)
    speech_mean: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    speech_std: NDArray[np.float64] = field(default_factory=lambda: np.ones(0))

    _PER_ROW = ("brain", "speech", "subject", "segment_id", "word", "sound", "sentence", "recording",
                "sound_time", "anchor_time")

    def __len__(self) -> int:
        return len(self.brain)

    def select(self, mask: NDArray[Any]) -> SegmentSet:
        """Rows selected by a boolean mask or index array (shares the metadata)."""
        kw = {k: getattr(self, k)[mask] for k in self._PER_ROW}
        return SegmentSet(**kw, channels=self.channels, window=self.window, spec=self.spec,
                          speech_mean=self.speech_mean, speech_std=self.speech_std)

    def unique_segments(self) -> NDArray[np.int64]:
        """Index of the first row of each distinct ``segment_id`` (candidate set for retrieval)."""
        _, idx = np.unique(self.segment_id, return_index=True)
        return np.sort(idx)


#: channel types whose position the encoder's spatial attention uses
_DATA_TYPES = ("mag", "grad", "planar1", "planar2", "eeg")


def sensor_positions(info: mne.Info) -> dict[str, tuple[float, float]]:
    """2-D positions of the channels of ``info`` that have a 3-D location, through public MNE API.

    The flattening is MNE's topomap projection (azimuthal equidistant, about the head sphere fitted to the
    digitised head shape when there is one): :func:`mne.channels.make_eeg_layout` applied to an info whose
    "electrodes" sit at the sensors' 3-D locations (``info['chs'][i]['loc'][:3]``) and which keeps the
    recording's digitisation (:meth:`mne.Info.get_montage`). The result is the private
    ``_find_topomap_coords`` up to one scale and shift (layout box units, about [0, 1]); sensors that share a
    location (a Neuromag triplet: one magnetometer, two gradiometers) share one position.

    Returns
    -------
    dict
        Channel name -> ``(x, y)``; channels without a location (all-zero or non-finite ``loc``) are absent.
    """
    names, xyz = [], []
    for ch in info["chs"]:
        loc = np.asarray(ch["loc"][:3], dtype=np.float64)
        if np.all(np.isfinite(loc)) and np.any(loc != 0):
            names.append(ch["ch_name"])
            xyz.append(loc)
    if len(names) < 2:
        return {}
    unique, inverse = np.unique(np.round(np.asarray(xyz), 9), axis=0, return_inverse=True)
    inverse = np.asarray(inverse).reshape(-1)
    if len(unique) < 2:
        return {}
    pseudo = [f"S{i:04d}" for i in range(len(unique))]
    dig: dict[str, Any] = {}
    original = info.get_montage()
    if original is not None:  # fiducials and head shape: the projection centre is fitted to them
        kept = original.get_positions()
        dig = {k: kept.get(k) for k in ("nasion", "lpa", "rpa", "hsp", "hpi")}
    montage = mne.channels.make_dig_montage(ch_pos=dict(zip(pseudo, unique, strict=True)), coord_frame="head",
                                            **dig)
    flat = mne.create_info(pseudo, 100.0, "eeg")
    with mne.utils.use_log_level("error"):  # MNE's remarks on the head-shape fit are not ours to repeat
        flat.set_montage(montage, on_missing="ignore")
        layout = mne.channels.make_eeg_layout(flat, radius=0.5, width=0.0, height=0.0, exclude=[])
    # width = height = 0: each box is its centre, the projected point scaled into the unit box
    index = {n: i for i, n in enumerate(layout.names)}
    xy = np.asarray(layout.pos)[[index[n] for n in pseudo], :2]
    return {n: (float(xy[k, 0]), float(xy[k, 1])) for n, k in zip(names, inverse, strict=True)}


def channel_specs(info: mne.Info) -> list[ChannelSpec]:
    """Channel name, type, SI unit and a 2-D layout position for each channel of ``info``.

    Positions come from :func:`sensor_positions`. Data channels (MEG, EEG) without a position are logged
    as a WARNING: the encoder's spatial attention places channels by these positions.
    """
    try:
        pos = sensor_positions(info)
    except (ValueError, RuntimeError) as exc:  # MNE refuses the geometry (e.g. all sensors in one plane)
        log.warning("no 2-D sensor layout could be computed (%s): the encoder gets no channel positions", exc)
        pos = {}
    out = []
    missing = []
    for ch, name, t in zip(info["chs"], info["ch_names"], info.get_channel_types(), strict=True):
        # EEG electrodes also keep their 3-D location: the service's bad-channel interpolation then uses MNE's
        # spherical splines (MEG would need coil orientations too, which the contract does not carry)
        xyz = np.asarray(ch["loc"][:3], dtype=np.float64)
        loc = ((float(xyz[0]), float(xyz[1]), float(xyz[2])) if t == "eeg" and np.isfinite(xyz).all() and xyz.any()
               else None)
        out.append(ChannelSpec(name=name, type=t, unit=_UNITS.get(t, "V"), pos=pos.get(name), loc=loc))
        if name not in pos and t in _DATA_TYPES:
            missing.append(name)
    if missing:
        shown = ", ".join(missing[:8]) + (f" ... ({len(missing)} in all)" if len(missing) > 8 else "")
        log.warning("%d data channel(s) have no sensor location, so no 2-D position: %s; set a montage "
                    "(raw.set_montage) or use a format that stores sensor positions", len(missing), shown)
    return out


def speech_window(feats: NDArray[Any], sound_time: float, window: WindowSpec) -> NDArray[np.float32]:
    """Speech features over ``sound_time + [tmin, tmax - lag]`` at ``window.sfreq``, zero outside.

    Parameters
    ----------
    feats : array, shape (F, n_frames)
        Frame k at ``k / window.sfreq`` seconds into the wav.
    """
    n = window.n_times
    start = round((sound_time + window.tmin) * window.sfreq)
    out = np.zeros((feats.shape[0], n), dtype=np.float32)
    lo, hi = max(start, 0), min(start + n, feats.shape[1])
    if hi > lo:
        out[:, lo - start:hi - start] = feats[:, lo:hi]
    return out


def _anchors(events: Events, kind: str, step: float) -> Events:
    """Anchor rows: the word events, or regular times every ``step`` s inside each sound."""
    if kind == "word":
        return events.words()
    if kind != "regular":
        raise ConfigError(f"anchors must be 'word' or 'regular', got {kind!r}")
    words = events.words()
    rows: dict[str, list[Any]] = {k: [] for k in ("onset", "duration", "kind", "word", "sound",
                                                  "sound_time", "sentence")}
    for s in range(len(events)):
        if events.kind[s] != "sound":
            continue
        t0, dur = float(events.onset[s]), float(events.duration[s])
        for t in np.arange(0.0, max(dur, 0.0), step):
            onset = t0 + t
            inside = (words.onset <= onset + 1e-9) & (onset < words.onset + words.duration)
            inside &= words.sound == events.sound[s]
            w = words.word[inside][0] if inside.any() else ""
            for k, v in (("onset", onset), ("duration", step), ("kind", "regular"), ("word", w),
                         ("sound", events.sound[s]), ("sound_time", float(events.sound_time[s]) + t),
                         ("sentence", events.sentence[s])):
                rows[k].append(v)
    arrays: dict[str, Any] = {k: np.asarray(v, dtype=np.float64 if k in ("onset", "duration", "sound_time")
                                            else np.str_) for k, v in rows.items()}
    return Events(**arrays)


def build_segments(
    recordings: Sequence[Recording],
    features: Callable[[str], NDArray[Any]],
    split: str | None = None,
    anchors: str = "word",
    step: float = 0.5,
    window: WindowSpec | None = None,
    spec: PreprocessingSpec | None = None,
    scalers: dict[str, RobustScaler] | None = None,
    *,
    speech_stats: tuple[NDArray[Any], NDArray[Any]] | None = None,
    max_scaler_windows: int = 200,
    max_per_recording: int | None = None,
    seed: int = 0,
    progress: bool = True,
    splits: Callable[[str], str] | None = None,
) -> tuple[SegmentSet, dict[str, RobustScaler]]:
    """Cut paired brain/speech windows from recordings.

    Parameters
    ----------
    recordings : list of Recording
        Runs to use (all must have the same channels).
    features : callable
        ``sound path (relative to the root) -> (F, n_frames)`` speech features at ``window.sfreq``.
    split : {'train', 'val', 'test'} or None
        Keep only anchors whose sound is in this split (``splits``).
    anchors : {'word', 'regular'}
        Word onsets, or every ``step`` s inside each sound.
    step : float
        Spacing of regular anchors in seconds.
    window, spec : WindowSpec, PreprocessingSpec
        Shared preprocessing settings.
    scalers : dict or None
        Subject -> RobustScaler. None: fit per subject on up to ``max_scaler_windows`` baselined windows at
        regular anchors of that subject's train-split sounds.
    speech_stats : (mean (F,), std (F,)) or None
        Standardisation of the speech features; None: computed over every distinct sound used.
    max_scaler_windows : int
        Windows per subject used to fit a scaler.
    max_per_recording : int or None
        Keep at most this many anchors per recording (random, seeded by ``seed`` and the recording name);
        bounds memory on long datasets.
    progress : bool
        Show a progress bar.
    splits : callable or None
        ``sound -> 'train' | 'val' | 'test'`` (None: :meth:`neurospeech.data.Splits.for_dataset` of the
        recordings' root: its ``splits.json`` when present, else the 0.7/0.1/0.2 hash split).

    Returns
    -------
    segments : SegmentSet
    scalers : dict of str -> RobustScaler
    """
    window = window or WindowSpec()
    spec = spec or PreprocessingSpec()
    if split not in (None, "train", "val", "test"):
        raise ConfigError(f"split must be None, 'train', 'val' or 'test', got {split!r}")
    if anchors not in ("word", "regular"):
        raise ConfigError(f"anchors must be 'word' or 'regular', got {anchors!r}")
    if not recordings:
        raise DataFormatError("build_segments needs at least one recording")
    split_fn = splits if splits is not None else Splits.for_dataset(recordings[0].root)
    fit_scalers = scalers is None
    scalers = {} if scalers is None else dict(scalers)
    channels: list[ChannelSpec] | None = None
    raw_windows: list[NDArray[np.float32]] = []
    meta: list[dict[str, Any]] = []
    scaler_pool: dict[str, list[NDArray[np.float32]]] = {}
    for rec in tqdm(recordings, desc="segments", disable=not progress, unit="run"):
        raw = rec.load_raw()
        chans = channel_specs(raw.info)
        if channels is None:
            channels = chans
        elif [c.name for c in chans] != [c.name for c in channels]:
            raise DataFormatError(
                f"{rec.name} has channels {[c.name for c in chans][:5]}... which differ from the first "
                f"recording's {[c.name for c in channels][:5]}...; use recordings of one montage"
            )
        data, times = preprocess_continuous(raw.get_data(), raw.info["sfreq"], window, spec)
        del raw
        events = rec.load_events()
        anc = _anchors(events, anchors, step)
        if split is not None:
            anc = anc.select(np.array([split_fn(s) == split for s in anc.sound], dtype=bool))
        if max_per_recording is not None and len(anc) > max_per_recording:
            rng = np.random.default_rng(int(stable_uniform(seed, rec.name) * 2**32))
            anc = anc.select(np.sort(rng.permutation(len(anc))[:max_per_recording]))
        if len(anc):
            w, valid = extract_windows(data, times, anc.onset, window)
            anc = anc.select(valid)
            raw_windows.append(w)  # raw windows; baseline + scaler applied once the scalers are known
            for k in range(len(anc)):
                meta.append(dict(subject=rec.subject, recording=rec.name, word=anc.word[k],
                                 sound=anc.sound[k], sentence=anc.sentence[k],
                                 sound_time=float(anc.sound_time[k]), anchor_time=float(anc.onset[k])))
        if fit_scalers:
            reg = _anchors(events, "regular", max(step, 0.5))
            reg = reg.select(np.array([split_fn(s) == "train" for s in reg.sound], dtype=bool))
            if len(reg) == 0:
                reg = _anchors(events, "regular", max(step, 0.5))
            if len(reg):
                rng = np.random.default_rng(len(scaler_pool.get(rec.subject, [])))
                pick = np.sort(rng.permutation(len(reg))[:max_scaler_windows])
                w, _ = extract_windows(data, times, reg.onset[pick], window)
                if len(w):
                    scaler_pool.setdefault(rec.subject, []).append(preprocess_window(w, window))
    if channels is None:
        raise DataFormatError("no recording could be read")
    if fit_scalers:
        for subj, pool in scaler_pool.items():
            scalers[subj] = RobustScaler.fit(np.concatenate(pool), max_windows=max_scaler_windows)
    n = len(meta)
    brain = np.empty((n, len(channels), window.n_times), dtype=np.float32)
    i = 0
    for j in range(len(raw_windows)):
        block = raw_windows[j]
        raw_windows[j] = np.empty((0,), dtype=np.float32)  # free the raw copy as we go
        subj = meta[i]["subject"]  # one block = one recording = one subject
        if subj not in scalers:
            raise DataFormatError(
                f"no robust scaler for subject {subj!r} (known: {sorted(scalers)}); pass scalers "
                "that include it or scalers=None to fit them"
            )
        sc = scalers[subj]
        brain[i:i + len(block)] = preprocess_window(block, window, sc.center, sc.scale, clamp=spec.clamp)
        i += len(block)
    # speech side
    sounds = sorted({m["sound"] for m in meta})
    feats = {s: np.asarray(features(s), dtype=np.float32) for s in sounds}
    if speech_stats is None and feats:
        cat = np.concatenate([f for f in feats.values()], axis=1).astype(np.float64)
        mean, std = cat.mean(axis=1), cat.std(axis=1)
    elif speech_stats is not None:
        mean, std = (np.asarray(a, dtype=np.float64) for a in speech_stats)
    else:
        mean, std = np.zeros(0), np.ones(0)
    std = np.where(std > 0, std, 1.0)
    n_f = len(mean)
    speech = np.empty((n, n_f, window.n_times), dtype=np.float32)
    std_feats = {s: ((f - mean[:, None]) / std[:, None]).astype(np.float32) for s, f in feats.items()}
    for k, m in enumerate(meta):
        speech[k] = speech_window(std_feats[m["sound"]], m["sound_time"], window)

    def col(key: str, dtype: Any = np.str_) -> NDArray[Any]:
        return np.asarray([m[key] for m in meta], dtype=dtype)

    seg = SegmentSet(
        brain=brain, speech=speech, subject=col("subject"),
        segment_id=np.asarray([segment_id(m["sound"], m["sound_time"]) for m in meta], dtype=np.str_),
        word=col("word"), sound=col("sound"), sentence=col("sentence"), recording=col("recording"),
        sound_time=col("sound_time", np.float64), anchor_time=col("anchor_time", np.float64),
        channels=channels, window=window, spec=spec, speech_mean=mean, speech_std=std,
    )
    log.info("segments: %d windows, %d distinct, %d subjects", n, len(set(seg.segment_id)),
             len(set(seg.subject)))
    return seg, scalers
