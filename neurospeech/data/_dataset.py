"""BIDS datasets laid out like MEG-MASC: discovery (:func:`load_dataset`), reading and writing runs."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mne
import mne_bids
import numpy as np

from ..errors import DataFormatError
from ._events import Events, read_events_tsv

__all__ = ["Recording", "load_dataset", "write_run"]

log = logging.getLogger(__name__)

_EXTENSIONS = {
    "meg": [".fif", ".con", ".sqd", ".ds", ".bin"],
    "eeg": [".vhdr", ".edf", ".bdf", ".set", ".fif"],
}


@dataclass
class Recording:
    """One run of one subject.

    Attributes
    ----------
    root : Path
        Dataset root.
    subject, session, task, run : str or None
        BIDS entities.
    datatype : str
        ``'meg'`` or ``'eeg'``.
    bids_path : mne_bids.BIDSPath
        Path of the raw file.
    """

    root: Path
    subject: str
    session: str | None
    task: str
    run: str | None
    datatype: str
    bids_path: mne_bids.BIDSPath

    @property
    def name(self) -> str:
        """Short unique name, e.g. ``sub-01_ses-0_task-listen_run-01``."""
        return self.bids_path.basename.rsplit("_", 1)[0]

    @property
    def events_path(self) -> Path:
        return Path(self.bids_path.copy().update(suffix="events", extension=".tsv").fpath)

    def load_raw(self, preload: bool = True) -> mne.io.BaseRaw:
        """Read the run: data channels only (MEG or EEG), SI units, bads in ``info['bads']``.

        ``preload=False`` leaves the samples on disk (``raw.get_data(start=, stop=)`` then reads one piece at a
        time): the cache builds a run of any length in bounded memory that way.
        """
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                raw = mne_bids.read_raw_bids(self.bids_path, verbose="error")
            except (OSError, ValueError, RuntimeError) as exc:
                raise DataFormatError(f"cannot read {self.bids_path.fpath}: {exc}") from exc
        for w in caught:
            log.debug("read_raw_bids: %s", w.message)
        if self.datatype == "meg":
            picks = mne.pick_types(raw.info, meg=True, ref_meg=False, exclude=[])
        else:
            picks = mne.pick_types(raw.info, eeg=True, exclude=[])
        if len(picks) == 0:
            raise DataFormatError(f"{self.bids_path.fpath} has no {self.datatype.upper()} channels")
        raw.pick(picks)
        if preload:
            raw.load_data(verbose="error")
        return raw

    def load_events(self) -> Events:
        """The run's events (see :func:`neurospeech.data.read_events_tsv`)."""
        return read_events_tsv(self.events_path)


def load_dataset(
    root: str | Path, subjects: list[str] | None = None, tasks: list[str] | None = None,
    fmt: str | None = None,
) -> list[Recording]:
    """Every MEG/EEG run of a dataset, sorted by subject, session, task, run.

    Parameters
    ----------
    root : str or Path
        Dataset root (holds ``dataset_description.json`` and ``sub-*``), or the root of a public corpus
        (:mod:`neurospeech.data.formats`: MEG-MASC, MOUS, Broderick, Brennan, LibriBrain).
    subjects, tasks : list of str or None
        Keep only these (None: all).
    fmt : str or None
        Layout name (``bids``, ``meg-masc``, ``mous``, ``broderick``, ``brennan``, ``libribrain``);
        None: detected from the folder.

    Raises
    ------
    DataFormatError
        Not a known layout, or no runs found.
    """
    from .formats import read_corpus

    corpus = read_corpus(root, fmt, subjects, tasks)
    if corpus is not None:
        return corpus
    root = Path(root)
    if not root.is_dir():
        raise DataFormatError(f"dataset root {str(root)!r} is not a directory")
    if not any(root.glob("sub-*")):
        raise DataFormatError(
            f"{root} holds no sub-* folders; give the root of a BIDS dataset "
            "(e.g. one written by `neurospeech simulate`)"
        )
    found: dict[str, Recording] = {}
    for datatype, exts in _EXTENSIONS.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            paths = mne_bids.find_matching_paths(
                root, subjects=subjects, tasks=tasks, datatypes=datatype, suffixes=datatype,
                extensions=exts,
            )
        for bp in paths:
            if bp.subject == "emptyroom":
                continue
            if bp.split is not None and bp.split != "01":
                continue
            bp = bp.copy().update(split=None) if bp.split else bp
            rec = Recording(root=root, subject=str(bp.subject), session=bp.session, task=str(bp.task),
                            run=bp.run, datatype=datatype, bids_path=bp)
            found.setdefault(str(bp.fpath), rec)
    recs = sorted(found.values(), key=lambda r: (r.subject, r.session or "", r.task, r.run or ""))
    if not recs:
        raise DataFormatError(
            f"no MEG/EEG runs found under {root} (subjects={subjects}, tasks={tasks}); expected files like "
            "sub-01/meg/sub-01_task-listen_run-01_meg.fif or sub-01/eeg/..._eeg.vhdr"
        )
    return recs


def write_run(
    root: str | Path,
    raw: mne.io.BaseRaw,
    events: Events,
    subject: str,
    task: str,
    session: str | None = None,
    run: str | None = None,
    overwrite: bool = True,
) -> mne_bids.BIDSPath:
    """Write one run with mne-bids: MEG as FIF, EEG as BrainVision, sidecars and the events table.

    The events go in as annotations with ``extras`` (sound, sound_time, word, sentence), so
    ``mne_bids.read_raw_bids`` reads them back as annotations and the ``_events.tsv`` holds the columns
    onset, duration, trial_type, value, sample, sound, sound_time, word, sentence.

    Parameters
    ----------
    root : str or Path
        Dataset root.
    raw : mne.io.BaseRaw
        Preloaded data in SI units; ``info['bads']`` is written to ``channels.tsv``.
    events : Events
        Onsets on the raw.times clock.
    subject, task, session, run : str
        BIDS entities.
    """
    types = set(raw.get_channel_types())
    datatype = "meg" if types & {"mag", "grad"} else "eeg"
    fmt = "FIF" if datatype == "meg" else "BrainVision"
    extras: list[dict[str, Any]] = []
    for k in range(len(events)):
        st = float(events.sound_time[k])
        extras.append({
            "sound": events.sound[k] or "n/a",
            "sound_time": "n/a" if np.isnan(st) else round(st, 6),
            "word": events.word[k] or "n/a",
            "sentence": events.sentence[k] or "n/a",
        })
    raw = raw.copy()
    raw.orig_format = "single"  # FIF stores float32 (7 significant digits, plenty for M/EEG)
    raw.set_annotations(mne.Annotations(
        onset=events.onset, duration=events.duration, description=events.kind.astype(object),
        orig_time=raw.info["meas_date"], extras=extras,
    ))
    bp = mne_bids.BIDSPath(subject=subject, session=session, task=task, run=run, datatype=datatype,
                           root=Path(root))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mne_bids.write_raw_bids(raw, bp, format=fmt, allow_preload=True, overwrite=overwrite, verbose="error")
    for w in caught:
        log.debug("write_raw_bids: %s", w.message)
    return bp
