"""What the dashboard knows about the service, built from its messages (no I/O here, so it is unit-testable).

:class:`DashboardModel` ingests the service's status heartbeats, decode messages and state replies, and
returns the *events* the browser pages receive (plain JSON-able dicts with a ``type``):

- ``status``: a compact copy of the last heartbeat, the state and since when it holds, the measured sample
  rate (samples received between two heartbeats / time between them), the decision rate;
- ``decision``: one decision (word-locked or sliding) with its top-k, truth, hit marks, latency; a word-locked
  one also carries ``early``: the provisional decisions of the same word (below), oldest delay first;
- ``early``: one provisional word decision (the service's ``word_early`` topic, models trained with early
  decisions) made at word onset + ``delay_s`` (0.5, 1.0, 1.5, 2.0 s); it and its word's final decision share
  ``key`` (the window start: both cut the same window), so a page shows, per word, the top candidate as it
  firms up and then the final decision;
- ``accuracy``: running top-1 / top-k of word-locked decisions with their chance level ``k / N`` (``N`` bank
  candidates) and 95 % Wilson intervals (:func:`neurospeech.tools.listen.accuracy_stats`), and the same per
  early-decision delay (``early``);
- ``alerts``: the active alerts and the recent alert log (only when they changed);
- ``snapshot``: everything above at once (what a page gets when it connects).

Alerts. *Conditions* hold while the status says so: stream lost, service stopped, no heartbeat for
``silence_s``, rate mismatch (the clock model's rate ratio off by more than ``rate_tolerance``), bad
channels. *Events* are counters that grew between two heartbeats (clock jumps, non-monotonic or duplicated
stamps, gaps, skipped decisions, slow-subscriber events, messages dropped by the service, messages this
dashboard missed, inlet overruns); they stay active for ``alert_hold_s`` after the last increase. Every
alert that starts or ends goes to the log.

"Since when" is the receipt of the first heartbeat of the current state that this dashboard saw (the status
carries no start time of its state): a dashboard started after the stream came up shows its own start.

All times sent to pages are Unix epoch seconds (the browser formats them); the service's own times are on the
LSL clock of its host, mapped with the offset between ``time.time()`` and ``pylsl.local_clock()`` here (the
same host in the default loopback set-up).
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ...errors import ConfigError
from ..listen import accuracy_stats

__all__ = ["Alert", "DashboardModel", "ModelSettings"]

log = logging.getLogger(__name__)

_STATE_ALERTS = {
    "lost": ("stream-lost", "error", "Stream lost"),
    "stopped": ("service-stopped", "error", "Service stopped"),
}
#: counters in the status that raise a held alert when they grow: key path -> (alert id, level, title)
_COUNTERS: dict[tuple[str, ...], tuple[str, str, str]] = {
    ("timestamp_issues", "clock_jumps"): ("clock-jump", "warning", "Clock jump"),
    ("timestamp_issues", "non_monotonic"): ("timestamps", "warning", "Non-monotonic timestamps"),
    ("timestamp_issues", "duplicated"): ("timestamps-dup", "warning", "Duplicated timestamps"),
    ("n_gaps",): ("gap", "warning", "Data gap"),
    ("skipped_decisions",): ("skipped", "warning", "Skipped decisions"),
    ("slow_subscriber_events",): ("slow-subscriber", "warning", "Slow subscriber"),
    ("dropped_messages",): ("dropped-messages", "warning", "Messages dropped by the service"),
    ("overruns",): ("overrun", "warning", "Inlet overrun"),
}


@dataclass
class ModelSettings:
    """Limits of :class:`DashboardModel`.

    Attributes
    ----------
    word_history, sliding_history : int
        Decisions kept (and sent to a page that connects).
    series_history : int
        Latency / processing-time points kept.
    silence_s : float
        No heartbeat for this long: the "service silent" alert.
    alert_hold_s : float
        An event alert stays active this long after its counter last grew.
    rate_tolerance : float
        Rate-mismatch alert when ``|rate_ratio - 1|`` exceeds this ...
    rate_persist_s : float
        ... in every heartbeat for this long (the clock model's first estimates are noisy).
    log_size : int
        Alert log entries kept.
    """

    word_history: int = 60
    sliding_history: int = 60
    series_history: int = 1200
    silence_s: float = 3.0
    alert_hold_s: float = 10.0
    rate_tolerance: float = 0.005
    rate_persist_s: float = 2.0
    log_size: int = 100

    def __post_init__(self) -> None:
        for name in ("word_history", "sliding_history", "series_history", "log_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")
        for name in ("silence_s", "alert_hold_s", "rate_tolerance", "rate_persist_s"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise ConfigError(f"{name} must be a positive number, got {v!r}")


@dataclass
class Alert:
    """One alert: ``id`` (stable per kind), ``level`` (error / warning / info), text, and its times (epoch s)."""

    id: str
    level: str
    title: str
    detail: str
    since: float
    last: float
    count: int = 1
    held: bool = False  # an event alert (expires alert_hold_s after ``last``)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def window_key(h: dict[str, Any]) -> float | None:
    """What ties a provisional decision to its word's final one: the window start (LSL s, to 0.1 ms)."""
    t = h.get("t_window_start")
    return round(float(t), 4) if isinstance(t, (int, float)) and not isinstance(t, bool) else None


def _step(item: dict[str, Any]) -> dict[str, Any]:
    """The compact form of a provisional decision kept with its word: delay, its top candidate, truth rank."""
    top = item["topk"][0] if item["topk"] else {}
    return {"seq": item["seq"], "delay_s": item["delay_s"], "key": item["key"], "t": item["t"],
            "id": top.get("id"), "word": top.get("word"), "prob": top.get("prob"),
            "truth": item["truth"], "truth_rank": item["truth_rank"], "latency_ms": item["latency_ms"]}


def _get(d: Any, path: tuple[str, ...]) -> float:
    """A counter from the status (a number, or the sum of a per-topic dict; 0 when absent)."""
    for key in path:
        d = d.get(key) if isinstance(d, dict) else None
    if isinstance(d, dict):
        return float(sum(v for v in d.values() if isinstance(v, (int, float))))
    return float(d) if isinstance(d, (int, float)) and not isinstance(d, bool) else 0.0


class DashboardModel:
    """The dashboard's view of one service.

    Parameters
    ----------
    settings : ModelSettings
    lsl_clock : callable
        ``pylsl.local_clock`` (the clock of the service's stamps); injectable for tests.
    wall_clock : callable
        ``time.time``.
    """

    def __init__(self, settings: ModelSettings | None = None, lsl_clock: Callable[[], float] | None = None,
                 wall_clock: Callable[[], float] = time.time) -> None:
        if lsl_clock is None:
            import pylsl

            lsl_clock = pylsl.local_clock
        self.settings = settings or ModelSettings()
        self._lsl = lsl_clock
        self._wall = wall_clock
        self.model_info: dict[str, Any] | None = None
        self.status: dict[str, Any] | None = None
        self.state = "unknown"      # the service's state, or 'silent' / 'unknown' as this dashboard sees it
        self.state_since = wall_clock()
        self.status_at: float | None = None  # epoch of the last heartbeat's receipt
        self.measured_rate: float | None = None
        self.decision_rate: float | None = None
        self.words: deque[dict[str, Any]] = deque(maxlen=self.settings.word_history)
        self.sliding: deque[dict[str, Any]] = deque(maxlen=self.settings.sliding_history)
        self.series: deque[list[Any]] = deque(maxlen=self.settings.series_history)
        self.alerts: dict[str, Alert] = {}
        self.alert_log: deque[dict[str, Any]] = deque(maxlen=self.settings.log_size)
        self.n_word = 0
        self.n_sliding = 0
        self.n_truth = 0
        self.rank_hits: dict[int, int] = {}  # rank -> decisions with the truth at that rank
        self.k_max = 0  # shortest top-k list seen on a decision with truth (the top-k that can be counted)
        self.missed = 0
        self._prev: dict[str, Any] | None = None
        self._prev_t: float | None = None
        self._dec_times: deque[float] = deque(maxlen=64)
        self._rate_off_since: float | None = None
        # early (provisional) decisions: per word (window start) until its final decision arrives
        self.early_pending: OrderedDict[float, list[dict[str, Any]]] = OrderedDict()
        self.n_early = 0
        self.early_n: dict[float, int] = {}               # delay -> provisional decisions with truth
        self.early_rank_hits: dict[float, dict[int, int]] = {}  # delay -> rank -> count

    # ------------------------------------------------------------------ time
    def _to_wall(self, t_lsl: float | None) -> float | None:
        if not isinstance(t_lsl, (int, float)):
            return None
        return self._wall() - (self._lsl() - float(t_lsl))

    # ------------------------------------------------------------------ input
    def on_state_reply(self, reply: dict[str, Any]) -> list[dict[str, Any]]:
        """A reply of the service's state endpoint (model info + last status)."""
        model = reply.get("model")
        if isinstance(model, dict):
            self.model_info = model
        events: list[dict[str, Any]] = [{"type": "model", "model": self.model_info}]
        status = reply.get("status")
        if isinstance(status, dict) and (self.status is None or status.get("seq") != self.status.get("seq")):
            events += self.on_status(status, received=self._lsl())
        return events

    def on_message(self, kind: str, header: dict[str, Any], received: float | None,
                   missed: int = 0) -> list[dict[str, Any]]:
        """One message from the PUB endpoint (``received``: LSL clock at receipt)."""
        events: list[dict[str, Any]] = []
        if missed:
            self.missed += missed
            events += self._bump("missed", "warning", "Dashboard missed messages",
                                 f"{missed} {kind} message(s) lost before #{header.get('seq')} "
                                 f"({self.missed} in all)")
        if kind == "status":
            events += self.on_status(header, received)
        elif kind == "decode":
            events += self.on_decode(header, received)
        elif kind == "word_early":
            events += self.on_early(header, received)
        return events

    def on_status(self, h: dict[str, Any], received: float | None) -> list[dict[str, Any]]:
        now = self._wall()
        events: list[dict[str, Any]] = []
        prev = self._prev
        t_sent = h.get("t_sent")
        if prev is not None and isinstance(t_sent, (int, float)) and self._prev_t is not None:
            dt = float(t_sent) - self._prev_t
            dn = _get(h, ("samples_received",)) - _get(prev, ("samples_received",))
            if dt >= 0.2 and dn >= 0:
                self.measured_rate = dn / dt
        self.status, self.status_at = h, now
        new_state = str(h.get("state") or "unknown")
        changed = new_state != self.state
        if changed:
            self.state, self.state_since = new_state, now
        if new_state in ("lost", "stopped"):
            self.measured_rate = None
        alerts_changed = self._clear("service-silent")
        # state conditions
        for state, (aid, level, title) in _STATE_ALERTS.items():
            if new_state == state:
                stream = (h.get("stream") or {}).get("name")
                detail = (f"no samples from stream {stream!r}; decisions paused until it returns"
                          if state == "lost" else "the service published its final status")
                alerts_changed |= self._raise(aid, level, title, detail)
            else:
                alerts_changed |= self._clear(aid)
        # rate mismatch
        ratio = _get(h, ("timestamp_issues", "rate_ratio")) or None
        off = ratio is not None and abs(ratio - 1.0) > self.settings.rate_tolerance and new_state == "running"
        if off and self._rate_off_since is None:
            self._rate_off_since = now
        elif not off:
            self._rate_off_since = None
        persisted = now - (self._rate_off_since or now)
        if off and ratio is not None and persisted >= self.settings.rate_persist_s:
            alerts_changed |= self._raise("rate-mismatch", "warning", "Rate mismatch",
                                          f"the stream runs at {ratio:.4f} x its nominal rate "
                                          f"({100 * (ratio - 1):+.2f} %) for {persisted:.0f} s",
                                          update_detail=True)
        elif not off:
            alerts_changed |= self._clear("rate-mismatch")
        # bad channels
        cq_raw = h.get("channel_quality")
        cq: dict[str, Any] = cq_raw if isinstance(cq_raw, dict) else {}
        bad_raw = cq.get("bad")
        bad: dict[str, Any] = bad_raw if isinstance(bad_raw, dict) else {}
        if bad and new_state == "running":
            names = ", ".join(f"{c} ({'/'.join(map(str, r))})" for c, r in list(bad.items())[:8])
            alerts_changed |= self._raise("bad-channels", "warning", f"{len(bad)} bad channel(s)", names)
        else:
            alerts_changed |= self._clear("bad-channels")
        # counters that grew
        if prev is not None and int(_get(h, ("seq",))) > int(_get(prev, ("seq",))):
            for path, (aid, level, title) in _COUNTERS.items():
                delta = _get(h, path) - _get(prev, path)
                if delta > 0:
                    events += self._bump(aid, level, title,
                                         f"+{delta:g} since the previous heartbeat ({_get(h, path):g} in all)")
        self._prev = h
        if isinstance(t_sent, (int, float)):
            self._prev_t = float(t_sent)
        events.append(self._status_event())
        if alerts_changed and not any(e["type"] == "alerts" for e in events):
            events.append(self.alerts_event())
        return events

    def _item(self, h: dict[str, Any], received: float | None, kind: str) -> dict[str, Any]:
        topk = [c for c in h.get("topk") or [] if isinstance(c, dict)]
        truth = h.get("truth") if isinstance(h.get("truth"), dict) else None
        rank = None
        if truth is not None and truth.get("segment_id"):
            ids = [c.get("id") for c in topk]
            rank = ids.index(truth["segment_id"]) + 1 if truth["segment_id"] in ids else None
        t_new = h.get("t_newest_sample")
        latency = (received - float(t_new)) if isinstance(t_new, (int, float)) and received is not None else None
        return {
            "seq": h.get("seq"),
            "kind": kind,
            "key": window_key(h),
            "t": self._to_wall(received) if received is not None else self._wall(),
            "latency_ms": None if latency is None else 1000.0 * latency,
            "processing_ms": h.get("processing_ms"),
            "topk": [{"rank": c.get("rank"), "id": c.get("id"), "word": c.get("word"), "prob": c.get("prob")}
                     for c in topk[:10]],
            "truth": None if truth is None else {"segment_id": truth.get("segment_id"), "word": truth.get("word")},
            "truth_rank": rank,
            "flags": list(h.get("flags") or []),
        }

    def on_early(self, h: dict[str, Any], received: float | None) -> list[dict[str, Any]]:
        """A provisional word decision (``word_early``): kept with its word until the final decision comes."""
        item = self._item(h, received, "word_early")
        d = h.get("delay_s")
        delay = float(d) if isinstance(d, (int, float)) and not isinstance(d, bool) and math.isfinite(d) else None
        item["delay_s"] = delay
        item["t_onset"] = self._to_wall(h.get("t_onset"))
        self.n_early += 1
        self.series.append([item["t"], item["latency_ms"], item["processing_ms"], "word_early"])
        events: list[dict[str, Any]] = [{"type": "early", "early": item}]
        if item["key"] is not None:
            self.early_pending.setdefault(item["key"], []).append(_step(item))
            while len(self.early_pending) > self.settings.word_history:
                self.early_pending.popitem(last=False)
        if delay is not None and item["truth"] is not None and item["truth"].get("segment_id"):
            self.early_n[delay] = self.early_n.get(delay, 0) + 1
            hits = self.early_rank_hits.setdefault(delay, {})
            if item["truth_rank"] is not None:
                hits[item["truth_rank"]] = hits.get(item["truth_rank"], 0) + 1
            events.append(self.accuracy_event())
        return events

    def on_decode(self, h: dict[str, Any], received: float | None) -> list[dict[str, Any]]:
        kind = str(h.get("kind") or "?")
        n_topk = len([c for c in h.get("topk") or [] if isinstance(c, dict)])
        item = self._item(h, received, kind)
        truth, rank = item["truth"], item["truth_rank"]
        if kind == "word":
            key = item["key"]
            item["early"] = sorted(self.early_pending.pop(key, []) if key is not None else [],
                                   key=lambda x: x["delay_s"] if x["delay_s"] is not None else math.inf)
        events: list[dict[str, Any]] = [{"type": "decision", "decision": item}]
        self._dec_times.append(self._wall())
        if len(self._dec_times) >= 2:
            span = self._dec_times[-1] - self._dec_times[0]
            self.decision_rate = (len(self._dec_times) - 1) / span if span > 0 else None
        self.series.append([item["t"], item["latency_ms"], item["processing_ms"], kind])
        if kind == "word":
            self.n_word += 1
            self.words.append(item)
            if truth is not None and truth.get("segment_id"):
                self.n_truth += 1
                self.k_max = n_topk if self.k_max == 0 else min(self.k_max, n_topk)
                if rank is not None:
                    self.rank_hits[rank] = self.rank_hits.get(rank, 0) + 1
                events.append(self.accuracy_event())
        else:
            self.n_sliding += 1
            self.sliding.append(item)
        return events

    def tick(self) -> list[dict[str, Any]]:
        """Called about every 0.25 s: silence detection and expiry of held alerts."""
        now = self._wall()
        changed = False
        silent_since = self.status_at if self.status_at is not None else self.state_since
        if now - silent_since > self.settings.silence_s and self.state != "stopped":
            what = ("no heartbeat from the service" if self.status_at is not None
                    else "no answer from the service yet")
            changed |= self._raise("service-silent", "error", "Service silent",
                                   f"{what} for {now - silent_since:.0f} s (is `neurospeech serve` running, "
                                   "and are the endpoints right?)", update_detail=True)
            if self.state != "silent":
                self.state, self.state_since = "silent", silent_since
                changed = True
        for aid, a in list(self.alerts.items()):
            if a.held and now - a.last > self.settings.alert_hold_s:
                changed |= self._clear(aid)
        if not changed:
            return []
        return [self._status_event(), self.alerts_event()]

    # ------------------------------------------------------------------ alerts
    def _log(self, a: Alert, what: str) -> None:
        self.alert_log.append({"t": self._wall(), "id": a.id, "level": a.level, "title": a.title,
                               "detail": a.detail, "what": what})

    def _raise(self, aid: str, level: str, title: str, detail: str, update_detail: bool = False) -> bool:
        now = self._wall()
        a = self.alerts.get(aid)
        if a is None:
            a = self.alerts[aid] = Alert(aid, level, title, detail, now, now)
            self._log(a, "start")
            log.warning("alert %s: %s", title, detail)
            return True
        a.last = now
        if update_detail or a.title != title:
            a.detail, a.title = detail, title
            return True
        return False

    def _bump(self, aid: str, level: str, title: str, detail: str) -> list[dict[str, Any]]:
        now = self._wall()
        a = self.alerts.get(aid)
        if a is None:
            a = self.alerts[aid] = Alert(aid, level, title, detail, now, now, held=True)
            self._log(a, "start")
            log.warning("alert %s: %s", title, detail)
        else:
            a.last, a.detail, a.count = now, detail, a.count + 1
        return [self.alerts_event()]

    def _clear(self, aid: str) -> bool:
        a = self.alerts.pop(aid, None)
        if a is None:
            return False
        self._log(a, "end")
        return True

    # ------------------------------------------------------------------ output
    def _status_event(self) -> dict[str, Any]:
        h = self.status or {}
        keep = ("state", "stream", "buffer_fill", "lag_s", "samples_received", "dropped_samples", "overruns",
                "skipped_decisions", "messages_sent", "dropped_messages", "slow_subscriber_events", "subscribers",
                "n_gaps", "channel_quality", "uptime_s", "timestamp_issues", "decisions", "markers",
                "processing_ms", "cpu_percent", "losses", "reconnects", "hop", "seq", "lsl_outlet")
        return {"type": "status", "state": self.state, "state_since": self.state_since,
                "status_at": self.status_at, "measured_rate": self.measured_rate,
                "decision_rate": self.decision_rate, "missed": self.missed,
                "status": {k: h.get(k) for k in keep if k in h}}

    def alerts_event(self) -> dict[str, Any]:
        order = {"error": 0, "warning": 1, "info": 2}
        active = sorted(self.alerts.values(), key=lambda a: (order.get(a.level, 3), -a.since))
        return {"type": "alerts", "active": [a.to_dict() for a in active], "log": list(self.alert_log)[-30:]}

    def accuracy(self) -> dict[str, Any]:
        """Running top-1 / top-k (k = min(10, top-k list length)) of word-locked decisions with truth."""
        n_cand = (self.model_info or {}).get("n_candidates")
        n_cand = int(n_cand) if isinstance(n_cand, (int, float)) and n_cand > 0 else None
        rows: list[dict[str, Any]] = []
        out: dict[str, Any] = {"n": self.n_truth, "n_candidates": n_cand, "rows": rows}
        ks = [1] + ([min(10, self.k_max)] if self.k_max > 1 else [])
        for k in ks:
            hits = sum(v for r, v in self.rank_hits.items() if r <= k)
            rows.append(accuracy_stats(hits, self.n_truth, k, n_cand))
        k_top = max(ks)
        out["early"] = [
            {"delay_s": d, "n": n,
             "rows": [accuracy_stats(sum(v for r, v in self.early_rank_hits.get(d, {}).items() if r <= k), n, k,
                                     n_cand) for k in sorted({1, k_top})]}
            for d, n in sorted(self.early_n.items())
        ]
        return out

    def accuracy_event(self) -> dict[str, Any]:
        return {"type": "accuracy", "accuracy": self.accuracy()}

    def snapshot(self) -> dict[str, Any]:
        """Everything a page needs at once."""
        return {
            "type": "snapshot",
            "model": self.model_info,
            "status": self._status_event(),
            "alerts": self.alerts_event(),
            "accuracy": self.accuracy(),
            "words": list(self.words),
            "early_pending": [{"key": k, "steps": v} for k, v in self.early_pending.items()],
            "sliding": list(self.sliding),
            "series": list(self.series),
            "counts": {"word": self.n_word, "sliding": self.n_sliding, "truth": self.n_truth,
                       "word_early": self.n_early},
            "settings": {"silence_s": self.settings.silence_s, "alert_hold_s": self.settings.alert_hold_s},
            "t": self._wall(),
        }
