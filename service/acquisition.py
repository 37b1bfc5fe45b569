"""LSL acquisition with pylsl >= 1.18: resolve, describe, pull into a preallocated buffer, word markers.

``pull_chunk(timeout, max_samples, dest_obj=buffer, min_samples=1)`` returns once one sample is there and
then drains what is already available, straight into a C-contiguous buffer of the stream's dtype (no Python
lists, no per-chunk allocation of the data). The inlet's buffer is small (``max_buflen`` seconds) so that a
stalled consumer drops old data instead of drifting minutes behind.

Set ``LSLAPICFG`` (e.g. to ``deploy/lsl_api.cfg``) before pylsl is imported for reliable discovery on one
machine; :func:`ensure_lsl_config` does that when it is unset.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..errors import ContractMismatchError, StreamError, StreamNotFoundError

__all__ = [
    "DataInlet",
    "Marker",
    "MarkerInlet",
    "StreamDescription",
    "ensure_lsl_config",
    "list_streams",
    "resolve_stream",
]

log = logging.getLogger(__name__)

_FORMATS = {1: "float32", 2: "double64", 3: "string", 4: "int32", 5: "int16", 6: "int8", 7: "int64"}
_DTYPES = {
    "float32": np.float32,
    "double64": np.float64,
    "int32": np.int32,
    "int16": np.int16,
    "int8": np.int8,
    "int64": np.int64,
}


def ensure_lsl_config() -> None:
    """Point ``LSLAPICFG`` at the project's ``deploy/lsl_api.cfg`` when unset and the file exists."""
    if "LSLAPICFG" in os.environ:
        return
    cfg = Path(__file__).resolve().parents[1] / "deploy" / "lsl_api.cfg"
    if cfg.is_file():
        os.environ["LSLAPICFG"] = str(cfg)


def _pylsl() -> Any:
    ensure_lsl_config()
    import pylsl

    return pylsl


@dataclass(frozen=True)
class StreamDescription:
    """What the service knows about a data stream (from the full LSL stream info)."""

    name: str
    type: str
    source_id: str
    uid: str
    hostname: str
    sfreq: float
    n_channels: int
    channel_format: str
    labels: list[str]
    types: list[str]
    units: list[str]

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source_id": self.source_id,
            "sfreq": self.sfreq,
            "n_channels": self.n_channels,
        }


def _quote(v: str) -> str:
    if "'" in v:
        raise StreamError(f"stream query value {v!r} contains a quote; use a name without quotes")
    return f"'{v}'"


def list_streams(wait: float = 1.0) -> list[str]:
    """One line per stream visible on the network (for error messages)."""
    pylsl = _pylsl()
    out = []
    for s in pylsl.resolve_streams(wait_time=wait):
        out.append(
            f"{s.name()} (type {s.type()}, source_id {s.source_id() or '-'}, "
            f"{s.channel_count()} ch @ {s.nominal_srate():g} Hz, host {s.hostname()})"
        )
    return sorted(out)


def resolve_stream(
    name: str | None = None,
    type: str | None = None,
    source_id: str | None = None,
    timeout: float = 10.0,
    should_stop: Any = None,
    list_on_failure: bool = True,
) -> Any:
    """Find one stream by name / type / source_id.

    Polls a background resolver (``should_stop()`` can interrupt) until ``timeout``.

    Returns
    -------
    pylsl.StreamInfo or None
        None when ``should_stop()`` became true first (a stop request is not a missing stream: no listing,
        no error).

    Raises
    ------
    StreamNotFoundError
        Listing the streams that were found instead.
    """
    pylsl = _pylsl()
    parts = []
    if name:
        parts.append(f"name={_quote(name)}")
    if type:
        parts.append(f"type={_quote(type)}")
    if source_id:
        parts.append(f"source_id={_quote(source_id)}")
    if not parts:
        raise StreamError("give a stream name, type or source_id to resolve")
    pred = " and ".join(parts)
    deadline = time.monotonic() + timeout
    # a background resolver keeps sending resolve waves; a single short resolve call can miss a stream
    resolver = pylsl.ContinuousResolver(pred=pred)
    log.info("waiting up to %g s for an LSL stream matching %s", timeout, pred)
    try:
        while True:
            found = resolver.results()
            if found:
                if len(found) > 1:
                    log.warning("%d streams match %s; using the first (%s)", len(found), pred, found[0].uid())
                return found[0]
            if should_stop is not None and should_stop():
                return None
            if time.monotonic() >= deadline:
                break
            time.sleep(0.02)
    finally:
        del resolver
    if not list_on_failure:
        raise StreamNotFoundError(f"no LSL stream matches {pred}")
    others = list_streams(0.5)
    listing = "; ".join(others[:20]) if others else "none"
    raise StreamNotFoundError(
        f"no LSL stream matches {pred} within {timeout:g} s. Streams found: {listing}. "
        "Fix: start the amplifier/replay, check the name, and that LSLAPICFG points at deploy/lsl_api.cfg "
        "(or your lab's copy) on both machines"
    )


def _describe(info: Any) -> StreamDescription:
    n = info.channel_count()
    labels, types, units = [], [], []
    ch = info.desc().child("channels").child("channel")
    for _ in range(n):
        if ch.empty():
            break
        labels.append(ch.child_value("label"))
        types.append(ch.child_value("type"))
        units.append(ch.child_value("unit"))
        ch = ch.next_sibling("channel")
    if len(labels) != n or not all(labels):
        raise ContractMismatchError(
            f"stream {info.name()!r} has {n} channels but labels for {sum(map(bool, labels))} of them in "
            "desc/channels/channel/label; the outlet must describe every channel (label, type, unit)"
        )
    stype = info.type()
    types = [t or stype for t in types]
    return StreamDescription(
        name=info.name(),
        type=stype,
        source_id=info.source_id(),
        uid=info.uid(),
        hostname=info.hostname(),
        sfreq=float(info.nominal_srate()),
        n_channels=n,
        channel_format=_FORMATS.get(info.channel_format(), str(info.channel_format())),
        labels=labels,
        types=types,
        units=units,
    )


class DataInlet:
    """A numeric LSL inlet pulling into a preallocated buffer.

    Parameters
    ----------
    info : pylsl.StreamInfo
        From :func:`resolve_stream`.
    max_buflen : int
        Inlet buffer in seconds.
    clocksync, dejitter : bool
        liblsl post-processing flags.
    chunk_samples : int
        Size of the pull buffer in samples (0: a quarter second).
    open_timeout : float
        Seconds to wait for the full stream info.
    """

    def __init__(
        self,
        info: Any,
        max_buflen: int = 2,
        clocksync: bool = True,
        dejitter: bool = False,
        chunk_samples: int = 0,
        open_timeout: float = 2.0,
    ) -> None:
        pylsl = _pylsl()
        self._pylsl = pylsl
        flags = 0
        if clocksync:
            flags |= pylsl.proc_clocksync
        if dejitter:
            flags |= pylsl.proc_dejitter
        self.processing_flags = flags
        self.inlet = pylsl.StreamInlet(info, max_buflen=max_buflen, recover=False, processing_flags=flags)
        try:
            full = self.inlet.info(timeout=open_timeout)
        except Exception as exc:
            self.inlet.close_stream()
            raise StreamError(
                f"could not read the stream's description ({exc}); is the outlet alive?"
            ) from exc
        try:
            self.description = _describe(full)
        except ContractMismatchError:
            self.inlet.close_stream()
            raise
        fmt = self.description.channel_format
        if fmt not in _DTYPES:
            self.inlet.close_stream()
            raise ContractMismatchError(
                f"stream {self.description.name!r} has channel format {fmt!r} (a marker stream?); connect to the "
                "numeric M/EEG data stream (float32, double64 or int) instead"
            )
        self.dtype = np.dtype(_DTYPES[fmt])
        n = chunk_samples or max(16, int(self.description.sfreq * 0.25))
        self.buffer = np.zeros((n, self.description.n_channels), dtype=self.dtype)
        self.max_samples = n
        self.inlet.open_stream(timeout=open_timeout)

    def pull(self, timeout: float) -> tuple[NDArray[Any], NDArray[np.float64]]:
        """Wait up to ``timeout`` for at least one sample, then take what is there (up to the buffer size).

        Returns a view ``(n, n_channels)`` of the internal buffer (valid until the next pull) and the stamps.

        Raises
        ------
        StreamLostError-like
            ``pylsl.util.LostError`` propagates when the outlet is gone.
        """
        _, stamps = self.inlet.pull_chunk(
            timeout=timeout, max_samples=self.max_samples, dest_obj=self.buffer, min_samples=1
        )
        n = len(stamps)
        return self.buffer[:n], np.asarray(stamps, dtype=np.float64)

    def time_correction(self, timeout: float = 1.0) -> float:
        return float(self.inlet.time_correction(timeout=timeout))

    def close(self) -> None:
        try:
            self.inlet.close_stream()
        except Exception:  # closing a lost stream may raise in liblsl; nothing to do about it
            log.debug("close_stream failed", exc_info=True)
        del self.inlet


@dataclass(frozen=True)
class Marker:
    """One word marker: LSL stamp of the word onset and the JSON payload (segment_id, word, sound ...)."""

    time: float
    payload: dict[str, Any]


class MarkerInlet:
    """The replay's word-marker stream (1 string channel of JSON objects, irregular rate)."""

    def __init__(self, info: Any, clocksync: bool = True, max_buflen: int = 60) -> None:
        pylsl = _pylsl()
        flags = pylsl.proc_clocksync if clocksync else 0
        self.name = info.name()
        self.inlet = pylsl.StreamInlet(info, max_buflen=max_buflen, recover=False, processing_flags=flags)
        self.inlet.open_stream(timeout=2.0)
        self.malformed = 0

    def pull(self) -> list[Marker]:
        """Markers available now (never blocks); malformed payloads are counted and dropped."""
        samples, stamps = self.inlet.pull_chunk(timeout=0.0, max_samples=256)
        out = []
        for s, t in zip(samples or [], stamps or [], strict=False):
            try:
                payload = json.loads(s[0])
            except (ValueError, TypeError, IndexError):
                payload = None
            if not isinstance(payload, dict) or not isinstance(payload.get("segment_id"), str):
                self.malformed += 1
                continue
            out.append(Marker(float(t), payload))
        return out

    def close(self) -> None:
        try:
            self.inlet.close_stream()
        except Exception:
            log.debug("close_stream failed", exc_info=True)
        del self.inlet
