"""Early word decisions: what part of a word-locked window exists at ``onset + delay`` (no torch here).

A word-locked window spans ``tmin .. tmax`` around the word onset (-0.5 .. 2.5 s); the model sees the samples
from ``tmin + lag`` on (343 at 120 Hz). At ``onset + delay`` only the samples with time ``<= delay`` exist.
An *early* window is the full-length model input with the samples not yet seen set to NaN: a model trained
for early decisions (contract key ``early_decisions``) replaces them, inside its graph, by a learned "unseen"
vector (:class:`neurospeech.models.encoder.BrainEncoder`), so the unseen part is masked in a way the model
knows, never silently zero-filled. A model without that key must never receive NaN
(:func:`supports_early`): the service publishes early decisions only for models that declare them.

Offline (``evaluate``) and online (the service's scheduler, ``decode-file``) cut early windows the same way:
:func:`mask_unseen` on the preprocessed full-length input, which equals the input available at
``onset + delay`` because every preprocessing step after the (causal) resampler is per sample and the
baseline interval (-0.5 .. 0 s) lies before the onset.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .errors import ConfigError
from .preprocessing import WindowSpec

__all__ = [
    "CONTRACT_KEY",
    "DEFAULT_DELAYS",
    "UNSEEN_MARKER",
    "check_delays",
    "contract_entry",
    "curve_markdown",
    "delay_curve",
    "delays_of",
    "mask_unseen",
    "n_seen",
    "seen_share",
    "separation_for_topk",
    "supports_early",
    "topk_at_separation",
]

DEFAULT_DELAYS: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0)
CONTRACT_KEY = "early_decisions"
UNSEEN_MARKER = "nan"


def n_seen(window: WindowSpec, delay: float) -> int:
    """Model-input samples that exist at ``onset + delay`` seconds.

    Parameters
    ----------
    window : WindowSpec
        Window geometry (the model input starts at ``tmin + lag``).
    delay : float
        Seconds after the word onset; ``>= window.tmax`` gives the whole window.

    Returns
    -------
    int
        Number of leading samples of the ``(C, window.n_times)`` input with time ``<= delay`` (0 .. n_times).
    """
    if not math.isfinite(delay):
        raise ConfigError(f"decision delay must be a finite number of seconds, got {delay!r}")
    t0 = window.tmin + window.lag  # time of the first model-input sample
    k = math.floor((delay - t0) * window.sfreq + 1e-9) + 1
    return int(min(max(k, 0), window.n_times))


def seen_share(window: WindowSpec, delay: float) -> float:
    """Share of the model input that exists at ``onset + delay`` (``n_seen / n_times``; 1 for the full window)."""
    return n_seen(window, delay) / window.n_times


# Evidence-limited reference for the accuracy-vs-delay curve. Model: equal-variance Gaussian signal detection. For
# one query, each wrong candidate's score is N(0, 1) and the true one's N(d', 1), independently (scores in units of
# the wrong candidates' spread). If evidence accrues uniformly over the window (independent noise per sample, a
# signal spread evenly over the speech), seeing a share f of the window scales d' by sqrt(f). Fitting d' to the
# full window's top-k then predicts every delay's top-k with no free parameter; and inverting the measured top-k
# gives the evidence share a decoder actually used: (d'(delay) / d'(full))**2.
_D_MAX = 12.0  # top-k is 1 to double precision far below this separation for any bank size used here


def topk_at_separation(d_prime: float, n_candidates: int, k: int = 10) -> float:
    """P(true candidate ranks in the top ``k`` of ``n_candidates``) at separation ``d_prime`` (model above).

    ``P = integral phi(x - d') * P[Binomial(n - 1, Q(x)) <= k - 1] dx`` with ``Q`` the normal tail.
    """
    from scipy import stats

    if n_candidates < 1 or k < 1:
        raise ConfigError(f"top-k needs n_candidates >= 1 and k >= 1, got {n_candidates} and {k}")
    if k >= n_candidates:
        return 1.0
    x = np.linspace(d_prime - 10.0, d_prime + 10.0, 8001)
    integrand = stats.norm.pdf(x - d_prime) * stats.binom.cdf(k - 1, n_candidates - 1, stats.norm.sf(x))
    return float(np.clip(integrand.sum() * (x[1] - x[0]), 0.0, 1.0))


def separation_for_topk(topk: float, n_candidates: int, k: int = 10) -> float:
    """The ``d'`` whose top-``k`` accuracy is ``topk`` (inverse of :func:`topk_at_separation`).

    Returns 0 at or below chance (``k / n_candidates``) and NaN where the accuracy is too close to 1 to invert.
    """
    from scipy import optimize

    if not 0.0 <= topk <= 1.0:
        raise ConfigError(f"top-{k} accuracy must be in [0, 1], got {topk!r}")
    if topk <= topk_at_separation(0.0, n_candidates, k):
        return 0.0
    if topk >= topk_at_separation(_D_MAX, n_candidates, k):
        return float("nan")
    return float(optimize.brentq(lambda d: topk_at_separation(d, n_candidates, k) - topk, 0.0, _D_MAX,
                                 xtol=1e-6))


def check_delays(delays: Iterable[float], window: WindowSpec | None = None) -> tuple[float, ...]:
    """Validated, sorted, distinct decision delays (``ConfigError`` naming the bad value and the fix)."""
    out = []
    for d in delays:
        try:
            v = float(d)
        except (TypeError, ValueError):
            raise ConfigError(f"decision delay {d!r} is not a number; give seconds after the word onset, "
                              f"e.g. {list(DEFAULT_DELAYS)}") from None
        hi = window.tmax if window is not None else math.inf
        if not (math.isfinite(v) and 0 < v < hi):
            raise ConfigError(f"decision delay {v!r} s must be > 0 and below the window end ({hi} s); "
                              f"e.g. {list(DEFAULT_DELAYS)}")
        out.append(v)
    return tuple(sorted(set(out)))


def mask_unseen(x: NDArray[Any], window: WindowSpec, delay: float) -> NDArray[np.float32]:
    """Copy of the model input with the samples after ``onset + delay`` set to NaN (the unseen marker).

    Parameters
    ----------
    x : array, shape (..., n_channels, n_times)
        Preprocessed full-length model input(s) (``n_times == window.n_times``).
    window : WindowSpec
    delay : float
        Seconds after the word onset.

    Returns
    -------
    array, shape (..., n_channels, n_times), float32
    """
    a = np.array(x, dtype=np.float32, copy=True)
    if a.ndim < 2 or a.shape[-1] != window.n_times:
        raise ConfigError(f"early window: expected (..., channels, {window.n_times}) samples, got {a.shape}")
    a[..., n_seen(window, delay):] = np.nan
    return a


def contract_entry(delays: Iterable[float] = DEFAULT_DELAYS) -> dict[str, Any]:
    """The contract's ``early_decisions`` value for a model trained for early decisions."""
    return {
        "supported": True,
        "delays_s": [float(d) for d in check_delays(delays)],
        "unseen": UNSEEN_MARKER,
        "doc": "input samples after onset + delay are NaN; the model replaces them by a learned unseen "
               "vector (neurospeech.early.mask_unseen)",
    }


def _entry(contract: Any) -> Mapping[str, Any] | None:
    entry = contract.get(CONTRACT_KEY) if isinstance(contract, Mapping) else getattr(contract, CONTRACT_KEY, None)
    return entry if isinstance(entry, Mapping) and entry.get("supported") is True else None


def supports_early(contract: Any) -> bool:
    """True when a contract (``ModelContract`` or its dict) declares early-decision support."""
    return _entry(contract) is not None


def delays_of(contract: Any) -> tuple[float, ...]:
    """Decision delays a contract declares (empty for a model without early decisions)."""
    entry = _entry(contract)
    return () if entry is None else check_delays(entry.get("delays_s", DEFAULT_DELAYS))


def delay_curve(ranks: Mapping[float, NDArray[Any]], groups: NDArray[Any], n_candidates: int,
                n_boot: int = 1000, seed: int = 0, window: WindowSpec | None = None) -> list[dict[str, Any]]:
    """Accuracy vs decision delay, with 95 % bootstrap intervals over test segments.

    Parameters
    ----------
    ranks : mapping of float to array, shape (n_queries,)
        Per decision delay (s after the onset; the largest is the full window), the rank of the true segment
        of each query (0 = best), the same queries at every delay.
    groups : array, shape (n_queries,)
        Test segment of each query (bootstrap groups).
    n_candidates : int
        Candidates ranked (chance of top-k is k / n_candidates).
    window : WindowSpec, optional
        The window geometry. With it each row also gets the evidence-limited reference (see
        :func:`topk_at_separation`): ``seen_share`` (share of the model input seen at that delay),
        ``uniform_evidence_of_full`` (the top-10, as a share of the full window's, that a decoder extracting
        evidence uniformly over the window would reach) and ``implied_evidence_share`` (the evidence share the
        measured top-10 corresponds to); either is None where the model cannot give it.

    Returns
    -------
    list of dict
        One row per delay, in increasing order: ``delay_s``, ``top1``, ``top1_ci``, ``top10``, ``top10_ci``,
        ``chance_top10``, ``of_full_top10`` (top-10 / the full window's top-10) with ``of_full_top10_ci`` (paired
        bootstrap), ``n_queries``, and the three keys above when ``window`` is given.
    """
    from .metrics import bootstrap_ci, bootstrap_ratio_ci

    if not ranks:
        raise ConfigError("delay_curve needs the ranks of at least one decision delay")
    delays = sorted(ranks)
    full_hits = np.asarray(ranks[delays[-1]]) < 10
    rows = []
    for d in delays:
        r = np.asarray(ranks[d])
        hits10 = r < 10
        row: dict[str, Any] = {"delay_s": float(d), "n_queries": len(r),
                               "chance_top10": min(10, n_candidates) / n_candidates}
        for k, h in ((1, r < 1), (10, hits10)):
            row[f"top{k}"] = float(np.mean(h))
            row[f"top{k}_ci"] = list(bootstrap_ci(h, groups, n_boot, seed))
        base = float(np.mean(full_hits))
        row["of_full_top10"] = row["top10"] / base if base > 0 else float("nan")
        row["of_full_top10_ci"] = list(bootstrap_ratio_ci(hits10, full_hits, groups, n_boot, seed))
        rows.append(row)
    if window is not None:
        _add_evidence_reference(rows, window, n_candidates)
    return rows


def _add_evidence_reference(rows: list[dict[str, Any]], window: WindowSpec, n_candidates: int) -> None:
    """Add ``seen_share``, ``uniform_evidence_of_full``, ``implied_evidence_share`` to :func:`delay_curve` rows.

    A value the model cannot give (no full-window hit, a top-10 of 1, at most 10 candidates) is None, so that the
    rows stay comparable and JSON-safe."""
    full = rows[-1]["top10"]
    d_full = separation_for_topk(full, n_candidates)
    ok = 0 < full and 0 < d_full < math.inf  # NaN compares False
    for row in rows:
        f = 1.0 if row is rows[-1] else seen_share(window, row["delay_s"])
        row["seen_share"] = f
        row["uniform_evidence_of_full"] = (
            topk_at_separation(d_full * math.sqrt(f), n_candidates) / full if ok else None)
        d = separation_for_topk(row["top10"], n_candidates)
        row["implied_evidence_share"] = (d / d_full) ** 2 if ok and math.isfinite(d) else None


def curve_markdown(curves: Mapping[str, list[dict[str, Any]]], full_label: str = "full") -> list[str]:
    """Markdown table of :func:`delay_curve` rows per method: top-10 % [95 % CI] per delay, and % of full."""
    if not curves:
        return []
    delays = [r["delay_s"] for r in next(iter(curves.values()))]
    head = [f"onset + {d:g} s" + (f" ({full_label})" if i == len(delays) - 1 else "") for i, d in enumerate(delays)]
    lines = ["| method | " + " | ".join(head) + " |", "|---|" + "---|" * len(delays)]

    def pc(v: float | None) -> str:
        return f"{100 * v:.1f}" if v is not None and math.isfinite(v) else "n/a"

    for name, rows in curves.items():
        cells = [f"{pc(r['top10'])} [{pc(r['top10_ci'][0])}, {pc(r['top10_ci'][1])}]" for r in rows]
        lines.append(f"| {name}: segment top-10 % | " + " | ".join(cells) + " |")
        cells = [f"{pc(r['of_full_top10'])} [{pc(r['of_full_top10_ci'][0])}, {pc(r['of_full_top10_ci'][1])}]"
                 for r in rows]
        lines.append(f"| {name}: % of full-window top-10 | " + " | ".join(cells) + " |")
        cells = [f"{pc(r['top1'])} [{pc(r['top1_ci'][0])}, {pc(r['top1_ci'][1])}]" for r in rows]
        lines.append(f"| {name}: segment top-1 % | " + " | ".join(cells) + " |")
        if "uniform_evidence_of_full" in rows[0]:
            lines.append(f"| {name}: uniform-evidence reference, % of full-window top-10 | "
                         + " | ".join(pc(r["uniform_evidence_of_full"]) for r in rows) + " |")
            lines.append(f"| {name}: evidence share implied by the top-10 % | "
                         + " | ".join(pc(r["implied_evidence_share"]) for r in rows) + " |")
    first = next(iter(curves.values()))
    if "seen_share" in first[0]:
        lines.append("| share of the window seen % | " + " | ".join(pc(r["seen_share"]) for r in first) + " |")
    lines.append("| chance top-10 % | " + " | ".join(pc(first[0]["chance_top10"]) for _ in delays) + " |")
    return lines
