"""``neurospeech listen``: print decoded words live, with running accuracy when the messages carry the truth.

Accuracy is counted over decode messages whose ``truth`` is not null (the service sets it on word-locked
decisions when a replay marker stream names the segment): top-1 / top-10 = the true ``segment_id`` is the
first / among the first ten candidates; word top-1 = the first candidate's word equals the true word.
Several listeners can run at once (each is an independent ZeroMQ subscriber).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from ..service.client import Subscriber
from ..service.messages import Message

__all__ = ["Accuracy", "ListenSettings", "accuracy_stats", "format_decode", "format_status", "listen"]

log = logging.getLogger(__name__)


def accuracy_stats(hits: int, n: int, k: int, n_candidates: int | None, confidence: float = 0.95) -> dict[str, Any]:
    """Running top-``k`` accuracy with its chance level and a Wilson score interval.

    Parameters
    ----------
    hits, n : int
        Decisions whose true segment was among the first ``k`` candidates, and decisions with a truth.
    k : int
        The ``k`` of top-k.
    n_candidates : int or None
        Candidates in the bank (the state endpoint's ``model.n_candidates``); None: chance unknown.
    confidence : float
        Level of the interval.

    Returns
    -------
    dict
        ``k``, ``hits``, ``n``, ``rate`` (None when ``n == 0``), ``ci`` ([low, high], Wilson score interval,
        :meth:`scipy.stats.binomtest.proportion_ci`), ``chance`` (``k / n_candidates``: a uniform guess among
        the bank's candidates) and ``p_vs_chance`` (one-sided exact binomial test of ``rate > chance``).
    """
    from scipy.stats import binomtest

    chance = None if not n_candidates else min(k, int(n_candidates)) / int(n_candidates)
    out: dict[str, Any] = {"k": int(k), "hits": int(hits), "n": int(n), "rate": None, "ci": None,
                           "chance": chance, "p_vs_chance": None, "confidence": confidence}
    if n > 0:
        test = binomtest(int(hits), int(n))
        ci = test.proportion_ci(confidence_level=confidence, method="wilson")
        out["rate"] = hits / n
        out["ci"] = [float(ci.low), float(ci.high)]
        if chance is not None and 0 < chance < 1:
            out["p_vs_chance"] = float(binomtest(int(hits), int(n), chance, alternative="greater").pvalue)
    return out


def format_rate(st: dict[str, Any]) -> str:
    """``'top1 3/10 (30%, 95% CI 11-60%, chance 0.4%)'`` from :func:`accuracy_stats`."""
    if not st["n"]:
        return f"top{st['k']} -"
    lo, hi = st["ci"]
    chance = "chance ?" if st["chance"] is None else f"chance {_pct(st['chance'])}"
    return (f"top{st['k']} {st['hits']}/{st['n']} ({_pct(st['rate'])}, "
            f"{round(100 * st['confidence'])}% CI {_pct(lo, False)}-{_pct(hi)}, {chance})")


def _pct(x: float, sign: bool = True) -> str:
    v = 100 * x
    digits = 0 if v >= 10 or v == 0 else (1 if v >= 1 else 2)
    return f"{v:.{digits}f}" + ("%" if sign else "")


@dataclass
class Accuracy:
    """Running segment top-1/top-10 and word top-1 over messages with ground truth, per decision kind."""

    n: dict[str, int] = field(default_factory=dict)
    top1: dict[str, int] = field(default_factory=dict)
    top10: dict[str, int] = field(default_factory=dict)
    word1: dict[str, int] = field(default_factory=dict)

    def update(self, header: dict[str, Any]) -> dict[str, bool] | None:
        """Count one decode header; returns ``{'top1', 'top10', 'word1'}`` hits, or None without truth."""
        truth = header.get("truth")
        if not isinstance(truth, dict) or not truth.get("segment_id"):
            return None
        kind = str(header.get("kind", "?"))
        ids = [c.get("id") for c in header.get("topk") or [] if isinstance(c, dict)]
        words = [c.get("word") for c in header.get("topk") or [] if isinstance(c, dict)]
        hit = {"top1": bool(ids) and ids[0] == truth["segment_id"],
               "top10": truth["segment_id"] in ids[:10],
               "word1": bool(words) and truth.get("word") is not None and words[0] == truth.get("word")}
        for key, d in (("n", self.n), ("top1", self.top1), ("top10", self.top10), ("word1", self.word1)):
            d[kind] = d.get(kind, 0) + (1 if key == "n" else int(hit[key]))
        return hit

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for kind, n in self.n.items():
            out[kind] = {"n": n, "top1": self.top1[kind] / n, "top10": self.top10[kind] / n,
                         "word_top1": self.word1[kind] / n}
        return out

    def line(self) -> str:
        parts = []
        for kind, n in sorted(self.n.items()):
            parts.append(f"{kind}: top1 {self.top1[kind]}/{n} ({100 * self.top1[kind] / n:.0f}%) "
                         f"top10 {self.top10[kind]}/{n} ({100 * self.top10[kind] / n:.0f}%)")
        return "; ".join(parts)


def format_decode(msg: Message, hit: dict[str, bool] | None, acc: Accuracy, k: int = 3) -> str:
    """One human-readable line for a decode message."""
    h = msg.header
    cands = [c for c in h.get("topk") or [] if isinstance(c, dict)][:k]
    best = " | ".join(f"{c.get('word') or c.get('id')} {100 * float(c.get('prob') or 0):.0f}%" for c in cands)
    lat = msg.latency
    lat_s = f" lat {1000 * lat:.1f} ms" if lat is not None else ""
    flags = f" flags {','.join(h['flags'])}" if h.get("flags") else ""
    truth = ""
    if hit is not None:
        mark = "OK " if hit["top1"] else ("top10" if hit["top10"] else "miss")
        truth = f"  truth '{h['truth'].get('word', '')}' [{mark}]  {acc.line()}"
    return f"#{msg.seq} {h.get('kind', '?'):7s} {best}{truth}{lat_s}{flags}"


def format_status(msg: Message) -> str:
    h = msg.header
    stream = h.get("stream") or {}
    return (f"status #{msg.seq}: {h.get('state')} stream {stream.get('name')!r} lag {h.get('lag_s')} s "
            f"buffer {h.get('buffer_fill')} dropped samples {h.get('dropped_samples')} "
            f"skipped {h.get('skipped_decisions')} subscribers {h.get('subscribers')} "
            f"slow-subscriber events {h.get('slow_subscriber_events')} uptime {h.get('uptime_s')} s")


@dataclass
class ListenSettings:
    endpoint: str = "tcp://127.0.0.1:5556"
    state_endpoint: str | None = None
    show_status: bool = False
    as_json: bool = False
    count: int | None = None          # stop after this many decode messages
    duration: float | None = None     # stop after this many seconds
    topk: int = 3
    curve_secret_key: str | None = None
    curve_server_key: str | None = None


def listen(settings: ListenSettings, out: TextIO | None = None,
           should_stop: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Subscribe and print until ``count``/``duration``/Ctrl-C; returns a summary (accuracy, counts, gaps)."""
    out = out or sys.stdout
    acc = Accuracy()
    n_decode = 0
    latencies: list[float] = []

    def emit(text: str) -> None:
        out.write(text + "\n")
        out.flush()

    with Subscriber(settings.endpoint, state_endpoint=settings.state_endpoint,
                    curve_secret_key=settings.curve_secret_key,
                    curve_server_key=settings.curve_server_key) as sub:
        if settings.state_endpoint:
            st = sub.state()
            model = st.get("model") or {}
            status = st.get("status") or {}
            if settings.as_json:
                emit(json.dumps({"type": "state", "state": st}))
            else:
                emit(f"service: model {model.get('model_id')} ({str(model.get('model_sha256'))[:12]}) "
                     f"state {status.get('state', 'unknown')}")
        end = None
        import pylsl

        if settings.duration is not None:
            end = pylsl.local_clock() + settings.duration
        try:
            while True:
                if should_stop is not None and should_stop():
                    break
                if settings.count is not None and n_decode >= settings.count:
                    break
                left = None if end is None else end - pylsl.local_clock()
                if left is not None and left <= 0:
                    break
                msg = sub.recv(timeout=0.2 if left is None else min(0.2, left))
                if msg is None:
                    continue
                if msg.missed:
                    emit(f"!! lost {msg.missed} {msg.kind} message(s) before #{msg.seq}"
                         if not settings.as_json else json.dumps({"type": "gap", "kind": msg.kind,
                                                                   "missed": msg.missed, "seq": msg.seq}))
                if msg.kind == "decode":
                    n_decode += 1
                    hit = acc.update(msg.header)
                    if msg.latency is not None:
                        latencies.append(msg.latency)
                    if settings.as_json:
                        top = [c.get("id") for c in (msg.get("topk") or [])[:settings.topk]]
                        emit(json.dumps({"type": "decode", "seq": msg.seq, "kind": msg.get("kind"),
                                         "hit": hit, "latency": msg.latency, "t": msg.t_received,
                                         "top": top}))
                    else:
                        emit(format_decode(msg, hit, acc, settings.topk))
                elif msg.kind == "status" and settings.show_status:
                    emit(json.dumps({"type": "status", "header": msg.header}) if settings.as_json
                         else format_status(msg))
        except KeyboardInterrupt:
            pass
        stats = sub.stats()
    summary = {"decode_messages": n_decode, "accuracy": acc.summary(), "subscriber": stats}
    if latencies:
        import numpy as np

        lat = np.asarray(latencies) * 1000
        summary["latency_ms"] = {"p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)),
                                 "n": len(lat)}
    lost = sum(stats["missed"].values())
    emit(json.dumps({"type": "summary", **summary}) if settings.as_json
         else f"summary: {n_decode} decode messages, lost {lost}; {acc.line() or 'no truth'}")
    return summary
