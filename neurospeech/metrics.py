"""Retrieval metrics: segment identification and word identity top-k among candidate segments, with chance.

Two different questions, two names:

- *segment identification* (``segment_topk``): is the query's own segment (a word-onset window of a test
  sentence) among the k best candidates? Chance is exactly ``k / n_candidates``.
- *word identity* (``word_topk``): the candidates' softmax probabilities are summed per (case-folded) word and
  the query's word must be among the k most probable words. Words with many candidates ("the", "a") collect
  more probability even from random scores, so chance is far above ``k / n_words``: it is measured
  empirically (:func:`empirical_chance`).

Every accuracy gets a 95 % interval by a bootstrap over test segments (:func:`bootstrap_ci`), and a binomial
p-value against chance where a decision is independent (:func:`binomial_p`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from .errors import DataFormatError
from .scoring import softmax

__all__ = ["binomial_p", "bootstrap_ci", "bootstrap_ratio_ci", "empirical_chance", "rank_of_true",
           "segment_topk", "segment_topk_from_ranks", "word_ranks", "word_topk", "word_topk_from_ranks"]


#: Query rows ranked at a time: the float64 working copies (scores, softmax, per-word sums) are made per block,
#: so ranking needs memory for the caller's score matrix plus a few blocks, not several float64 copies of it
#: (20 000 x 20 000 scores: 1.6 GB as float32; the whole-matrix float64 softmax path peaked at ~4 times that).
ROW_BLOCK = 1024


def _check_shape(scores: NDArray[Any], n_q: int | None = None) -> NDArray[Any]:
    s = np.asarray(scores)
    if s.ndim != 2 or s.shape[0] == 0 or s.shape[1] == 0:
        raise DataFormatError(f"scores must be a non-empty (n_queries, n_candidates) matrix, got {s.shape}")
    if n_q is not None and s.shape[0] != n_q:
        raise DataFormatError(f"scores have {s.shape[0]} rows but {n_q} true labels were given")
    return s


def _row_blocks(s: NDArray[Any]) -> Any:
    """``(rows, float64 block)`` over the rows of ``s``, ``ROW_BLOCK`` at a time, each checked finite."""
    for i in range(0, s.shape[0], ROW_BLOCK):
        b = np.asarray(s[i:i + ROW_BLOCK], dtype=np.float64)
        if not np.all(np.isfinite(b)):
            raise DataFormatError("scores contain NaN or infinite values")
        yield slice(i, i + len(b)), b


def rank_of_true(scores: NDArray[Any], true_index: NDArray[Any]) -> NDArray[np.int64]:
    """0-based rank of each query's true candidate (ties count against it: pessimistic).

    Parameters
    ----------
    scores : array, shape (n_queries, n_candidates)
    true_index : array of int, shape (n_queries,)
    """
    idx = np.asarray(true_index)
    s = _check_shape(scores, len(idx))
    if idx.dtype.kind not in "iu" or np.any(idx < 0) or np.any(idx >= s.shape[1]):
        raise DataFormatError(
            f"true_index must be integers in [0, {s.shape[1]}), got range "
            f"[{idx.min() if idx.size else None}, {idx.max() if idx.size else None}]"
        )
    ranks = np.empty(len(idx), dtype=np.int64)
    for rows, b in _row_blocks(s):
        true = b[np.arange(len(b)), idx[rows]][:, None]
        ranks[rows] = (b >= true).sum(axis=1) - 1
    return ranks


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
    return segment_topk_from_ranks(rank_of_true(scores, true_index), int(np.shape(scores)[1]), ks)


def segment_topk_from_ranks(ranks: NDArray[Any], n_candidates: int, ks: tuple[int, ...] = (1, 10)
                            ) -> dict[str, Any]:
    """:func:`segment_topk` from the 0-based ranks of :func:`rank_of_true` (shape ``(n_queries,)``), so that
    subsets of queries are scored without ranking their rows again."""
    ranks = np.asarray(ranks)
    n_c = int(n_candidates)
    out: dict[str, Any] = {"n_queries": len(ranks), "n_candidates": n_c}
    for k in ks:
        out[f"top{k}"] = float(np.mean(ranks < k))
        out[f"chance_top{k}"] = min(k, n_c) / n_c
    out["median_rank"] = float(np.median(ranks + 1))
    out["mean_reciprocal_rank"] = float(np.mean(1.0 / (ranks + 1)))
    return out


def word_ranks(scores: NDArray[Any], candidate_words: NDArray[Any], true_words: NDArray[Any]
               ) -> tuple[NDArray[np.int64], int]:
    """0-based rank of each query's (case-folded) word by summed softmax probability, and the vocabulary size.

    Ties count against the true word (pessimistic).
    """
    tw = np.asarray([str(w).casefold() for w in np.asarray(true_words).astype(str).tolist()], dtype=str)
    s = _check_shape(scores, len(tw))
    cw = np.asarray(candidate_words).astype(str)
    if cw.shape != (s.shape[1],):
        raise DataFormatError(f"candidate_words has shape {cw.shape}, expected ({s.shape[1]},)")
    cw = np.asarray([w.casefold() for w in cw.tolist()], dtype=str)
    vocab, inv = np.unique(cw, return_inverse=True)
    missing = sorted(set(tw) - set(vocab))
    if missing:
        raise DataFormatError(f"true words not among the candidates' words: {missing[:10]}")
    true_col = np.searchsorted(vocab, tw)
    ranks = np.empty(len(tw), dtype=np.int64)
    for rows, b in _row_blocks(s):
        p = softmax(b, axis=1)
        pw = np.zeros((len(b), len(vocab)))
        np.add.at(pw.T, inv, p.T)  # pw[:, w] = sum of p over candidates of word w
        true_p = pw[np.arange(len(b)), true_col[rows]][:, None]
        ranks[rows] = (pw > true_p).sum(axis=1) + ((pw == true_p).sum(axis=1) - 1)
    return ranks, len(vocab)


def word_topk(
    scores: NDArray[Any], candidate_words: NDArray[Any], true_words: NDArray[Any], k: int = 10
) -> dict[str, Any]:
    """Word identity top-k: softmax over candidates, probabilities summed per case-folded word.

    Parameters
    ----------
    scores : array, shape (n_queries, n_candidates)
    candidate_words : array of str, shape (n_candidates,)
    true_words : array of str, shape (n_queries,)
    k : int

    Returns
    -------
    dict
        ``top1``, ``top{k}``, ``naive_chance_top1``, ``naive_chance_top{k}`` (k / n_words: *not* the chance of
        this metric, see :func:`empirical_chance`), ``n_queries``, ``n_words``.
    """
    return word_topk_from_ranks(*word_ranks(scores, candidate_words, true_words), k=k)


def word_topk_from_ranks(ranks: NDArray[Any], n_words: int, k: int = 10) -> dict[str, Any]:
    """:func:`word_topk` from the 0-based word ranks and vocabulary size of :func:`word_ranks` (ranks shape
    ``(n_queries,)``), so that subsets of queries are scored without ranking their rows again."""
    ranks = np.asarray(ranks)
    out: dict[str, Any] = {"n_queries": len(ranks), "n_words": int(n_words)}
    for kk in sorted({1, int(k)}):
        out[f"top{kk}"] = float(np.mean(ranks < kk))
        out[f"naive_chance_top{kk}"] = min(kk, n_words) / n_words
    return out


def bootstrap_ci(hits: NDArray[Any], groups: NDArray[Any] | None = None, n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of a mean, resampling whole groups (test segments) with replacement.

    Parameters
    ----------
    hits : array, shape (n,)
        Per-query values (1/0 for an accuracy).
    groups : array, shape (n,) or None
        Group of each query (e.g. the true segment: queries of one segment from several subjects are not
        independent); None: every query is its own group.
    n_boot : int
        Bootstrap resamples.
    level : float
        Coverage.

    Returns
    -------
    lo, hi : float
    """
    h = np.asarray(hits, dtype=np.float64)
    if h.ndim != 1 or h.size == 0:
        raise DataFormatError(f"hits must be a non-empty 1-D array, got shape {h.shape}")
    g = np.arange(len(h)) if groups is None else np.unique(np.asarray(groups), return_inverse=True)[1]
    if len(g) != len(h):
        raise DataFormatError(f"groups has {len(g)} entries, hits {len(h)}")
    n_g = int(g.max()) + 1
    sums = np.bincount(g, weights=h, minlength=n_g)
    counts = np.bincount(g, minlength=n_g).astype(np.float64)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_g, size=(n_boot, n_g))
    means = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    a = (1 - level) / 2
    return float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


def bootstrap_ratio_ci(hits_a: NDArray[Any], hits_b: NDArray[Any], groups: NDArray[Any] | None = None,
                       n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Paired percentile-bootstrap interval of ``mean(hits_a) / mean(hits_b)`` (same queries, groups resampled).

    Resamples where ``hits_b`` averages to 0 give an infinite ratio (the upper bound may be ``inf``).
    """
    a = np.asarray(hits_a, dtype=np.float64)
    b = np.asarray(hits_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise DataFormatError(f"hits_a {a.shape} and hits_b {b.shape} must be the same non-empty 1-D shape")
    g = np.arange(len(a)) if groups is None else np.unique(np.asarray(groups), return_inverse=True)[1]
    n_g = int(g.max()) + 1
    sa, sb = np.bincount(g, weights=a, minlength=n_g), np.bincount(g, weights=b, minlength=n_g)
    draws = np.random.default_rng(seed).integers(0, n_g, size=(n_boot, n_g))
    num, den = sa[draws].sum(axis=1), sb[draws].sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(den > 0, num / np.where(den > 0, den, 1), np.inf)
    q = (1 - level) / 2
    return float(np.quantile(r, q)), float(np.quantile(r, 1 - q))


def binomial_p(successes: int, n: int, chance: float) -> float:
    """One-sided binomial p-value of ``successes`` or more out of ``n`` at success probability ``chance``."""
    from scipy.stats import binomtest

    if n <= 0:
        return float("nan")
    return float(binomtest(int(successes), int(n), min(max(float(chance), 0.0), 1.0),
                           alternative="greater").pvalue)


def empirical_chance(metric: Any, shape: tuple[int, int], n_draws: int = 200, seed: int = 0,
                     level: float = 0.95) -> dict[str, float]:
    """Distribution of a metric under random (standard-normal) scores.

    Parameters
    ----------
    metric : callable
        ``scores (n_queries, n_candidates) -> float``.
    shape : (n_queries, n_candidates)
    n_draws : int
        Random score matrices drawn.

    Returns
    -------
    dict
        ``mean``, ``lo``, ``hi`` (the central ``level`` interval of the draws), ``n_draws``.
    """
    rng = np.random.default_rng(seed)
    vals = np.array([metric(rng.standard_normal(shape).astype(np.float32)) for _ in range(int(n_draws))])
    a = (1 - level) / 2
    return {"mean": float(vals.mean()), "lo": float(np.quantile(vals, a)), "hi": float(np.quantile(vals, 1 - a)),
            "n_draws": int(n_draws)}
