"""Decisions and status into LSL, so that a recorder (LabRecorder) writes them into the same XDF file as the M/EEG.

``serve --lsl-outlet NAME`` (config ``[decode] lsl_outlet = "NAME"``) opens two LSL outlets beside the
ZeroMQ publisher:

- ``NAME``: type ``Markers``, one ``string`` channel, irregular rate, source_id ``neurospeech-decisions-NAME``.
  One sample per decision: the decode header as compact JSON, exactly the fields of the ZeroMQ
  ``neurospeech.v1.decode`` header (``schema``, ``seq``, ``kind``, window times, ``topk``, ``truth``, ``flags``,
  model id and hash ...; additive changes only, as on ZeroMQ; raw array frames are not sent). Each sample is
  **stamped with** ``t_newest_sample``: the LSL time of the newest raw sample that had been consumed when the
  window was complete (the window itself spans ``t_window_start`` .. ``t_window_end``, both in the payload).
  Those stamps are on the service host's LSL clock, like the stamps of the data it read (clock-sync
  corrected), so a recorder that synchronises clocks puts each decision on the data it was made from.
- ``NAME-status``: type ``neurospeech-status``, one ``string`` channel, irregular rate: the status heartbeat
  as JSON, at most one per ``status_min_interval`` seconds plus every change of state, stamped with the time
  it was sent.

The stream descriptions carry the model id and hash and the schema name (``desc/neurospeech``).
:class:`TeePublisher` wraps the ZeroMQ publisher so that every published message also goes to LSL with the
same sequence number.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ..errors import ConfigError, TransportError
from .acquisition import _pylsl
from .messages import TOPIC_PREFIX, encode_header

__all__ = ["LslOutlet", "TeePublisher", "check_outlet_name"]

log = logging.getLogger(__name__)

STATUS_TYPE = "neurospeech-status"


def check_outlet_name(name: Any) -> str:
    """The LSL name of the decision stream (a non-empty string without quotes, which break LSL queries)."""
    if not isinstance(name, str) or not name.strip() or "'" in name or '"' in name:
        raise ConfigError(f"lsl_outlet must be a non-empty stream name without quotes, got {name!r} "
                          "(e.g. --lsl-outlet neurospeech-decisions)")
    return name.strip()


class LslOutlet:
    """The two LSL outlets (decisions, status) of one service.

    Parameters
    ----------
    name : str
        Name of the decision stream; the status stream is ``<name>-status``.
    model_info : dict
        ``model_id``, ``model_sha256`` (in every payload and in the stream descriptions).
    status_min_interval : float
        Seconds between status samples (a change of ``state`` is always sent).

    Raises
    ------
    ConfigError
        Bad name.
    TransportError
        liblsl could not create an outlet.
    """

    def __init__(self, name: str, model_info: dict[str, Any], status_min_interval: float = 1.0) -> None:
        self.name = check_outlet_name(name)
        self.status_name = f"{self.name}-status"
        self.model_fields = {"model_id": model_info.get("model_id"), "model_sha256": model_info.get("model_sha256")}
        self.status_min_interval = float(status_min_interval)
        pylsl = _pylsl()
        self._lsl = pylsl
        try:
            self.decisions = pylsl.StreamOutlet(self._info("Markers", f"neurospeech-decisions-{self.name}",
                                                           TOPIC_PREFIX + "decode", self.name))
            self.status = pylsl.StreamOutlet(self._info(STATUS_TYPE, f"neurospeech-status-{self.name}",
                                                        TOPIC_PREFIX + "status", self.status_name))
        except (RuntimeError, ValueError) as exc:
            raise TransportError(f"cannot create the LSL outlet {self.name!r}: {exc}") from exc
        self._last_status_t = -np.inf
        self._last_state: Any = None
        self.sent = {"decode": 0, "status": 0}
        log.info("LSL outlets %r (decisions) and %r (status)", self.name, self.status_name)

    def _info(self, stype: str, source_id: str, schema: str, name: str) -> Any:
        pylsl = self._lsl
        info = pylsl.StreamInfo(name, stype, 1, pylsl.IRREGULAR_RATE, pylsl.cf_string, source_id)
        desc = info.desc().append_child("neurospeech")
        desc.append_child_value("schema", schema)
        desc.append_child_value("encoding", "json")
        desc.append_child_value("model_id", str(self.model_fields["model_id"]))
        desc.append_child_value("model_sha256", str(self.model_fields["model_sha256"]))
        return info

    def push_decode(self, header: dict[str, Any]) -> float:
        """Push one decode header (with its ``seq``); returns the stamp used."""
        t = header.get("t_newest_sample")
        stamp = float(t) if isinstance(t, (int, float)) and np.isfinite(t) else self._lsl.local_clock()
        self.decisions.push_sample([encode_header(header, "json").decode("utf-8")], stamp)
        self.sent["decode"] += 1
        return stamp

    def push_status(self, header: dict[str, Any]) -> float | None:
        """Push a status header unless one went out less than ``status_min_interval`` ago (state changes always
        go); returns the stamp, or None when throttled."""
        now = self._lsl.local_clock()
        state = header.get("state")
        if state == self._last_state and now - self._last_status_t < self.status_min_interval:
            return None
        self._last_state, self._last_status_t = state, now
        t = header.get("t_sent")
        stamp = float(t) if isinstance(t, (int, float)) else now
        self.status.push_sample([encode_header(header, "json").decode("utf-8")], stamp)
        self.sent["status"] += 1
        return stamp

    def close(self) -> None:
        """Destroy the outlets (recorders see the streams end). Idempotent."""
        for attr in ("decisions", "status"):
            if getattr(self, attr, None) is not None:
                setattr(self, attr, None)


class TeePublisher:
    """Publish over ZeroMQ (the wrapped publisher) and LSL (:class:`LslOutlet`) with the same header and seq.

    Everything else (``endpoint``, ``state_endpoint``, ``stats()`` ...) is the wrapped publisher's; ``stats()``
    gains ``lsl_outlet`` (name and samples sent). ``close()`` closes the outlets, and the wrapped publisher when
    ``own`` is true.
    """

    def __init__(self, inner: Any, name: str, model_info: dict[str, Any], own: bool = True,
                 status_min_interval: float = 1.0) -> None:
        self.inner = inner
        self.own = own
        self.lsl = LslOutlet(name, model_info, status_min_interval)

    def publish(self, kind: str, header: dict[str, Any], arrays: dict[str, np.ndarray] | None = None) -> int:
        seq = self.inner.publish(kind, header, arrays)
        lsl = self.lsl
        full = {**header, **lsl.model_fields, "schema": TOPIC_PREFIX + kind, "seq": seq, "encoding": "json",
                "t_sent": lsl._lsl.local_clock()}
        try:
            if kind == "decode":
                lsl.push_decode(full)
            elif kind == "status":
                lsl.push_status(full)
        except (RuntimeError, ValueError) as exc:  # a recorder problem must never stop the decoding
            log.error("LSL outlet push failed: %s", exc)
        return seq

    def stats(self) -> dict[str, Any]:
        out = dict(self.inner.stats())
        out["lsl_outlet"] = {"name": self.lsl.name, "sent": dict(self.lsl.sent)}
        return out

    def close(self) -> None:
        self.lsl.close()
        if self.own:
            self.inner.close()

    def __getattr__(self, name: str) -> Any:  # endpoint, state_endpoint, settings ... of the ZeroMQ publisher
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)
