"""Shared pytest set-up: the project's liblsl config (discovery on loopback) before pylsl is imported."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("LSLAPICFG", str(ROOT / "deploy" / "lsl_api.cfg"))
os.environ.setdefault("MPLBACKEND", "Agg")
