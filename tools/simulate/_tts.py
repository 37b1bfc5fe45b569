"""Optional text-to-speech with Debian's ``festival``: exact word and phone times from its Word and Segment
relations. The numpy synthesiser (:mod:`._speech`) is the default and what CI uses; festival is used only
when asked for (``--speech festival`` or ``auto``) and installed (``apt-get install festival``)."""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
from pathlib import Path

from neurospeech.data import read_wav

from ._speech import Utterance

__all__ = ["FESTIVAL_TO_PHONE", "festival_available", "festival_batch"]

log = logging.getLogger(__name__)

#: festival (radio/CMU) phone -> nearest phone of the simulator's inventory (articulatory features)
FESTIVAL_TO_PHONE = {
    "aa": "a", "ae": "a", "ah": "a", "ax": "a", "aw": "a", "ay": "a", "ao": "o", "ow": "o", "oy": "o",
    "eh": "e", "ey": "e", "ih": "i", "iy": "i", "y": "i", "uh": "u", "uw": "u", "w": "u",
    "er": "r", "axr": "r", "r": "r", "l": "l", "m": "m", "n": "n", "ng": "n",
    "p": "p", "t": "t", "k": "k", "b": "b", "d": "d", "g": "g", "ch": "S", "jh": "S", "sh": "S", "zh": "z",
    "s": "s", "z": "z", "f": "f", "v": "v", "th": "f", "dh": "v", "hh": "f",
}


def festival_available() -> bool:
    """True when the ``festival`` binary is on the PATH."""
    return shutil.which("festival") is not None


def festival_batch(sentences: list[list[str]], timeout: float = 600.0) -> list[Utterance | None]:
    """Synthesise sentences in one festival process.

    Returns
    -------
    list of Utterance or None
        One per sentence; None where festival failed or its words do not match the input words (the caller
        falls back to the numpy synthesiser for those).
    """
    exe = shutil.which("festival")
    if exe is None:
        return [None] * len(sentences)
    with tempfile.TemporaryDirectory(prefix="ns-festival-") as tmp:
        tdir = Path(tmp)
        lines = []
        for i, words in enumerate(sentences):
            text = " ".join(words).replace('"', "")
            wav_file = tdir / f"{i}.wav"
            lines.append(
                f'(set! u (Utterance Text "{text}"))(utt.synth u)(utt.save.wave u "{wav_file}" \'riff)'
                f'(mapcar (lambda (w) (format t "W\\t{i}\\t%s\\t%f\\t%f\\n" (item.name w) '
                f'(item.feat w "word_start") (item.feat w "word_end"))) (utt.relation.items u \'Word))'
                f'(mapcar (lambda (s) (format t "S\\t{i}\\t%s\\t%f\\t%f\\n" (item.name s) '
                f'(item.feat s "segment_start") (item.feat s "segment_end"))) '
                f"(utt.relation.items u 'Segment))"
            )
        script = tdir / "batch.scm"
        script.write_text("\n".join(lines) + "\n")
        try:
            proc = subprocess.run([exe, "--batch", str(script)], capture_output=True, text=True,
                                  timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("festival failed (%s); using the numpy synthesiser", exc)
            return [None] * len(sentences)
        words_out: dict[int, list[tuple[str, float, float]]] = {}
        phones_out: dict[int, list[tuple[str, float, float]]] = {}
        for line in proc.stdout.splitlines():
            parts = line.split("\t")
            if len(parts) != 5 or parts[0] not in ("W", "S"):
                continue
            i, name, t0, t1 = int(parts[1]), parts[2], float(parts[3]), float(parts[4])
            if parts[0] == "W":
                words_out.setdefault(i, []).append((name, t0, t1))
            elif name in FESTIVAL_TO_PHONE:
                phones_out.setdefault(i, []).append((FESTIVAL_TO_PHONE[name], t0, t1))
        out: list[Utterance | None] = []
        for i, words in enumerate(sentences):
            got = words_out.get(i, [])
            wav_path = tdir / f"{i}.wav"
            if [w for w, _, _ in got] != [w.lower() for w in words] or not wav_path.is_file():
                out.append(None)
                continue
            wav, sr = read_wav(wav_path)
            peak = float(abs(wav).max()) or 1.0
            out.append(Utterance(wav=(wav / peak * 0.7).astype("float32"), sr=sr,
                                 words=[(w, t0, t1) for w, (_, t0, t1) in zip(words, got, strict=True)],
                                 phones=phones_out.get(i, [])))
        return out
