"""A small reader of Praat TextGrid files (long and short text formats, UTF-8 or UTF-16), e.g. forced aligner output."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ...errors import DataFormatError

__all__ = ["Interval", "Tier", "read_textgrid", "word_intervals"]

# quoted string (Praat doubles a quote inside a string), a number, or a flag; item/interval indices are
# removed before tokenising
_TOKEN = re.compile(r'"((?:[^"]|"")*)"|([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)|<(exists|absent)>')
_INDEX = re.compile(r"\[\s*\d+\s*\]")
_SILENCE = {"", "sil", "sp", "spn", "<sil>", "<p:>", "#", "{sl}", "pau", "<unk>"}
_WORD_TIERS = ("words", "word", "ort", "orthography", "transcription")


@dataclass(frozen=True)
class Interval:
    """``text`` between ``xmin`` and ``xmax`` seconds (a point tier has ``xmin == xmax``)."""

    xmin: float
    xmax: float
    text: str


@dataclass(frozen=True)
class Tier:
    """One tier: its name, class (``IntervalTier`` | ``TextTier``) and intervals in file order."""

    name: str
    kind: str
    intervals: tuple[Interval, ...]


def _decode(raw: bytes) -> str:
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16")
    if raw.startswith(b"\xef\xbb\xbf"):
        return raw[3:].decode("utf-8")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def read_textgrid(path: str | Path) -> list[Tier]:
    """Tiers of a Praat TextGrid (text format, long or short).

    Raises
    ------
    DataFormatError
        Missing file, not a TextGrid, or truncated.
    """
    p = Path(path)
    try:
        text = _decode(p.read_bytes())
    except OSError as exc:
        raise DataFormatError(f"cannot read TextGrid {p}: {exc}") from exc
    toks: list[str | float] = []
    for m in _TOKEN.finditer(_INDEX.sub(" ", text)):
        if m.group(1) is not None:
            toks.append(m.group(1).replace('""', '"'))
        elif m.group(2) is not None:
            toks.append(float(m.group(2)))
        else:
            toks.append("<" + m.group(3) + ">")
    if len(toks) < 2 or toks[0] != "ooTextFile" or toks[1] != "TextGrid":
        raise DataFormatError(f"{p} is not a Praat TextGrid in text format (no 'File type = \"ooTextFile\"' "
                              "and 'Object class = \"TextGrid\"' header); save it from Praat as a text file")
    pos = 2

    def take(kind: type) -> str | float:
        nonlocal pos
        if pos >= len(toks):
            raise DataFormatError(f"{p} ends early (token {pos}); the TextGrid is truncated")
        v = toks[pos]
        pos += 1
        if kind is float and not isinstance(v, float):
            raise DataFormatError(f"{p}: expected a number at token {pos}, got {v!r}")
        if kind is str and not isinstance(v, str):
            raise DataFormatError(f"{p}: expected a string at token {pos}, got {v!r}")
        return v

    take(float)
    take(float)
    if pos < len(toks) and toks[pos] in ("<exists>", "<absent>"):
        if take(str) == "<absent>":
            return []
    n_tiers = int(take(float))
    tiers = []
    for _ in range(n_tiers):
        kind = str(take(str))
        name = str(take(str))
        take(float)
        take(float)
        n = int(take(float))
        items = []
        for _ in range(n):
            if kind == "IntervalTier":
                a, b, t = float(take(float)), float(take(float)), str(take(str))
            else:
                a = float(take(float))
                b, t = a, str(take(str))
            items.append(Interval(a, b, t))
        tiers.append(Tier(name=name, kind=kind, intervals=tuple(items)))
    return tiers


def word_intervals(path: str | Path, tier: str | None = None) -> list[Interval]:
    """Non-silent intervals of the word tier of a TextGrid.

    Parameters
    ----------
    path : path
        The TextGrid.
    tier : str or None
        Tier name; None: the first interval tier named like words (``words``, ``word``, ``ORT`` ...),
        else the first interval tier.

    Raises
    ------
    DataFormatError
        No such tier, or no interval tier at all.
    """
    tiers = [t for t in read_textgrid(path) if t.kind == "IntervalTier"]
    if not tiers:
        raise DataFormatError(f"{path} has no interval tier; a word alignment needs one")
    if tier is not None:
        match = [t for t in tiers if t.name == tier]
        if not match:
            raise DataFormatError(f"{path} has no tier {tier!r} (tiers: {[t.name for t in tiers]})")
        chosen = match[0]
    else:
        named = [t for t in tiers if t.name.strip().lower() in _WORD_TIERS]
        chosen = named[0] if named else tiers[0]
    return [iv for iv in chosen.intervals if iv.text.strip().lower() not in _SILENCE]
