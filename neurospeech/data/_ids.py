"""Stable identifiers and the sound-level data split (sha256, never Python's salted ``hash()``)."""

from __future__ import annotations

import hashlib

from ..errors import ConfigError

__all__ = ["segment_id", "split_of", "stable_uniform"]


def segment_id(sound: str, sound_time: float) -> str:
    """Stable id of a speech segment: its wav path and anchor time in that wav (ms resolution).

    Parameters
    ----------
    sound : str
        Wav path relative to the dataset root, e.g. ``'stimuli/s0012.wav'``.
    sound_time : float
        Seconds into that wav where the segment's anchor lies.

    Returns
    -------
    str
        16 hex characters: ``sha256(f"{sound}@{round(sound_time * 1000)}")[:16]``.
    """
    key = f"{sound}@{round(float(sound_time) * 1000)}"
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


def stable_uniform(*parts: object) -> float:
    """A number in [0, 1) derived from ``parts`` with sha256 (same on every machine and run)."""
    key = "\x1f".join(str(p) for p in parts)
    h = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(h[:8], "big") / 2.0**64


def split_of(
    sound: str, fractions: tuple[float, float, float] = (0.7, 0.1, 0.2), salt: str = "neurospeech"
) -> str:
    """Assign a sound (wav path) to ``'train'``, ``'val'`` or ``'test'`` by a sha256 hash.

    Every window cut from one sound lands in the same split, so held-out sentences are never seen in
    training.

    Parameters
    ----------
    sound : str
        Wav path relative to the dataset root.
    fractions : tuple of 3 floats
        Train, validation and test fractions (must be >= 0 and sum to 1).
    salt : str
        Changes the assignment as a whole.
    """
    fr = tuple(float(f) for f in fractions)
    if len(fr) != 3 or any(f < 0 for f in fr) or abs(sum(fr) - 1.0) > 1e-6:
        raise ConfigError(
            f"split fractions must be three non-negative numbers summing to 1, got {fractions!r}"
        )
    u = stable_uniform(salt, sound)
    if u < fr[0]:
        return "train"
    if u < fr[0] + fr[1]:
        return "val"
    return "test"
