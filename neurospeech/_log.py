"""Logging set-up shared by the CLI entry points (library modules only call ``logging.getLogger``)."""

from __future__ import annotations

import logging
import sys

_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def setup_logging(verbosity: int = 0, quiet: bool = False) -> None:
    """Configure the root logger to write to stderr.

    Parameters
    ----------
    verbosity : int
        0 -> INFO, 1 or more -> DEBUG.
    quiet : bool
        Only warnings and errors.
    """
    level = logging.WARNING if quiet else (logging.DEBUG if verbosity > 0 else logging.INFO)
    root = logging.getLogger()
    root.setLevel(level)
    if not any(getattr(h, "_neurospeech", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_FORMAT))
        handler._neurospeech = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    for noisy in ("matplotlib", "numba", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
