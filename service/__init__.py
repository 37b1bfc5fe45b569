"""neurospeech.service: the live runtime. It must never import torch (a test checks this).

Public API (imported lazily, so ``import neurospeech.service`` stays cheap)::

    from neurospeech.service import Server, ServeSettings, load_settings, decode_file

- :class:`~neurospeech.service.server.Server` -- ``Server(settings).run()`` or ``.start()`` / ``.stats()`` /
  ``.stop()`` / ``.join()``: LSL in, ZeroMQ out (``neurospeech serve``).
- :class:`~neurospeech.service.config.ServeSettings`, :func:`~neurospeech.service.config.load_settings`.
- :func:`~neurospeech.service.filesource.decode_file` -- the same pipeline over a file (``decode-file``).
- Transport (publisher, messages, client) is documented in :mod:`neurospeech.service.messages`.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["ServeSettings", "Server", "decode_file", "load_settings"]

_LAZY = {
    "Server": "neurospeech.service.server",
    "ServeSettings": "neurospeech.service.config",
    "load_settings": "neurospeech.service.config",
    "decode_file": "neurospeech.service.filesource",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'neurospeech.service' has no attribute {name!r}")
