"""MEG-MASC (Gwilliams et al. 2023): BIDS, KIT/Yokogawa ``.con`` with ``.mrk`` and FastSCAN ``.pos``.

Layout (OSF ag3kj; as read by ``kingjr/meg-masc`` check_decoding.py and pnpl's ``Gwilliams2022``)::

    participants.tsv  dataset_description.json
    stimuli/audio/*.wav                      (story wavs; events name them in 'sound')
    sub-01/ses-0/meg/sub-01_ses-0_task-0_meg.con
                     sub-01_ses-0_task-0_markers.mrk         (marker coils, per task)
                     sub-01_ses-0_acq-ELP_headshape.pos      (fiducials + 5 HPI points, FastSCAN text, mm)
                     sub-01_ses-0_acq-HSP_headshape.pos      (head shape, FastSCAN text, mm)
                     sub-01_ses-0_task-0_events.tsv          (trial_type: dict-like string)
                     sub-01_ses-0_task-0_channels.tsv

Sessions ``0``/``1``, tasks ``0``-``3`` (one story each), no run entity. ``trial_type`` holds e.g.
``{'story': 'lw1', 'sound_id': 0, 'kind': 'word', 'word': 'Tara', 'start': 2.17, 'sound':
'stimuli/audio/lw1_0.wav', 'sequence_id': 3, ...}`` (``kind``: sound, word, phoneme; ``start``: seconds
into the wav), parsed by :func:`neurospeech.data.read_events_tsv`.
"""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path

import mne
import numpy as np
from numpy.typing import NDArray

from ...errors import DataFormatError
from .._dataset import Recording
from .._events import Events, read_events_tsv
from ._base import (
    CorpusRecording,
    Layout,
    bids_name,
    complete_sounds,
    pick_data_channels,
    read_channel_bads,
    resolve_sound,
)

__all__ = ["LAYOUT", "read_fastscan"]

log = logging.getLogger(__name__)

_RAW = re.compile(r"^sub-(?P<sub>[^_]+)_ses-(?P<ses>[^_]+)_task-(?P<task>[^_]+)(?:_run-(?P<run>[^_]+))?_meg\.con$")


def read_fastscan(path: Path) -> NDArray[np.float64]:
    """Points of a FastSCAN text file (``%`` comment lines, then ``x y z`` per line, millimetres).

    Returns
    -------
    array, shape (n_points, 3)
        Metres.
    """
    pts: list[list[float]] = []
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise DataFormatError(f"cannot read digitisation file {path}: {exc}") from exc
    for k, line in enumerate(text.splitlines(), start=1):
        s = line.strip()
        if not s or s.startswith("%") or s.startswith("//"):
            continue
        fields = s.replace(",", " ").split()
        try:
            xyz = [float(v) for v in fields[:3]]
        except ValueError as exc:
            raise DataFormatError(f"{path}: line {k}: {s[:60]!r} is not 'x y z' (FastSCAN points in mm)") from exc
        if len(xyz) != 3:
            raise DataFormatError(f"{path}: line {k}: {s[:60]!r} has fewer than 3 numbers")
        pts.append(xyz)
    if not pts:
        raise DataFormatError(f"{path} holds no points; expected FastSCAN text ('x y z' in mm per line)")
    return np.asarray(pts, dtype=np.float64) / 1000.0


def detect(root: Path) -> bool:
    return any(root.glob("sub-*/ses-*/meg/sub-*_meg.con"))


def _load_raw(rec: CorpusRecording, mrk: Path, elp: Path, hsp: Path, preload: bool = True) -> mne.io.BaseRaw:
    kw: dict[str, object] = {}
    if mrk.is_file() and elp.is_file() and hsp.is_file():
        elp_pts = read_fastscan(elp)
        if len(elp_pts) != 8:
            raise DataFormatError(
                f"{elp} has {len(elp_pts)} points; a KIT ELP file holds 8 (nasion, LPA, RPA, 5 HPI coils)")
        kw = dict(mrk=str(mrk), elp=elp_pts, hsp=read_fastscan(hsp))
    else:
        log.warning("%s: no %s/%s/%s; reading without head position (device frame only)", rec.name,
                    mrk.name, elp.name, hsp.name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw = mne.io.read_raw_kit(rec.source, verbose="error", **kw)  # type: ignore[arg-type]
    except (OSError, ValueError, RuntimeError) as exc:
        raise DataFormatError(f"cannot read KIT recording {rec.source}: {exc}") from exc
    bads = read_channel_bads(rec.source.with_name(rec.source.name.replace("_meg.con", "_channels.tsv")))
    raw.info["bads"] = [b for b in bads if b in raw.ch_names]
    return pick_data_channels(raw, "meg", rec.source, preload=preload)


def _load_events(rec: CorpusRecording) -> Events:
    ev = read_events_tsv(rec.table)
    rows = []
    for k in range(len(ev)):
        rows.append(dict(onset=float(ev.onset[k]), duration=float(ev.duration[k]), kind=str(ev.kind[k]),
                         word=str(ev.word[k]), sound=resolve_sound(rec.root, str(ev.sound[k])),
                         sound_time=float(ev.sound_time[k]), sentence=str(ev.sentence[k])))
    return complete_sounds(rec.root, rows)


def recordings(root: Path, subjects: list[str] | None, tasks: list[str] | None) -> list[Recording]:
    out: list[Recording] = []
    for con in sorted(root.glob("sub-*/ses-*/meg/sub-*_meg.con")):
        m = _RAW.match(con.name)
        if m is None:
            continue
        sub, ses, task, run = m["sub"], m["ses"], m["task"], m["run"]
        if (subjects and sub not in subjects) or (tasks and task not in tasks):
            continue
        stem = con.name[: -len("_meg.con")]
        events = con.with_name(f"{stem}_events.tsv")
        if not events.is_file():
            raise DataFormatError(f"{con} has no events table {events.name}; MEG-MASC gives one per task")
        prefix = f"sub-{sub}_ses-{ses}"
        mrk = con.with_name(f"{stem}_markers.mrk")
        elp = con.with_name(f"{prefix}_acq-ELP_headshape.pos")
        hsp = con.with_name(f"{prefix}_acq-HSP_headshape.pos")
        rec = CorpusRecording(root=root, subject=sub, session=ses, task=task, run=run, datatype="meg",
                              bids_path=bids_name(root, sub, task, "meg", ses, run, ".con"), source=con,
                              table=events, lazy=True)
        rec.raw_loader = (lambda preload=True, rec=rec, mrk=mrk, elp=elp, hsp=hsp:
                          _load_raw(rec, mrk, elp, hsp, preload))
        rec.events_loader = lambda rec=rec: _load_events(rec)
        out.append(rec)
    return out


LAYOUT = Layout(
    name="meg-masc",
    title="MEG-MASC (Gwilliams et al. 2023; KIT MEG, BIDS)",
    looks_for="sub-*/ses-*/meg/sub-*_ses-*_task-*_meg.con (with _markers.mrk, _acq-ELP/HSP_headshape.pos, "
              "_events.tsv)",
    detect=detect,
    recordings=recordings,
)
