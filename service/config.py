"""Settings of ``neurospeech serve`` and ``neurospeech decode-file``: one typed dataclass, loaded from TOML.

A TOML file has the sections ``[model]``, ``[stream]``, ``[decode]``, ``[quality]``, ``[acquisition]`` and
``[publish]`` (see ``deploy/configs/serve.example.toml``); every key is one field of :class:`ServeSettings`
(``[publish]`` keys go to :class:`neurospeech.service.publisher.PublisherSettings`). Unknown keys, wrong types
and out-of-range values raise :class:`~neurospeech.errors.ConfigError` naming the key, the value and what is
allowed.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError

__all__ = ["SECTIONS", "ServeSettings", "load_settings"]

#: TOML section -> the ServeSettings fields it may hold
SECTIONS: dict[str, tuple[str, ...]] = {
    "model": ("model", "bank", "subject", "intra_op_threads", "blas_threads"),
    "stream": (
        "stream_name",
        "stream_type",
        "source_id",
        "resolve_timeout",
        "markers",
        "marker_stream",
        "strict_rate",
        "units",
    ),
    "acquisition": (
        "clocksync",
        "dejitter",
        "max_buflen",
        "chunk_samples",
        "loss_timeout",
        "reconnect_interval",
        "ring_seconds",
        "jump_threshold",
        "clock_halftime",
    ),
    "decode": ("hop", "topk", "status_interval", "send_latent", "lsl_outlet"),
    "quality": (
        "bad_channel_policy",
        "flat_rel",
        "artefact_threshold",
        "saturation_fraction",
        "max_bad_fraction",
        "n_neighbours",
    ),
}
_POLICIES = ("skip", "interpolate")
_MIN_HOP = 0.01
_MIN_STATUS_INTERVAL = 0.05
_MIN_LOSS_TIMEOUT = 0.2


@dataclass
class ServeSettings:
    """Everything ``serve`` needs.

    Attributes
    ----------
    model, bank : Path
        Exported ONNX encoder (contract in its metadata or a ``<model>.contract.json`` sidecar) and the
        candidate bank built for it (its header names the model's SHA-256).
    subject : str or None
        Subject whose robust scaler (and subject-layer index) is used; None: the model's only subject.
    intra_op_threads : int
        onnxruntime intra-op threads (1: leaves the other core to acquisition and publishing).
    blas_threads : int
        Threads of numpy's BLAS (resampler, bank scoring) while serving or decoding a file. 1: the service's
        own threads already keep the cores busy; a BLAS pool per matrix product on top of them oversubscribes
        the cores (decode-file ran ~2x slower on 2 cores with OpenBLAS's default of one thread per core).
    stream_name, stream_type, source_id : str or None
        LSL query (at least one). After a loss the stream is re-resolved by ``source_id`` when it has one.
    resolve_timeout : float
        Seconds to wait for the stream at start-up.
    markers : bool
        Look for a word-marker stream (``<stream name>-markers``, type ``Markers``) and decode word-locked
        windows.
    marker_stream : str or None
        Name of the marker stream (default ``<stream name>-markers``).
    units : str or None
        Units of the stream's values, used instead of its channel metadata (``--units``): one unit for every
        channel (``uV``) or per channel type (``mag=fT,grad=fT/cm``). None: the stream's metadata; a stream that
        declares none is assumed SI with a warning at connect.
    strict_rate : bool
        Refuse a stream whose rate differs from the model's training rate ``sfreq_raw`` (otherwise any rate
        >= the model rate that resamples exactly is accepted).
    clocksync, dejitter : bool
        liblsl inlet post-processing. Clock sync maps the outlet's clock onto ours. liblsl's dejitter smooths
        stamps over ~90 s and hides clock jumps, so the default is off: the service fits its own clock model
        (``clock_halftime``) and detects jumps (``jump_threshold``).
    max_buflen : int
        Inlet buffer in seconds (small: a stalled consumer drops old data instead of drifting minutes behind).
    chunk_samples : int
        Preallocated pull buffer in samples (0: 0.25 s of the stream).
    loss_timeout : float
        No samples for this long -> state ``lost``, in [0.2, 2] s.
    reconnect_interval : float
        Pause between re-resolve attempts while lost.
    ring_seconds : float
        History kept at the model rate (>= window + word-marker delay).
    jump_threshold : float
        A chunk stamp further than this from the clock model (s) is a clock jump / gap: new segment.
    clock_halftime : float
        Forgetting half-time of the clock model (s of data).
    hop : float
        Seconds of data between sliding decisions, in [0.01, 10].
    topk : int
        Candidates per decision.
    status_interval : float
        Seconds between status heartbeats, in [0.05, 1].
    send_latent : bool
        Attach the encoder output as a raw array frame to decode messages.
    lsl_outlet : str or None
        Also publish every decision as an LSL string-marker stream of this name (JSON, stamped with
        ``t_newest_sample``) and the status as ``<name>-status`` (see :mod:`neurospeech.service.lsl_outlet`).
    bad_channel_policy : str
        ``skip`` (bad window not decoded) or ``interpolate`` (bad channels replaced by the mean of their
        nearest good neighbours, when at most ``max_bad_fraction`` of the channels are bad).
    flat_rel : float
        Channel flat when its peak-to-peak over the window is below ``flat_rel`` x its scaler IQR.
    artefact_threshold : float
        Channel has a huge artefact when any robust-scaled value exceeds this (scaled units; clamp is 20).
    saturation_fraction : float
        Channel saturated when this fraction of its window sits at its min or max (clipping).
    max_bad_fraction : float
        More bad channels than this fraction: the window is skipped whatever the policy.
    n_neighbours : int
        Neighbours averaged when interpolating.
    publish : dict
        Keyword arguments of ``PublisherSettings`` (endpoint, encoding, sndhwm, state_endpoint, curve keys,
        jsonl_log).
    """

    model: Path = Path("model.onnx")
    bank: Path = Path("bank.npz")
    subject: str | None = None
    intra_op_threads: int = 1
    blas_threads: int = 1
    stream_name: str | None = None
    stream_type: str | None = None
    source_id: str | None = None
    resolve_timeout: float = 10.0
    markers: bool = True
    marker_stream: str | None = None
    strict_rate: bool = False
    units: str | None = None
    clocksync: bool = True
    dejitter: bool = False
    max_buflen: int = 2
    chunk_samples: int = 0
    loss_timeout: float = 1.0
    reconnect_interval: float = 0.25
    ring_seconds: float = 30.0
    jump_threshold: float = 0.25
    clock_halftime: float = 20.0
    hop: float = 0.25
    topk: int = 10
    status_interval: float = 0.5
    send_latent: bool = False
    lsl_outlet: str | None = None
    bad_channel_policy: str = "skip"
    flat_rel: float = 1e-3
    artefact_threshold: float = 100.0
    saturation_fraction: float = 0.2
    max_bad_fraction: float = 0.25
    n_neighbours: int = 4
    publish: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.model = Path(self.model)
        self.bank = Path(self.bank)
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self, need_stream: bool = False) -> None:
        """Check every value (raises :class:`ConfigError` naming the key)."""

        def positive(name: str, hi: float | None = None, lo: float | None = None, why: str = "") -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ConfigError(f"{name} must be a positive number, got {v!r}")
            if hi is not None and v > hi:
                raise ConfigError(f"{name} must be at most {hi}, got {v!r}")
            if lo is not None and v < lo:
                raise ConfigError(f"{name} must be at least {lo:g} s{why}, got {v!r}")

        def fraction(name: str) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 1:
                raise ConfigError(f"{name} must be a number in (0, 1], got {v!r}")

        def integer(name: str, lo: int, hi: int) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise ConfigError(f"{name} must be an integer in [{lo}, {hi}], got {v!r}")

        def flag(name: str) -> None:
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")

        def text(name: str) -> None:
            v = getattr(self, name)
            if v is not None and (not isinstance(v, str) or not v.strip() or "'" in v):
                raise ConfigError(f"{name} must be a non-empty string without quotes (or unset), got {v!r}")

        # lower bounds: a tiny heartbeat period floods subscribers and starves the decoder (1e-6 s: 2,470
        # status messages/s, half the decision rate); a loss timeout below a few pull periods (50 ms) declares
        # a healthy stream lost between two chunks
        positive("hop", 10.0, _MIN_HOP, " (one decision per hop of data)")
        positive("status_interval", 1.0, _MIN_STATUS_INTERVAL, " (at most 20 heartbeats per second)")
        positive("loss_timeout", 2.0, _MIN_LOSS_TIMEOUT, " (several 50 ms pulls without a sample)")
        positive("reconnect_interval", 2.0, 0.01)
        positive("resolve_timeout", 3600.0)
        positive("ring_seconds", 600.0)
        positive("jump_threshold", 60.0)
        positive("clock_halftime", 3600.0)
        positive("flat_rel")
        positive("artefact_threshold")
        fraction("saturation_fraction")
        fraction("max_bad_fraction")
        integer("topk", 1, 1000)
        integer("intra_op_threads", 1, 64)
        integer("blas_threads", 1, 64)
        integer("max_buflen", 1, 360)
        integer("chunk_samples", 0, 1_000_000)
        integer("n_neighbours", 1, 64)
        for name in ("markers", "strict_rate", "clocksync", "dejitter", "send_latent"):
            flag(name)
        for name in ("stream_name", "stream_type", "source_id", "marker_stream", "subject", "lsl_outlet"):
            text(name)
        if self.units is not None:
            from ..contract import parse_unit_override
            from ..errors import ContractMismatchError

            if not isinstance(self.units, str):
                raise ConfigError(f"units must be a string such as 'uV' or 'mag=fT,grad=fT/cm', got {self.units!r}")
            try:
                parse_unit_override(self.units)
            except ContractMismatchError as exc:
                raise ConfigError(f"units: {exc}") from exc
        if self.bad_channel_policy not in _POLICIES:
            raise ConfigError(
                f"bad_channel_policy must be one of {_POLICIES}, got {self.bad_channel_policy!r}"
            )
        if not isinstance(self.publish, dict):
            raise ConfigError(f"[publish] must be a table of publisher settings, got {self.publish!r}")
        from .publisher import PublisherSettings

        try:  # refuse a bad [publish] table now, not after the model has been loaded
            PublisherSettings(**self.publish)
        except TypeError as exc:
            allowed = [f.name for f in dataclasses.fields(PublisherSettings)]
            unknown = sorted(set(self.publish) - set(allowed))
            raise ConfigError(f"unknown key(s) {unknown} in [publish]; allowed: {allowed}") from exc
        if need_stream and not (self.stream_name or self.stream_type or self.source_id):
            raise ConfigError(
                "no stream to connect to: set stream_name, stream_type or source_id "
                "(e.g. --stream-name MyAmp, or [stream] name = ... in the config)"
            )

    def replace(self, **changes: Any) -> ServeSettings:
        """A copy with some fields changed (None values are ignored), validated."""
        changes = {k: v for k, v in changes.items() if v is not None}
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ConfigError(f"unknown setting(s) {sorted(unknown)}")
        return dataclasses.replace(self, **changes)

    @property
    def marker_stream_name(self) -> str | None:
        if self.marker_stream:
            return self.marker_stream
        return f"{self.stream_name}-markers" if self.stream_name else None


def load_settings(path: str | Path | None = None, **overrides: Any) -> ServeSettings:
    """Read a TOML config (sections as in :data:`SECTIONS` plus ``[publish]``) and apply overrides.

    Relative ``model``/``bank`` paths in the file are resolved against the file's folder.

    Raises
    ------
    ConfigError
        Unreadable file, bad TOML, unknown section/key, or an invalid value.
    """
    values: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        try:
            doc = tomllib.loads(p.read_text("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {str(p)!r} is not valid TOML: {exc}") from exc
        for section, table in doc.items():
            if section == "publish":
                if not isinstance(table, dict):
                    raise ConfigError("[publish] must be a table")
                values["publish"] = dict(table)
                continue
            if section not in SECTIONS or not isinstance(table, dict):
                raise ConfigError(
                    f"unknown config section [{section}] in {str(p)!r}; allowed: {[*SECTIONS, 'publish']}"
                )
            for key, value in table.items():
                if key not in SECTIONS[section]:
                    raise ConfigError(
                        f"unknown key {key!r} in [{section}] of {str(p)!r}; allowed:{list(SECTIONS[section])}"
                    )
                if key in ("model", "bank"):
                    if not isinstance(value, str):
                        raise ConfigError(f"{key} must be a path string, got {value!r}")
                    q = Path(value).expanduser()
                    value = q if q.is_absolute() else (p.parent / q)
                values[key] = value
    publish_over = overrides.pop("publish", None)
    values.update({k: v for k, v in overrides.items() if v is not None})
    if publish_over:
        values["publish"] = {**values.get("publish", {}), **publish_over}
    known = {f.name for f in dataclasses.fields(ServeSettings)}
    unknown = set(values) - known
    if unknown:
        raise ConfigError(f"unknown setting(s) {sorted(unknown)}")
    try:
        return ServeSettings(**values)
    except TypeError as exc:  # pragma: no cover - guarded above
        raise ConfigError(str(exc)) from exc
