"""LibriBrain (Özdogan et al. 2025) as laid out by the ``pnpl`` package's local data folder.

Layout (pnpl 0.2 ``ContinuousH5Mixin`` and ``pnpl.preprocessing.serialization.fif_to_h5``)::

    <root>/Sherlock1/derivatives/serialised/sub-0_ses-1_task-Sherlock1_run-1_proc-<steps>_meg.h5
        data (channels, times) float32 SI units; times (times,); attrs sample_frequency,
        channel_names ("MEG0113, MEG0112, ..."), channel_types ("grad, grad, mag, ...")
    <root>/Sherlock1/derivatives/events/sub-0_ses-1_task-Sherlock1_run-1_events.tsv
        kind (word | phoneme | silence ...), segment (the word or phoneme), timemeg (s on the h5 times
        clock), sentenceidx, wordidx

One listener (subject ``0``), tasks ``Sherlock1``..``Sherlock7`` (books), sessions (chapters) and runs.
LibriBrain ships no stimulus audio and no audio times. The audio (the LibriVox recordings) and where each
run's wav starts are given by a table we define, ``stimuli/libribrain_audio.tsv``: columns ``task``,
``session``, ``run``, ``sound`` (wav path relative to the root) and ``meg_time`` (s on the h5 times clock at
which the wav's first sample played; may be negative). A word's time in the wav is ``timemeg - meg_time``.
"""

from __future__ import annotations

import csv
import logging
import re
from pathlib import Path
from typing import Any

import mne
import numpy as np

from ...errors import DataFormatError
from .._dataset import Recording
from .._events import Events
from ._base import CorpusRecording, Layout, bids_name, complete_sounds

__all__ = ["AUDIO_TABLE", "LAYOUT"]

log = logging.getLogger(__name__)

AUDIO_TABLE = "stimuli/libribrain_audio.tsv"
_H5 = re.compile(r"^sub-(?P<sub>[^_]+)_ses-(?P<ses>[^_]+)_task-(?P<task>[^_]+)_run-(?P<run>[^_]+)"
                 r"(?:_proc-(?P<proc>[^_]+))?_meg\.h5$")
_TYPES = {"mag": "mag", "grad": "grad", "eeg": "eeg", "planar1": "grad", "planar2": "grad", "axial": "mag"}


def detect(root: Path) -> bool:
    return any(root.glob("*/derivatives/serialised/sub-*_meg.h5"))


def _h5py() -> Any:
    try:
        import h5py
    except ImportError as exc:
        raise DataFormatError("reading LibriBrain's .h5 recordings needs h5py: pip install h5py "
                              "(it comes with the project's `train` extra)") from exc
    return h5py


def _attr_str(v: Any) -> str:
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


class _RawH5(mne.io.BaseRaw):
    """One pnpl ``.h5`` run as an mne Raw whose samples stay on disk until asked for (``preload=False``).

    Written here because mne has no reader for pnpl's serialised h5; without it a run had to be converted in
    memory (float64, the whole run) before the cache streams it block by block. ``_read_segment_file`` is mne's
    documented hook for on-demand reads (``mne.io.BaseRaw``): it reads ``data[:, start:stop]`` with h5py.
    """

    def __init__(self, path: Path, info: mne.Info, n_times: int, preload: bool) -> None:
        super().__init__(info, preload=preload, last_samps=[n_times - 1], filenames=[path], orig_format="single",
                         verbose="error")

    def _read_segment_file(self, data: np.ndarray, idx: Any, fi: int, start: int, stop: int, cals: np.ndarray,
                           mult: np.ndarray | None) -> None:
        with _h5py().File(self.filenames[fi], "r") as f:
            one = np.asarray(f["data"][:, start:stop], dtype=data.dtype)
        if mult is not None:  # projections / compensation (none are set by this reader)
            data[:] = mult @ one[idx]
        else:
            data[:] = one[idx] * cals


def _load_raw(rec: CorpusRecording, preload: bool = True) -> mne.io.BaseRaw:
    h5py = _h5py()
    try:
        with h5py.File(rec.source, "r") as f:
            shape = tuple(f["data"].shape)
            sfreq = float(f.attrs["sample_frequency"])
            names = [n.strip() for n in _attr_str(f.attrs.get("channel_names", "")).split(",") if n.strip()]
            types = [t.strip() for t in _attr_str(f.attrs.get("channel_types", "")).split(",") if t.strip()]
    except (OSError, KeyError) as exc:
        raise DataFormatError(f"cannot read {rec.source} as pnpl's serialised h5 (data, sample_frequency): "
                              f"{exc}") from exc
    if len(shape) != 2 or shape[1] < 1:
        raise DataFormatError(f"{rec.source}: data has shape {shape}; expected (channels, times)")
    if len(names) != shape[0]:
        names = [f"MEG{k:04d}" for k in range(shape[0])]
    if len(types) != shape[0]:
        types = ["mag"] * shape[0]
    unknown = sorted({t for t in types if t not in _TYPES})
    if unknown:
        raise DataFormatError(f"{rec.source}: channel types {unknown} are not MEG/EEG types")
    info = mne.create_info(names, sfreq, [_TYPES[t] for t in types])
    return _RawH5(rec.source, info, shape[1], preload)


def _audio_table(root: Path) -> dict[tuple[str, str, str], tuple[str, float]]:
    p = root / AUDIO_TABLE
    if not p.is_file():
        raise DataFormatError(
            f"LibriBrain ships no audio: put the LibriVox wavs under {root} and list, in {p}, which wav each run "
            "played and when (columns task, session, run, sound, meg_time: seconds on the h5 times clock at "
            "the wav's first sample); see docs/datasets.md")
    with open(p, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t")
        rows = list(reader)
        header = reader.fieldnames or []
    for col in ("task", "session", "run", "sound", "meg_time"):
        if col not in header:
            raise DataFormatError(f"{p}: no {col!r} column (columns: {header})")
    out: dict[tuple[str, str, str], tuple[str, float]] = {}
    for i, r in enumerate(rows, start=2):
        try:
            out[(r["task"].strip(), r["session"].strip(), r["run"].strip())] = (r["sound"].strip(),
                                                                                 float(r["meg_time"]))
        except ValueError as exc:
            raise DataFormatError(f"{p}: line {i}: meg_time {r['meg_time']!r} is not a number") from exc
    return out


def _load_events(rec: CorpusRecording) -> Events:
    table = _audio_table(rec.root)
    key = (rec.task, rec.session or "", rec.run or "")
    if key not in table:
        raise DataFormatError(f"{rec.root / AUDIO_TABLE} has no row for task={key[0]} session={key[1]} "
                              f"run={key[2]}")
    sound, meg_time = table[key]
    h5py = _h5py()
    with h5py.File(rec.source, "r") as f:
        t0 = float(f["times"][0]) if "times" in f else 0.0
    with open(rec.table, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t")
        rows = list(reader)
        header = reader.fieldnames or []
    for col in ("kind", "segment", "timemeg"):
        if col not in header:
            raise DataFormatError(f"{rec.table}: no {col!r} column (columns: {header}); pnpl's LibriBrain events "
                                  "have kind, segment, timemeg")
    out: list[dict[str, Any]] = [dict(onset=meg_time - t0, duration=0.0, kind="sound", word="", sound=sound,
                                      sound_time=0.0, sentence="")]
    words = [r for r in rows if (r.get("kind") or "").strip() == "word"]
    for k, r in enumerate(words):
        try:
            t = float(r["timemeg"])
        except ValueError:
            continue  # pnpl drops rows without timemeg too
        # the events give onsets only: a word lasts until the next one (at most 1 s; 0.3 s for the last)
        nxt = next((float(w["timemeg"]) for w in words[k + 1:k + 2] if w.get("timemeg")), t + 0.3)
        out.append(dict(onset=t - t0, duration=max(min(nxt - t, 1.0), 0.0), kind="word",
                        word=(r.get("segment") or "").strip(), sound=sound, sound_time=t - meg_time,
                        sentence=str(r.get("sentenceidx", "")).strip()))
    return complete_sounds(rec.root, out)


def recordings(root: Path, subjects: list[str] | None, tasks: list[str] | None) -> list[Recording]:
    out: list[Recording] = []
    seen: set[tuple[str, ...]] = set()
    for h5 in sorted(root.glob("*/derivatives/serialised/sub-*_meg.h5")):
        m = _H5.match(h5.name)
        if m is None:
            continue
        sub, ses, task, run = m["sub"], m["ses"], m["task"], m["run"]
        if (subjects and sub not in subjects) or (tasks and task not in tasks) or (sub, ses, task, run) in seen:
            continue  # one preprocessing variant per run (the first by name)
        seen.add((sub, ses, task, run))
        events = root / task / "derivatives" / "events" / f"sub-{sub}_ses-{ses}_task-{task}_run-{run}_events.tsv"
        if not events.is_file():
            raise DataFormatError(f"{h5} has no events table {events.relative_to(root)}")
        rec = CorpusRecording(root=root, subject=sub, session=ses, task=task, run=run, datatype="meg",
                              bids_path=bids_name(root, sub, task, "meg", ses, run), source=h5, table=events,
                              lazy=True)
        rec.raw_loader = lambda preload=True, rec=rec: _load_raw(rec, preload)
        rec.events_loader = lambda rec=rec: _load_events(rec)
        out.append(rec)
    return out


LAYOUT = Layout(
    name="libribrain",
    title="LibriBrain (Özdogan et al. 2025; pnpl's local folder of serialised MEG)",
    looks_for="<task>/derivatives/serialised/sub-*_ses-*_task-*_run-*[_proc-*]_meg.h5 and "
              "<task>/derivatives/events/*_events.tsv; audio listed in " + AUDIO_TABLE,
    detect=detect,
    recordings=recordings,
)
