"""Training windows streamed from the preprocessed-recording cache: corpora larger than memory.

:func:`stream_segments` gives what :func:`neurospeech.models._data.segments` gives -- the same windows in the
same order, the same per-subject robust scalers, the same targets (tested equal) -- but as a
:class:`StreamedSet` that cuts each window when a batch asks for it:

- brain: the run's model-rate signal from :mod:`neurospeech.data._cache` (``preprocess_continuous``, the
  offline path the live service shares), memory-mapped; a window is ``data[:, start:start + n_window]`` then
  :func:`neurospeech.preprocessing.preprocess_window` with the subject's scaler (as ``build_segments``);
- speech: each sound's standardised, projected features memory-mapped from a target cache next to it
  (``<cache>/targets/<key>.npy``), windowed by :func:`neurospeech.data.segments.speech_window` and pooled.

What stays in memory is an index of a few dozen bytes per window (recording, first sample, sound, time in the
sound, subject, segment id, word), the scalers and the batches in flight: no array grows with the hours of
signal. The scalers are fitted on exactly the windows ``RobustScaler.fit`` would draw (at most 200 per
subject), extracted alone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..data import Recording, Splits, segment_id
from ..data._cache import CachedRecording, cache_recordings, open_memmap
from ..data.segments import _anchors, speech_window
from ..errors import DataFormatError
from ..preprocessing import (
    PreprocessingSpec,
    RobustScaler,
    WindowSpec,
    preprocess_window,
    window_start_index,
)

__all__ = ["StreamedSet", "TargetCache", "stream_segments"]

log = logging.getLogger(__name__)

_SCALER_BLOCK = 32


class TargetCache:
    """Standardised, projected speech features per sound, memory-mapped from ``<cache_dir>/<key>.npy``.

    The key hashes the targets' settings (extractor, standardisation, representation) and the wav's path,
    size and modification time. Entries are written atomically.
    """

    def __init__(self, targets: Any, cache_dir: str | Path) -> None:
        self.targets = targets
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        spec = json.dumps({"speech": targets.speech_spec(), "rep": targets.representation.to_dict()},
                          sort_keys=True, default=str)
        self._base = hashlib.sha256(spec.encode("utf-8")).hexdigest()
        self._paths: dict[str, Path] = {}

    def path(self, sound: str) -> Path:
        wav = Path(self.targets.root) / sound
        st = wav.stat()
        k = f"{self._base}|{wav.resolve()}|{st.st_size}|{st.st_mtime_ns}"
        return self.cache_dir / (hashlib.sha256(k.encode("utf-8")).hexdigest()[:32] + ".npy")

    def ensure(self, sound: str) -> Path:
        """Write the entry of ``sound`` if missing (its features are in memory only meanwhile)."""
        p = self.path(sound)
        if not p.is_file():
            feats = np.ascontiguousarray(self.targets(sound), dtype=np.float32)
            self.targets._memo.pop(sound, None)
            tmp = p.with_name(f"{p.name}.{os.getpid()}.tmp")
            with open(tmp, "wb") as f:
                np.save(f, feats, allow_pickle=False)
            os.replace(tmp, p)
        return p

    def get(self, sound: str) -> NDArray[np.float32]:
        """Features ``(F', n_frames)`` of ``sound``, memory-mapped read-only."""
        p = self._paths.get(sound)
        if p is None:
            p = self._paths[sound] = self.ensure(sound)
        return open_memmap(p)


class _Column:
    """``set.brain`` / ``set.speech``: indexable like an array (slice, index array, int), cut on access."""

    def __init__(self, owner: StreamedSet, what: str) -> None:
        self._owner, self._what = owner, what

    def __len__(self) -> int:
        return len(self._owner)

    def __getitem__(self, key: Any) -> NDArray[np.float32]:
        if isinstance(key, slice):
            idx = np.arange(*key.indices(len(self._owner)))
        else:
            idx = np.arange(len(self._owner))[key]
        if np.ndim(idx) == 0:
            return self._owner.batch(np.array([idx]), (self._what,))[0][0]
        return self._owner.batch(np.asarray(idx), (self._what,))[0]


class StreamedSet:
    """:class:`neurospeech.models._data.TensorSet`-like training windows cut from memory maps on demand.

    Attributes
    ----------
    brain, speech : indexable, length n
        ``brain[i:j]`` is an array ``(j - i, C, T)`` float32, ``speech[idx]`` ``(len(idx), F', T')``.
    subject : array of int64, shape (n,)
    segment_id, word, subject_name : array of str, shape (n,)
    """

    def __init__(self, cached: list[CachedRecording], rec: NDArray[np.int32], start: NDArray[np.int64],
                 sound: NDArray[np.int32], sound_time: NDArray[np.float64], sounds: list[str],
                 subject: NDArray[np.int64], segment_id: NDArray[np.str_], word: NDArray[np.str_],
                 subject_name: NDArray[np.str_], scalers: list[RobustScaler], window: WindowSpec,
                 clamp: float, targets: TargetCache, pool: Callable[[NDArray[Any]], NDArray[np.float32]] | None
                 ) -> None:
        self.cached, self.rec, self.start, self.sound, self.sound_time = cached, rec, start, sound, sound_time
        self.sounds, self.subject, self.segment_id, self.word = sounds, subject, segment_id, word
        self.subject_name, self.scalers, self.window, self.clamp = subject_name, scalers, window, clamp
        self.targets, self.pool = targets, pool

    def __len__(self) -> int:
        return len(self.rec)

    @property
    def brain(self) -> _Column:
        return _Column(self, "brain")

    @property
    def speech(self) -> _Column:
        return _Column(self, "speech")

    def select(self, idx: NDArray[Any]) -> StreamedSet:
        """Rows ``idx`` (shares the recordings, scalers and caches)."""
        return StreamedSet(self.cached, self.rec[idx], self.start[idx], self.sound[idx], self.sound_time[idx],
                           self.sounds, self.subject[idx], self.segment_id[idx], self.word[idx],
                           self.subject_name[idx], self.scalers, self.window, self.clamp, self.targets,
                           self.pool)

    def batch(self, idx: NDArray[Any], what: Sequence[str] = ("brain", "speech", "subject")
              ) -> list[NDArray[Any]]:
        """Arrays of rows ``idx``: ``brain (b, C, T)`` float32, ``speech (b, F', T')`` float32,
        ``subject (b,)`` int64, in the order of ``what``."""
        idx = np.asarray(idx, dtype=np.int64)
        w = self.window
        out: list[NDArray[Any]] = []
        for name in what:
            if name == "brain":
                c = self.cached[0].n_channels if self.cached else 0
                raw = np.empty((len(idx), c, w.n_window), dtype=np.float32)
                for j, i in enumerate(idx):  # copies out of the memory maps
                    s = int(self.start[i])
                    raw[j] = self.cached[int(self.rec[i])].data()[:, s:s + w.n_window]
                brain = np.empty((len(idx), c, w.n_times), dtype=np.float32)
                # one vectorised call per scaler (subject) in the batch
                group = np.array([id(self.scalers[int(r)]) for r in self.rec[idx]], dtype=np.int64)
                for g in np.unique(group):
                    sc = self.scalers[int(self.rec[idx[np.argmax(group == g)]])]
                    if len(group) and (group == g).all():
                        preprocess_window(raw, w, sc.center, sc.scale, clamp=self.clamp, out=brain)
                    else:
                        m = group == g
                        brain[m] = preprocess_window(raw[m], w, sc.center, sc.scale, clamp=self.clamp)
                out.append(brain)
            elif name == "speech":
                rows = [speech_window(self.targets.get(self.sounds[int(self.sound[i])]), float(self.sound_time[i]),
                                      w) for i in idx]
                sp = np.stack(rows) if rows else np.zeros((0, 0, w.n_times), dtype=np.float32)
                out.append(self.pool(sp) if self.pool is not None else sp)
            elif name == "subject":
                out.append(np.ascontiguousarray(self.subject[idx]))
            else:
                raise ValueError(f"unknown column {name!r}")
        return out

    def torch_batches(self, batches: Sequence[NDArray[Any]], workers: int = 0, pin: bool = False
                      ) -> Iterator[tuple[Any, Any, Any]]:
        """``(brain, speech, subject)`` torch tensors of each index array in ``batches``, in order.

        ``workers > 0``: a ``torch.utils.data.DataLoader`` with that many processes prefetches (each reopens
        the memory maps; at most ``2 * workers`` batches wait in memory).
        """
        import torch

        if workers <= 0:
            for b in batches:
                x, y, s = self.batch(b)
                yield torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(s)
            return
        view: Any = _BatchView(self, list(batches))  # a map-style dataset (len + getitem), not a torch subclass
        loader: Any = torch.utils.data.DataLoader(view, batch_size=None, shuffle=False,
                                             num_workers=workers, pin_memory=pin, prefetch_factor=2)
        yield from loader


class _BatchView:
    """Map-style dataset: item k is batch k (for the DataLoader)."""

    def __init__(self, owner: StreamedSet, batches: list[NDArray[Any]]) -> None:
        self.owner, self.batches = owner, batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, k: int) -> tuple[Any, Any, Any]:
        import torch

        x, y, s = self.owner.batch(self.batches[k])
        return torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(s)


def _scaler_from_cache(cached: list[CachedRecording], split_fn: Callable[[str], str], step: float,
                       window: WindowSpec, max_windows: int = 200) -> RobustScaler:
    """The scaler ``build_segments`` fits for one subject, from only the windows ``RobustScaler.fit`` keeps.

    ``build_segments`` draws, per run, up to ``max_windows`` regular anchors of the train-split sounds (rng
    seeded by the number of runs drawn so far), baselines them, concatenates, and ``RobustScaler.fit`` keeps
    ``max_windows`` of them (rng seed 0). Here the windows are located first and only the kept ones read.
    """
    located: list[tuple[int, int]] = []  # (cached index, first sample)
    n_drawn = 0
    for ci, c in enumerate(cached):
        events = c.recording.load_events()
        reg = _anchors(events, "regular", max(step, 0.5))
        sel = reg.select(np.array([split_fn(s) == "train" for s in reg.sound], dtype=bool))
        reg = sel if len(sel) else reg
        if not len(reg):
            continue
        rng = np.random.default_rng(n_drawn)
        pick = np.sort(rng.permutation(len(reg))[:max_windows])
        t0 = c.times0()
        starts = np.array([window_start_index(t0, a, window) for a in reg.onset[pick]], dtype=np.int64)
        valid = (starts >= 0) & (starts + window.n_window <= c.n_samples)
        if valid.any():
            n_drawn += 1
            located += [(ci, int(s)) for s in starts[valid]]
    if not located:
        raise DataFormatError(f"no window to fit a robust scaler for {cached[0].subject if cached else '?'}")
    keep = np.arange(len(located))
    if len(located) > max_windows:
        keep = np.sort(np.random.default_rng(0).choice(len(located), max_windows, replace=False))
    # per block of channels (the scaler is per channel): a few MB at a time whatever the channel count
    parts: list[RobustScaler] = []
    n_ch = cached[0].n_channels
    for c0 in range(0, n_ch, _SCALER_BLOCK):
        rows = slice(c0, min(c0 + _SCALER_BLOCK, n_ch))
        w = np.stack([np.asarray(cached[located[k][0]].data()[rows, located[k][1]:located[k][1] + window.n_window])
                      for k in keep]).astype(np.float32)
        parts.append(RobustScaler.fit(preprocess_window(w, window), max_windows=None))
    return RobustScaler(center=np.concatenate([p.center for p in parts]),
                        scale=np.concatenate([p.scale for p in parts]))


def stream_segments(recordings: list[Recording], targets: Any, split: str, anchors: str, subjects: list[str],
                    window: WindowSpec, spec: PreprocessingSpec, cache_dir: str | Path, step: float = 0.5,
                    scalers: dict[str, RobustScaler] | None = None, max_windows: int | None = None,
                    seed: int = 0, progress: bool = True, pool: bool = True, splits: Any = None,
                    max_scaler_windows: int = 200) -> tuple[StreamedSet, dict[str, RobustScaler], Any]:
    """:func:`neurospeech.models._data.segments` streamed from the cache (same arguments, plus ``cache_dir``).

    Parameters
    ----------
    cache_dir : path
        Root of the caches: runs in ``<cache_dir>`` (:mod:`neurospeech.data._cache`), targets in
        ``<cache_dir>/targets``.

    Returns
    -------
    tensors : StreamedSet
    scalers : dict
        Subject -> RobustScaler (fitted here when ``scalers`` is None).
    info : SegmentInfo
        Channels and per-window sound/sentence/time.
    """
    from ._data import SegmentInfo, group_by_subject

    if split not in ("train", "val", "test"):
        raise DataFormatError(f"split must be 'train', 'val' or 'test', got {split!r}")
    if not recordings:
        raise DataFormatError("stream_segments needs at least one recording")
    split_fn = splits if splits is not None else Splits.for_dataset(recordings[0].root)
    by_subject, index = group_by_subject(recordings, subjects)
    cap = None if max_windows is None else max(1, max_windows // len(by_subject))
    cached_all = cache_recordings(recordings, window, spec, cache_dir, progress=progress)
    by_name = {c.name: c for c in cached_all}
    channels = cached_all[0].channels
    for c in cached_all[1:]:
        if [ch.name for ch in c.channels] != [ch.name for ch in channels]:
            raise DataFormatError(
                f"{c.name} has channels {[ch.name for ch in c.channels][:5]}... which differ from the first "
                f"recording's {[ch.name for ch in channels][:5]}...; use recordings of one montage")
    tcache = TargetCache(targets, Path(cache_dir) / "targets")
    fitted: dict[str, RobustScaler] = {}
    cols: dict[str, list[Any]] = {k: [] for k in ("rec", "start", "sound", "sound_time", "subject", "word",
                                                  "subject_name", "sentence")}
    cached_order: list[CachedRecording] = []
    rec_scalers: list[RobustScaler] = []
    sounds: dict[str, int] = {}
    for k, (subj, recs) in enumerate(sorted(by_subject.items())):
        cached = [by_name[r.name] for r in recs]
        if scalers is None:
            sc = _scaler_from_cache(cached, split_fn, step, window, max_scaler_windows)
        elif subj in scalers:
            sc = scalers[subj]
        else:
            raise DataFormatError(
                f"no robust scaler for subject {subj!r} (known: {sorted(scalers)}); pass scalers "
                "that include it or scalers=None to fit them")
        fitted[subj] = sc
        rows: dict[str, list[Any]] = {k2: [] for k2 in cols}
        for c in cached:
            events = c.recording.load_events()
            anc = _anchors(events, anchors, step)
            anc = anc.select(np.array([split_fn(s) == split for s in anc.sound], dtype=bool))
            if not len(anc):
                continue
            t0 = c.times0()
            starts = np.array([window_start_index(t0, a, window) for a in anc.onset], dtype=np.int64)
            valid = (starts >= 0) & (starts + window.n_window <= c.n_samples)
            anc = anc.select(valid)
            ri = len(cached_order)
            cached_order.append(c)
            rec_scalers.append(sc)
            for j in range(len(anc)):
                snd = str(anc.sound[j])
                rows["rec"].append(ri)
                rows["start"].append(int(starts[valid][j]))
                rows["sound"].append(sounds.setdefault(snd, len(sounds)))
                rows["sound_time"].append(float(anc.sound_time[j]))
                rows["subject"].append(index[subj])
                rows["word"].append(str(anc.word[j]))
                rows["subject_name"].append(subj)
                rows["sentence"].append(str(anc.sentence[j]))
        n = len(rows["rec"])
        if n == 0:
            continue
        keep = np.arange(n)
        if cap is not None and n > cap:
            keep = np.sort(np.random.default_rng([seed, k]).choice(n, cap, replace=False))
        for key in cols:
            cols[key] += [rows[key][i] for i in keep]
    if not cols["rec"]:
        raise DataFormatError(f"no {anchors}-anchored windows in the {split!r} split; check the events")
    sound_list = [s for s, _ in sorted(sounds.items(), key=lambda kv: kv[1])]
    snd_idx = np.asarray(cols["sound"], dtype=np.int32)
    sound_time = np.asarray(cols["sound_time"], dtype=np.float64)
    for s in sorted({int(i) for i in snd_idx}):
        tcache.ensure(sound_list[s])
    sound_names = np.asarray([sound_list[i] for i in snd_idx], dtype=np.str_)
    seg_ids = np.asarray([segment_id(s, t) for s, t in zip(sound_names, sound_time, strict=True)], dtype=np.str_)
    rep = targets.representation
    out = StreamedSet(
        cached=cached_order, rec=np.asarray(cols["rec"], dtype=np.int32),
        start=np.asarray(cols["start"], dtype=np.int64), sound=snd_idx, sound_time=sound_time, sounds=sound_list,
        subject=np.asarray(cols["subject"], dtype=np.int64), segment_id=seg_ids,
        word=np.asarray(cols["word"], dtype=np.str_), subject_name=np.asarray(cols["subject_name"], dtype=np.str_),
        scalers=rec_scalers, window=window, clamp=spec.clamp, targets=tcache, pool=rep.pool if pool else None)
    info = SegmentInfo(channels=channels, sound=sound_names, sentence=np.asarray(cols["sentence"], dtype=np.str_),
                       sound_time=sound_time)
    log.info("streamed %s split: %d windows from %d runs (cache %s)", split, len(out), len(cached_order), cache_dir)
    return out, (fitted if scalers is None else dict(scalers)), info
