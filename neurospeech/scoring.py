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
- ``prefilter_basis`` / ``prefilter_features`` (optional, exact banks only): float32 ``(r, D)`` / ``(n, r)``. A
  *prefiltered* bank (:meth:`CandidateBank.with_prefilter`) keeps the exact ``features`` (row-major) and adds the
  rank-``r`` copy above; :meth:`CandidateBank.topk` scores every candidate in the rank-``r`` space, then scores the
  ``shortlist`` best of them exactly and ranks those: the reported top-k and their scores are exact whenever the
  exact top-k lie in the shortlist (the header's ``prefilter`` records rank, energy kept and shortlist). The
  softmax denominator uses the exact scores of the shortlist and the rank-``r`` scores of the others.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .errors import ArtifactError, ConfigError, DataFormatError

__all__ = [
    "AUTO_PREFILTER_MIN_ENERGY", "AUTO_PREFILTER_RANK", "BANK_FORMAT", "CandidateBank", "normalise_candidates",
    "softmax", "topk", "topk_softmax",
]

BANK_FORMAT = 1
AUTO_PREFILTER_RANK = 512  # `neurospeech bank`'s default prefilter (CandidateBank.with_auto_prefilter)
AUTO_PREFILTER_MIN_ENERGY = 0.99  # ... added only where the rank holds this share of the candidates' energy


def _prefilter_macs(n: int, dim: int, rank: int, shortlist: int) -> int:
    """MACs per decision of a prefiltered bank: project the latent to rank r, score n candidates there, score the
    shortlist exactly."""
    return n * rank + rank * dim + shortlist * dim


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
    prefilter_basis: NDArray[np.float32] | None = None
    prefilter_features: NDArray[np.float32] | None = None

    def __post_init__(self) -> None:
        # column-major: ``features.T`` (and ``basis.T``) are C-contiguous, the layout BLAS reads fastest in
        # ``latents (B, D) @ features.T (D, n)`` (rank-256 bank, batch 16, one thread: 2.5-3.2 vs 3.6-3.9 ms).
        # A prefiltered bank reads the exact features a few rows at a time (the shortlist): row-major there
        # (200 of 10,000 x 3136 rows gathered and scored: 0.34 ms row-major, 4.6 ms column-major)
        pre = self.prefilter_basis is not None or self.prefilter_features is not None
        self.features = (np.ascontiguousarray if pre else np.asfortranarray)(self.features, dtype=np.float32)
        if self.basis is not None:
            self.basis = np.asfortranarray(self.basis, dtype=np.float32)
        if pre:
            if self.prefilter_basis is None or self.prefilter_features is None or self.basis is not None:
                raise DataFormatError(
                    "a prefiltered bank needs both prefilter_basis and prefilter_features, on an exact (not "
                    "compressed) bank; rebuild it with `neurospeech bank --prefilter R`"
                )
            self.prefilter_basis = np.asfortranarray(self.prefilter_basis, dtype=np.float32)
            self.prefilter_features = np.asfortranarray(self.prefilter_features, dtype=np.float32)
            r = self.prefilter_basis.shape[0] if self.prefilter_basis.ndim == 2 else -1
            if (self.prefilter_basis.ndim != 2 or self.prefilter_basis.shape[1] != self.features.shape[1]
                    or self.prefilter_features.shape != (len(self.features), r)):
                raise DataFormatError(
                    f"bank prefilter shapes {self.prefilter_basis.shape} / {self.prefilter_features.shape} do not "
                    f"fit features {self.features.shape}; rebuild the bank"
                )
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
        """Multiply-accumulates of scoring one latent against every candidate (a prefiltered bank: the rank-r
        pass plus the exact scores of the shortlist)."""
        n, r = self.features.shape
        if self.prefilter_features is not None:
            return _prefilter_macs(n, self.dim, self.prefilter_features.shape[1], self.shortlist)
        return n * r + (r * self.dim if self.basis is not None else 0)

    @property
    def shortlist(self) -> int:
        """Candidates scored exactly per decision by a prefiltered bank (all of them otherwise)."""
        pre = self.header.get("prefilter")
        return min(len(self), int(pre["shortlist"])) if isinstance(pre, dict) else len(self)

    def with_prefilter(self, rank: int, shortlist: int = 200) -> CandidateBank:
        """This exact bank with a rank-``rank`` prefilter that picks the ``shortlist`` candidates scored exactly
        (see the module docstring and :meth:`topk`).

        Raises
        ------
        ConfigError
            If the bank is compressed or already prefiltered, ``rank`` is not in ``1 .. min(n, D) - 1``, or
            ``shortlist`` < 1.
        """
        if self.basis is not None or self.prefilter_basis is not None:
            raise ConfigError("a prefilter goes on an exact bank; build the exact bank and add it to that one")
        if int(shortlist) < 1:
            raise ConfigError(f"shortlist must be >= 1, got {shortlist!r}")
        low = self.compressed(rank)  # the same SVD, rank checks and energy as a compressed bank
        comp = low.header["compression"]
        header = {**self.header, "prefilter": {"rank": comp["rank"], "energy": comp["energy"],
                                                "full_dim": comp["full_dim"], "shortlist": int(shortlist)}}
        return CandidateBank(
            features=self.features, ids=self.ids, words=self.words, sounds=self.sounds, sentences=self.sentences,
            sound_times=self.sound_times, header=header, prefilter_basis=low.basis,
            prefilter_features=low.features,
        )

    def with_auto_prefilter(self, rank: int = AUTO_PREFILTER_RANK, shortlist: int = 200,
                            min_energy: float = AUTO_PREFILTER_MIN_ENERGY,
                            max_cost: float = 0.5) -> tuple[CandidateBank, str]:
        """The bank ``neurospeech bank`` builds by default: this exact bank with a rank-``rank`` prefilter where
        that pays and is safe, else this bank unchanged; and the reason, in words.

        The prefilter is added when (1) its multiply-accumulates per decision are at most ``max_cost`` of the
        exact bank's (it pays: thousands of candidates; a bank of a few hundred stays exact) and (2) the rank-r
        subspace holds at least ``min_energy`` of the candidates' energy. On meg-bench's 5,953-word bank rank 512
        held 99.05 %, and the prefilter gave the same top-1 in every decision checked and the same ranked top 10
        in all but one, a float32 near-tie (README, Banks for many candidates); a bank whose candidates spread
        over more dimensions (random vectors, another representation) stays exact.
        The SVD this needs costs seconds to a minute for 10,000 candidates, once, at build time.

        Raises
        ------
        ConfigError
            If the bank is compressed or already prefiltered.
        """
        if self.basis is not None or self.prefilter_basis is not None:
            raise ConfigError("a prefilter goes on an exact bank; build the exact bank and add it to that one")
        n, d = self.features.shape
        if not 1 <= int(rank) < min(n, d):
            return self, (f"exact: {n} candidates x {d} features are too few for a rank-{rank} prefilter")
        exact = self.macs_per_decision()
        cost = _prefilter_macs(n, d, int(rank), min(n, int(shortlist)))  # before the SVD: it may not pay
        if cost > max_cost * exact:
            return self, (f"exact: a rank-{rank} prefilter would cost {cost / exact:.0%} of exact scoring for {n} "
                          "candidates (it pays from a few thousand)")
        pre = self.with_prefilter(rank, shortlist)
        energy = float(pre.header["prefilter"]["energy"])
        if energy < min_energy:
            return self, (f"exact: rank {rank} holds only {energy:.2%} of the candidates' energy (a prefilter needs "
                          f">= {min_energy:.0%} to keep decisions exact)")
        return pre, (f"prefilter of rank {rank} ({energy:.2%} of the energy), {pre.shortlist} candidates scored "
                     f"exactly: {exact / pre.macs_per_decision():.1f}x fewer MACs per decision")

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
        flat, single = self._flat(z)
        if self.basis is not None:
            flat = flat @ self.basis.T
        s = np.asarray(flat @ self.features.T, dtype=np.float32)
        return s[0] if single else s

    def _flat(self, z: NDArray[np.floating[Any]]) -> tuple[NDArray[np.float32], bool]:
        """Latents checked against the bank's output shape, as rows ``(B, D)``; and whether one latent was given
        (``(F, T)`` or an already flat ``(F*T,)`` vector; ``(B, F, T)`` is a batch)."""
        z = np.asarray(z, dtype=np.float32)
        if z.ndim >= 2 and z.shape[-2:] != tuple(self.header.get("output_shape", z.shape[-2:])):
            raise DataFormatError(
                f"latent shape {z.shape[-2:]} differs from the bank's output shape "
                f"{self.header['output_shape']}"
            )
        return z.reshape(-1, self.dim), z.ndim <= 2

    def topk(
        self, z: NDArray[np.floating[Any]], k: int
    ) -> tuple[NDArray[np.int64], NDArray[np.float32], NDArray[np.float64]]:
        """The ``k`` best candidates of each latent, as :func:`topk_softmax` of :meth:`scores` gives them.

        ``z``: one latent ``(F, T)`` or a batch ``(B, F, T)``; returns ``(B, k)`` arrays (``B`` = 1 for one).
        A prefiltered bank ranks the shortlist's exact scores (ties: lower index first) and its probabilities'
        denominator takes the rank-``r`` scores of the candidates outside the shortlist; any other bank is
        exactly ``topk_softmax(self.scores(z), k)``.
        """
        if self.prefilter_basis is None or self.prefilter_features is None:
            return topk_softmax(self.scores(z), k)
        flat = self._flat(z)[0]
        approx = np.asarray((flat @ self.prefilter_basis.T) @ self.prefilter_features.T, dtype=np.float32)
        n = approx.shape[1]
        m = min(max(self.shortlist, int(k)), n)
        k = min(int(k), n)
        short = np.argpartition(approx, n - m, axis=1)[:, n - m:] if m < n else np.tile(np.arange(n), (len(flat), 1))
        idx = np.empty((len(flat), k), dtype=np.int64)
        best = np.empty((len(flat), k), dtype=np.float32)
        probs = np.empty((len(flat), k), dtype=np.float64)
        for b in range(len(flat)):
            rows = np.sort(short[b])
            exact = np.asarray(self.features[rows] @ flat[b], dtype=np.float32)
            order = np.lexsort((rows, -exact))[:k]  # best first; equal scores: lower index first
            s = approx[b]
            s[rows] = exact
            top = float(s.max())
            denom = float(np.exp(s - top, dtype=np.float32).sum(dtype=np.float64))
            idx[b], best[b] = rows[order], exact[order]
            probs[b] = np.exp(exact[order].astype(np.float64) - top) / denom
        return idx, best, probs

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
        if self.prefilter_basis is not None and self.prefilter_features is not None:
            extra["prefilter_basis"] = self.prefilter_basis.astype(np.float32)
            extra["prefilter_features"] = self.prefilter_features.astype(np.float32)
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
                    features=z["features"],  # laid out by __post_init__ (column-major, or row-major prefiltered)
                    ids=z["ids"], words=z["words"], sounds=z["sounds"], sentences=z["sentences"],
                    sound_times=z["sound_times"], header=header,
                    basis=np.asfortranarray(z["basis"], dtype=np.float32) if "basis" in z.files else None,
                    prefilter_basis=z["prefilter_basis"] if "prefilter_basis" in z.files else None,
                    prefilter_features=z["prefilter_features"] if "prefilter_features" in z.files else None,
                )
        except ArtifactError:
            raise
        except (OSError, KeyError, ValueError, json.JSONDecodeError, EOFError) as exc:
            raise ArtifactError(
                f"candidate bank {str(p)!r} is corrupted or not a neurospeech bank ({exc!r}); rebuild it"
            ) from exc
