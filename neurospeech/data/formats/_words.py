"""Word timings for stimulus audio outside a dataset: a TSV (wav, onset, word) or Praat TextGrids.

Used by ``neurospeech bank --audio DIR --words FILE`` to build candidates for a new story without making a
BIDS dataset: every word onset in every wav becomes a candidate segment, identified like dataset candidates
by :func:`neurospeech.data.segment_id` of its wav path (relative to ``DIR``) and its time in the wav.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np

from ...errors import DataFormatError
from .._ids import segment_id
from ._base import wav_duration
from ._textgrid import word_intervals

__all__ = ["audio_word_candidates"]

log = logging.getLogger(__name__)

_WAV_COLS = ("wav", "sound", "file", "audio")
_ONSET_COLS = ("onset", "start", "time", "sound_time")


def _col(header: list[str], names: tuple[str, ...]) -> str | None:
    low = {h.strip().lower(): h for h in header}
    return next((low[n] for n in names if n in low), None)


def _from_table(audio_dir: Path, path: Path) -> list[tuple[str, float, str, str]]:
    delim = "," if path.suffix.lower() == ".csv" else "\t"
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f, delimiter=delim)
        rows = list(reader)
        header = list(reader.fieldnames or [])
    wav_c, on_c, word_c = _col(header, _WAV_COLS), _col(header, _ONSET_COLS), _col(header, ("word", "text"))
    if wav_c is None or on_c is None or word_c is None:
        raise DataFormatError(f"{path}: a word table needs the columns wav, onset, word (tab-separated; onset in "
                              f"seconds into the wav); got {header}")
    sent_c = _col(header, ("sentence",))
    out = []
    for i, r in enumerate(rows, start=2):
        wav = (r.get(wav_c) or "").strip().replace("\\", "/")
        word = (r.get(word_c) or "").strip()
        try:
            onset = float(r.get(on_c) or "")
        except ValueError as exc:
            raise DataFormatError(f"{path}: line {i}: onset {r.get(on_c)!r} is not a number (seconds)") from exc
        if not wav or not word:
            raise DataFormatError(f"{path}: line {i}: empty wav or word")
        sentence = (r.get(sent_c) or "").strip() if sent_c else ""
        out.append((wav, onset, word, sentence or Path(wav).stem))
    return out


def _from_textgrids(audio_dir: Path, grids: list[Path]) -> list[tuple[str, float, str, str]]:
    wavs = {p.stem: p for p in sorted(audio_dir.rglob("*.wav"))} | {p.stem: p for p in audio_dir.rglob("*.WAV")}
    out = []
    for tg in grids:
        wav = wavs.get(tg.stem)
        if wav is None:
            raise DataFormatError(f"{tg} names no wav: expected {tg.stem}.wav under {audio_dir} (a TextGrid goes "
                                  "with the wav of the same name)")
        rel = wav.relative_to(audio_dir).as_posix()
        out += [(rel, iv.xmin, iv.text.strip(), tg.stem) for iv in word_intervals(tg)]
    return out


def audio_word_candidates(audio_dir: str | Path, words: str | Path) -> dict[str, np.ndarray]:
    """Candidate segments (one per word onset) of the wavs under ``audio_dir``.

    Parameters
    ----------
    audio_dir : path
        Folder of the stimulus wavs (sound paths are relative to it).
    words : path
        A TSV (``.tsv``/``.txt``, tab-separated; ``.csv`` comma-separated) with columns ``wav`` (path relative
        to ``audio_dir``), ``onset`` (s into the wav), ``word`` and optionally ``sentence``; or one Praat
        ``.TextGrid`` (for the wav of the same name); or a folder of TextGrids.

    Returns
    -------
    dict of arrays, shape (n,)
        ``ids``, ``words``, ``sounds``, ``sentences``, ``sound_times`` sorted by sound then time (the form of
        :func:`neurospeech.models.bank.word_candidates`).

    Raises
    ------
    DataFormatError
        Missing folder/file, missing columns, a wav that does not exist, an onset outside its wav.
    """
    audio_dir, words = Path(audio_dir), Path(words)
    if not audio_dir.is_dir():
        raise DataFormatError(f"--audio {str(audio_dir)!r} is not a folder of wavs")
    if words.is_dir():
        grids = sorted(words.rglob("*.TextGrid"))
        if not grids:
            raise DataFormatError(f"--words {words} is a folder without *.TextGrid files")
        rows = _from_textgrids(audio_dir, grids)
    elif not words.is_file():
        raise DataFormatError(f"--words {str(words)!r} does not exist; give a TSV (wav, onset, word) or TextGrids")
    elif words.suffix.lower() == ".textgrid":
        rows = _from_textgrids(audio_dir, [words])
    else:
        rows = _from_table(audio_dir, words)
    if not rows:
        raise DataFormatError(f"{words} holds no words")
    lengths: dict[str, float | None] = {}
    for wav, onset, _, _ in rows:
        if wav not in lengths:
            lengths[wav] = wav_duration(audio_dir / wav)
            if lengths[wav] is None:
                raise DataFormatError(f"{words}: wav {wav!r} is not a readable wav under {audio_dir}")
        length = lengths[wav] or 0.0
        if not 0.0 <= onset < length:
            raise DataFormatError(f"{words}: onset {onset} s of {wav!r} is outside the wav (0 to {length:.3f} s)")
    seen: dict[str, tuple[str, str, str, float]] = {}
    for wav, onset, word, sentence in rows:
        seen.setdefault(segment_id(wav, onset), (word, wav, sentence, onset))
    ordered = sorted(seen.items(), key=lambda kv: (kv[1][1], kv[1][3]))
    log.info("%d word candidates from %d wavs (%s)", len(ordered), len(lengths), words)
    return {
        "ids": np.array([k for k, _ in ordered], dtype=np.str_),
        "words": np.array([v[0] for _, v in ordered], dtype=np.str_),
        "sounds": np.array([v[1] for _, v in ordered], dtype=np.str_),
        "sentences": np.array([v[2] for _, v in ordered], dtype=np.str_),
        "sound_times": np.array([v[3] for _, v in ordered], dtype=np.float64),
    }
