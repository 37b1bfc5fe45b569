"""Files that ship inside the package: the liblsl configuration and the example configs.

They are read with :mod:`importlib.resources`, so an installed wheel finds them wherever it lies (the checkout's
``deploy/lsl_api.cfg`` and ``deploy/configs/`` are links to these files, kept for the docs: one copy only).

=============================  ====================================================================
``lsl_api.cfg``                discovery restricted to this machine (``KnownPeers = {127.0.0.1}``)
``configs/serve.example.toml`` ``neurospeech serve --config``
``configs/train.example.toml`` ``neurospeech train CONFIG``
``configs/noise-limits...``    ``neurospeech analyze noise-limits --config``
``configs/wm-rnn...``          ``neurospeech wm-rnn train --config``
=============================  ====================================================================
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
from collections.abc import MutableMapping
from importlib import resources
from pathlib import Path

__all__ = ["EXAMPLE_CONFIGS", "ensure_lsl_config", "example_config", "lsl_config"]

log = logging.getLogger(__name__)

EXAMPLE_CONFIGS = ("serve", "train", "noise-limits", "wm-rnn")

_files = contextlib.ExitStack()
atexit.register(_files.close)


def _path(*parts: str) -> Path:
    """A real filesystem path of a packaged file (extracted for the process's lifetime from a zip import)."""
    node = resources.files(__name__).joinpath(*parts)
    if not node.is_file():
        raise FileNotFoundError(f"packaged resource {'/'.join(parts)!r} is missing: reinstall neurospeech")
    if isinstance(node, Path):
        return node
    return _files.enter_context(resources.as_file(node))


def lsl_config() -> Path:
    """Path of the packaged ``lsl_api.cfg`` (liblsl discovery on this machine, loopback as a known peer)."""
    return _path("lsl_api.cfg")


def example_config(name: str) -> Path:
    """Path of the example config ``name`` (one of :data:`EXAMPLE_CONFIGS`)."""
    if name not in EXAMPLE_CONFIGS:
        raise ValueError(f"no example config {name!r}; choose one of {', '.join(EXAMPLE_CONFIGS)}")
    return _path("configs", f"{name}.example.toml")


def ensure_lsl_config(env: MutableMapping[str, str] | None = None) -> str:
    """Set ``LSLAPICFG`` to the packaged ``lsl_api.cfg`` in ``env`` (default ``os.environ``) when it is unset.

    Returns the value ``LSLAPICFG`` has afterwards. A value set by the user (a lab's own copy) is kept.
    """
    target = os.environ if env is None else env
    if "LSLAPICFG" not in target:
        target["LSLAPICFG"] = str(lsl_config())
        log.debug("LSLAPICFG=%s (packaged default)", target["LSLAPICFG"])
    return target["LSLAPICFG"]
