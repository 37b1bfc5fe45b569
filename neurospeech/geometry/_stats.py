"""Circular statistics for groups of angles (networks, subjects): mean, Rayleigh test, V-test."""

from __future__ import annotations

import numpy as np
from scipy import stats

from ..errors import DataFormatError

__all__ = ["circ_mean", "circ_resultant", "rayleigh_test", "v_test"]


def _angles(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=float).ravel()
    a = a[np.isfinite(a)]
    if a.size == 0:
        raise DataFormatError(
            "circular statistics need at least one finite angle, got none (all NaN or empty)"
        )
    return a


def circ_resultant(angles: np.ndarray) -> float:
    """Mean resultant length ``R`` in ``[0, 1]`` of angles in radians (NaNs dropped)."""
    a = _angles(angles)
    return float(np.abs(np.mean(np.exp(1j * a))))


def circ_mean(angles: np.ndarray) -> float:
    """Circular mean in radians, ``(-pi, pi]`` (NaNs dropped)."""
    a = _angles(angles)
    return float(np.angle(np.mean(np.exp(1j * a))))


def rayleigh_test(angles: np.ndarray) -> dict:
    """Rayleigh test of uniformity against a unimodal alternative.

    Returns ``{"n", "R", "z", "p"}`` with ``z = n R^2`` and Zar's (1999) p-value approximation
    ``p = exp(sqrt(1 + 4n + 4(n^2 - (nR)^2)) - (1 + 2n))``.
    """
    a = _angles(angles)
    n = a.size
    r = circ_resultant(a)
    rn = n * r
    z = rn**2 / n
    p = float(np.exp(np.sqrt(1 + 4 * n + 4 * (n**2 - rn**2)) - (1 + 2 * n)))
    return {"n": int(n), "R": r, "z": float(z), "p": min(max(p, 0.0), 1.0)}


def v_test(angles: np.ndarray, mu: float = 0.0) -> dict:
    """V-test of uniformity against a unimodal alternative with known mean direction ``mu`` (radians).

    Returns ``{"n", "V", "u", "p"}`` with ``V = sum cos(a - mu)``, ``u = V sqrt(2/n)`` and the one-sided
    normal p-value ``1 - Phi(u)``.
    """
    a = _angles(angles)
    n = a.size
    v = float(np.sum(np.cos(a - mu)))
    u = v * np.sqrt(2.0 / n)
    return {"n": int(n), "V": v, "u": float(u), "p": float(stats.norm.sf(u))}
