"""Readers for the public speech-listening corpora, detected from a folder's layout or named by ``--format``.

Each reader turns a local copy of a corpus, as its authors publish it (no conversion), into
:class:`neurospeech.data.Recording` runs whose ``load_raw`` / ``load_events`` give what the trainer, evaluate,
bank and replay read from the project's own BIDS layout. docs/datasets.md lists the layouts and the sources
they were taken from.

======================  =================================================================================
``--format``            corpus
======================  =================================================================================
``bids``                the project's own BIDS layout (``neurospeech simulate``), read by mne-bids
``meg-masc``            MEG-MASC, Gwilliams et al. 2023 (KIT ``.con`` + ``.mrk`` + FastSCAN ``.pos``)
``mous``                MOUS, Schoffelen et al. 2019 (CTF ``.ds``, auditory task)
``broderick``           Broderick et al. 2018 natural speech (BioSemi 128 in ``.mat`` per run)
``brennan``             Brennan & Hale 2019, Alice in Wonderland EEG (BrainVision or FieldTrip ``.mat``)
``libribrain``          LibriBrain, Özdogan et al. 2025 (pnpl's local folder: ``.h5`` + events ``.tsv``)
======================  =================================================================================
"""

from __future__ import annotations

import logging
from pathlib import Path

from ...errors import ConfigError, DataFormatError
from .._dataset import Recording
from . import _brennan, _broderick, _libribrain, _meg_masc, _mous
from ._base import CorpusRecording, Layout
from ._words import audio_word_candidates

__all__ = ["BIDS", "FORMAT_NAMES", "LAYOUTS", "CorpusRecording", "Layout", "audio_word_candidates", "detect_format",
           "read_corpus"]

log = logging.getLogger(__name__)

#: The project's own layout (handled by :func:`neurospeech.data.load_dataset` itself).
BIDS = "bids"

#: Corpus layouts in detection order (the first whose ``detect`` holds wins).
LAYOUTS: dict[str, Layout] = {lay.name: lay for lay in (
    _meg_masc.LAYOUT, _mous.LAYOUT, _broderick.LAYOUT, _brennan.LAYOUT, _libribrain.LAYOUT)}

#: Every value ``--format`` accepts.
FORMAT_NAMES: tuple[str, ...] = (BIDS, *LAYOUTS)


def _known() -> str:
    lines = [f"  {BIDS}: the project's own BIDS layout (sub-*/[ses-*/]meg|eeg/*_meg.fif|*_eeg.vhdr with "
             "neurospeech _events.tsv)"]
    lines += [f"  {lay.name}: {lay.title}; looks for {lay.looks_for}" for lay in LAYOUTS.values()]
    return "\n".join(lines)


def detect_format(root: str | Path) -> str:
    """The layout of a dataset folder: a corpus name of :data:`LAYOUTS`, or ``'bids'``.

    Raises
    ------
    DataFormatError
        The folder does not exist or matches no known layout (the message lists them and what each looks
        for).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataFormatError(f"dataset root {str(root)!r} is not a directory")
    for lay in LAYOUTS.values():
        if lay.detect(root):
            log.info("%s: detected the %s layout", root, lay.name)
            return lay.name
    if any(root.glob("sub-*")):
        return BIDS
    raise DataFormatError(
        f"{root} holds no sub-* folders (BIDS) and matches no known corpus layout. "
        f"Known layouts (--format NAME) and what each looks for:\n"
        f"{_known()}\nPoint --data at the corpus root (the folder that holds these), or give --format."
    )


def read_corpus(root: str | Path, fmt: str | None = None, subjects: list[str] | None = None,
                tasks: list[str] | None = None) -> list[Recording] | None:
    """The runs of a corpus folder, or None when it is the project's own BIDS layout.

    Parameters
    ----------
    root : str or Path
        Corpus root.
    fmt : str or None
        One of :data:`FORMAT_NAMES`; None: detected (:func:`detect_format`).
    subjects, tasks : list of str or None
        Keep only these (None: all).

    Raises
    ------
    ConfigError
        Unknown ``fmt``.
    DataFormatError
        Unrecognised folder, or a named layout whose files are not there, or no runs.
    """
    root = Path(root)
    if fmt is not None and fmt not in FORMAT_NAMES:
        raise ConfigError(f"unknown dataset format {fmt!r}; known: {', '.join(FORMAT_NAMES)}")
    if fmt is None:
        fmt = detect_format(root)
    if fmt == BIDS:
        return None
    lay = LAYOUTS[fmt]
    if not root.is_dir():
        raise DataFormatError(f"dataset root {str(root)!r} is not a directory")
    if not lay.detect(root):
        raise DataFormatError(
            f"{root} is not a {lay.title} copy: no {lay.looks_for}. Known layouts:\n{_known()}")
    recs = lay.recordings(root, subjects, tasks)
    if not recs:
        raise DataFormatError(
            f"no {lay.name} runs under {root} for subjects={subjects} tasks={tasks}; looked for {lay.looks_for}")
    return sorted(recs, key=lambda r: (r.subject, r.session or "", r.task, r.run or ""))
