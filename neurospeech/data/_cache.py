"""Preprocessed-recording cache: each run once through the shared offline path, kept as a memory-mapped ``.npy``.

A corpus larger than memory (LibriBrain: ~50 h of 306-channel MEG, ~26 GB even at 120 Hz in float32) cannot
be held as training windows. :func:`cache_recordings` runs every recording, one at a time, through
:func:`neurospeech.preprocessing.preprocess_blocks` (the offline path the live service shares; the raw run is
read block by block, never whole, when its reader reads lazily) and writes

    <cache_dir>/<key>.npy     (n_channels, n_samples) float32 at the model rate (window.sfreq)
    <cache_dir>/<key>.json    sidecar: key inputs, shape, first sample time, rate, channels, recording name

where ``key = sha256(source file identity, reader, recording name, window, preprocessing, code version)``.
The source identity is the path, size and modification time of the raw file (and of the files beside it that
share its stem; every file of a ``.ds`` folder), so an edited or replaced recording makes a new entry
without hashing gigabytes at each start. Both files are written to a temporary name and renamed (atomic on
POSIX); the sidecar is renamed last, so a crashed write leaves no entry that looks complete. Readers open
the ``.npy`` with ``mmap_mode='r'``: the pages are file-backed and shared, so the operating system keeps what
fits and drops the rest, and a process's private memory does not grow with the corpus.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..contract import ChannelSpec
from ..errors import DataFormatError
from ..preprocessing import PreprocessingSpec, WindowSpec, preprocess_blocks
from ._dataset import Recording

__all__ = ["CACHE_FORMAT", "MAX_OPEN_MAPS", "CachedRecording", "cache_key", "cache_recording", "cache_recordings",
           "default_recording_cache_dir", "open_memmap"]

log = logging.getLogger(__name__)

#: Version of the cache layout; part of every key.
CACHE_FORMAT = 1

#: Raw samples read and filtered per step while a run is cached (any value gives the same entry to float32
#: rounding): a run is never in memory whole at its raw rate when its reader reads lazily (BIDS FIF / KIT /
#: CTF / BrainVision, MEG-MASC, MOUS).
READ_BLOCK = 16384


def default_recording_cache_dir(feature_cache: str | Path | None = None) -> Path:
    """``<feature cache>/recordings``: the feature cache root (``$NEUROSPEECH_CACHE`` or
    ``~/.cache/neurospeech/features``, or ``feature_cache`` when given), never the dataset folder."""
    from ..speech.cache import resolve_cache_dir

    return resolve_cache_dir(feature_cache) / "recordings"


def _code_version() -> str:
    """neurospeech's version and a hash of the preprocessing module (a changed filter makes new entries)."""
    from .. import __version__, preprocessing

    src = Path(preprocessing.__file__).read_bytes()
    return f"{__version__}+{hashlib.sha256(src).hexdigest()[:16]}"


def _stat_entry(p: Path) -> list[Any]:
    st = p.stat()
    return [str(p.resolve()), int(st.st_size), int(st.st_mtime_ns)]


def source_identity(rec: Recording) -> list[list[Any]]:
    """Path, size and mtime of the files a recording is read from (the raw file, its same-stem siblings, the
    files inside a ``.ds`` folder, the events table)."""
    src = Path(getattr(rec, "source", None) or rec.bids_path.fpath)
    files: list[Path] = []
    if src.is_dir():
        files = sorted(p for p in src.rglob("*") if p.is_file())
    elif src.exists():
        stem = src.name.split(".", 1)[0]
        files = sorted(p for p in src.parent.iterdir() if p.is_file() and p.name.split(".", 1)[0] == stem)
    else:
        raise DataFormatError(f"{rec.name}: raw file {src} does not exist; cannot cache it")
    ev = Path(rec.events_path)
    if ev.is_file() and ev not in files:
        files.append(ev)
    return [_stat_entry(p) for p in files]


def cache_key(rec: Recording, window: WindowSpec, spec: PreprocessingSpec) -> tuple[str, dict[str, Any]]:
    """Key of a recording's cache entry and the inputs it hashes."""
    inputs = {
        "format": CACHE_FORMAT,
        "reader": type(rec).__module__ + "." + type(rec).__qualname__,
        "recording": rec.name,
        "subject": rec.subject,
        "source": source_identity(rec),
        "window": window.to_dict(),
        "preprocessing": spec.to_dict(),
        "code": _code_version(),
    }
    blob = json.dumps(inputs, sort_keys=True).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:32], inputs


@dataclass
class CachedRecording:
    """One preprocessed recording in the cache.

    Attributes
    ----------
    recording : Recording
        The run (its events are read from it).
    path : Path
        The ``.npy`` of shape ``(n_channels, n_samples)``, float32, at ``sfreq``.
    first_time : float
        Time of sample 0 on the recording's ``raw.times`` clock (s).
    sfreq : float
        Model rate (Hz).
    n_channels, n_samples : int
    channels : list of ChannelSpec
    """

    recording: Recording
    path: Path
    first_time: float
    sfreq: float
    n_channels: int
    n_samples: int
    channels: list[ChannelSpec]

    @property
    def name(self) -> str:
        return self.recording.name

    @property
    def subject(self) -> str:
        return self.recording.subject

    def data(self) -> NDArray[np.float32]:
        """The cached signal, memory-mapped read-only, shape ``(n_channels, n_samples)``."""
        mm = open_memmap(self.path)
        if mm.shape != (self.n_channels, self.n_samples) or mm.dtype != np.float32:
            raise DataFormatError(f"cache entry {self.path} has {mm.dtype} {mm.shape}, its sidecar says "
                                  f"float32 {(self.n_channels, self.n_samples)}; delete it to rebuild")
        return mm

    def times0(self) -> NDArray[np.float64]:
        """A one-element time grid (``times[0]``) for :func:`neurospeech.preprocessing.extract_windows`."""
        return np.array([self.first_time], dtype=np.float64)



#: Memory maps open in this process, least recently used first (each holds a file descriptor: a corpus of
#: thousands of runs must not exhaust them). Never pickled: a worker process opens its own.
_OPEN: OrderedDict[Path, NDArray[Any]] = OrderedDict()
MAX_OPEN_MAPS = 128


def open_memmap(path: Path) -> NDArray[Any]:
    """``np.load(path, mmap_mode='r')``, kept among the :data:`MAX_OPEN_MAPS` most recently used."""
    mm = _OPEN.get(path)
    if mm is None:
        mm = np.load(path, mmap_mode="r", allow_pickle=False)
        _OPEN[path] = mm
        while len(_OPEN) > MAX_OPEN_MAPS:
            _OPEN.popitem(last=False)
    else:
        _OPEN.move_to_end(path)
    return mm


def _atomic_write(path: Path, write: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_entry(rec: Recording, npy: Path, side: Path, key: str) -> CachedRecording | None:
    if not (npy.is_file() and side.is_file()):
        return None
    try:
        meta = json.loads(side.read_text())
        if meta.get("key") != key:
            return None
        return CachedRecording(
            recording=rec, path=npy, first_time=float(meta["first_time"]), sfreq=float(meta["sfreq"]),
            n_channels=int(meta["n_channels"]), n_samples=int(meta["n_samples"]),
            channels=[ChannelSpec.from_dict(c) for c in meta["channels"]])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("cache sidecar %s unreadable (%s); rebuilding it", side, exc)
        return None


def cache_recording(rec: Recording, window: WindowSpec, spec: PreprocessingSpec,
                    cache_dir: str | Path) -> CachedRecording:
    """The cache entry of one recording, made now if missing (the raw run is read and preprocessed once).

    The raw run is read ``READ_BLOCK`` samples at a time and streamed through the shared preprocessing, so the
    peak memory is one block plus the model-rate float32 output (twice, while its pieces are joined) for the
    readers that read lazily (BIDS, MEG-MASC, MOUS, LibriBrain, Brennan v2's BrainVision); the Broderick reader and
    Brennan v1's FieldTrip ``.mat`` preload the run (MATLAB v5 files are read whole by ``scipy.io.loadmat``).
    """
    from .segments import channel_specs

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    key, inputs = cache_key(rec, window, spec)
    npy, side = cache_dir / f"{key}.npy", cache_dir / f"{key}.json"
    hit = _read_entry(rec, npy, side, key)
    if hit is not None:
        return hit
    raw = rec.load_raw(preload=False)
    chans = channel_specs(raw.info)
    sfreq, n_times = float(raw.info["sfreq"]), int(raw.n_times)
    block = max(READ_BLOCK, 1)
    blocks = (raw.get_data(start=i, stop=min(i + block, n_times)) for i in range(0, n_times, block))
    data, times = preprocess_blocks(blocks, len(chans), sfreq, window, spec,
                                    first_time=float(raw.times[0]) if n_times else 0.0)
    del raw
    first = float(times[0]) if len(times) else 0.0
    _atomic_write(npy, lambda f: np.save(f, np.ascontiguousarray(data, dtype=np.float32), allow_pickle=False))
    meta = {"key": key, "inputs": inputs, "first_time": first, "sfreq": float(window.sfreq),
            "n_channels": int(data.shape[0]), "n_samples": int(data.shape[1]),
            "channels": [c.to_dict() for c in chans]}
    _atomic_write(side, lambda f: f.write(json.dumps(meta, indent=1).encode("utf-8")))
    log.info("cached %s: %d channels x %d samples (%.1f MB) in %s", rec.name, data.shape[0], data.shape[1],
             data.nbytes / 1e6, npy)
    out = _read_entry(rec, npy, side, key)
    if out is None:
        raise DataFormatError(f"cache entry {npy} could not be read back after writing it")
    return out


def cache_recordings(recordings: Sequence[Recording], window: WindowSpec, spec: PreprocessingSpec,
                     cache_dir: str | Path, progress: bool = True) -> list[CachedRecording]:
    """:func:`cache_recording` of each run in turn (one run in memory at a time), in the given order."""
    from tqdm import tqdm

    return [cache_recording(r, window, spec, cache_dir)
            for r in tqdm(recordings, desc="preprocess cache", unit="run", disable=not progress)]
