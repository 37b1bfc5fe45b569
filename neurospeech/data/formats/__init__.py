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
from .._ids import stable_uniform
from . import _brennan, _broderick, _libribrain, _meg_masc, _mous
from ._base import CorpusRecording, Layout
from ._words import audio_word_candidates

__all__ = ["BIDS", "FORMAT_NAMES", "LAYOUTS", "CorpusRecording", "Layout", "audio_word_candidates", "balanced_split",
           "corpus_split", "detect_format", "read_corpus"]

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


def balanced_split(sounds: list[str], fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
                   salt: str = "neurospeech") -> dict[str, str]:
    """Split a short list of stimuli in exact proportions, in the order of the per-sound hash.

    The sounds are ordered by the number :func:`neurospeech.data.split_of` draws for each (``stable_uniform(salt,
    sound)``); the first ``n_train`` go to train, the next ``n_val`` to validation, the rest to test, with
    ``n_val = max(1, round(f_val * n))`` and ``n_test = max(1, round(f_test * n))`` (0 when the fraction is 0).
    A list of 20 runs at 0.7/0.1/0.2 gives 14/2/4 where the plain hash gave 17/0/3.

    Raises
    ------
    DataFormatError
        Too few sounds to leave one for training.
    """
    order = sorted(set(sounds), key=lambda s: (stable_uniform(salt, s), s))
    n = len(order)
    n_val = max(1, round(fractions[1] * n)) if fractions[1] > 0 else 0
    n_test = max(1, round(fractions[2] * n)) if fractions[2] > 0 else 0
    n_train = n - n_val - n_test
    if n_train < 1:
        raise DataFormatError(f"{n} stimuli cannot be split {fractions} with one left for training; add runs or "
                              "give a --split-file")
    out = {s: "train" for s in order[:n_train]}
    out.update({s: "val" for s in order[n_train:n_train + n_val]})
    out.update({s: "test" for s in order[n_train + n_val:]})
    return out


def corpus_split(root: str | Path, fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
                 salt: str = "neurospeech") -> tuple[str, dict[str, str]] | None:
    """The default split of a corpus whose layout lists its stimuli (:attr:`Layout.stimuli`), or None.

    Returns ``(source, sound -> split)``; ``source`` names the corpus and the rule (recorded in a run's
    metadata). A ``--split-file`` or the dataset's ``splits.json`` take precedence
    (:meth:`neurospeech.data.Splits.for_dataset`).
    """
    root = Path(root)
    if not root.is_dir():
        return None
    for lay in LAYOUTS.values():
        if lay.stimuli is None or not lay.detect(root):
            continue
        sounds = lay.stimuli(root)
        if not sounds:
            return None
        return (f"{lay.name}: its {len(sounds)} stimuli split {list(fractions)} in hash order",
                balanced_split(sounds, fractions, salt))
    return None
