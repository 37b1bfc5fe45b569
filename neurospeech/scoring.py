"""Candidate banks and CLIP scoring, shared by ``evaluate`` (offline) and ``serve`` (online). No torch.

The paper's score between a brain latent ``Z`` (F x T) and a candidate speech segment ``Y`` (F x T) is
``sum(Z * Y) / ||Y||_F`` (only the speech side is normalised, no temperature). A bank stores every candidate
already flattened and divided by its Frobenius norm, so scoring ``n`` candidates is one matrix-vector product.

File format (``.npz`` read with ``allow_pickle=False``; never pickle):

- ``features``: float32 ``(n_candidates, D)``, normalised candidates in the encoder output layout, flattened.
- ``ids``, ``words``, ``sounds``, ``sentences``: unicode arrays ``(n_candidates,)``.
- ``sound_times``: float64 ``(n_candidates,)``, onset of the segment's anchor in its wav (s).
- ``header``: uint8 array holding UTF-8 JSON: format, model_sha256 (the ONNX file this bank belongs to),
  output shape, speech spec, creation info.
- ``basis`` (optional): float32 ``(r, D)``. A *compressed* bank (:meth:`CandidateBank.compressed`) keeps the
  top ``r`` right singular vectors ``V`` of the candidate matrix and stores ``features = B V^T`` ``(n, r)``;
  scores are then ``features @ (V z)``: ``r (n + D)`` multiply-accumulates instead of ``n D``, exact for the
  part of ``z`` inside the candidates' top-``r`` subspace. The header records the rank and the fraction of the
  candidates' energy kept.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .errors import ArtifactError, ConfigError, DataFormatError

__all__ = ["BANK_FORMAT", "CandidateBank", "normalise_candidates", "softmax", "topk", "topk_softmax"]

BANK_FORMAT = 1


def normalise_candidates(y: NDArray[np.floating[Any]]) -> NDArray[np.float32]:
    """Flatten ``(n, ...)`` candidates and divide each by its Frobenius norm -> ``(n, D)`` float32."""
    y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    norms = np.linalg.norm(y, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (y / norms).astype(np.float32)


def softmax(scores: NDArray[np.floating[Any]], axis: int = -1) -> NDArray[np.float64]:
    """Numerically stable softmax."""
    s = np.asarray(scores, dtype=np.float64)
    s = s - s.max(axis=axis, keepdims=True)
    e = np.exp(s)
    return e / e.sum(axis=axis, keepdims=True)


def topk_softmax(
    scores: NDArray[np.floating[Any]], k: int
) -> tuple[NDArray[np.int64], NDArray[np.float32], NDArray[np.float64]]:
    """The ``k`` best candidates of each row with their scores and softmax probabilities, in one pass.

    Parameters
    ----------
    scores : array, shape (B, n) or (n,)
    k : int

    Returns
    -------
    idx : array of int64, shape (B, k)
        Best first (equal scores: lower index first, also for a tie across the k-th place).
    best : array of float32, shape (B, k)
        Their scores.
    probs : array of float64, shape (B, k)
        Their softmax probabilities over all ``n`` candidates (:func:`softmax`, computed with float32
        exponentials and a float64 sum: the full probability vector is never built).
    """
    s = np.atleast_2d(np.asarray(scores, dtype=np.float32))
    k = min(int(k), s.shape[-1])
    rows = np.arange(s.shape[0])[:, None]
    n = s.shape[1]
    # the k-th largest score of each row (a partition of the values: cheaper than one of indices), then the
    # candidates at or above it: exactly k per row unless scores tie across the k-th place
    thr = np.partition(s, n - k, axis=1)[:, n - k]
    c_idx = np.nonzero(s >= thr[:, None])[1]
    if len(c_idx) == k * s.shape[0]:
        part = c_idx.reshape(s.shape[0], k)
    else:
        part = np.empty((s.shape[0], k), dtype=np.intp)
        for b in range(s.shape[0]):
            # ties across the k-th place: the lowest indices among them; NaN scores: an index partition
            gt, eq = np.flatnonzero(s[b] > thr[b]), np.flatnonzero(s[b] == thr[b])
            sel = np.concatenate([gt, eq[: k - len(gt)]])
            part[b] = sel if len(sel) == k else np.argpartition(-s[b], k - 1)[:k]
    ps = s[rows, part]
    key = np.lexsort((part, -ps), axis=-1)  # best first, equal scores by candidate index
    idx, best = part[rows, key], ps[rows, key]
    e = s - s.max(axis=1, keepdims=True)
    np.exp(e, out=e)
    probs = e[rows, idx].astype(np.float64) / e.sum(axis=1, dtype=np.float64)[:, None]
    return idx.astype(np.int64), best, probs


def topk(scores: NDArray[np.floating[Any]], k: int) -> NDArray[np.int64]:
    """Indices of the ``k`` largest scores, best first. ``scores``: ``(n,)``."""
    k = min(int(k), scores.shape[-1])
    part = np.argpartition(-scores, k - 1)[:k]
    return part[np.argsort(-scores[part], kind="stable")].astype(np.int64)


@dataclass
class CandidateBank:
    """Precomputed candidate segments in the form the service scores against.

    Attributes
    ----------
    features : array, shape (n_candidates, D), float32
        Normalised, flattened candidates (held column-major; saved and loaded that way, older C-order files are
        converted on load).
    ids, words, sounds, sentences : array of str, shape (n_candidates,)
        Segment id, word at the anchor, wav path (relative to the dataset root), sentence id.
    sound_times : array, shape (n_candidates,)
        Anchor time in the wav, seconds.
    header : dict
        ``model_sha256``, ``output_shape`` [F, T], ``speech`` spec and provenance.
    """

    features: NDArray[np.float32]
    ids: NDArray[np.str_]
    words: NDArray[np.str_]
    sounds: NDArray[np.str_]
    sentences: NDArray[np.str_]
    sound_times: NDArray[np.float64]
    header: dict[str, Any] = field(default_factory=dict)
    basis: NDArray[np.float32] | None = None

    def __post_init__(self) -> None:
        # column-major: ``features.T`` (and ``basis.T``) are C-contiguous, the layout BLAS reads fastest in
        # ``latents (B, D) @ features.T (D, n)`` (rank-256 bank, batch 16, one thread: 2.5-3.2 vs 3.6-3.9 ms)
        self.features = np.asfortranarray(self.features, dtype=np.float32)
        if self.basis is not None:
            self.basis = np.asfortranarray(self.basis, dtype=np.float32)
        n = len(self.features)
        for name in ("ids", "words", "sounds", "sentences", "sound_times"):
            if len(getattr(self, name)) != n:
                raise DataFormatError(
                    f"bank field {name!r} has {len(getattr(self, name))} rows, expected {n}"
                )
        if self.features.ndim != 2:
            raise DataFormatError(f"bank features must be 2-D (n, D), got {self.features.shape}")
        if self.basis is not None and (self.basis.ndim != 2 or self.basis.shape[0] != self.features.shape[1]):
            raise DataFormatError(
                f"bank basis must be (r, D) with r = {self.features.shape[1]}, got {self.basis.shape}"
            )

    def __len__(self) -> int:
        return len(self.features)

    @property
    def dim(self) -> int:
        """Length D of a flattened latent this bank scores."""
        return int(self.basis.shape[1]) if self.basis is not None else int(self.features.shape[1])

    def macs_per_decision(self) -> int:
        """Multiply-accumulates of scoring one latent against every candidate."""
        n, r = self.features.shape
        return n * r + (r * self.dim if self.basis is not None else 0)

    def compressed(self, rank: int) -> CandidateBank:
        """A low-rank copy of this bank (see the module docstring); ``rank`` < D.

        Raises
        ------
        ConfigError
            If ``rank`` is not in ``1 .. min(n_candidates, D) - 1`` or the bank is already compressed.
        """
        if self.basis is not None:
            raise ConfigError("this bank is already compressed; compress the full bank instead")
        n, d = self.features.shape
        if not 1 <= int(rank) < min(n, d):
            raise ConfigError(
                f"rank must be between 1 and {min(n, d) - 1} for a bank of {n} x {d}, got {rank!r}"
            )
        b = self.features.astype(np.float64)
        _, s, vt = np.linalg.svd(b, full_matrices=False)
        energy = float(np.sum(s[:rank] ** 2) / np.sum(s**2))
        basis = vt[:rank].astype(np.float32)
        header = {**self.header, "compression": {"rank": int(rank), "energy": energy, "full_dim": int(d)}}
        return CandidateBank(
            features=np.asfortranarray(b @ vt[:rank].T, dtype=np.float32),
            ids=self.ids, words=self.words, sounds=self.sounds, sentences=self.sentences,
            sound_times=self.sound_times, header=header, basis=basis,
        )

    @property
    def model_sha256(self) -> str:
        return str(self.header.get("model_sha256", ""))

    def scores(self, z: NDArray[np.floating[Any]]) -> NDArray[np.float32]:
        """CLIP scores of one latent ``(F, T)`` (or a batch ``(B, F, T)``) against every candidate.

        Returns ``(n_candidates,)`` or ``(B, n_candidates)``.
        """
        z = np.asarray(z, dtype=np.float32)
        d = self.dim
        if z.ndim >= 2 and z.shape[-2:] != tuple(self.header.get("output_shape", z.shape[-2:])):
            raise DataFormatError(
                f"latent shape {z.shape[-2:]} differs from the bank's output shape "
                f"{self.header['output_shape']}"
            )
        single = z.ndim <= 2  # one latent (F, T) or an already flat (F*T,) vector; (B, F, T) is a batch
        flat = z.reshape(-1, d)
        if self.basis is not None:
            flat = flat @ self.basis.T
        s = np.asarray(flat @ self.features.T, dtype=np.float32)
        return s[0] if single else s

    def check_model(self, model_sha256: str) -> None:
        """Refuse a bank built for another model."""
        if self.model_sha256 != model_sha256:
            raise ArtifactError(
                f"candidate bank was built for model sha256 {self.model_sha256[:12] or '<none>'}... but the model "
                f"is {model_sha256[:12]}...; rebuild the bank with `neurospeech bank --model <model.onnx>`"
            )

    # -- io
    def save(self, path: str | Path) -> None:
        header = json.dumps({"format": BANK_FORMAT, **self.header}, sort_keys=True).encode()
        extra: dict[str, Any] = {} if self.basis is None else {"basis": self.basis.astype(np.float32)}
        np.savez(
            path,
            **extra,
            features=self.features.astype(np.float32),
            ids=self.ids.astype(str),
            words=self.words.astype(str),
            sounds=self.sounds.astype(str),
            sentences=self.sentences.astype(str),
            sound_times=self.sound_times.astype(np.float64),
            header=np.frombuffer(header, dtype=np.uint8),
        )

    @classmethod
    def load(cls, path: str | Path) -> CandidateBank:
        p = Path(path)
        if not p.is_file():
            raise ArtifactError(f"candidate bank {str(p)!r} does not exist; build one with `neurospeech bank`")
        try:
            with np.load(p, allow_pickle=False) as z:
                header = json.loads(bytes(z["header"]).decode())
                if header.get("format") != BANK_FORMAT:
                    raise ArtifactError(
                        f"bank format {header.get('format')!r} unsupported (expected {BANK_FORMAT}); rebuild it"
                    )
                return cls(
                    features=np.asfortranarray(z["features"], dtype=np.float32),
                    ids=z["ids"], words=z["words"], sounds=z["sounds"], sentences=z["sentences"],
                    sound_times=z["sound_times"], header=header,
                    basis=np.asfortranarray(z["basis"], dtype=np.float32) if "basis" in z.files else None,
                )
        except ArtifactError:
            raise
        except (OSError, KeyError, ValueError, json.JSONDecodeError, EOFError) as exc:
            raise ArtifactError(
                f"candidate bank {str(p)!r} is corrupted or not a neurospeech bank ({exc!r}); rebuild it"
            ) from exc
