"""Bad-channel interpolation for the ``interpolate`` policy: per channel type, one cached operator per bad set.

A bad channel is rebuilt only from good channels of its own kind: magnetometers from magnetometers, EEG from
EEG, and planar gradiometers from gradiometers of the same orientation (Neuromag ``MEG xxx2`` / ``MEG xxx3``
pairs are told apart by the name's last digit). A Neuromag magnetometer and its two gradiometers share one
position, so mixing types, as a plain nearest-neighbour average does, would copy a field gradient (T/m) into
a magnetometer (T).

Interpolation is linear in the data, so the interpolator computes a matrix once per set of bad channels and a
window costs one small matrix product (the operators are kept in an LRU cache keyed by the bad set):

- **EEG with 3-D locations** in the contract (:attr:`ChannelSpec.loc <neurospeech.contract.ChannelSpec>`):
  MNE's spherical splines, through public API. The operator is what
  :meth:`mne.Evoked.interpolate_bads` makes of an identity matrix (``EvokedArray(eye(n))``: its output is
  the operator itself).
- **Otherwise** (MEG: MNE's field interpolation needs the coils' orientations and types, which the contract
  does not carry; any type without 3-D locations, e.g. every model exported today, whose contract holds the
  2-D layout positions only): the mean of the ``n_neighbours`` nearest good channels of the same kind, by
  distance between 3-D locations when there are any, else between 2-D layout positions. Logged once.

A bad channel that cannot be rebuilt (no position, or no good channel of its kind) is set to 0 (the scaled
median) and reported as *zeroed*, never as interpolated.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["ChannelInterpolator", "InterpolationOperator"]

log = logging.getLogger(__name__)

_NEUROMAG_GRAD = re.compile(r"^MEG ?\d{3}([23])$")
_logged: set[str] = set()


def _log_once(msg: str) -> None:
    if msg not in _logged:
        _logged.add(msg)
        log.info(msg)


@dataclass(frozen=True)
class InterpolationOperator:
    """What to do with one set of bad channels.

    Attributes
    ----------
    rows : array of int, shape (n_rebuilt,)
        Bad channels that are rebuilt.
    cols : array of int, shape (n_used,)
        Good channels they are rebuilt from.
    weights : array, shape (n_rebuilt, n_used), float32
        ``x[rows] = weights @ x[cols]``.
    zeroed : array of int, shape (n_zeroed,)
        Bad channels that cannot be rebuilt (set to 0).
    """

    rows: NDArray[np.intp]
    cols: NDArray[np.intp]
    weights: NDArray[np.float32]
    zeroed: NDArray[np.intp]

    def apply(self, x: NDArray[np.float32]) -> None:
        """Rebuild the bad rows of ``x`` (shape ``(n_channels, n_times)``) in place."""
        if len(self.rows):
            x[self.rows] = self.weights @ x[self.cols]
        if len(self.zeroed):
            x[self.zeroed] = 0.0


class ChannelInterpolator:
    """Interpolation operators for the model's channels, per channel type, cached by bad set.

    Parameters
    ----------
    channels : sequence of ChannelSpec
        The model's channels in model order (``name``, ``type``, 2-D ``pos`` and optional 3-D ``loc``).
    n_neighbours : int
        Neighbours averaged where nearest-neighbour interpolation is used.
    cache_size : int
        Operators (distinct bad sets) kept.
    """

    def __init__(self, channels: Sequence[Any], n_neighbours: int = 4, cache_size: int = 64) -> None:
        self.names = [c.name for c in channels]
        n = len(self.names)
        self.kinds = np.array([self._kind(c) for c in channels])
        self.pos2 = np.full((n, 2), np.nan)
        self.loc3 = np.full((n, 3), np.nan)
        for i, c in enumerate(channels):
            if c.pos is not None:
                self.pos2[i] = c.pos
            loc = getattr(c, "loc", None)
            if loc is not None:
                self.loc3[i] = loc
        self.n_neighbours = int(n_neighbours)
        self.cache_size = int(cache_size)
        self._cache: OrderedDict[bytes, InterpolationOperator] = OrderedDict()
        self._lock = threading.Lock()  # decode-file assesses windows in several threads
        self.misses = 0
        eeg = self.kinds == "eeg"
        self.spline = bool(eeg.any() and np.isfinite(self.loc3[eeg]).all())
        # distances between 3-D locations when every channel has one, else between 2-D layout positions
        self._has3 = n > 0 and bool(np.isfinite(self.loc3).all())
        self._coords = self.loc3 if self._has3 else self.pos2
        methods = []
        if self.spline:
            methods.append("EEG by MNE spherical splines (3-D locations)")
        other = sorted({str(k) for k in self.kinds} - ({"eeg"} if self.spline else set()))
        if other:
            where = "3-D locations" if self._has3 else "2-D layout positions (the contract has no 3-D locations)"
            methods.append(f"{', '.join(other)} by the mean of the {self.n_neighbours} nearest good channels "
                           f"of the same type, in {where}")
        _log_once("bad-channel interpolation: " + "; ".join(methods))

    @staticmethod
    def _kind(c: Any) -> str:
        t = str(c.type).lower()
        if t in ("grad", "planar1", "planar2"):
            m = _NEUROMAG_GRAD.match(c.name.strip())
            return f"grad{m.group(1)}" if m else "grad"
        return t

    def operator(self, bad: NDArray[np.bool_]) -> InterpolationOperator:
        """The operator for the bad channels ``bad`` (bool, shape ``(n_channels,)``), from the cache if there."""
        key = np.packbits(bad).tobytes()
        with self._lock:
            op = self._cache.get(key)
            if op is not None:
                self._cache.move_to_end(key)
                return op
            op = self._build(np.asarray(bad, dtype=bool))
            self.misses += 1
            self._cache[key] = op
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
            return op

    def _build(self, bad: NDArray[np.bool_]) -> InterpolationOperator:
        n = len(self.names)
        full = np.zeros((n, n))
        rebuilt = np.zeros(n, dtype=bool)
        todo = bad.copy()
        if self.spline:
            eeg = np.flatnonzero(self.kinds == "eeg")
            bad_eeg = eeg[bad[eeg]]
            if len(bad_eeg) and len(bad_eeg) < len(eeg):
                m = self._spline(eeg, bad[eeg])
                if m is not None:
                    full[np.ix_(bad_eeg, eeg)] = m[bad[eeg]]
                    rebuilt[bad_eeg] = True
                    todo[bad_eeg] = False
        coords_ok = np.isfinite(self._coords).all(axis=1)
        for i in np.flatnonzero(todo):
            cand = np.flatnonzero(~bad & coords_ok & (self.kinds == self.kinds[i]))
            if not coords_ok[i] or len(cand) == 0:
                continue
            d = np.linalg.norm(self._coords[cand] - self._coords[i], axis=1)
            nb = cand[np.argsort(d, kind="stable")[: self.n_neighbours]]
            full[i, nb] = 1.0 / len(nb)
            rebuilt[i] = True
        rows = np.flatnonzero(rebuilt)
        cols = np.flatnonzero(np.any(full[rows] != 0, axis=0)) if len(rows) else np.zeros(0, dtype=np.intp)
        return InterpolationOperator(
            rows, cols, np.ascontiguousarray(full[np.ix_(rows, cols)], dtype=np.float32), np.flatnonzero(bad & ~rebuilt)
        )

    def _spline(self, idx: NDArray[np.intp], bad: NDArray[np.bool_]) -> NDArray[np.float64] | None:
        """MNE's spherical-spline operator over the EEG channels ``idx`` (rows: every channel; bad ones rebuilt)."""
        import mne

        names = [self.names[i] for i in idx]
        info = mne.create_info(names, 100.0, "eeg")
        montage = mne.channels.make_dig_montage(
            ch_pos={nm: self.loc3[i] for nm, i in zip(names, idx, strict=True)}, coord_frame="head")
        try:
            with mne.utils.use_log_level("error"):
                info.set_montage(montage)
                ev = mne.EvokedArray(np.eye(len(idx)), info, verbose="error")
                ev.info["bads"] = [nm for nm, b in zip(names, bad, strict=True) if b]
                ev.interpolate_bads(reset_bads=True, mode="accurate", verbose="error")
        except (ValueError, RuntimeError, np.linalg.LinAlgError) as exc:  # MNE refuses the geometry
            _log_once(f"spherical-spline interpolation failed ({exc}); using same-type nearest neighbours")
            return None
        return np.asarray(ev.data, dtype=np.float64)
