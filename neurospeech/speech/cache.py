"""On-disk feature cache and global per-feature standardisation statistics."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from ..contract import sha256_file
from ..errors import DataFormatError
from .extractors import FeatureExtractor

__all__ = ["FeatureCache", "default_cache_dir", "fit_standardizer", "read_audio", "resolve_cache_dir"]

#: Environment variable naming the feature cache directory.
CACHE_ENV = "NEUROSPEECH_CACHE"


def default_cache_dir() -> Path:
    """Where features are cached when no directory is given: ``$NEUROSPEECH_CACHE``, else
    ``$XDG_CACHE_HOME/neurospeech/features``, else ``~/.cache/neurospeech/features``.

    Never inside the dataset (read-only datasets are common); entries are keyed by audio content and extractor
    settings, so one cache serves every dataset.
    """
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "neurospeech" / "features"


def resolve_cache_dir(feature_cache: str | Path | None) -> Path:
    """``feature_cache`` when given (e.g. ``<data>/derivatives/neurospeech-features`` to keep it with a
    writable dataset), else :func:`default_cache_dir`."""
    return Path(feature_cache) if feature_cache else default_cache_dir()

log = logging.getLogger(__name__)


def read_audio(path: str | Path) -> tuple[NDArray[np.float32], int]:
    """Read a wav file as mono float32 in [-1, 1] (:func:`neurospeech.data.read_wav`, imported lazily)."""
    from ..data import read_wav

    return read_wav(path)


class FeatureCache:
    """Speech features cached on disk, one ``.npy`` per (audio file content, extractor settings).

    The key is ``sha256(file bytes)`` + ``sha256(extractor.cache_key())`` (kind + params, which include the
    model weights' hash for pretrained extractors), so renaming a file keeps its entry and changing any
    setting or model makes a new one. Entries are written atomically (temporary file + rename) and read with
    ``allow_pickle=False``.

    Parameters
    ----------
    cache_dir : path
        Directory (created if needed).
    """

    def __init__(self, cache_dir: str | Path) -> None:
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.hits = 0
        self.misses = 0
        self._file_hash: dict[tuple[str, int, int], str] = {}

    def _hash(self, path: Path) -> str:
        st = os.stat(path)
        k = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        if k not in self._file_hash:
            self._file_hash[k] = sha256_file(path)
        return self._file_hash[k]

    def path_for(self, extractor: FeatureExtractor, wav_path: str | Path) -> Path:
        """Cache file of ``wav_path`` under ``extractor`` (whether or not it exists yet)."""
        ekey = hashlib.sha256(extractor.cache_key().encode()).hexdigest()[:16]
        return self.cache_dir / extractor.kind / ekey / f"{self._hash(Path(wav_path))}.npy"

    def get(self, extractor: FeatureExtractor, wav_path: str | Path) -> NDArray[np.float32]:
        """Features of ``wav_path`` (computed and stored on a miss).

        Returns
        -------
        features : ndarray, shape (extractor.dim, n_frames), float32
        """
        p = Path(wav_path)
        if not p.is_file():
            raise DataFormatError(f"audio file {str(p)!r} does not exist")
        target = self.path_for(extractor, p)
        if target.is_file():
            try:
                arr = np.load(target, allow_pickle=False)
                if arr.ndim == 2 and arr.shape[0] == extractor.dim:
                    self.hits += 1
                    return arr
            except (OSError, ValueError) as exc:
                log.warning("ignoring unreadable cache entry %s (%s)", target, exc)
        self.misses += 1
        wav, sr = read_audio(p)
        feats = np.ascontiguousarray(extractor(wav, sr), dtype=np.float32)
        target.parent.mkdir(parents=True, exist_ok=True)
        meta = target.parent / "extractor.json"
        if not meta.exists():
            meta.write_text(extractor.cache_key())
        fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".npy.tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, feats, allow_pickle=False)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return feats


def fit_standardizer(features: Iterable[NDArray], eps: float = 1e-6
                     ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Global per-feature mean and standard deviation over all frames of all files.

    Parameters
    ----------
    features : iterable of ndarray, each shape (F, n_i)
        Features of the training files (same F).
    eps : float
        Floor of the std (constant features get std ``eps``, not 0).

    Returns
    -------
    mean, std : ndarray, shape (F,), float32
        Standardise with ``(x - mean[:, None]) / std[:, None]``; saved in ``SpeechSpec.mean/std``.
    """
    total = None
    total_sq = None
    count = 0
    dim = None
    for a in features:
        a = np.asarray(a, np.float64)
        if a.ndim != 2 or (dim is not None and a.shape[0] != dim):
            raise DataFormatError(f"features must all be (F, n) with the same F; got shape {a.shape}"
                                  + (f" after F={dim}" if dim is not None else ""))
        dim = a.shape[0]
        if total is None:
            total = np.zeros(dim)
            total_sq = np.zeros(dim)
        total += a.sum(axis=1)
        total_sq += (a * a).sum(axis=1)
        count += a.shape[1]
    if total is None or total_sq is None or count == 0:
        raise DataFormatError("fit_standardizer needs at least one (F, n) array with n >= 1 frames")
    mean = total / count
    var = np.maximum(total_sq / count - mean * mean, 0.0)
    std = np.maximum(np.sqrt(var), eps)
    return mean.astype(np.float32), std.astype(np.float32)
