"""The events table of a run: our BIDS ``_events.tsv`` columns, and MEG-MASC's dict-like ``trial_type``."""

from __future__ import annotations

import ast
import csv
import logging
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..errors import DataFormatError

__all__ = ["EVENT_COLUMNS", "Events", "events_from_rows", "read_events_tsv", "write_events_tsv"]

log = logging.getLogger(__name__)

#: Columns every neurospeech events table has (BIDS adds ``value`` and ``sample``; they are ignored).
EVENT_COLUMNS = ("onset", "duration", "trial_type", "sound", "sound_time", "word", "sentence")

_NA = {"", "n/a", "nan", "none", "NaN", "None"}


@dataclass(frozen=True)
class Events:
    """Events of one run, arrays of equal length sorted by onset.

    Attributes
    ----------
    onset : array of float64, shape (n,)
        Seconds on the raw.times clock (0 = first sample of the raw).
    duration : array of float64, shape (n,)
        Seconds.
    kind : array of str, shape (n,)
        ``'word'`` | ``'sound'`` | others kept as given (e.g. MEG-MASC ``'phoneme'``).
    word : array of str, shape (n,)
        Word text ('' for non-word rows).
    sound : array of str, shape (n,)
        Wav path relative to the dataset root, e.g. ``'stimuli/s0012.wav'``.
    sound_time : array of float64, shape (n,)
        Seconds into that wav where the event starts.
    sentence : array of str, shape (n,)
        Sentence id.
    """

    onset: NDArray[np.float64]
    duration: NDArray[np.float64]
    kind: NDArray[np.str_]
    word: NDArray[np.str_]
    sound: NDArray[np.str_]
    sound_time: NDArray[np.float64]
    sentence: NDArray[np.str_]

    def __post_init__(self) -> None:
        n = len(self.onset)
        for f in fields(self):
            v = getattr(self, f.name)
            if len(v) != n:
                raise DataFormatError(f"events column {f.name!r} has {len(v)} rows, onset has {n}")

    def __len__(self) -> int:
        return len(self.onset)

    def select(self, mask: NDArray[np.bool_] | NDArray[np.int64]) -> Events:
        """Rows selected by a boolean mask or an index array."""
        return Events(**{f.name: getattr(self, f.name)[mask] for f in fields(self)})

    def words(self) -> Events:
        """The ``kind == 'word'`` rows."""
        return self.select(self.kind == "word")

    def sounds(self) -> Events:
        """The ``kind == 'sound'`` rows."""
        return self.select(self.kind == "sound")


def events_from_rows(rows: list[dict[str, Any]]) -> Events:
    """Build :class:`Events` from dicts with keys onset, duration, kind, word, sound, sound_time, sentence."""
    def col(key: str, default: Any) -> list[Any]:
        return [r.get(key, default) for r in rows]

    onset = np.asarray(col("onset", np.nan), dtype=np.float64)
    order = np.argsort(onset, kind="stable")
    ev = Events(
        onset=onset,
        duration=np.asarray(col("duration", 0.0), dtype=np.float64),
        kind=np.asarray([str(v) for v in col("kind", "")], dtype=np.str_),
        word=np.asarray([str(v) for v in col("word", "")], dtype=np.str_),
        sound=np.asarray([str(v) for v in col("sound", "")], dtype=np.str_),
        sound_time=np.asarray(col("sound_time", np.nan), dtype=np.float64),
        sentence=np.asarray([str(v) for v in col("sentence", "")], dtype=np.str_),
    )
    return ev.select(order)


def _float(value: Any, what: str, line: int, path: Path, default: float | None = None) -> float:
    if value is None or (isinstance(value, str) and value.strip() in _NA):
        if default is not None:
            return default
        raise DataFormatError(f"{path}: line {line}: {what} is missing; every event needs a numeric {what}")
    try:
        out = float(value)
    except (TypeError, ValueError) as exc:
        raise DataFormatError(f"{path}: line {line}: {what} {value!r} is not a number") from exc
    if math.isnan(out) and default is not None:
        return default
    return out


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return str(int(value)) if value.is_integer() else str(value)
    s = str(value).strip()
    return "" if s in _NA else s


def _norm_sound(s: str) -> str:
    s = s.replace("\\", "/")
    while s.startswith("./"):
        s = s[2:]
    return s


def _parse_dict(text: str, line: int, path: Path) -> dict[str, Any]:
    try:
        d = ast.literal_eval(text)  # literals only: safe, never eval
    except (ValueError, SyntaxError) as exc:
        raise DataFormatError(
            f"{path}: line {line}: trial_type {text[:80]!r} looks like a MEG-MASC dict but does not parse"
        ) from exc
    if not isinstance(d, dict):
        raise DataFormatError(f"{path}: line {line}: trial_type {text[:80]!r} is not a dict")
    return d


def read_events_tsv(path: str | Path) -> Events:
    """Read a run's ``_events.tsv``: the neurospeech columns, or MEG-MASC's dict-like ``trial_type``.

    Neurospeech format: ``onset, duration, trial_type (sound|word), sound, sound_time, word, sentence``.
    MEG-MASC format: ``trial_type`` holds e.g.
    ``"{'kind': 'word', 'word': 'Tara', 'start': 2.17, 'sound': 'stimuli/audio/lw1_0.wav'}"``;
    ``kind`` gives the kind, ``start`` the time in the wav, ``story``/``sequence_id`` the sentence id.

    Parameters
    ----------
    path : str or Path
        The tsv file.

    Returns
    -------
    Events
        Sorted by onset.

    Raises
    ------
    DataFormatError
        Missing file or columns, unparsable values.
    """
    p = Path(path)
    if not p.is_file():
        raise DataFormatError(f"events file {str(p)!r} does not exist; every run needs a *_events.tsv")
    with open(p, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t")
        header = reader.fieldnames or []
        raw_rows = list(reader)
    for needed in ("onset", "trial_type"):
        if needed not in header:
            raise DataFormatError(
                f"{p}: events table lacks the {needed!r} column (columns: {header}); expected "
                f"{list(EVENT_COLUMNS)} or MEG-MASC's dict-like trial_type"
            )
    rows = []
    for i, r in enumerate(raw_rows, start=2):
        tt = (r.get("trial_type") or "").strip()
        onset = _float(r.get("onset"), "onset", i, p)
        duration = _float(r.get("duration"), "duration", i, p, default=0.0)
        if tt.startswith("{"):
            d = _parse_dict(tt, i, p)
            kind = _text(d.get("kind", ""))
            sound = _norm_sound(_text(d.get("sound", "")))
            st = d.get("start", d.get("sound_time"))
            sound_time = _float(st, "start", i, p, default=float("nan"))
            word = _text(d.get("word", "")) if kind == "word" else ""
            seq = _text(d.get("sequence_id", d.get("sentence", "")))
            story = _text(d.get("story", ""))
            sentence = f"{story}:{seq}" if story and seq else (seq or story)
        else:
            kind = tt
            sound = _norm_sound(_text(r.get("sound", "")))
            sound_time = _float(r.get("sound_time"), "sound_time", i, p, default=float("nan"))
            word = _text(r.get("word", ""))
            sentence = _text(r.get("sentence", ""))
        if kind in ("word", "sound") and not sound:
            raise DataFormatError(
                f"{p}: line {i}: a {kind!r} event has no sound (wav path); add the 'sound' column"
            )
        if kind in ("word", "sound") and math.isnan(sound_time):
            if kind == "sound":
                sound_time = 0.0
            else:
                raise DataFormatError(f"{p}: line {i}: word event has no sound_time (time in its wav)")
        rows.append(dict(onset=onset, duration=duration, kind=kind, word=word, sound=sound,
                         sound_time=sound_time, sentence=sentence))
    return events_from_rows(rows)


def write_events_tsv(path: str | Path, events: Events, extra: dict[str, Any] | None = None) -> None:
    """Write :class:`Events` in the neurospeech format (``n/a`` for missing values)."""
    p = Path(path)
    with open(p, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(EVENT_COLUMNS)
        for k in range(len(events)):
            st = events.sound_time[k]
            w.writerow([
                f"{events.onset[k]:.6f}", f"{events.duration[k]:.6f}", events.kind[k] or "n/a",
                events.sound[k] or "n/a", "n/a" if math.isnan(st) else f"{st:.6f}",
                events.word[k] or "n/a", events.sentence[k] or "n/a",
            ])
