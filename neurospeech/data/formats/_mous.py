"""MOUS (Schoffelen et al. 2019, Donders repository DSC_3011020.09_236_v1): BIDS, CTF-275 ``.ds``, auditory task.

Layout (pnpl's ``Schoffelen2019`` for the raw paths; the dataset's events as read by public MOUS loaders)::

    stimuli/audio_files/EQ_Ramp_Int2_Int1LPF001.wav ...    (one wav per sentence or word list, 3 digits)
    stimuli/stimuli.txt                                    ("<id> <text>" per line)
    derivatives/phonemes/EQ_Ramp_Int2_Int1LPF001.TextGrid  (word/phone alignment of each wav; optional)
    sub-A2002/meg/sub-A2002_task-auditory_meg.ds/          (CTF dataset directory)
                  sub-A2002_task-auditory_events.tsv       (onset, duration, sample, type, value)
                  sub-A2002_task-auditory_channels.tsv

Subjects ``A*`` did the auditory task, ``V*`` the visual one (no audio), everyone ``rest``; no session and no
run entity. In ``events.tsv`` a wav starts at a row with ``type`` ``Sound`` whose ``value`` names the file
(``Start File 123.wav``; the number is the id of ``EQ_Ramp_Int2_Int1LPF123.wav``) and ends at a ``Nothing``
row ``End of file``. Word times inside each wav come from the TextGrid's word tier (MOUS's events hold no
per-word triggers for the auditory task); without it the runs train on regular anchors only (no words for a
bank).
"""

from __future__ import annotations

import csv
import logging
import re
import warnings
from pathlib import Path
from typing import Any

import mne

from ...errors import DataFormatError
from .._dataset import Recording
from .._events import Events
from ._base import (
    CorpusRecording,
    Layout,
    bids_name,
    complete_sounds,
    pick_data_channels,
    read_channel_bads,
    wav_duration,
)
from ._textgrid import word_intervals

__all__ = ["LAYOUT"]

log = logging.getLogger(__name__)

AUDIO_DIR = "stimuli/audio_files"
ALIGN_DIR = "derivatives/phonemes"
PREFIX = "EQ_Ramp_Int2_Int1LPF"
_RAW = re.compile(r"^sub-(?P<sub>[^_]+)(?:_ses-(?P<ses>[^_]+))?_task-(?P<task>[^_]+)(?:_run-(?P<run>[^_]+))?"
                  r"_meg\.ds$")
_WAV = re.compile(r"(\d+)\.wav\s*$", re.IGNORECASE)


def detect(root: Path) -> bool:
    if not any(root.glob("sub-*/meg/sub-*_meg.ds")):
        return False
    return any(root.glob("sub-*/meg/sub-*_task-auditory_meg.ds")) or (root / AUDIO_DIR).is_dir()


def _float(v: Any, what: str, line: int, path: Path) -> float:
    try:
        return float(v)
    except (TypeError, ValueError) as exc:
        raise DataFormatError(f"{path}: line {line}: {what} {v!r} is not a number") from exc


def wav_of(root: Path, stim_id: int) -> str:
    """The wav (relative to root) of a stimulus id: ``stimuli/audio_files/EQ_Ramp_Int2_Int1LPF%03d.wav``."""
    name = f"{AUDIO_DIR}/{PREFIX}{stim_id:03d}.wav"
    if not (root / name).is_file():
        alt = f"{AUDIO_DIR}/{PREFIX}{stim_id}.wav"
        if (root / alt).is_file():
            return alt
    return name


def _load_events(rec: CorpusRecording) -> Events:
    p = rec.table
    with open(p, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t")
        header = reader.fieldnames or []
        rows = list(reader)
    for col in ("onset", "type", "value"):
        if col not in header:
            raise DataFormatError(f"{p}: no {col!r} column (columns: {header}); MOUS events.tsv has onset, "
                                  "duration, sample, type, value")
    out: list[dict[str, Any]] = []
    open_sound: dict[str, Any] | None = None
    no_align: list[str] = []
    for i, r in enumerate(rows, start=2):
        typ = (r.get("type") or "").strip().lower()
        value = (r.get("value") or "").strip()
        if typ == "sound":
            m = _WAV.search(value)
            if m is None:
                continue
            stim = int(m.group(1))
            onset = _float(r["onset"], "onset", i, p)
            sound = wav_of(rec.root, stim)
            open_sound = dict(onset=onset, duration=0.0, kind="sound", word="", sound=sound, sound_time=0.0,
                              sentence=str(stim))
            out.append(open_sound)
            tg = rec.root / ALIGN_DIR / f"{PREFIX}{stim:03d}.TextGrid"
            if tg.is_file():
                for iv in word_intervals(tg):
                    out.append(dict(onset=onset + iv.xmin, duration=iv.xmax - iv.xmin, kind="word",
                                    word=iv.text.strip(), sound=sound, sound_time=iv.xmin, sentence=str(stim)))
            else:
                no_align.append(tg.name)
        elif typ == "nothing" and "end of file" in value.lower() and open_sound is not None:
            open_sound["duration"] = _float(r["onset"], "onset", i, p) - open_sound["onset"]
            open_sound = None
    if no_align:
        log.warning("%s: no word alignment for %d wavs (e.g. %s under %s): regular anchors only", rec.name,
                    len(no_align), no_align[0], ALIGN_DIR)
    # the wav's own length wins over the End-of-file marker (the marker can come late)
    for r in out:
        if r["kind"] == "sound" and wav_duration(rec.root / r["sound"]) is not None:
            r["duration"] = 0.0
    return complete_sounds(rec.root, out)


def _load_raw(rec: CorpusRecording, preload: bool = True) -> mne.io.BaseRaw:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw = mne.io.read_raw_ctf(rec.source, verbose="error")
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise DataFormatError(f"cannot read CTF dataset {rec.source}: {exc}") from exc
    bads = read_channel_bads(rec.source.with_name(rec.source.name.replace("_meg.ds", "_channels.tsv")))
    raw.info["bads"] = sorted(set(raw.info["bads"]) | {b for b in bads if b in raw.ch_names})
    return pick_data_channels(raw, "meg", rec.source, preload=preload)


def recordings(root: Path, subjects: list[str] | None, tasks: list[str] | None) -> list[Recording]:
    tasks = tasks or ["auditory"]  # the task with speech; visual (reading) and rest have no audio
    out: list[Recording] = []
    for ds in sorted(root.glob("sub-*/meg/sub-*_meg.ds")):
        m = _RAW.match(ds.name)
        if m is None or not ds.is_dir():
            continue
        sub, ses, task, run = m["sub"], m["ses"], m["task"], m["run"]
        if (subjects and sub not in subjects) or task not in tasks:
            continue
        events = ds.with_name(ds.name.replace("_meg.ds", "_events.tsv"))
        if not events.is_file():
            raise DataFormatError(f"{ds} has no events table {events.name}; MOUS gives one per task")
        rec = CorpusRecording(root=root, subject=sub, session=ses, task=task, run=run, datatype="meg",
                              bids_path=bids_name(root, sub, task, "meg", ses, run, ".ds"), source=ds,
                              table=events, lazy=True)
        rec.raw_loader = lambda preload=True, rec=rec: _load_raw(rec, preload)
        rec.events_loader = lambda rec=rec: _load_events(rec)
        out.append(rec)
    return out


LAYOUT = Layout(
    name="mous",
    title="MOUS (Schoffelen et al. 2019; CTF-275 MEG, BIDS, auditory task)",
    looks_for="sub-*/meg/sub-*_task-auditory_meg.ds (CTF) with _events.tsv, and stimuli/audio_files/"
              "EQ_Ramp_Int2_Int1LPF*.wav",
    detect=detect,
    recordings=recordings,
)
