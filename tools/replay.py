"""Replay a recording into LSL at real-time pace (or faster), with honest timestamps and word markers.

Sources: a BIDS run (via :mod:`neurospeech.data`), a FIF/EDF/BDF/BrainVision/KIT (``.con``, ``.sqd``)
file or a CTF ``.ds`` folder (via mne), or an XDF file (via pyxdf). The data stream carries channel metadata
in ``desc/channels/channel`` (``label``, ``type``, ``unit``; MNE types ``mag``/``grad``/``eeg``, SI units
``T``/``T/m``/``V`` unless ``units='display'``: fT, fT/cm, uV). A second stream ``<name>-markers`` (type
``Markers``, one string channel, irregular rate) carries one JSON object per word:
``{"segment_id", "word", "sound", "sound_time", "sentence"}`` with
``segment_id = neurospeech.data.segment_id(sound, sound_time)``, stamped with the LSL time of the word's
onset sample.

Timing: chunk ``k`` (``chunk_s`` of data) is pushed once its last sample is due, i.e. at
``t_start + (index of last sample + 1) / (sfreq * speed)`` on the LSL clock. Its **last sample is stamped with
``pylsl.local_clock()`` at the push** (never in the future); earlier samples are back-dated by
``1 / (sfreq * speed)`` each, compressed if needed so that stamps never go backwards after a stall. A marker
is pushed together with the chunk that holds its onset sample and carries that sample's stamp. At
``speed > 1`` the stamps are compressed in time accordingly (the data really arrive faster).

``LSLAPICFG`` is set to the project's ``deploy/lsl_api.cfg`` when unset, before liblsl starts.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..errors import ConfigError, DataFormatError, StreamError
from ..service.acquisition import ensure_lsl_config

__all__ = [
    "ExtraStream",
    "ReplaySettings",
    "ReplaySource",
    "ReplayStats",
    "Replayer",
    "WordMarker",
    "load_bids_run",
    "load_file",
    "load_source",
    "load_xdf",
]

log = logging.getLogger(__name__)

_SI_UNITS = {"mag": "T", "grad": "T/m", "eeg": "V", "meg": "T", "seeg": "V", "ecog": "V"}
_DISPLAY = {"T": ("fT", 1e15), "T/m": ("fT/cm", 1e13), "V": ("uV", 1e6)}
_MNE_READERS = {".fif": "fif", ".gz": "fif", ".edf": "edf", ".bdf": "bdf", ".vhdr": "brainvision",
                ".con": "kit", ".sqd": "kit", ".ds": "ctf"}


@dataclass(frozen=True)
class WordMarker:
    """A word event at data sample ``sample`` (index from the first sample of the source)."""

    sample: int
    payload: dict[str, Any]


@dataclass
class ExtraStream:
    """A string stream of an XDF file re-played beside the data (e.g. a service's decisions stream).

    ``events`` are ``(data sample index, payload text)``: each is pushed with the stamp of that data sample.
    """

    name: str
    type: str
    events: list[tuple[int, str]] = field(default_factory=list)


@dataclass
class ReplaySource:
    """Data ready for the outlet.

    Attributes
    ----------
    data : array, shape (n_times, n_channels), float32
        Samples in ``units``.
    sfreq : float
        Sampling rate, Hz.
    labels, types, units : list of str
        Per-channel metadata.
    markers : list of WordMarker
        Word events, sorted by sample.
    extra_streams : list of ExtraStream
        XDF string streams to re-play too (``load_xdf(replay_streams=...)``).
    name : str
        Default stream name (from the file name).
    stream_type : str
        LSL content type (``MEG`` or ``EEG``).
    """

    data: NDArray[np.float32]
    sfreq: float
    labels: list[str]
    types: list[str]
    units: list[str]
    markers: list[WordMarker] = field(default_factory=list)
    name: str = "neurospeech-replay"
    stream_type: str = "MEG"
    extra_streams: list[ExtraStream] = field(default_factory=list)

    def __post_init__(self) -> None:
        n_ch = self.data.shape[1] if self.data.ndim == 2 else -1
        if self.data.ndim != 2 or not (len(self.labels) == len(self.types) == len(self.units) == n_ch):
            raise DataFormatError(
                "replay data must be (n_times, n_channels) with one label/type/unit per channel; got data "
                f"{self.data.shape}, {len(self.labels)} labels, {len(self.types)} types, "
                f"{len(self.units)} units"
            )
        if not np.isfinite(self.sfreq) or self.sfreq <= 0:
            raise DataFormatError(f"replay needs a regular sampling rate > 0, got {self.sfreq!r}")

    @property
    def duration(self) -> float:
        return self.data.shape[0] / self.sfreq


def _segment_id(sound: str, sound_time: float) -> str:
    from ..data import segment_id

    return segment_id(sound, sound_time)


def _markers_from_events(events: Any, sfreq: float, first_time: float = 0.0) -> list[WordMarker]:
    """Word rows of a :class:`neurospeech.data.Events` -> markers (onset seconds on the raw.times clock)."""
    words = events.words()
    out = []
    for k in range(len(words)):
        sound, st = str(words.sound[k]), float(words.sound_time[k])
        out.append(WordMarker(
            sample=round((float(words.onset[k]) - first_time) * sfreq),
            payload={"segment_id": _segment_id(sound, st), "word": str(words.word[k]), "sound": sound,
                     "sound_time": st, "sentence": str(words.sentence[k])},
        ))
    return sorted(out, key=lambda m: m.sample)


def _from_raw(raw: Any, events: Any | None, name: str) -> ReplaySource:
    import mne

    picks = mne.pick_types(raw.info, meg=True, eeg=True, seeg=True, ecog=True, ref_meg=False, exclude=[])
    if len(picks) == 0:
        raise DataFormatError(f"{name}: no MEG/EEG channels to replay")
    raw = raw.copy().pick(picks)
    types = raw.get_channel_types()
    data = np.ascontiguousarray(raw.get_data().T, dtype=np.float32)
    units = [_SI_UNITS.get(t, "V") for t in types]
    stype = "MEG" if any(t in ("mag", "grad") for t in types) else "EEG"
    markers = _markers_from_events(events, raw.info["sfreq"]) if events is not None else []
    return ReplaySource(data=data, sfreq=float(raw.info["sfreq"]), labels=list(raw.ch_names),
                        types=list(types), units=units, markers=markers, name=name, stream_type=stype)


def load_bids_run(
    root: str | Path, subject: str | None = None, task: str | None = None, run: str | None = None,
    session: str | None = None,
) -> ReplaySource:
    """The first BIDS run matching the entities (:func:`neurospeech.data.load_dataset`), with its words.

    Raises
    ------
    DataFormatError
        No run matches (the message lists the runs found).
    """
    from ..data import load_dataset

    recs = load_dataset(root, subjects=[subject] if subject else None, tasks=[task] if task else None)
    match = [r for r in recs if (run is None or r.run == run) and (session is None or r.session == session)]
    if not match:
        raise DataFormatError(
            f"no run with subject={subject} session={session} task={task} run={run} in {root}; found: "
            + ", ".join(r.name for r in recs[:20])
        )
    rec = match[0]
    log.info("replaying BIDS run %s", rec.name)
    events = rec.load_events() if rec.events_path.is_file() else None
    return _from_raw(rec.load_raw(), events, rec.name)


def load_file(path: str | Path, events_tsv: str | Path | None = None) -> ReplaySource:
    """A FIF / EDF / BDF / BrainVision file via mne; word events from ``events_tsv`` or a BIDS sibling
    ``*_events.tsv`` when present."""
    import mne

    from ..data import read_events_tsv

    p = Path(path)
    is_ctf = p.is_dir() and p.suffix.lower() == ".ds"
    if not (p.is_file() or is_ctf):
        raise DataFormatError(f"recording {str(p)!r} does not exist")
    if p.suffix.lower() not in _MNE_READERS:
        raise DataFormatError(
            f"cannot replay {p.name!r}: use .fif, .edf, .bdf, .vhdr (BrainVision), .con/.sqd (KIT), .ds (CTF), "
            ".xdf or a BIDS root"
        )
    try:
        raw = mne.io.read_raw(p, preload=True, verbose="error")
    except Exception as exc:  # mne raises many types (AttributeError on an empty FIF, struct.error ...)
        raise DataFormatError(
            f"cannot read {str(p)!r} ({type(exc).__name__}: {exc}); the file is empty, truncated or not a "
            f"{_MNE_READERS[p.suffix.lower()].upper()} recording"
        ) from exc
    if raw.n_times < 2:
        raise DataFormatError(f"{str(p)!r} holds {raw.n_times} sample(s); nothing to replay")
    if events_tsv is None:
        stem = p.name.split(".")[0]
        sib = p.with_name(stem.rsplit("_", 1)[0] + "_events.tsv") if "_" in stem else None
        if sib is not None and sib.is_file():
            events_tsv = sib
    events = read_events_tsv(events_tsv) if events_tsv is not None else None
    if events is not None:
        log.info("word events from %s", events_tsv)
    return _from_raw(raw, events, p.name.split(".")[0])


def _xdf_channels(info: dict[str, Any], n: int) -> tuple[list[str], list[str], list[str]]:
    labels, types, units = [], [], []
    try:
        chans = info["desc"][0]["channels"][0]["channel"]
    except (KeyError, IndexError, TypeError):
        chans = []
    for k in range(n):
        c = chans[k] if k < len(chans) and isinstance(chans[k], dict) else {}

        def first(key: str, default: str, c: dict[str, Any] = c) -> str:
            v = c.get(key)
            return str(v[0]) if isinstance(v, list) and v and v[0] is not None else default

        labels.append(first("label", f"ch{k:03d}"))
        types.append(first("type", "eeg").lower())
        units.append(first("unit", ""))
    return labels, types, units


def load_xdf(path: str | Path, stream: str | None = None, replay_streams: Sequence[str] = ()) -> ReplaySource:
    """A data stream (by name, or the numeric stream with the most channels) and its word markers from XDF.

    Markers are read from the string stream named ``<data name>-markers`` (else the first ``Markers`` stream
    whose samples are the JSON objects this module writes, with a ``segment_id``); their stamps are mapped to
    data sample indices. Other string streams (e.g. the decisions of ``serve --lsl-outlet``) are ignored unless
    named in ``replay_streams``: those are re-played as they were recorded, each sample on its data sample.
    """
    import pyxdf

    p = Path(path)
    if not p.is_file():
        raise DataFormatError(f"XDF file {str(p)!r} does not exist")
    try:
        streams, _ = pyxdf.load_xdf(str(p), dejitter_timestamps=False)
    except Exception as exc:  # pyxdf raises many types on corrupt files
        raise DataFormatError(f"cannot read XDF {str(p)!r}: {exc}") from exc

    def nm(s: dict[str, Any]) -> str:
        return str(s["info"]["name"][0])

    numeric = [s for s in streams if s["info"]["channel_format"][0] != "string" and len(s["time_stamps"])]
    if stream is not None:
        numeric = [s for s in numeric if nm(s) == stream]
    if not numeric:
        raise DataFormatError(
            f"{p.name}: no numeric stream{' named ' + repr(stream) if stream else ''}; streams: "
            + ", ".join(f"{nm(s)} ({s['info']['channel_format'][0]})" for s in streams)
        )
    strings = [s for s in streams if s["info"]["channel_format"][0] == "string"]
    missing = set(replay_streams) - {nm(s) for s in strings}
    if missing:
        raise DataFormatError(
            f"{p.name}: no string stream named {sorted(missing)} to re-play; string streams: "
            + (", ".join(nm(s) for s in strings) or "none")
        )
    data_s = max(numeric, key=lambda s: int(s["info"]["channel_count"][0]))
    info = data_s["info"]
    x = np.ascontiguousarray(np.asarray(data_s["time_series"], dtype=np.float32))
    ts = np.asarray(data_s["time_stamps"], dtype=np.float64)
    sfreq = float(info["nominal_srate"][0])
    if sfreq <= 0:
        if len(ts) < 2:
            raise DataFormatError(f"{p.name}: stream {nm(data_s)!r} has no nominal rate and < 2 samples")
        sfreq = float((len(ts) - 1) / (ts[-1] - ts[0]))
    labels, types, units = _xdf_channels(info, x.shape[1])

    def index(stamp: float) -> int:
        return int(np.searchsorted(ts, float(stamp) - 0.5 / sfreq))

    def word_payloads(s: dict[str, Any]) -> list[tuple[float, dict[str, Any]]]:
        out = []
        for stamp, sample in zip(s["time_stamps"], s["time_series"], strict=False):
            try:
                payload = json.loads(sample[0])
            except (ValueError, TypeError, IndexError):
                continue
            if isinstance(payload, dict) and "segment_id" in payload:
                out.append((float(stamp), payload))
        return out

    markers: list[WordMarker] = []
    chosen: dict[str, Any] | None = None
    candidates = [s for s in strings if nm(s) not in replay_streams
                  and (nm(s) == nm(data_s) + "-markers" or s["info"]["type"][0].lower() == "markers")]
    candidates.sort(key=lambda s: nm(s) != nm(data_s) + "-markers")  # the data stream's own markers first
    for ms in candidates:
        words = word_payloads(ms)
        if not words:
            continue  # e.g. a decisions stream: JSON without a segment_id at the top
        for stamp, payload in words:
            idx = index(stamp)
            if 0 <= idx < len(ts):
                markers.append(WordMarker(sample=idx, payload=payload))
        chosen = ms
        break
    extra = []
    for s in strings:
        if nm(s) in replay_streams:
            events = [(index(t), str(v[0])) for t, v in zip(s["time_stamps"], s["time_series"], strict=False)]
            extra.append(ExtraStream(nm(s), str(s["info"]["type"][0]),
                                     [(i, v) for i, v in events if 0 <= i < len(ts)]))
        elif s is not chosen:
            log.info("XDF stream %r (%s) not re-played (name it to re-play it)", nm(s), s["info"]["type"][0])
    stype = str(info["type"][0]) or "EEG"
    return ReplaySource(data=x, sfreq=sfreq, labels=labels, types=types, units=units,
                        markers=sorted(markers, key=lambda m: m.sample), name=nm(data_s), stream_type=stype,
                        extra_streams=extra)


def load_source(
    path: str | Path, *, subject: str | None = None, session: str | None = None, task: str | None = None,
    run: str | None = None, events: str | Path | None = None, stream: str | None = None,
    replay_streams: Sequence[str] = (),
) -> ReplaySource:
    """Dispatch on ``path``: a directory is a BIDS root, ``.xdf`` goes to pyxdf, anything else to mne.

    ``replay_streams``: XDF string streams to re-play beside the data (see :func:`load_xdf`).
    """
    p = Path(path)
    if p.is_dir() and p.suffix.lower() != ".ds":  # a CTF recording is a .ds folder
        return load_bids_run(p, subject=subject, task=task, run=run, session=session)
    if p.suffix.lower() == ".xdf":
        return load_xdf(p, stream=stream, replay_streams=replay_streams)
    if replay_streams:
        raise ConfigError(f"re-playing recorded streams {list(replay_streams)} needs an .xdf source, got {p.name!r}")
    return load_file(p, events_tsv=events)


@dataclass
class ReplaySettings:
    """Settings of :class:`Replayer`.

    Attributes
    ----------
    speed : float
        1.0 = real time; 2.0 = twice as fast.
    chunk_s : float
        Seconds of data per pushed chunk.
    loop : bool
        Start again at the end (markers again too).
    name : str or None
        Stream name (default: the source's name); the marker stream is ``<name>-markers``.
    source_id : str or None
        LSL source_id (default ``neurospeech-replay-<name>``); the marker stream gets ``<source_id>-markers``.
    markers : bool
        Create the marker stream.
    units : str
        ``'si'`` (V, T, T/m) or ``'display'`` (uV, fT, fT/cm; data scaled to match).
    start_s, duration_s : float
        Replay only ``[start_s, start_s + duration_s)`` of the source (None: to the end).
    max_buffered : int
        Outlet buffer in seconds.
    """

    speed: float = 1.0
    chunk_s: float = 0.02
    loop: bool = False
    name: str | None = None
    source_id: str | None = None
    markers: bool = True
    units: str = "si"
    start_s: float = 0.0
    duration_s: float | None = None
    max_buffered: int = 30

    def __post_init__(self) -> None:
        if not (np.isfinite(self.speed) and self.speed > 0):
            raise ConfigError(f"speed must be > 0, got {self.speed!r}")
        if not (0 < self.chunk_s <= 5):
            raise ConfigError(f"chunk_s must be in (0, 5] s, got {self.chunk_s!r}")
        if self.units not in ("si", "display"):
            raise ConfigError(f"units must be 'si' or 'display', got {self.units!r}")
        if self.start_s < 0 or (self.duration_s is not None and self.duration_s <= 0):
            raise ConfigError(
                f"start_s >= 0 and duration_s > 0 needed, got {self.start_s}, {self.duration_s}"
            )


@dataclass
class ReplayStats:
    samples_pushed: int = 0
    chunks_pushed: int = 0
    markers_pushed: int = 0
    loops: int = 0
    t_first: float | None = None
    t_last: float | None = None
    max_late_s: float = 0.0  # worst lateness of a push behind its schedule

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Replayer:
    """Push a :class:`ReplaySource` into LSL outlets.

    Use :meth:`run` (blocking, until the end or ``stop()``), or :meth:`start` for a background thread.
    Outlets are created in the constructor, so consumers can resolve them before data flow.
    """

    def __init__(self, source: ReplaySource, settings: ReplaySettings | None = None) -> None:
        ensure_lsl_config()
        import pylsl

        self._lsl = pylsl
        self.settings = s = settings or ReplaySettings()
        self.source = source
        i0 = round(s.start_s * source.sfreq)
        i1 = source.data.shape[0] if s.duration_s is None else min(source.data.shape[0],
                                                                   i0 + round(s.duration_s * source.sfreq))
        if i1 - i0 < 1:
            raise ConfigError(
                f"nothing to replay: start_s={s.start_s} lies beyond the recording ({source.duration:.1f} s)"
            )
        self._i0, self._i1 = i0, i1
        units = list(source.units)
        data = source.data[i0:i1]
        if s.units == "display":
            scale = np.ones(len(units), dtype=np.float32)
            for k, u in enumerate(units):
                if u in _DISPLAY:
                    units[k], f = _DISPLAY[u]
                    scale[k] = f
            data = data * scale[None, :]
        self._data = np.ascontiguousarray(data, dtype=np.float32)
        self._markers = [m for m in source.markers if i0 <= m.sample < i1]
        self.name = s.name or source.name
        self.source_id = s.source_id or f"neurospeech-replay-{self.name}"
        info = pylsl.StreamInfo(self.name, source.stream_type, self._data.shape[1], source.sfreq,
                                pylsl.cf_float32, self.source_id)
        chans = info.desc().append_child("channels")
        for lab, typ, unit in zip(source.labels, source.types, units, strict=True):
            ch = chans.append_child("channel")
            ch.append_child_value("label", lab)
            ch.append_child_value("type", typ)
            ch.append_child_value("unit", unit)
        info.desc().append_child("acquisition").append_child_value("manufacturer", "neurospeech replay")
        self.units = units
        self.outlet = pylsl.StreamOutlet(info, 0, s.max_buffered)
        self.marker_outlet = None
        if s.markers:
            minfo = pylsl.StreamInfo(f"{self.name}-markers", "Markers", 1, pylsl.IRREGULAR_RATE,
                                     pylsl.cf_string, f"{self.source_id}-markers")
            self.marker_outlet = pylsl.StreamOutlet(minfo)
        # re-played XDF string streams: <name>-<recorded name>, each event on its data sample's stamp
        self._extra = []
        for es in source.extra_streams:
            einfo = pylsl.StreamInfo(f"{self.name}-{es.name}", es.type, 1, pylsl.IRREGULAR_RATE, pylsl.cf_string,
                                     f"{self.source_id}-{es.name}")
            ev = [(k - i0, v) for k, v in es.events if i0 <= k < i1]
            self._extra.append((pylsl.StreamOutlet(einfo), np.array([k for k, _ in ev], dtype=np.int64),
                                [v for _, v in ev]))
        self.extra_names = [f"{self.name}-{es.name}" for es in source.extra_streams]
        self.stats = ReplayStats()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        log.info("LSL outlet %r (%s, %d ch @ %g Hz, source_id %r), %d word markers, speed %g",
                 self.name, source.stream_type, self._data.shape[1], source.sfreq, self.source_id,
                 len(self._markers), s.speed)

    # ------------------------------------------------------------------ running
    def run(self, max_seconds: float | None = None) -> ReplayStats:
        """Push until the end (or for ever with ``loop``), ``stop()``, or ``max_seconds`` of wall time."""
        lsl = self._lsl
        s = self.settings
        sf = self.source.sfreq
        dt = 1.0 / (sf * s.speed)  # wall seconds per sample
        n = self._data.shape[0]
        step = max(1, round(s.chunk_s * sf))
        marker_samples = np.array([m.sample - self._i0 for m in self._markers], dtype=np.int64)
        t_start = lsl.local_clock()
        pushed_total = 0  # samples pushed since t_start, across loops (drives the schedule)
        prev_last: float | None = None
        while not self._stop.is_set():
            i = 0
            while i < n and not self._stop.is_set():
                j = min(n, i + step)
                due = t_start + (pushed_total + (j - i)) * dt
                now = lsl.local_clock()
                if now < due:
                    if self._stop.wait(due - now):
                        break
                    now = lsl.local_clock()
                self.stats.max_late_s = max(self.stats.max_late_s, now - due)
                m = j - i
                spacing = dt if prev_last is None else min(dt, (now - prev_last) / m)
                stamps = now - spacing * np.arange(m - 1, -1, -1, dtype=np.float64)
                self.outlet.push_chunk(self._data[i:j], stamps.tolist())
                if self.marker_outlet is not None and marker_samples.size:
                    lo, hi = np.searchsorted(marker_samples, [i, j])
                    for k in range(lo, hi):
                        payload = json.dumps(self._markers[k].payload)
                        self.marker_outlet.push_sample([payload], float(stamps[marker_samples[k] - i]))
                        self.stats.markers_pushed += 1
                for outlet, at, payloads in self._extra:
                    lo, hi = np.searchsorted(at, [i, j])
                    for k in range(lo, hi):
                        outlet.push_sample([payloads[k]], float(stamps[at[k] - i]))
                prev_last = float(stamps[-1])
                if self.stats.t_first is None:
                    self.stats.t_first = float(stamps[0])
                self.stats.t_last = prev_last
                self.stats.samples_pushed += m
                self.stats.chunks_pushed += 1
                pushed_total += m
                i = j
                if max_seconds is not None and now - t_start >= max_seconds:
                    self._stop.set()
            if not s.loop or self._stop.is_set():
                break
            self.stats.loops += 1
        return self.stats

    def start(self, max_seconds: float | None = None) -> threading.Thread:
        """Run in a background thread (daemon); :meth:`stop` ends it."""
        def target() -> None:
            try:
                self.run(max_seconds)
            except BaseException as exc:  # surfaced by join()
                self._error = exc
                log.exception("replay thread failed")

        self._thread = threading.Thread(target=target, name="neurospeech-replay", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float | None = None) -> ReplayStats:
        if self._thread is not None:
            self._thread.join(timeout)
        if self._error is not None:
            raise StreamError(f"replay failed: {self._error}") from self._error
        return self.stats

    @property
    def done(self) -> bool:
        return self._thread is not None and not self._thread.is_alive()

    def close(self) -> None:
        """Stop, join and destroy the outlets (consumers see the stream disappear).

        An outlet is destroyed only once no thread can push into it: destroying a liblsl outlet while another
        thread pushes (or while liblsl still hands the last samples to a consumer) can crash the process
        (liblsl's sample factory is freed under the sender: sccn/liblsl#218). If the pushing thread does not
        stop within 10 s, the outlets are left to the process's end instead.
        """
        self.stop()
        if self._thread is not None:
            self._thread.join(10.0)
            if self._thread.is_alive():
                log.warning("replay thread still running after 10 s; its LSL outlets are not destroyed now")
                return
        outlets = [o for o in (self.outlet, self.marker_outlet) if o is not None]
        outlets += [o for o, _at, _payloads in self._extra]
        if not outlets:  # closed already
            return
        self.outlet = self.marker_outlet = None
        self._extra = []
        if any(o.have_consumers() for o in outlets):
            time.sleep(0.1)  # let liblsl's sender threads finish the last chunk before the outlet goes
        for o in outlets:
            del o
        outlets.clear()
        log.info("replay of %r ended after %d samples (%d word markers); LSL outlet closed", self.name,
                 self.stats.samples_pushed, self.stats.markers_pushed)

    def __enter__(self) -> Replayer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
