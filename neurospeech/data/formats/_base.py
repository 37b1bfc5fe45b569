"""Shared pieces of the corpus readers: the recording type, channel bads, sound rows, wav lengths."""

from __future__ import annotations

import csv
import logging
import math
import wave
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mne
import mne_bids
import numpy as np

from ...errors import DataFormatError
from .._dataset import Recording
from .._events import Events, events_from_rows

__all__ = [
    "CorpusRecording",
    "Layout",
    "bids_name",
    "complete_sounds",
    "pick_data_channels",
    "read_channel_bads",
    "resolve_sound",
    "wav_duration",
]

log = logging.getLogger(__name__)


@dataclass
class Layout:
    """One known corpus layout.

    Attributes
    ----------
    name : str
        ``--format`` value, e.g. ``'meg-masc'``.
    title : str
        The corpus, e.g. ``'MEG-MASC (Gwilliams et al. 2023)'``.
    looks_for : str
        What :attr:`detect` looks for (said when a folder is not recognised).
    detect : callable
        ``root -> bool``.
    recordings : callable
        ``(root, subjects, tasks) -> list[Recording]``.
    stimuli : callable or None
        ``root -> list of sound paths``: the corpus's whole, short, fixed list of stimuli, for a corpus whose
        few stimuli the per-sound hash would split badly (Broderick: 20 runs, none in validation); they are
        then split in exact proportions (:func:`neurospeech.data.formats.corpus_split`). None: the hash split.
    """

    name: str
    title: str
    looks_for: str
    detect: Callable[[Path], bool]
    recordings: Callable[[Path, list[str] | None, list[str] | None], list[Recording]]
    stimuli: Callable[[Path], list[str]] | None = None


@dataclass
class CorpusRecording(Recording):
    """A run of a public corpus: :class:`Recording` whose reading is done by the corpus reader.

    ``bids_path`` names the run with BIDS entities (for BIDS corpora it is the raw file; for the others the
    name only: nothing is written there). ``source`` is the raw file or folder that is read.

    Attributes
    ----------
    source : Path
        The recording file (``.con``, ``.ds`` directory, ``.mat``, ``.vhdr``, ``.h5``).
    table : Path
        The file the events come from (events.tsv, word table); :attr:`events_path`.
    raw_loader, events_loader : callable
        ``() -> mne.io.BaseRaw`` (data channels only, SI units, bads set) and ``() -> Events``.
    lazy : bool
        ``raw_loader(preload=False)`` leaves the samples on disk (KIT, CTF, pnpl's h5, BrainVision); the
        MATLAB ``.mat`` readers (Broderick, Brennan v1) convert in memory and always preload.
    """

    source: Path = field(default_factory=Path)
    table: Path = field(default_factory=Path)
    raw_loader: Callable[..., mne.io.BaseRaw] | None = field(default=None, repr=False)
    events_loader: Callable[[], Events] | None = field(default=None, repr=False)
    lazy: bool = False

    @property
    def events_path(self) -> Path:
        return self.table

    def load_raw(self, preload: bool = True) -> mne.io.BaseRaw:
        """Read the run: data channels only, SI units, bads in ``info['bads']``.

        ``preload=False`` leaves the samples on disk when the reader is :attr:`lazy`; the ``.mat`` readers
        always preload.
        """
        if self.raw_loader is None:
            raise DataFormatError(f"{self.name}: no reader for {self.source}")
        if self.lazy and not preload:
            return self.raw_loader(preload=False)
        return self.raw_loader()

    def load_events(self) -> Events:
        """The run's events on the raw.times clock (word rows and one sound row per wav played)."""
        if self.events_loader is None:
            raise DataFormatError(f"{self.name}: no events reader for {self.table}")
        return self.events_loader()


def bids_name(root: Path, subject: str, task: str, datatype: str, session: str | None = None,
              run: str | None = None, extension: str | None = None) -> mne_bids.BIDSPath:
    """A BIDSPath naming one run (``check=False``: corpus labels need not be BIDS-valid)."""
    return mne_bids.BIDSPath(subject=subject, session=session, task=task, run=run, datatype=datatype,
                             suffix=datatype, extension=extension, root=root, check=False)


def pick_data_channels(raw: mne.io.BaseRaw, datatype: str, what: Path | str, preload: bool = True
                       ) -> mne.io.BaseRaw:
    """Keep the MEG (no reference sensors) or EEG channels, preloaded unless ``preload=False``."""
    if datatype == "meg":
        picks = mne.pick_types(raw.info, meg=True, ref_meg=False, exclude=[])
    else:
        picks = mne.pick_types(raw.info, eeg=True, exclude=[])
    if len(picks) == 0:
        raise DataFormatError(f"{what} has no {datatype.upper()} channels (types: "
                              f"{sorted(set(raw.get_channel_types()))})")
    raw.pick(picks, verbose="error")
    if preload:
        raw.load_data(verbose="error")
    return raw


def read_channel_bads(path: Path) -> list[str]:
    """Names whose ``status`` is ``bad`` in a BIDS ``_channels.tsv`` ([] when the file is absent)."""
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return [r["name"] for r in rows if (r.get("status") or "").strip().lower() == "bad" and r.get("name")]


def wav_duration(path: Path) -> float | None:
    """Length in seconds of a wav file from its header (None when it is absent or unreadable)."""
    if not path.is_file():
        return None
    try:
        with wave.open(str(path), "rb") as w:
            return w.getnframes() / float(w.getframerate())
    except (wave.Error, EOFError, OSError):
        try:
            from scipy.io import wavfile

            sr, data = wavfile.read(path, mmap=True)
            return len(data) / float(sr)
        except (ValueError, OSError):
            return None


def resolve_sound(root: Path, sound: str) -> str:
    """``sound`` (relative to ``root``) as it is spelled on disk: exact, else a case-insensitive match.

    Corpora name their audio in event tables with a case that can differ from the files (e.g.
    ``Stimuli/Audio`` vs ``stimuli/audio``). Returns ``sound`` unchanged when nothing matches.
    """
    if not sound or (root / sound).is_file():
        return sound
    cur = root
    parts: list[str] = []
    for part in Path(sound).parts:
        if not cur.is_dir():
            return sound
        match = next((p.name for p in sorted(cur.iterdir()) if p.name.lower() == part.lower()), None)
        if match is None:
            return sound
        parts.append(match)
        cur = cur / match
    return "/".join(parts) if cur.is_file() else sound


def complete_sounds(root: Path, rows: Iterable[dict[str, Any]]) -> Events:
    """Events with one ``sound`` row per wav, each with its duration.

    Training cuts its windows inside ``sound`` rows (every 0.5 s of each wav), so a reader must give them.
    A wav with word rows but no sound row gets one at ``median(word onset - word sound_time)`` (the time
    its first sample played). A sound row without a duration gets the wav's length (from its header), or
    the end of its last word when the wav is absent.

    Parameters
    ----------
    root : Path
        Dataset root (sounds are relative to it).
    rows : iterable of dict
        Keys onset, duration, kind, word, sound, sound_time, sentence.
    """
    rows = [dict(r) for r in rows]
    words: dict[str, list[dict[str, Any]]] = {}
    sounds: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r.get("kind") == "word" and r.get("sound"):
            words.setdefault(r["sound"], []).append(r)
        elif r.get("kind") == "sound" and r.get("sound"):
            sounds.setdefault(r["sound"], []).append(r)
    for snd, ws in words.items():
        if snd in sounds:
            continue
        start = float(np.median([w["onset"] - w["sound_time"] for w in ws]))
        new = dict(onset=start, duration=0.0, kind="sound", word="", sound=snd, sound_time=0.0,
                   sentence=str(ws[0].get("sentence", "")))
        rows.append(new)
        sounds[snd] = [new]
    for snd, srows in sounds.items():
        length = wav_duration(root / snd)
        ws = words.get(snd, [])
        word_end = max((w["sound_time"] + max(float(w.get("duration") or 0.0), 0.0) for w in ws), default=0.0)
        for r in srows:
            dur = r.get("duration")
            if dur is None or not math.isfinite(float(dur)) or float(dur) <= 0:
                st = float(r.get("sound_time") or 0.0)
                r["duration"] = (length - st) if length is not None else max(word_end - st, 0.0)
    return events_from_rows(rows)
