"""Small simulated datasets for the data/simulator tests (real files written with mne-bids)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from neurospeech.tools.simulate._build import SimSettings, simulate_dataset


def tiny_settings(**kw) -> SimSettings:
    base: dict[str, Any] = dict(preset="test", sensors="ctf151", sfreq=150.0, n_subjects=1, minutes=0.4,
                                run_minutes=3.0, snr_db=0.0, vocabulary=40, n_noise_dipoles=40, seed=7)
    base.update(kw)
    return SimSettings(**base)


def make_tiny(root: Path, **kw) -> dict:
    return simulate_dataset(root, tiny_settings(**kw))
