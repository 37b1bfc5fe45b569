"""Shared pytest set-up: the packaged liblsl config (discovery on loopback) before pylsl is imported.

The tests import the *installed* package (editable or from a wheel): the liblsl config comes from
:mod:`neurospeech.resources`, not from the checkout's layout.
"""

from __future__ import annotations

import os

import pytest
from _lazy import resolve_lazy

from neurospeech.resources import ensure_lsl_config

ensure_lsl_config()
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="module", autouse=True)
def _resolve_lazy_imports(request: pytest.FixtureRequest) -> None:
    """A selected test module's lazy imports (tests/_lazy.py) become the real objects before its tests run,
    so constants, ``isinstance`` and dict keys behave as with a plain import."""
    resolve_lazy(request.module)
