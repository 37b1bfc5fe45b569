"""Reading and writing stimulus audio (wav)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from scipy.io import wavfile

from ..errors import DataFormatError

__all__ = ["read_wav", "write_wav"]


def read_wav(path: str | Path) -> tuple[NDArray[np.float32], int]:
    """Read a wav file as mono float32 in [-1, 1].

    Parameters
    ----------
    path : str or Path
        The wav file.

    Returns
    -------
    wav : array, shape (n_samples,), float32
        Mono signal (channels averaged).
    sr : int
        Sampling rate in Hz.
    """
    p = Path(path)
    if not p.is_file():
        raise DataFormatError(f"wav file {str(p)!r} does not exist; check the 'sound' column of the events")
    try:
        sr, data = wavfile.read(p)
    except ValueError as exc:
        raise DataFormatError(f"{p} is not a readable wav file ({exc}); re-encode it as PCM wav") from exc
    if data.dtype.kind == "i":
        x = data.astype(np.float32) / float(np.iinfo(data.dtype).max)
    elif data.dtype.kind == "u":
        info = np.iinfo(data.dtype)
        x = (data.astype(np.float32) - (info.max + 1) / 2) / ((info.max + 1) / 2)
    else:
        x = data.astype(np.float32)
    if x.ndim == 2:
        x = x.mean(axis=1)
    return np.ascontiguousarray(x, dtype=np.float32), int(sr)


def write_wav(path: str | Path, wav: NDArray[np.floating], sr: int) -> None:
    """Write mono audio as 16-bit PCM (clipped to [-1, 1])."""
    x = np.clip(np.asarray(wav, dtype=np.float64), -1.0, 1.0)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    wavfile.write(Path(path), int(sr), np.round(x * 32767).astype(np.int16))
