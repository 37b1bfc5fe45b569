"""BIDS M/EEG speech-listening datasets: discovery, events, audio, splits and model-ready segments.

Layout (like MEG-MASC): ``sub-XX/[ses-YY/]meg/..._task-T_run-R_meg.fif`` (EEG: BrainVision), sidecars,
stimulus audio under ``stimuli/`` and a ``_events.tsv`` per run with ``onset, duration, trial_type
(sound|word), sound, sound_time, word, sentence``.
"""

from ._audio import read_wav, write_wav
from ._dataset import Recording, load_dataset, write_run
from ._events import EVENT_COLUMNS, Events, events_from_rows, read_events_tsv, write_events_tsv
from ._ids import SPLITS_FILE, Splits, segment_id, split_of, stable_uniform

__all__ = [
    "EVENT_COLUMNS",
    "SPLITS_FILE",
    "Events",
    "Recording",
    "Splits",
    "events_from_rows",
    "load_dataset",
    "read_events_tsv",
    "read_wav",
    "segment_id",
    "split_of",
    "stable_uniform",
    "write_events_tsv",
    "write_run",
    "write_wav",
]
