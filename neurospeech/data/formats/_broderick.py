"""Broderick et al. 2018 natural speech EEG (Dryad doi:10.5061/dryad.070jc, the "Natural Speech" folder).

Layout (as read by public loaders of the dataset, e.g. the mfn400 project's Broderick adapter)::

    Natural Speech/
      EEG/Subject1/Subject1_Run1.mat ...     eegData (samples x 128, BioSemi order A1..D32, uV),
                                             mastoids (samples x 2, uV), fs (128)
      Stimuli/Text/Run1.mat ...              wordVec (cell of words), onset_time, offset_time (s in the run)
      Stimuli/Envelopes/audio1_128Hz.mat     (speech envelopes; not read)
      Stimuli/Audio/audio1.wav ...           (the run's audio; needed for speech features)

19 subjects x 20 runs (~3 min each) of one audiobook. The runs are the split unit (:func:`stimuli`; every subject
heard the same runs): split in hash order in exact proportions (20 runs at 70/10/20: 14/2/4), unless a split file
says otherwise (:meth:`neurospeech.data.Splits.for_dataset`). Each run's EEG starts at its audio's first sample, so a
word's time in the wav is its time in the run. The EEG is re-referenced to the mean of the two mastoids
(the dataset's reference); the mastoids are not data channels.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import mne
import numpy as np
from scipy.io import loadmat

from ...errors import DataFormatError
from .._dataset import Recording
from .._events import Events
from ._base import CorpusRecording, Layout, bids_name, complete_sounds, resolve_sound

__all__ = ["LAYOUT"]

log = logging.getLogger(__name__)

_EEG = re.compile(r"^Subject(?P<sub>\d+)_Run(?P<run>\d+)\.mat$", re.IGNORECASE)


def detect(root: Path) -> bool:
    return any(root.glob("EEG/Subject*/Subject*_Run*.mat")) and (root / "Stimuli" / "Text").is_dir()


def _mat(path: Path) -> dict[str, Any]:
    try:
        return loadmat(path, squeeze_me=False)
    except (OSError, ValueError, NotImplementedError) as exc:
        raise DataFormatError(f"cannot read {path} as a MATLAB v5 file: {exc}") from exc


def _get(d: dict[str, Any], key: str, path: Path) -> np.ndarray:
    if key not in d:
        keys = sorted(k for k in d if not k.startswith("__"))
        raise DataFormatError(f"{path} has no variable {key!r} (variables: {keys})")
    return np.asarray(d[key])


def _load_raw(rec: CorpusRecording) -> mne.io.BaseRaw:
    d = _mat(rec.source)
    eeg = _get(d, "eegData", rec.source).astype(np.float64)
    mast = _get(d, "mastoids", rec.source).astype(np.float64)
    fs = float(np.ravel(_get(d, "fs", rec.source))[0])
    if eeg.ndim != 2 or eeg.shape[1] != 128:
        raise DataFormatError(f"{rec.source}: eegData has shape {eeg.shape}; expected (samples, 128)")
    if mast.shape != (eeg.shape[0], 2):
        raise DataFormatError(f"{rec.source}: mastoids has shape {mast.shape}; expected ({eeg.shape[0]}, 2)")
    montage = mne.channels.make_standard_montage("biosemi128")
    info = mne.create_info(montage.ch_names, fs, "eeg")
    data = (eeg - mast.mean(axis=1, keepdims=True)).T * 1e-6  # uV -> V, mastoid reference
    raw = mne.io.RawArray(data, info, verbose="error")
    raw.set_montage(montage, verbose="error")
    return raw


def _text(v: Any) -> str:
    a = np.asarray(v).ravel()
    return "" if a.size == 0 else str(a[0]).strip()


def _load_events(rec: CorpusRecording, sound: str) -> Events:
    d = _mat(rec.table)
    words = _get(d, "wordVec", rec.table).ravel()
    on = _get(d, "onset_time", rec.table).astype(np.float64).ravel()
    off = _get(d, "offset_time", rec.table).astype(np.float64).ravel()
    if not len(words) == len(on) == len(off):
        raise DataFormatError(f"{rec.table}: wordVec, onset_time and offset_time have {len(words)}, {len(on)}, "
                              f"{len(off)} entries; they must match")
    rows = [dict(onset=0.0, duration=0.0, kind="sound", word="", sound=sound, sound_time=0.0,
                 sentence=f"run{rec.run}")]
    for w, a, b in zip(words, on, off, strict=True):
        rows.append(dict(onset=float(a), duration=float(b - a), kind="word", word=_text(w), sound=sound,
                         sound_time=float(a), sentence=f"run{rec.run}"))
    return complete_sounds(rec.root, rows)


def recordings(root: Path, subjects: list[str] | None, tasks: list[str] | None) -> list[Recording]:
    if tasks and "naturalspeech" not in tasks:
        return []
    out: list[Recording] = []
    for mat in sorted(root.glob("EEG/Subject*/Subject*_Run*.mat")):
        m = _EEG.match(mat.name)
        if m is None:
            continue
        sub, run = f"{int(m['sub']):02d}", f"{int(m['run']):02d}"
        if subjects and sub not in subjects and m["sub"] not in subjects:
            continue
        text = root / "Stimuli" / "Text" / f"Run{int(m['run'])}.mat"
        if not text.is_file():
            raise DataFormatError(f"{mat} has no word table {text.relative_to(root)} (wordVec, onset_time, "
                                  "offset_time)")
        sound = resolve_sound(root, f"Stimuli/Audio/audio{int(m['run'])}.wav")
        rec = CorpusRecording(root=root, subject=sub, session=None, task="naturalspeech", run=run,
                              datatype="eeg", bids_path=bids_name(root, sub, "naturalspeech", "eeg", None, run),
                              source=mat, table=text)
        rec.raw_loader = lambda rec=rec: _load_raw(rec)
        rec.events_loader = lambda rec=rec, sound=sound: _load_events(rec, sound)
        out.append(rec)
    return out


def stimuli(root: Path) -> list[str]:
    """Every run's audio (``Stimuli/Audio/audioR.wav`` for each ``Stimuli/Text/RunR.mat``): the split unit.

    All subjects heard the same runs, so splitting the runs keeps a held-out run unheard in training by
    every subject (the rule of the other readers: split by stimulus).
    """
    runs = sorted({int(m[1]) for p in (root / "Stimuli" / "Text").glob("Run*.mat")
                   if (m := re.match(r"^Run(\d+)\.mat$", p.name, re.IGNORECASE))})
    return [resolve_sound(root, f"Stimuli/Audio/audio{r}.wav") for r in runs]


LAYOUT = Layout(
    name="broderick",
    title="Broderick et al. 2018 natural speech (BioSemi 128 EEG, .mat per run)",
    looks_for="EEG/Subject*/Subject*_Run*.mat (eegData, mastoids, fs) and Stimuli/Text/Run*.mat "
              "(wordVec, onset_time, offset_time); audio at Stimuli/Audio/audio*.wav",
    detect=detect,
    recordings=recordings,
    stimuli=stimuli,
)
