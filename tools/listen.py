"""``neurospeech listen``: print decoded words live, with running accuracy when the messages carry the truth.

Accuracy is counted over decode messages whose ``truth`` is not null (the service sets it on word-locked
decisions when a replay marker stream names the segment): top-1 / top-10 = the true ``segment_id`` is the
first / among the first ten candidates; word top-1 = the first candidate's word equals the true word.
Each running accuracy is printed with its chance level (``k / N`` for ``N`` bank candidates, from the state
endpoint's ``model.n_candidates`` or ``--candidates``) and a 95 % Wilson interval. With ``--loop`` (the replay
loops) accuracy is also counted per pass: a pass ends when a word's true segment comes again. A line is
printed when no message arrives for ``--wait`` seconds (service down, wrong endpoint), and again when the
service answers. Several listeners can run at once (each is an independent ZeroMQ subscriber).

Early decisions (a model trained with ``early_decisions``; the service's ``word_early`` topic): provisional
word decisions at word onset + 0.5, 1.0, 1.5, 2.0 s are printed as indented ``~ +1.0s so far ...`` lines (their
top candidates), and the word's final line then lists how the top candidate firmed up
(``early +0.5s w1 > +1.0s w2 > ... final w2``); an early decision belongs to the final decision with the same
window start (``t_window_start``; both cut the same window). Their accuracy is counted per delay, apart from
the word-locked accuracy, with the share of provisional top-1 equal to the final top-1. ``--no-early``
(``ListenSettings.early=False``) does not subscribe to them at all: the output is what it was before early
decisions existed.
"""

from __future__ import annotations

import json
import logging
import sys
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from ..errors import ConfigError, TransportError
from ..service.client import Subscriber
from ..service.messages import Message

__all__ = ["Accuracy", "EarlyTrail", "ListenSettings", "accuracy_stats", "format_decode", "format_early",
           "format_status", "listen"]

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
        ``k``, ``hits``, ``n``, ``rate`` (None when ``n == 0``), ``ci`` ([low, high]: the Wilson score interval,
        in closed form with ``z`` from :func:`scipy.stats.norm.ppf`; the same numbers as
        ``scipy.stats.binomtest(hits, n).proportion_ci(confidence, method='wilson')``, which the tests check, at
        a fraction of its cost: binomtest also computes a two-sided p-value, ~7 ms for n = 700), ``chance``
        (``k / n_candidates``: a uniform guess among the bank's candidates) and ``p_vs_chance`` (one-sided exact
        binomial test of ``rate > chance``: :func:`scipy.stats.binom.sf`).
    """
    import math

    from scipy.stats import binom, norm

    chance = None if not n_candidates else min(k, int(n_candidates)) / int(n_candidates)
    out: dict[str, Any] = {"k": int(k), "hits": int(hits), "n": int(n), "rate": None, "ci": None,
                           "chance": chance, "p_vs_chance": None, "confidence": confidence}
    if n > 0:
        z = float(norm.ppf(0.5 + confidence / 2))
        p = hits / n
        den = 1 + z * z / n
        center = (p + z * z / (2 * n)) / den
        half = z / den * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        out["rate"] = p
        out["ci"] = [max(0.0, center - half), min(1.0, center + half)]
        if chance is not None and 0 < chance < 1:
            out["p_vs_chance"] = float(binom.sf(int(hits) - 1, int(n), chance))
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
    """Running segment top-1/top-10 and word top-1 over messages with ground truth, per decision kind.

    ``n_candidates`` (the bank size) gives the chance level printed beside each rate.
    """

    n: dict[str, int] = field(default_factory=dict)
    top1: dict[str, int] = field(default_factory=dict)
    top10: dict[str, int] = field(default_factory=dict)
    word1: dict[str, int] = field(default_factory=dict)
    n_candidates: int | None = None

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

    def stats(self, kind: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """:func:`accuracy_stats` of top-1 and top-10 for one kind."""
        n = self.n.get(kind, 0)
        return (accuracy_stats(self.top1.get(kind, 0), n, 1, self.n_candidates),
                accuracy_stats(self.top10.get(kind, 0), n, 10, self.n_candidates))

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for kind, n in self.n.items():
            s1, s10 = self.stats(kind)
            out[kind] = {"n": n, "top1": self.top1[kind] / n, "top10": self.top10[kind] / n,
                         "word_top1": self.word1[kind] / n, "top1_ci": s1["ci"], "top10_ci": s10["ci"],
                         "chance_top1": s1["chance"], "chance_top10": s10["chance"],
                         "n_candidates": self.n_candidates}
        return out

    def line(self, kinds: list[str] | None = None) -> str:
        """Running top-1/top-10 of every kind (or of ``kinds``), ``'; '``-separated."""
        parts = []
        for kind in sorted(self.n, key=_kind_order) if kinds is None else [k for k in kinds if k in self.n]:
            s1, s10 = self.stats(kind)
            parts.append(f"{kind}: {format_rate(s1)} {format_rate(s10)}")
        return "; ".join(parts)


def _kind_order(kind: str) -> tuple[float, str]:
    """Sort key of accuracy kinds: early-decision delays ('+0.5s' < '+1s' < '+2s') by value, then by name."""
    if kind.startswith("+") and kind.endswith("s"):
        try:
            return (float(kind[1:-1]), kind)
        except ValueError:
            pass
    return (float("inf"), kind)


def _decision_parts(msg: Message, hit: dict[str, bool] | None, acc_line: str, k: int) -> tuple[str, str, str]:
    """(top candidates, truth mark with the running accuracy, latency + flags) of a decision message."""
    h = msg.header
    cands = [c for c in h.get("topk") or [] if isinstance(c, dict)][:k]
    best = " | ".join(f"{c.get('word') or c.get('id')} {100 * float(c.get('prob') or 0):.0f}%" for c in cands)
    lat = msg.latency
    tail = (f" lat {1000 * lat:.1f} ms" if lat is not None else "") + (
        f" flags {','.join(h['flags'])}" if h.get("flags") else "")
    truth = ""
    if hit is not None:
        mark = "OK " if hit["top1"] else ("top10" if hit["top10"] else "miss")
        truth = f"  truth '{h['truth'].get('word', '')}' [{mark}]  {acc_line}"
    return best, truth, tail


def format_decode(msg: Message, hit: dict[str, bool] | None, acc: Accuracy, k: int = 3) -> str:
    """One human-readable line for a decode message."""
    best, truth, tail = _decision_parts(msg, hit, acc.line() if hit is not None else "", k)
    return f"#{msg.seq} {msg.header.get('kind', '?'):7s} {best}{truth}{tail}"


def early_label(delay: float | None) -> str:
    """``1.0 -> '+1s'``, ``0.5 -> '+0.5s'``: the accuracy kind of an early decision made at onset + delay."""
    return "+?s" if delay is None else f"+{delay:g}s"


def _top_word(h: dict[str, Any]) -> str | None:
    topk = [c for c in h.get("topk") or [] if isinstance(c, dict)]
    return None if not topk else str(topk[0].get("word") or topk[0].get("id"))


def _window_key(h: dict[str, Any]) -> float | None:
    """What ties an early decision to its word's final one: the window start (LSL s, to 0.1 ms)."""
    t = h.get("t_window_start")
    return round(float(t), 4) if isinstance(t, (int, float)) and not isinstance(t, bool) else None


@dataclass
class EarlyTrail:
    """Provisional decisions waiting for their word's final decision, and agreement counts per delay.

    ``add`` an early header; ``final`` a word header returns its trail ``[(delay_s, top word, top id)]`` (oldest
    delay first) and counts, per delay, how often the provisional top-1 was already the final top-1.
    """

    max_words: int = 200
    pending: OrderedDict[float, list[tuple[float, str | None, str | None]]] = field(default_factory=OrderedDict)
    n: dict[str, int] = field(default_factory=dict)
    same: dict[str, int] = field(default_factory=dict)

    def add(self, h: dict[str, Any]) -> None:
        key = _window_key(h)
        if key is None:
            return
        topk = [c for c in h.get("topk") or [] if isinstance(c, dict)]
        trail = self.pending.setdefault(key, [])
        d = h.get("delay_s")
        trail.append((float(d) if isinstance(d, (int, float)) else float("nan"), _top_word(h),
                      None if not topk else topk[0].get("id")))
        while len(self.pending) > self.max_words:
            self.pending.popitem(last=False)

    def final(self, h: dict[str, Any]) -> list[tuple[float, str | None, str | None]]:
        key = _window_key(h)
        trail = self.pending.pop(key, []) if key is not None else []
        topk = [c for c in h.get("topk") or [] if isinstance(c, dict)]
        final_id = topk[0].get("id") if topk else None
        for d, _, i in trail:
            lab = early_label(d)
            self.n[lab] = self.n.get(lab, 0) + 1
            self.same[lab] = self.same.get(lab, 0) + int(i is not None and i == final_id)
        return sorted(trail, key=lambda x: x[0])

    def summary(self) -> dict[str, Any]:
        """Per delay: early decisions whose word's final decision arrived, and the share with the same top-1."""
        return {lab: {"n": n, "same_top1_as_final": self.same[lab] / n} for lab, n in self.n.items() if n}


def format_early(msg: Message, hit: dict[str, bool] | None, acc: Accuracy, k: int = 3) -> str:
    """One indented line for a provisional (``word_early``) decision: delay, top candidates, truth mark."""
    lab = early_label(msg.delay_s)
    best, truth, tail = _decision_parts(msg, hit, acc.line([lab]) if hit is not None else "", k)
    return f"  ~ #{msg.seq} early {lab:6s} so far: {best}{truth}{tail}"


def format_trail(trail: list[tuple[float, str | None, str | None]], final: str | None) -> str:
    """``'  early +0.5s w1 > +1s w2 > final w2'`` (empty without provisional decisions)."""
    if not trail:
        return ""
    return "  early " + " > ".join(f"{early_label(d)} {w}" for d, w, _ in trail) + f" > final {final}"


def human_seconds(s: Any) -> str:
    """``0.018 -> '18 ms'``, ``75 -> '1 min 15 s'``, ``7300 -> '2 h 01 min'``; '?' for a missing value."""
    if not isinstance(s, (int, float)) or isinstance(s, bool):
        return "?"
    s = float(s)
    if abs(s) < 1:
        return f"{1000 * s:.0f} ms"
    if abs(s) < 60:
        return f"{s:.1f} s" if abs(s) < 10 else f"{s:.0f} s"
    if abs(s) < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


def _total(v: Any) -> int:
    if isinstance(v, dict):
        return int(sum(x for x in v.values() if isinstance(x, (int, float))))
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else 0


def format_status(msg: Message) -> str:
    """One line per heartbeat, in rounded human units."""
    h = msg.header
    stream = h.get("stream") or {}
    sf = stream.get("sfreq")
    rate = f" {sf:g} Hz" if isinstance(sf, (int, float)) else ""
    fill = h.get("buffer_fill")
    fill_s = f"{100 * fill:.0f} %" if isinstance(fill, (int, float)) else "?"
    proc_v = h.get("processing_ms")
    proc: dict[str, Any] = proc_v if isinstance(proc_v, dict) else {}
    proc_s = f", processing {proc['p50']:.0f} ms" if isinstance(proc.get("p50"), (int, float)) else ""
    cpu = h.get("cpu_percent")
    cpu_s = f", CPU {cpu:.0f} %" if isinstance(cpu, (int, float)) else ""
    cq_v = h.get("channel_quality")
    cq: dict[str, Any] = cq_v if isinstance(cq_v, dict) else {}
    bad_v = cq.get("bad")
    bad: dict[str, Any] = bad_v if isinstance(bad_v, dict) else {}
    bad_s = f", bad channels {', '.join(list(bad)[:5])}" if bad else ""
    return (f"status #{msg.seq}: {h.get('state')}, stream {stream.get('name')!r}{rate}, lag "
            f"{human_seconds(h.get('lag_s'))}, buffer {fill_s}, dropped {_total(h.get('dropped_samples'))} samples, "
            f"skipped {_total(h.get('skipped_decisions'))} decisions{proc_s}{cpu_s}, "
            f"{_total(h.get('subscribers'))} subscriptions, slow-subscriber events "
            f"{_total(h.get('slow_subscriber_events'))}{bad_s}, up {human_seconds(h.get('uptime_s'))}")


@dataclass
class ListenSettings:
    """Settings of :func:`listen` (the options of ``neurospeech listen``)."""

    endpoint: str = "tcp://127.0.0.1:5556"
    state_endpoint: str | None = None
    show_status: bool = False
    as_json: bool = False
    count: int | None = None          # stop after this many decode messages (printed ones with words_only)
    duration: float | None = None     # stop after this many seconds
    topk: int = 3
    curve_secret_key: str | None = None
    curve_server_key: str | None = None
    words_only: bool = False          # print word-locked decisions only (sliding ones are still received)
    wait: float = 5.0                 # print a line when nothing arrives for this many seconds
    loop: bool = False                # the replay loops: accuracy per pass too
    candidates: int | None = None     # bank size for the chance level (default: from the state endpoint)
    early: bool = True                # receive and print provisional (word_early) decisions; False: not subscribed

    def __post_init__(self) -> None:
        if not (isinstance(self.wait, (int, float)) and self.wait > 0):
            raise ConfigError(f"--wait must be a positive number of seconds, got {self.wait!r}")
        if self.candidates is not None and (not isinstance(self.candidates, int) or self.candidates < 1):
            raise ConfigError(f"--candidates must be a positive integer (the bank size), got {self.candidates!r}")


def listen(settings: ListenSettings, out: TextIO | None = None,
           should_stop: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Subscribe and print until ``count``/``duration``/Ctrl-C; returns a summary (accuracy, counts, gaps)."""
    import numpy as np
    import pylsl

    from ..service.client import ALL_TOPICS, DEFAULT_TOPICS

    out = out or sys.stdout
    acc = Accuracy(n_candidates=settings.candidates)
    acc_early = Accuracy(n_candidates=settings.candidates)  # kinds '+0.5s', '+1s', ...: per decision delay
    trail = EarlyTrail()
    n_early = 0
    early_lat: list[float] = []
    passes: list[Accuracy] = [Accuracy(n_candidates=settings.candidates)]
    seen: set[str] = set()
    n_decode = 0
    n_shown = 0
    latencies: list[float] = []
    js = settings.as_json

    def emit(text: str) -> None:
        out.write(text + "\n")
        out.flush()

    def pass_line(k: int, a: Accuracy) -> str:
        return f"pass {k}: {a.line() or 'no truth'}"

    with Subscriber(settings.endpoint, state_endpoint=settings.state_endpoint,
                    curve_secret_key=settings.curve_secret_key,
                    curve_server_key=settings.curve_server_key,
                    topics=ALL_TOPICS if settings.early else DEFAULT_TOPICS) as sub:
        if settings.state_endpoint:
            try:
                st = sub.state(timeout=settings.wait)
            except TransportError as exc:
                emit(json.dumps({"type": "no-service", "endpoint": settings.state_endpoint, "error": str(exc)})
                     if js else f"!! {exc}")
            else:
                model = st.get("model") or {}
                status = st.get("status") or {}
                n_cand = model.get("n_candidates")
                if settings.candidates is None and isinstance(n_cand, int) and n_cand > 0:
                    acc.n_candidates = passes[0].n_candidates = acc_early.n_candidates = n_cand
                if js:
                    emit(json.dumps({"type": "state", "state": st}))
                else:
                    emit(f"service: model {model.get('model_id')} ({str(model.get('model_sha256'))[:12]}), "
                         f"{n_cand if n_cand is not None else '?'} candidates, state {status.get('state', 'unknown')}")
        end = None if settings.duration is None else pylsl.local_clock() + settings.duration
        last_msg = pylsl.local_clock()
        silent = False
        try:
            while True:
                if should_stop is not None and should_stop():
                    break
                if settings.count is not None and n_shown >= settings.count:
                    break
                now = pylsl.local_clock()
                left = None if end is None else end - now
                if left is not None and left <= 0:
                    break
                if not silent and now - last_msg >= settings.wait:
                    silent = True
                    emit(json.dumps({"type": "silence", "endpoint": settings.endpoint, "seconds": settings.wait})
                         if js else f"!! no message from {settings.endpoint} for {settings.wait:g} s: is `neurospeech "
                         "serve` running there (and the endpoint, and with CURVE the keys, right)?")
                msg = sub.recv(timeout=0.2 if left is None else min(0.2, left))
                if msg is None:
                    continue
                t_msg = pylsl.local_clock()
                if silent:
                    emit(json.dumps({"type": "answering", "after_s": t_msg - last_msg}) if js
                         else f"service answering again after {human_seconds(t_msg - last_msg)}")
                    silent = False
                last_msg = t_msg
                if msg.missed:
                    emit(f"!! lost {msg.missed} {msg.kind} message(s) before #{msg.seq}"
                         if not js else json.dumps({"type": "gap", "kind": msg.kind, "missed": msg.missed,
                                                    "seq": msg.seq}))
                if msg.kind == "decode":
                    n_decode += 1
                    truth = msg.get("truth")
                    tid = truth.get("segment_id") if isinstance(truth, dict) else None
                    if settings.loop and tid and msg.get("kind") == "word" and tid in seen:
                        k = len(passes)
                        emit(json.dumps({"type": "pass", "pass": k, "accuracy": passes[-1].summary()}) if js
                             else pass_line(k, passes[-1]))
                        passes.append(Accuracy(n_candidates=acc.n_candidates))
                        seen.clear()
                    if tid and msg.get("kind") == "word":
                        seen.add(str(tid))
                    hit = acc.update(msg.header)
                    passes[-1].update(msg.header)
                    if msg.latency is not None:
                        latencies.append(msg.latency)
                    steps = trail.final(msg.header) if msg.get("kind") == "word" else []
                    if settings.words_only and msg.get("kind") != "word":
                        continue
                    n_shown += 1
                    if js:
                        top = [c.get("id") for c in (msg.get("topk") or [])[:settings.topk]]
                        rec: dict[str, Any] = {"type": "decode", "seq": msg.seq, "kind": msg.get("kind"),
                                               "hit": hit, "latency": msg.latency, "t": msg.t_received, "top": top}
                        if steps:
                            rec["early"] = [{"delay_s": d, "word": w, "id": i} for d, w, i in steps]
                        emit(json.dumps(rec))
                    else:
                        emit(format_decode(msg, hit, acc, settings.topk) + format_trail(steps, _top_word(msg.header)))
                elif msg.kind == "word_early" and settings.early:
                    n_early += 1
                    h = {**msg.header, "kind": early_label(msg.delay_s)}
                    hit = acc_early.update(h)
                    trail.add(msg.header)
                    if msg.latency is not None:
                        early_lat.append(msg.latency)
                    if js:
                        top = [c.get("id") for c in (msg.get("topk") or [])[:settings.topk]]
                        emit(json.dumps({"type": "word_early", "seq": msg.seq, "delay_s": msg.delay_s,
                                         "t_onset": msg.get("t_onset"), "hit": hit, "latency": msg.latency,
                                         "t": msg.t_received, "top": top}))
                    else:
                        emit(format_early(msg, hit, acc_early, settings.topk))
                elif msg.kind == "status" and settings.show_status:
                    emit(json.dumps({"type": "status", "header": msg.header}) if js else format_status(msg))
        except KeyboardInterrupt:
            pass
        stats = sub.stats()
    summary: dict[str, Any] = {"decode_messages": n_decode, "shown": n_shown, "accuracy": acc.summary(),
                               "subscriber": stats}
    if settings.early:
        summary["early"] = {"messages": n_early, "accuracy": acc_early.summary(), "agreement": trail.summary()}
        if early_lat:
            e = np.asarray(early_lat) * 1000
            summary["early"]["latency_ms"] = {"p50": float(np.percentile(e, 50)), "p99": float(np.percentile(e, 99)),
                                              "n": len(e)}
    if settings.loop:
        summary["passes"] = [{"pass": k + 1, "accuracy": a.summary()} for k, a in enumerate(passes)]
    lat_text = "no latency"
    if latencies:
        lat = np.asarray(latencies) * 1000
        summary["latency_ms"] = {"p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)),
                                 "max": float(lat.max()), "n": len(lat)}
        lat_text = (f"latency p50 {summary['latency_ms']['p50']:.0f} ms, p99 {summary['latency_ms']['p99']:.0f} ms "
                    f"(n={len(lat)})")
    lost = sum(stats["missed"].values())
    if js:
        emit(json.dumps({"type": "summary", **summary}))
    else:
        if settings.loop:
            for k, a in enumerate(passes, start=1):
                emit(pass_line(k, a) + (" (incomplete)" if k == len(passes) else ""))
        emit(f"summary: {n_decode} decode messages, lost {lost}; {acc.line() or 'no truth'}; {lat_text}")
        if n_early:
            agree = trail.summary()
            same = ", ".join(f"{k} {100 * v['same_top1_as_final']:.0f}%" for k, v in
                             sorted(agree.items(), key=lambda kv: _kind_order(kv[0])))
            emit(f"early: {n_early} provisional decisions; {acc_early.line() or 'no truth'}"
                 + (f"; top-1 already the final one: {same}" if same else ""))
    return summary
