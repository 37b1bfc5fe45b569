"""Data plumbing of the trainer: speech targets in the scoring representation, segments, tensors.

All signal processing is :mod:`neurospeech.preprocessing` via
:func:`neurospeech.data.segments.build_segments`;
speech features come from :mod:`neurospeech.speech` (extractor + on-disk cache). This module only wires them:

    wav --extractor--> (F, n) --standardise (train-split stats)--> --project (PCA, train split)--> (F', n)
        --build_segments / speech_window--> (n_win, F', 343) --pool(time_pool)--> (n_win, F', 343 // pool)
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

import numpy as np
from numpy.typing import NDArray

from ..data import Recording, Splits, load_dataset, read_wav
from ..errors import ConfigError, DataFormatError
from ..preprocessing import PreprocessingSpec, RobustScaler, WindowSpec
from .represent import ScoringRepresentation, fit_pca_projection

__all__ = ["SpeechTargets", "TensorSet", "cap_windows", "dataset_sounds", "make_speech_targets", "raw_sfreq",
           "segment_source", "segments"]

log = logging.getLogger(__name__)


@dataclass
class SpeechTargets:
    """Speech features as the encoder's targets: extractor + standardisation + scoring representation.

    Attributes
    ----------
    root : Path
        Dataset root (sound paths are relative to it).
    kind : str
        Extractor name.
    params : dict
        Extractor settings (``get_extractor(kind, **params)`` rebuilds it).
    dim : int
        Extractor feature dimension.
    mean, std : array, shape (dim,)
        Global standardisation statistics (training sounds).
    representation : ScoringRepresentation
        Projection and time pooling.
    cache_dir : Path or None
        Feature cache directory.
    """

    root: Path
    kind: str
    params: dict[str, Any]
    dim: int
    mean: NDArray[np.float64]
    std: NDArray[np.float64]
    representation: ScoringRepresentation
    cache_dir: Path | None = None
    _extractor: Any = field(default=None, repr=False)
    _memo: dict[str, NDArray[np.float32]] = field(default_factory=dict, repr=False)

    def extractor(self) -> Any:
        if self._extractor is None:
            from ..speech import get_extractor

            self._extractor = get_extractor(self.kind, **self.params)
        return self._extractor

    def raw(self, sound: str) -> NDArray[np.float32]:
        """Extractor features ``(dim, n_frames)`` of a sound file (cached on disk when ``cache_dir`` is
        set)."""
        return _raw_features(self.root, sound, self.extractor(), self.cache_dir)

    def __call__(self, sound: str) -> NDArray[np.float32]:
        """Standardised, projected features ``(out_dim, n_frames)`` of ``sound`` (the ``build_segments``
        input)."""
        if sound not in self._memo:
            f = self.raw(sound).astype(np.float64)
            f = (f - self.mean[:, None]) / self.std[:, None]
            self._memo[sound] = self.representation.project(f)
        return self._memo[sound]

    def speech_spec(self) -> dict[str, Any]:
        """Fields of :class:`neurospeech.contract.SpeechSpec`."""
        return {"kind": self.kind, "dim": int(self.dim), "params": dict(self.params),
                "mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std]}

    @classmethod
    def from_spec(cls, root: str | Path, speech: dict[str, Any], representation: dict[str, Any],
                  cache_dir: str | Path | None = None) -> SpeechTargets:
        """Rebuild from a saved speech spec (run metadata or model contract)."""
        return cls(root=Path(root), kind=str(speech["kind"]), params=dict(speech["params"]),
                   dim=int(speech["dim"]), mean=np.asarray(speech["mean"], dtype=np.float64),
                   std=np.asarray(speech["std"], dtype=np.float64),
                   representation=ScoringRepresentation.from_dict(representation),
                   cache_dir=None if cache_dir is None else Path(cache_dir))


def _raw_features(root: Path, sound: str, extractor: Any,
    cache_dir: Path | None, fc: Any = None) -> NDArray[np.float32]:
    path = Path(root) / sound
    if not path.is_file():
        raise DataFormatError(
            f"stimulus {sound!r} not found under {root}; the events table names a missing wav")
    if cache_dir is not None:
        from ..speech import FeatureCache

        return np.asarray((fc or FeatureCache(cache_dir)).get(extractor, path), dtype=np.float32)
    wav, sr = read_wav(path)
    return np.asarray(extractor(wav, sr), dtype=np.float32)


class _Lazy(Sequence[Any]):
    """A read-only sequence whose items are computed on access (nothing kept)."""

    def __init__(self, keys: list[Any], load: Callable[[Any], Any]) -> None:
        self._keys, self._load = keys, load

    def __len__(self) -> int:
        return len(self._keys)

    @overload
    def __getitem__(self, i: int) -> Any: ...

    @overload
    def __getitem__(self, i: slice) -> list[Any]: ...

    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            return [self._load(k) for k in self._keys[i]]
        return self._load(self._keys[i])


def dataset_sounds(recordings: list[Recording]) -> list[str]:
    """Every distinct stimulus referenced by word or sound events, sorted."""
    sounds: set[str] = set()
    for rec in recordings:
        ev = rec.load_events()
        sounds.update(str(s) for s in ev.sound if s)
    return sorted(sounds)


def make_speech_targets(root: str | Path, recordings: list[Recording], kind: str, params: dict[str, Any],
                        score_dim: int | None, time_pool: int, cache_dir: str | Path | None,
                        progress: bool = True, splits: Any = None) -> SpeechTargets:
    """Fit the standardisation and projection on the training sounds (never on validation/test audio).

    ``splits``: ``sound -> split`` (None: :meth:`neurospeech.data.Splits.for_dataset` of ``root``).
    """
    from tqdm import tqdm

    from ..speech import fit_standardizer, get_extractor

    root = Path(root)
    extractor = get_extractor(kind, **params)
    cache = None if cache_dir is None else Path(cache_dir)
    split_fn = splits if splits is not None else Splits.for_dataset(root)
    train_sounds = [s for s in dataset_sounds(recordings) if split_fn(s) == "train"]
    if not train_sounds:
        raise DataFormatError(
            f"no training sounds in {root}: every stimulus fell in val/test; add more sounds")
    feats: Sequence[NDArray[np.float32]]
    if cache is None:
        feats = [_raw_features(root, s, extractor, cache)
                 for s in tqdm(train_sounds, desc=f"{kind} features", unit="wav", disable=not progress)]
    else:
        # with a disk cache, one sound's features are in memory at a time (the fits below accumulate sums):
        # the memory of fitting does not grow with the hours of audio
        from ..speech import FeatureCache

        fc = FeatureCache(cache)
        for s in tqdm(train_sounds, desc=f"{kind} features", unit="wav", disable=not progress):
            _raw_features(root, s, extractor, cache, fc)
        feats = _Lazy(train_sounds, lambda s: _raw_features(root, s, extractor, cache, fc))
    mean32, std32 = fit_standardizer(feats)
    mean = np.asarray(mean32, dtype=np.float64)
    std = np.asarray(std32, dtype=np.float64)
    std = np.where(std > 0, std, 1.0)
    dim = int(feats[0].shape[0])
    if score_dim is not None and score_dim < dim:
        z: Sequence[NDArray[np.floating[Any]]] = _Lazy(
            list(range(len(feats))), lambda i: (feats[i] - mean[:, None]) / std[:, None])
        proj, explained = fit_pca_projection(z, score_dim)
        rep = ScoringRepresentation(in_dim=dim, projection=proj, time_pool=time_pool,
                                    explained_variance=explained)
        log.info("scoring representation: %d -> %d dims (%.1f%% of variance), time pool %d",
                 dim, score_dim, 100 * explained, time_pool)
    else:
        rep = ScoringRepresentation(in_dim=dim, projection=None, time_pool=time_pool)
    return SpeechTargets(root=root, kind=kind, params=dict(extractor.params), dim=dim, mean=mean, std=std,
                         representation=rep, cache_dir=cache, _extractor=extractor)


@dataclass
class TensorSet:
    """Model-ready arrays of one split.

    Attributes
    ----------
    brain : array, shape (n, C, T), float32
    speech : array, shape (n, F', T'), float32
        Targets in the scoring representation.
    subject : array of int64, shape (n,)
        Index into the run's subject list.
    segment_id, word, subject_name : array of str, shape (n,)
    """

    brain: NDArray[np.float32]
    speech: NDArray[np.float32]
    subject: NDArray[np.int64]
    segment_id: NDArray[np.str_]
    word: NDArray[np.str_]
    subject_name: NDArray[np.str_]

    def __len__(self) -> int:
        return len(self.brain)

    def select(self, idx: NDArray[Any]) -> TensorSet:
        return TensorSet(self.brain[idx], self.speech[idx], self.subject[idx], self.segment_id[idx],
                         self.word[idx], self.subject_name[idx])


def segments(recordings: list[Recording], targets: SpeechTargets, split: str, anchors: str,
             subjects: list[str], window: WindowSpec, spec: PreprocessingSpec, step: float = 0.5,
             scalers: dict[str, RobustScaler] | None = None, max_windows: int | None = None, seed: int = 0,
             progress: bool = True, pool: bool = True, splits: Any = None
             ) -> tuple[TensorSet, dict[str, RobustScaler], SegmentInfo]:
    """Windows of one split via ``build_segments``, targets pooled to the scoring representation.

    ``build_segments`` is called once per subject (it fits scalers per subject, so the result is the same as
    one call) to bound the peak memory; ``max_windows`` is shared equally between subjects.
    ``pool=False`` keeps the targets at the full frame rate (for the ridge baseline). ``splits``: ``sound ->
    split`` (None: the dataset's own ``splits.json`` or the hash split).

    Returns
    -------
    tensors : TensorSet
    scalers : dict
        Subject -> RobustScaler (fitted here when ``scalers`` is None).
    info : SegmentInfo
        Channels and per-window sound/sentence/time (no arrays of signals).
    """
    from ..data.segments import build_segments

    out_dim = targets.representation.out_dim
    by_subject, index = group_by_subject(recordings, subjects)
    cap = None if max_windows is None else max(1, max_windows // len(by_subject))
    parts: list[TensorSet] = []
    infos: list[dict[str, Any]] = []
    fitted: dict[str, RobustScaler] = {}
    channels = None
    for k, (subj, recs) in enumerate(sorted(by_subject.items())):
        seg, sc = build_segments(
            recs, targets, split=split, anchors=anchors, step=step, window=window, spec=spec,
            scalers=None if scalers is None else {subj: scalers[subj]} if subj in scalers else scalers,
            speech_stats=(np.zeros(out_dim), np.ones(out_dim)), progress=progress, splits=splits,
        )
        fitted.update(sc)
        if channels is None:
            channels = seg.channels
        elif [c.name for c in seg.channels] != [c.name for c in channels]:
            raise DataFormatError(f"subject {subj} has another montage; train on recordings of one montage")
        if len(seg) == 0:
            continue
        if cap is not None and len(seg) > cap:
            seg = seg.select(np.sort(np.random.default_rng([seed, k]).choice(len(seg), cap, replace=False)))
        parts.append(TensorSet(
            brain=np.ascontiguousarray(seg.brain, dtype=np.float32),
            speech=targets.representation.pool(seg.speech) if pool else seg.speech,
            subject=np.full(len(seg), index[subj], dtype=np.int64),
            segment_id=seg.segment_id, word=seg.word, subject_name=seg.subject,
        ))
        infos.append({"sound": seg.sound, "sentence": seg.sentence, "sound_time": seg.sound_time})
        del seg
    if not parts:
        raise DataFormatError(f"no {anchors}-anchored windows in the {split!r} split; check the events")
    tensors = TensorSet(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                          ("brain", "speech", "subject", "segment_id", "word", "subject_name")))
    info = SegmentInfo(channels=channels or [],
                       sound=np.concatenate([i["sound"] for i in infos]),
                       sentence=np.concatenate([i["sentence"] for i in infos]),
                       sound_time=np.concatenate([i["sound_time"] for i in infos]))
    return tensors, (fitted if scalers is None else dict(scalers)), info


@dataclass
class SegmentInfo:
    """Per-window metadata next to a :class:`TensorSet`: channels, sound, sentence, sound_time."""

    channels: list[Any]
    sound: NDArray[np.str_]
    sentence: NDArray[np.str_]
    sound_time: NDArray[np.float64]


def segment_source(data_cache: str, root: str | Path, data_format: str | None,
                   feature_cache: str | Path | None) -> tuple[Callable[..., Any], dict[str, Any]]:
    """Where training windows come from: :func:`segments` (all in memory) or
    :func:`neurospeech.models._stream.stream_segments` (memory-mapped cache), and its extra arguments.

    ``data_cache``: ``on``, ``off`` or ``auto`` (``on`` for a public corpus, ``off`` for the project's BIDS).
    The cache lives in ``<feature cache>/recordings`` (``$NEUROSPEECH_CACHE`` or ``~/.cache/neurospeech``,
    never the dataset folder unless ``feature_cache`` is put there).
    """
    from ..data._cache import default_recording_cache_dir
    from ..data.formats import BIDS, detect_format

    if data_cache not in ("auto", "on", "off"):
        raise ConfigError(f"data_cache must be 'auto', 'on' or 'off', got {data_cache!r}")
    on = data_cache == "on" or (data_cache == "auto" and (data_format or detect_format(root)) != BIDS)
    if not on:
        return segments, {}
    from ._stream import stream_segments

    return stream_segments, {"cache_dir": default_recording_cache_dir(feature_cache)}


def cap_windows(windows: Any, max_windows: int | None, seed: int = 0) -> Any:
    """A fixed random subset of at most ``max_windows`` rows (in their order) of a TensorSet or StreamedSet."""
    if max_windows is None or len(windows) <= max_windows:
        return windows
    keep = np.sort(np.random.default_rng([seed, 0x5EED]).choice(len(windows), max_windows, replace=False))
    return windows.select(keep)


def group_by_subject(
    recordings: Sequence[Recording], subjects: Sequence[str]
) -> tuple[dict[str, list[Recording]], dict[str, int]]:
    """Recordings per subject (in order) and each subject's row in the model's subject list.

    Raises
    ------
    DataFormatError
        A recording's subject is not in ``subjects``.
    """
    by_subject: dict[str, list[Recording]] = {}
    for r in recordings:
        by_subject.setdefault(r.subject, []).append(r)
    unknown = sorted(set(by_subject) - set(subjects))
    if unknown:
        raise DataFormatError(f"subjects {unknown} are not in the model's subject list {list(subjects)}")
    return by_subject, {s: i for i, s in enumerate(subjects)}


def raw_sfreq(rec: Recording) -> float:
    """Sampling rate (Hz) of a recording as acquired: the model contract's ``sfreq_raw``.

    Read from the run's BIDS sidecar (``SamplingFrequency``); a corpus without sidecars (nothing is written
    at its ``bids_path``) is asked through its reader (the raw's ``info['sfreq']``).

    Raises
    ------
    DataFormatError
        The sidecar cannot be read or parsed, has no ``SamplingFrequency``, or the rate is not a positive
        finite number (the message names the file and the reason). A rate of 0 would make the service refuse
        every stream ("training rate 0 Hz").
    """
    side = Path(rec.bids_path.copy().update(extension=".json").fpath)
    if side.is_file():
        try:
            doc = json.loads(side.read_text("utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise DataFormatError(
                f"cannot read the sampling rate of {rec.name} from its sidecar {str(side)!r}: {exc}; "
                "fix the JSON (BIDS: SamplingFrequency in Hz) or regenerate the dataset") from exc
        value = doc.get("SamplingFrequency") if isinstance(doc, dict) else None
        where = f"sidecar {str(side)!r}"
    else:
        value = rec.load_raw(preload=False).info["sfreq"]  # header only; DataFormatError names a bad file
        where = f"recording {rec.name} (no sidecar at {str(side)!r})"
    if value is None:
        raise DataFormatError(f"the {where} has no SamplingFrequency; add the rate in Hz (BIDS requires it)")
    try:
        sfreq = float(value)
    except (TypeError, ValueError):
        sfreq = math.nan
    if not (math.isfinite(sfreq) and sfreq > 0):
        raise DataFormatError(
            f"the {where} gives SamplingFrequency {value!r}; it must be a positive number of Hz")
    return sfreq


def find_recordings(root: str | Path, subjects: list[str] | None, tasks: list[str] | None,
                    fmt: str | None = None) -> list[Recording]:
    recs = load_dataset(root, subjects=subjects, tasks=tasks, fmt=fmt)
    if not recs:
        raise ConfigError(f"no recordings under {root} for subjects={subjects} tasks={tasks}")
    return recs
