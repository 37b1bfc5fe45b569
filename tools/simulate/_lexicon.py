"""Phones with articulatory features, a pseudo-word lexicon with Zipf frequencies, and unique sentences."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["ARTICULATORY", "PHONES", "Lexicon", "Phone", "make_lexicon", "make_sentences", "seeded_rng"]

#: Articulatory feature names (one binary vector per phone).
ARTICULATORY = ("syllabic", "consonantal", "voiced", "stop", "fricative", "nasal", "approximant",
                "labial", "coronal", "dorsal", "high", "low", "front", "back", "round")


@dataclass(frozen=True)
class Phone:
    """One phone: symbol, spelling, articulatory features and synthesis parameters."""

    symbol: str
    spelling: str
    features: tuple[str, ...]
    formants: tuple[float, float, float] = (500.0, 1500.0, 2500.0)
    noise_band: tuple[float, float] | None = None  # frication / burst band in Hz

    @property
    def is_vowel(self) -> bool:
        return "syllabic" in self.features

    def vector(self) -> NDArray[np.float64]:
        return np.array([1.0 if f in self.features else 0.0 for f in ARTICULATORY])


def _p(sym: str, spell: str, feats: str, formants: tuple[float, float, float] = (500, 1500, 2500),
       band: tuple[float, float] | None = None) -> Phone:
    return Phone(sym, spell, tuple(feats.split()), (float(formants[0]), float(formants[1]), float(formants[2])), band)


PHONES: dict[str, Phone] = {p.symbol: p for p in [
    _p("a", "a", "syllabic voiced low back", (730, 1090, 2440)),
    _p("e", "e", "syllabic voiced front", (530, 1840, 2480)),
    _p("i", "i", "syllabic voiced high front", (270, 2290, 3010)),
    _p("o", "o", "syllabic voiced back round", (570, 840, 2410)),
    _p("u", "u", "syllabic voiced high back round", (300, 870, 2240)),
    _p("p", "p", "consonantal stop labial", band=(300, 1500)),
    _p("t", "t", "consonantal stop coronal", band=(2500, 6000)),
    _p("k", "k", "consonantal stop dorsal", band=(1200, 3000)),
    _p("b", "b", "consonantal voiced stop labial", band=(300, 1500)),
    _p("d", "d", "consonantal voiced stop coronal", band=(2500, 6000)),
    _p("g", "g", "consonantal voiced stop dorsal", band=(1200, 3000)),
    _p("f", "f", "consonantal fricative labial", band=(1500, 7000)),
    _p("s", "s", "consonantal fricative coronal", band=(4000, 7500)),
    _p("S", "sh", "consonantal fricative coronal high", band=(2000, 5000)),
    _p("v", "v", "consonantal voiced fricative labial", band=(1500, 7000)),
    _p("z", "z", "consonantal voiced fricative coronal", band=(4000, 7500)),
    _p("m", "m", "consonantal voiced nasal labial", (250, 1200, 2200)),
    _p("n", "n", "consonantal voiced nasal coronal", (250, 1600, 2600)),
    _p("l", "l", "consonantal voiced approximant coronal", (360, 1300, 2700)),
    _p("r", "r", "consonantal voiced approximant coronal round", (420, 1300, 1600)),
]}

_VOWELS = [s for s, p in PHONES.items() if p.is_vowel]
_CONS = [s for s, p in PHONES.items() if not p.is_vowel]
_CODA = ["n", "m", "s", "l", "r", "t", "k"]


def seeded_rng(*parts: object) -> np.random.Generator:
    """A numpy generator seeded by sha256 of ``parts`` (stable across machines and runs)."""
    h = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return np.random.default_rng(int.from_bytes(h[:16], "big"))


@dataclass(frozen=True)
class Lexicon:
    """Word types with phone strings and Zipf frequencies.

    Attributes
    ----------
    words : list of str
        Spellings, most frequent first.
    phones : list of tuple of str
        Phone symbols of each word.
    freq : array, shape (n_words,)
        Relative frequency (sums to 1).
    """

    words: list[str]
    phones: list[tuple[str, ...]]
    freq: NDArray[np.float64]

    def index(self, word: str) -> int:
        return self.words.index(word)


def make_lexicon(n_words: int, seed: int = 0) -> Lexicon:
    """``n_words`` distinct pseudo-words of 1-3 CV(C) syllables with Zipf(1) frequencies."""
    rng = seeded_rng("lexicon", seed)
    words: list[str] = []
    phones: list[tuple[str, ...]] = []
    seen: set[str] = set()
    while len(words) < n_words:
        rank = len(words)
        n_syl = 1 if rank < n_words * 0.15 else int(rng.choice([1, 2, 2, 3, 3]))
        ph: list[str] = []
        for _ in range(n_syl):
            if rng.random() < 0.85:
                ph.append(str(rng.choice(_CONS)))
            ph.append(str(rng.choice(_VOWELS)))
            if rng.random() < 0.25:
                ph.append(str(rng.choice(_CODA)))
        spelling = "".join(PHONES[p].spelling for p in ph)
        if spelling in seen or len(spelling) < 2:
            continue
        seen.add(spelling)
        words.append(spelling)
        phones.append(tuple(ph))
    freq = 1.0 / (np.arange(n_words) + 2.7)
    return Lexicon(words=words, phones=phones, freq=freq / freq.sum())


def make_sentences(lexicon: Lexicon, n_sentences: int, seed: int = 0,
                   min_words: int = 4, max_words: int = 10) -> list[list[str]]:
    """``n_sentences`` distinct word sequences drawn from the lexicon's frequencies."""
    rng = seeded_rng("sentences", seed)
    out: list[list[str]] = []
    seen: set[str] = set()
    while len(out) < n_sentences:
        n = int(rng.integers(min_words, max_words + 1))
        idx = rng.choice(len(lexicon.words), size=n, p=lexicon.freq)
        words = [lexicon.words[i] for i in idx]
        key = " ".join(words)
        if key in seen:
            continue
        seen.add(key)
        out.append(words)
    return out
