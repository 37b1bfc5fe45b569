"""train_sound_fraction: training on a fixed random share of the training sounds (learning curve vs data)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pytest
from _lazy import lazy

from neurospeech.errors import ConfigError

pytestmark = pytest.mark.torch  # models.train imports torch
if TYPE_CHECKING:
    from neurospeech.models._data import SegmentInfo, TensorSet
    from neurospeech.models.train import TrainConfig, keep_train_sounds
else:
    SegmentInfo = lazy("neurospeech.models._data", "SegmentInfo")
    TensorSet = lazy("neurospeech.models._data", "TensorSet")
    TrainConfig = lazy("neurospeech.models.train", "TrainConfig")
    keep_train_sounds = lazy("neurospeech.models.train", "keep_train_sounds")


def _windows(n_sounds: int = 10, per_sound: int = 4) -> tuple[TensorSet, SegmentInfo]:
    n = n_sounds * per_sound
    sound = np.array([f"stimuli/s{i % n_sounds:04d}.wav" for i in range(n)])  # interleaved, as two subjects
    ts = TensorSet(brain=np.arange(n, dtype=np.float32).reshape(n, 1, 1), speech=np.zeros((n, 2, 1), np.float32),
                   subject=np.zeros(n, np.int64), segment_id=sound.copy(), word=sound.copy(),
                   subject_name=np.full(n, "01"))
    info = SegmentInfo(channels=[], sound=sound, sentence=np.char.add(sound, "#0"),
                       sound_time=np.arange(n, dtype=np.float64))
    return ts, info


def test_half_of_the_sounds_keeps_all_their_windows_in_order():
    ts, info = _windows()
    kept, kinfo = keep_train_sounds(ts, info, 0.5, seed=0)
    assert len(set(kinfo.sound.tolist())) == 5
    rows = kept.brain[:, 0, 0].astype(int)
    assert np.all(np.diff(rows) > 0)  # original order
    assert set(rows.tolist()) == set(np.flatnonzero(np.isin(info.sound, kinfo.sound)).tolist())  # every window
    assert len(kept) == 20 and (kept.segment_id == kinfo.sound).all() and (kinfo.sound_time == rows).all()
    again, _ = keep_train_sounds(ts, info, 0.5, seed=0)
    assert (again.brain == kept.brain).all()  # the seed fixes the choice
    choices = {tuple(sorted(set(keep_train_sounds(ts, info, 0.5, seed=s)[1].sound.tolist()))) for s in range(5)}
    assert len(choices) > 1  # ... and another seed draws other sounds
    whole, winfo = keep_train_sounds(ts, info, 1.0)
    assert len(whole) == len(ts) and len(winfo.sound) == len(ts)
    one, oinfo = keep_train_sounds(ts, info, 0.01)
    assert len(set(oinfo.sound.tolist())) == 1 and len(one) == 4  # at least one sound


def test_fraction_is_validated_and_part_of_the_identity():
    with pytest.raises(ConfigError, match="train_sound_fraction"):
        TrainConfig(train_sound_fraction=0)
    with pytest.raises(ConfigError, match="train_sound_fraction"):
        TrainConfig(train_sound_fraction=1.5)
    ts, info = _windows()
    with pytest.raises(ConfigError, match="train_sound_fraction"):
        keep_train_sounds(ts, info, 0.0)
    # the default leaves the identity as before the setting existed (older checkpoints resume); 0.5 changes it
    assert "train_sound_fraction" not in TrainConfig().identity()
    assert TrainConfig(train_sound_fraction=0.5).identity()["train_sound_fraction"] == 0.5
