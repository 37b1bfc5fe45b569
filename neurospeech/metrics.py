"""Retrieval metrics: segment-level and word-level top-k accuracy among candidate segments."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from .errors import DataFormatError
from .scoring import softmax

__all__ = ["rank_of_true", "segment_topk", "word_topk"]


def _check_scores(scores: NDArray[Any], n_q: int | None = None) -> NDArray[np.float64]:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] == 0 or s.shape[1] == 0:
        raise DataFormatError(f"scores must be a non-empty (n_queries, n_candidates) matrix, got {s.shape}")
    if n_q is not None and s.shape[0] != n_q:
        raise DataFormatError(f"scores have {s.shape[0]} rows but {n_q} true labels were given")
    if not np.all(np.isfinite(s)):
        raise DataFormatError("scores contain NaN or infinite values")
    return s


def rank_of_true(scores: NDArray[Any], true_index: NDArray[Any]) -> NDArray[np.int64]:
    """0-based rank of each query's true candidate (ties count against it: pessimistic).

    Parameters
    ----------
    scores : array, shape (n_queries, n_candidates)
    true_index : array of int, shape (n_queries,)
    """
    idx = np.asarray(true_index)
    s = _check_scores(scores, len(idx))
    if idx.dtype.kind not in "iu" or np.any(idx < 0) or np.any(idx >= s.shape[1]):
        raise DataFormatError(
            f"true_index must be integers in [0, {s.shape[1]}), got range "
            f"[{idx.min() if idx.size else None}, {idx.max() if idx.size else None}]"
        )
    true = s[np.arange(len(idx)), idx][:, None]
    return ((s >= true).sum(axis=1) - 1).astype(np.int64)


def segment_topk(
    scores: NDArray[Any], true_index: NDArray[Any], ks: tuple[int, ...] = (1, 10)
) -> dict[str, Any]:
    """Top-k segment accuracy: how often the true segment ranks among the k best candidates.

    Parameters
    ----------
    scores : array, shape (n_queries, n_candidates)
        Higher is better.
    true_index : array of int, shape (n_queries,)
        Column of each query's true candidate.
    ks : tuple of int
        The k values.

    Returns
    -------
    dict
        ``top{k}`` and ``chance_top{k}`` for each k, ``n_queries``, ``n_candidates``, ``median_rank``
        (1-based), ``mean_reciprocal_rank``.
    """
    ranks = rank_of_true(scores, true_index)
    n_q, n_c = np.shape(scores)
    out: dict[str, Any] = {"n_queries": int(n_q), "n_candidates": int(n_c)}
    for k in ks:
        out[f"top{k}"] = float(np.mean(ranks < k))
        out[f"chance_top{k}"] = min(k, n_c) / n_c
    out["median_rank"] = float(np.median(ranks + 1))
    out["mean_reciprocal_rank"] = float(np.mean(1.0 / (ranks + 1)))
    return out


def word_topk(
    scores: NDArray[Any], candidate_words: NDArray[Any], true_words: NDArray[Any], k: int = 10
) -> dict[str, Any]:
    """Word-level top-k: softmax over candidates, probabilities summed per word, true word among the k best.

    Parameters
    ----------
    scores : array, shape (n_queries, n_candidates)
    candidate_words : array of str, shape (n_candidates,)
    true_words : array of str, shape (n_queries,)
    k : int

    Returns
    -------
    dict
        ``top1``, ``top{k}``, ``chance_top1``, ``chance_top{k}`` (k / n_words), ``n_queries``, ``n_words``.
    """
    tw = np.asarray(true_words).astype(str)
    s = _check_scores(scores, len(tw))
    cw = np.asarray(candidate_words).astype(str)
    if cw.shape != (s.shape[1],):
        raise DataFormatError(f"candidate_words has shape {cw.shape}, expected ({s.shape[1]},)")
    vocab, inv = np.unique(cw, return_inverse=True)
    missing = sorted(set(tw) - set(vocab))
    if missing:
        raise DataFormatError(f"true words not among the candidates' words: {missing[:10]}")
    p = softmax(s, axis=1)
    pw = np.zeros((s.shape[0], len(vocab)))
    np.add.at(pw.T, inv, p.T)  # pw[:, w] = sum of p over candidates of word w
    true_col = np.searchsorted(vocab, tw)
    true_p = pw[np.arange(len(tw)), true_col][:, None]
    ranks = (pw > true_p).sum(axis=1) + ((pw == true_p).sum(axis=1) - 1)
    out: dict[str, Any] = {"n_queries": len(tw), "n_words": len(vocab)}
    for kk in sorted({1, int(k)}):
        out[f"top{kk}"] = float(np.mean(ranks < kk))
        out[f"chance_top{kk}"] = min(kk, len(vocab)) / len(vocab)
    return out
