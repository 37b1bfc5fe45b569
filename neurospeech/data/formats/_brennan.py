"""Brennan & Hale 2019, "Alice in Wonderland" EEG (Deep Blue doi:10.7302/Z29C6VNH, v2 doi:10.7302/746w-g237).

Layout (the dataset's README; v2 file names as read by public loaders of the release)::

    AliceChapterOne-EEG.csv      one row per word: Word, Segment (1-12), onset, offset (s in that segment's
                                 wav), Order, LogFreq, ..., Sentence, IsLexical, NGRAM, RNN, CFG
    audio/DownTheRabbitHoleFinal_SoundFile1.wav ... 12   (audio.zip, extracted)
    S01.vhdr/.vmrk/.eeg ...      v2: BrainVision, 61 EEG + VEOG + Aux5, 500 Hz, easycap-M10 names
    S01.mat ...                  v1: FieldTrip raw structure (trial, label, fsample), uV
    timelock-preprocessing/S01.mat  (v2; ``proc/`` in v1's proc.zip) FieldTrip ``proc`` structure whose
                                 ``trl`` rows (begsample, endsample, offset, ...) are the words of the csv in
                                 order; also impedence.bads and rejections.badchans

A word's sample on the EEG clock is ``begsample - offset`` (FieldTrip's trl convention, 1-based). Each wav's
start on that clock is where its words' times in the wav line up (checked: one start per wav within 50 ms).
"""

from __future__ import annotations

import csv
import logging
import re
import warnings
from pathlib import Path
from typing import Any

import mne
import numpy as np
from scipy.io import loadmat

from ...errors import DataFormatError
from .._dataset import Recording
from .._events import Events
from ._base import CorpusRecording, Layout, bids_name, complete_sounds, pick_data_channels, resolve_sound

__all__ = ["LAYOUT"]

log = logging.getLogger(__name__)

TABLE = "AliceChapterOne-EEG.csv"
WAV = "audio/DownTheRabbitHoleFinal_SoundFile{}.wav"
PROC_DIRS = ("timelock-preprocessing", "proc")
_SUBJ = re.compile(r"^S(\d+)\.(vhdr|mat)$")


def detect(root: Path) -> bool:
    return (root / TABLE).is_file()


def _loadmat(path: Path) -> dict[str, Any]:
    try:
        return loadmat(path, simplify_cells=True)
    except (OSError, ValueError, NotImplementedError, TypeError) as exc:
        raise DataFormatError(f"cannot read {path} as a MATLAB v5 file: {exc}") from exc


def _proc(rec: CorpusRecording) -> tuple[dict[str, Any], Path]:
    for d in PROC_DIRS:
        p = rec.root / d / f"{rec.subject}.mat"
        if p.is_file():
            proc = _loadmat(p).get("proc")
            if not isinstance(proc, dict) or "trl" not in proc:
                raise DataFormatError(f"{p} has no FieldTrip 'proc' structure with a 'trl' field")
            return proc, p
    wanted = " or ".join(f"{d}/{rec.subject}.mat" for d in PROC_DIRS)
    raise DataFormatError(
        f"{rec.subject}: no word timing on the EEG clock; expected {wanted} (the release's preprocessing "
        "parameters, whose trl rows are the words of the csv)")


def _strings(v: Any) -> list[str]:
    if v is None:
        return []
    if isinstance(v, str):
        return [v] if v else []
    return [str(x) for x in np.ravel(np.asarray(v, dtype=object)) if str(x)]


def _load_raw(rec: CorpusRecording, preload: bool = True) -> mne.io.BaseRaw:
    """The subject's EEG; ``preload=False`` leaves v2's BrainVision samples on disk (v1's .mat always loads)."""
    src = rec.source
    if src.suffix == ".vhdr":
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                raw = mne.io.read_raw_brainvision(src, eog=["VEOG"], misc=["Aux5"], preload=False,
                                                  verbose="error")
        except (OSError, ValueError, RuntimeError) as exc:
            raise DataFormatError(f"cannot read BrainVision file {src}: {exc}") from exc
    else:
        d = _loadmat(src)
        ft = next((v for v in d.values() if isinstance(v, dict) and {"trial", "label", "fsample"} <= set(v)), None)
        if ft is None:
            raise DataFormatError(f"{src} holds no FieldTrip raw structure (fields trial, label, fsample)")
        trial = ft["trial"]
        data = np.concatenate([np.atleast_2d(t) for t in trial], axis=1) if isinstance(trial, list) \
            else np.atleast_2d(trial)
        labels = _strings(ft["label"])
        types = ["eog" if n.upper().startswith("VEOG") else "misc" if n.lower().startswith("aux") else "eeg"
                 for n in labels]
        raw = mne.io.RawArray(data * 1e-6, mne.create_info(labels, float(ft["fsample"]), types), verbose="error")
    montage = mne.channels.make_standard_montage("easycap-M10")
    raw.set_montage(montage, on_missing="ignore", verbose="error")
    try:
        proc, _ = _proc(rec)
        bads = _strings((proc.get("impedence") or {}).get("bads")) + \
            _strings((proc.get("rejections") or {}).get("badchans"))
        raw.info["bads"] = sorted({b for b in bads if b in raw.ch_names})
    except DataFormatError:
        pass
    return pick_data_channels(raw, "eeg", src, preload=preload)


def _table(root: Path) -> list[dict[str, str]]:
    p = root / TABLE
    with open(p, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        header = reader.fieldnames or []
    for col in ("Word", "Segment", "onset", "offset"):
        if col not in header:
            raise DataFormatError(f"{p}: no {col!r} column (columns: {header})")
    return rows


def _load_events(rec: CorpusRecording, sfreq: float) -> Events:
    proc, path = _proc(rec)
    trl = np.atleast_2d(np.asarray(proc["trl"], dtype=np.float64))
    table = _table(rec.root)
    if len(trl) != len(table):
        raise DataFormatError(f"{path}: trl has {len(trl)} rows but {TABLE} has {len(table)} words; they must be "
                              "the same words in the same order")
    onset = (trl[:, 0] - trl[:, 2] - 1) / sfreq  # FieldTrip: the event is at begsample - offset (1-based)
    rows: list[dict[str, Any]] = []
    starts: dict[str, list[float]] = {}
    for k, r in enumerate(table):
        try:
            seg, a, b = int(float(r["Segment"])), float(r["onset"]), float(r["offset"])
        except ValueError as exc:
            raise DataFormatError(f"{rec.root / TABLE}: row {k + 2}: Segment/onset/offset are not numbers") from exc
        sound = resolve_sound(rec.root, WAV.format(seg))
        starts.setdefault(sound, []).append(onset[k] - a)
        rows.append(dict(onset=float(onset[k]), duration=b - a, kind="word", word=r["Word"].strip(), sound=sound,
                         sound_time=a, sentence=str(r.get("Sentence", "")).strip()))
    for sound, s in starts.items():
        if np.ptp(s) > 0.05:
            raise DataFormatError(
                f"{rec.subject}: the words of {sound} do not line up on one start in the EEG (spread "
                f"{np.ptp(s):.3f} s); {path.name}'s trl rows and {TABLE} are not the same words")
    return complete_sounds(rec.root, rows)


def _sfreq(src: Path) -> float:
    if src.suffix == ".vhdr":
        for line in src.read_text(encoding="latin-1").splitlines():
            if line.strip().startswith("SamplingInterval="):
                return 1e6 / float(line.split("=", 1)[1])
        raise DataFormatError(f"{src} has no SamplingInterval")
    d = _loadmat(src)
    ft = next((v for v in d.values() if isinstance(v, dict) and "fsample" in v), None)
    if ft is None:
        raise DataFormatError(f"{src} holds no FieldTrip raw structure (fields trial, label, fsample)")
    return float(ft["fsample"])


def recordings(root: Path, subjects: list[str] | None, tasks: list[str] | None) -> list[Recording]:
    if tasks and "alice" not in tasks:
        return []
    found: dict[str, Path] = {}
    for p in sorted(root.glob("S*.*")):
        m = _SUBJ.match(p.name)
        if m is not None and (p.suffix == ".vhdr" or p.stem not in found):
            found[p.stem] = p  # v2's BrainVision wins over a v1 .mat of the same subject
    out: list[Recording] = []
    for sub, src in sorted(found.items()):
        if subjects and sub not in subjects:
            continue
        rec = CorpusRecording(root=root, subject=sub, session=None, task="alice", run=None, datatype="eeg",
                              bids_path=bids_name(root, sub, "alice", "eeg"), source=src, table=root / TABLE,
                              lazy=src.suffix == ".vhdr")  # v1's FieldTrip .mat is read whole (scipy loadmat)
        rec.raw_loader = lambda preload=True, rec=rec: _load_raw(rec, preload)
        rec.events_loader = lambda rec=rec: _load_events(rec, _sfreq(rec.source))
        out.append(rec)
    return out


LAYOUT = Layout(
    name="brennan",
    title="Brennan & Hale 2019 Alice in Wonderland EEG (BrainVision or FieldTrip .mat per subject)",
    looks_for=f"{TABLE}, S*.vhdr (or S*.mat), timelock-preprocessing/S*.mat (or proc/S*.mat) and "
              "audio/DownTheRabbitHoleFinal_SoundFile*.wav",
    detect=detect,
    recordings=recordings,
)
