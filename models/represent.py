"""The scoring representation: how standardised speech features become what the encoder outputs and banks
store.

The paper scores a brain latent against full ``1024 x 343`` wav2vec2 segments (1.4 MB per candidate); a
bank of
10,000 such candidates costs 3.5 G multiply-accumulates per decision, more than the encoder itself. We keep
the
paper's features and window but score in a smaller linear image of them:

- a projection ``P (F_out, F_in)`` onto the first principal components of the standardised training features
  (fitted on the training sounds only), applied frame by frame, and
- average pooling of ``time_pool`` consecutive frames (343 -> 49 frames at 120 / 7 Hz for ``time_pool=7``).

Both are linear and fixed (not learned), so a bank is built from audio with numpy alone, and the encoder is
trained (CLIP or regression) directly against the reduced targets. ``projection=None, time_pool=1`` is the
paper's full representation. The contract carries this object (``output["speech_to_output"]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..errors import ArtifactError, ConfigError, DataFormatError

__all__ = ["ScoringRepresentation", "fit_pca_projection"]


@dataclass
class ScoringRepresentation:
    """Fixed linear map from standardised speech windows ``(F_in, T)`` to ``(F_out, T // time_pool)``.

    Attributes
    ----------
    in_dim : int
        Feature dimension of the extractor (after standardisation).
    projection : array, shape (F_out, F_in), or None
        Frame-wise projection (None: identity, ``F_out = F_in``).
    time_pool : int
        Non-overlapping average pooling over time (frames beyond ``(T // time_pool) * time_pool`` dropped).
    explained_variance : float or None
        Fraction of the training feature variance the projection keeps (informative).
    """

    in_dim: int
    projection: NDArray[np.float32] | None = None
    time_pool: int = 1
    explained_variance: float | None = None

    def __post_init__(self) -> None:
        if int(self.time_pool) < 1:
            raise ConfigError(f"time_pool must be >= 1, got {self.time_pool!r}")
        if self.projection is not None:
            p = np.asarray(self.projection, dtype=np.float32)
            if p.ndim != 2 or p.shape[1] != self.in_dim:
                raise DataFormatError(f"projection must be (F_out, {self.in_dim}), got {p.shape}")
            self.projection = p

    @property
    def out_dim(self) -> int:
        return self.in_dim if self.projection is None else int(self.projection.shape[0])

    def out_frames(self, n_times: int) -> int:
        return n_times // self.time_pool

    def project(self, features: NDArray[np.floating[Any]]) -> NDArray[np.float32]:
        """Project features along their feature axis: ``(..., F_in, n) -> (..., F_out, n)``."""
        x = np.asarray(features, dtype=np.float32)
        if x.shape[-2] != self.in_dim:
            raise DataFormatError(
                f"features have {x.shape[-2]} dims, the representation expects {self.in_dim}")
        if self.projection is None:
            return x
        return np.einsum("of,...ft->...ot", self.projection, x, optimize=True).astype(np.float32)

    def pool(self, windows: NDArray[np.floating[Any]]) -> NDArray[np.float32]:
        """Average-pool windows over time: ``(..., F, T) -> (..., F, T // time_pool)``."""
        x = np.asarray(windows, dtype=np.float32)
        if self.time_pool == 1:
            return x
        t = self.out_frames(x.shape[-1])
        x = x[..., : t * self.time_pool]
        return x.reshape(*x.shape[:-1], t, self.time_pool).mean(axis=-1, dtype=np.float32)

    def apply(self, windows: NDArray[np.floating[Any]]) -> NDArray[np.float32]:
        """Standardised speech windows ``(n, F_in, T)`` -> scoring representation ``(n, F_out, T')``."""
        return self.pool(self.project(windows))

    def to_dict(self) -> dict[str, Any]:
        return {
            "in_dim": int(self.in_dim),
            "time_pool": int(self.time_pool),
            "projection": None if self.projection is None else self.projection.tolist(),
            "explained_variance": self.explained_variance,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ScoringRepresentation:
        try:
            proj = d.get("projection")
            return cls(
                in_dim=int(d["in_dim"]),
                projection=None if proj is None else np.asarray(proj, dtype=np.float32),
                time_pool=int(d.get("time_pool", 1)),
                explained_variance=d.get("explained_variance"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(
                f"scoring representation is malformed ({exc!r}); re-export the model") from exc


def fit_pca_projection(features: Sequence[NDArray[np.floating[Any]]], n_components: int) -> tuple[NDArray, float]:
    """Principal axes of standardised features (frames pooled over files).

    Parameters
    ----------
    features : sequence of arrays, shape (F, n_frames)
        Standardised features of the training sounds (read once each, in order: a lazy sequence works).
    n_components : int
        Rows of the projection (clipped to F).

    Returns
    -------
    projection : array, shape (n_components, F), float32
        Orthonormal rows, sign-fixed (largest absolute loading positive) so that the result is deterministic.
    explained : float
        Fraction of the total variance kept.
    """
    if not features:
        raise DataFormatError("cannot fit a projection on no features (is the training split empty?)")
    dim = features[0].shape[0]
    cov = np.zeros((dim, dim))
    n = 0
    for f in features:
        f = np.asarray(f, dtype=np.float64)
        cov += f @ f.T
        n += f.shape[1]
    cov /= max(n, 1)
    evals, evecs = np.linalg.eigh(cov)
    order = np.argsort(evals)[::-1]
    k = min(int(n_components), dim)
    comps = evecs[:, order[:k]].T
    signs = np.sign(comps[np.arange(k), np.abs(comps).argmax(axis=1)])
    signs[signs == 0] = 1
    comps *= signs[:, None]
    explained = float(evals[order[:k]].sum() / max(evals.sum(), 1e-12))
    return comps.astype(np.float32), explained
