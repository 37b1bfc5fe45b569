"""Stable identifiers and the sound-level data split (sha256, never Python's salted ``hash()``)."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataFormatError

__all__ = ["SPLITS_FILE", "Splits", "segment_id", "split_of", "stable_uniform"]

log = logging.getLogger(__name__)

#: A dataset's own split, honoured when present at its root: ``{"train": [wav, ...], "val": [...], "test": [...]}``
#: (wav paths relative to the root, as in the events tables).
SPLITS_FILE = "splits.json"


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


@dataclass(frozen=True)
class Splits:
    """Sound -> split: an explicit assignment (a dataset's ``splits.json`` or a ``--split-file``) and, for
    sounds it does not list, the sha256 hash of :func:`split_of` with settable fractions.

    Attributes
    ----------
    fractions : tuple of 3 floats
        Train, validation and test fractions of the hash split.
    salt : str
        Salt of the hash split.
    assigned : mapping of str -> str
        Explicit split of listed sounds.
    source : str
        Where the assignment came from (a file path, or ``"hash"``).
    """

    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)
    salt: str = "neurospeech"
    assigned: Mapping[str, str] = field(default_factory=dict)
    source: str = "hash"

    def __post_init__(self) -> None:
        split_of("x", self.fractions, self.salt)  # validates the fractions
        bad = sorted({v for v in self.assigned.values()} - {"train", "val", "test"})
        if bad:
            raise ConfigError(f"split assignment uses unknown splits {bad}; use train, val and test")

    def __call__(self, sound: str) -> str:
        """The split of ``sound`` (wav path relative to the dataset root)."""
        got = self.assigned.get(str(sound))
        return got if got is not None else split_of(str(sound), self.fractions, self.salt)

    def to_dict(self) -> dict[str, Any]:
        return {"by": "sound", "fractions": list(self.fractions), "salt": self.salt, "source": self.source,
                "assigned": dict(sorted(self.assigned.items())), "function": "neurospeech.data.Splits"}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> Splits:
        """Rebuild from :meth:`to_dict` (None or an older run's record without assignment: the default)."""
        if not d:
            return cls()
        fr = tuple(float(f) for f in d.get("fractions", (0.7, 0.1, 0.2)))
        if len(fr) != 3:
            raise ConfigError(f"split fractions must be three numbers, got {fr!r}")
        return cls(fractions=(fr[0], fr[1], fr[2]), salt=str(d.get("salt", "neurospeech")),
                   assigned=dict(d.get("assigned") or {}), source=str(d.get("source", "hash")))

    @classmethod
    def read(cls, path: str | Path, fractions: Sequence[float] | None = None, salt: str = "neurospeech") -> Splits:
        """Read a split file ``{"train": [...], "val": [...], "test": [...]}`` (sounds missing from it: hash)."""
        p = Path(path)
        try:
            d = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DataFormatError(f"cannot read split file {str(p)!r}: {exc}") from exc
        if not isinstance(d, dict) or not set(d) <= {"train", "val", "test"} or not all(
                isinstance(v, list) for v in d.values()):
            raise DataFormatError(
                f"split file {str(p)!r} must be a JSON object with lists of wav paths under 'train', 'val' and "
                f"'test', got keys {sorted(d) if isinstance(d, dict) else type(d).__name__}")
        assigned: dict[str, str] = {}
        for split, sounds in d.items():
            for snd in sounds:
                if assigned.setdefault(str(snd), split) != split:
                    raise DataFormatError(f"split file {str(p)!r} puts {snd!r} in two splits")
        fr = tuple(float(f) for f in (fractions or (0.7, 0.1, 0.2)))
        return cls(fractions=(fr[0], fr[1], fr[2]), salt=salt, assigned=assigned, source=str(p))

    @classmethod
    def for_dataset(cls, root: str | Path | None, split_file: str | Path | None = None,
                    fractions: Sequence[float] | None = None, salt: str = "neurospeech") -> Splits:
        """The split of a dataset: ``split_file`` if given, else ``<root>/splits.json`` if present, else, for a
        corpus with a short fixed list of stimuli (Broderick's 20 runs), that list split by the same hash in
        exact proportions (:func:`neurospeech.data.formats.corpus_split`), else the hash with ``fractions``
        (default 0.7/0.1/0.2)."""
        if split_file is not None:
            return cls.read(split_file, fractions, salt)
        if root is not None and (Path(root) / SPLITS_FILE).is_file():
            log.info("using the dataset's own split %s", Path(root) / SPLITS_FILE)
            return cls.read(Path(root) / SPLITS_FILE, fractions, salt)
        fr = tuple(float(f) for f in (fractions or (0.7, 0.1, 0.2)))
        if len(fr) != 3:
            raise ConfigError(f"split fractions must be three numbers (train, val, test), got {fractions!r}")
        if root is not None:
            from .formats import corpus_split

            got = corpus_split(Path(root), (fr[0], fr[1], fr[2]), salt)
            if got is not None:
                return cls(fractions=(fr[0], fr[1], fr[2]), salt=salt, assigned=got[1], source=got[0])
        return cls(fractions=(fr[0], fr[1], fr[2]), salt=salt)
