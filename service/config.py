"""Settings of ``neurospeech serve`` and ``neurospeech decode-file``: one typed pydantic model, loaded from TOML.

A TOML file has the sections ``[model]``, ``[stream]``, ``[decode]``, ``[quality]``, ``[acquisition]`` and
``[publish]`` (see ``deploy/configs/serve.example.toml``); every key is one field of :class:`ServeSettings`
(``[publish]`` keys go to :class:`neurospeech.service.publisher.PublisherSettings`). The file's model is
:class:`ServeFile` (its JSON Schema: ``neurospeech config-schema serve``). Unknown sections and keys, wrong
types (``nodrop = "no"``) and out-of-range values raise :class:`~neurospeech.errors.ConfigError` (exit code 2)
naming the key, the value and what is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, Field, model_validator

from .._settings import LaxPath, Settings, read_toml
from ..errors import ConfigError

__all__ = [
    "SECTIONS",
    "AcquisitionSection",
    "DecodeSection",
    "ModelSection",
    "PublishSection",
    "QualitySection",
    "ServeFile",
    "ServeSettings",
    "StreamSection",
    "load_settings",
]

_POLICIES = ("skip", "interpolate")
_MIN_HOP = 0.01
_MIN_STATUS_INTERVAL = 0.05
_MIN_LOSS_TIMEOUT = 0.2
_EXAMPLE = "deploy/configs/serve.example.toml"


def _text(value: str | None) -> str | None:
    if value is not None and (not value.strip() or "'" in value):
        raise ValueError(f"must be a non-empty string without quotes (or unset), got {value!r}")
    return value


def _units(value: str | None) -> str | None:
    if value is None:
        return None
    from ..contract import parse_unit_override
    from ..errors import ContractMismatchError

    try:
        parse_unit_override(value)
    except ContractMismatchError as exc:
        raise ConfigError(f"units: {exc}") from exc
    return value


#: an LSL name/query part: used inside an LSL predicate, so no quotes
Text = Annotated[str | None, AfterValidator(_text)]


# ------------------------------------------------------------------------------------------------ sections
class ModelSection(Settings):
    """``[model]``: the exported encoder, its candidate bank, and the threads that run them."""

    model: LaxPath = Field(Path("model.onnx"), description="exported ONNX encoder (relative: to the file)")
    bank: LaxPath = Field(Path("bank.npz"), description="candidate bank built for that model")
    subject: Text = Field(None, description="subject whose scaler is used (default: the model's only one)")
    intra_op_threads: int = Field(1, ge=1, le=64, description="onnxruntime intra-op threads")
    blas_threads: int = Field(1, ge=1, le=64, description="numpy BLAS threads (resampler, bank scoring)")


class StreamSection(Settings):
    """``[stream]``: which LSL stream to decode and how to read its values."""

    stream_name: Text = Field(None, description="LSL stream name")
    stream_type: Text = Field(None, description="LSL stream type (e.g. EEG, MEG)")
    source_id: Text = Field(None, description="LSL source_id (re-resolved by it after a loss)")
    resolve_timeout: float = Field(10.0, gt=0, le=3600, description="seconds to wait for the stream at start-up")
    markers: bool = Field(True, description="decode word-locked windows from the word-marker stream")
    marker_stream: Text = Field(None, description="name of the marker stream (default <stream_name>-markers)")
    strict_rate: bool = Field(False, description="refuse a stream whose rate differs from the training rate")
    units: Annotated[str | None, AfterValidator(_units)] = Field(
        None, description="units of the stream's values: 'uV', or per type 'mag=fT,grad=fT/cm'")


class AcquisitionSection(Settings):
    """``[acquisition]``: the LSL inlet, loss detection and the service's clock model."""

    clocksync: bool = Field(True, description="liblsl clock synchronisation")
    dejitter: bool = Field(False, description="liblsl dejitter (hides clock jumps; the service fits its own)")
    max_buflen: int = Field(2, ge=1, le=360, description="inlet buffer in seconds")
    chunk_samples: int = Field(0, ge=0, le=1_000_000, description="pull buffer in samples (0: 0.25 s)")
    loss_timeout: float = Field(
        1.0, ge=_MIN_LOSS_TIMEOUT, le=2.0,
        description="no samples for this long (s) -> state lost; >= 0.2 s (several 50 ms pulls without a sample)")
    reconnect_interval: float = Field(0.25, ge=0.01, le=2.0, description="pause (s) between re-resolve attempts")
    ring_seconds: float = Field(30.0, gt=0, le=600, description="history kept (s) at the model rate")
    jump_threshold: float = Field(0.25, gt=0, le=60, description="stamp error (s): a candidate clock jump / gap")
    clock_halftime: float = Field(20.0, gt=0, le=3600, description="forgetting half-time (s) of the clock model")


class DecodeSection(Settings):
    """``[decode]``: how often to decide and what to publish."""

    hop: float = Field(0.25, ge=_MIN_HOP, le=10.0,
                       description="seconds of data between sliding decisions (one decision per hop of data)")
    topk: int = Field(10, ge=1, le=1000, description="candidates per decision")
    status_interval: float = Field(
        0.5, ge=_MIN_STATUS_INTERVAL, le=1.0,
        description="seconds between status heartbeats (at most 20 heartbeats per second)")
    send_latent: bool = Field(False, description="attach the encoder output as a raw array frame")
    lsl_outlet: Text = Field(None, description="also publish decisions as an LSL marker stream of this name")


class QualitySection(Settings):
    """``[quality]``: which windows and channels are bad, and what to do about them."""

    bad_channel_policy: Literal["skip", "interpolate"] = Field(
        "skip", description="skip a bad window, or interpolate its bad channels")
    flat_rel: float = Field(1e-3, gt=0, description="flat: peak-to-peak below this x the channel's scaler IQR")
    artefact_threshold: float = Field(100.0, gt=0, description="artefact: a robust-scaled value above this")
    saturation_fraction: float = Field(0.2, gt=0, le=1, description="saturated: this fraction at min or max")
    max_bad_fraction: float = Field(0.25, gt=0, le=1, description="more bad channels than this: skip")
    n_neighbours: int = Field(4, ge=1, le=64, description="neighbours averaged when interpolating")
    rescale_seconds: float | None = Field(
        None, ge=0, le=600,
        description="re-estimate the robust scaler from the first N s of clean live data (0: off; unset: 60 s "
                    "for a subject adapted by `neurospeech adapt`, off otherwise)")


class PublishSection(Settings):
    """``[publish]``: keyword arguments of :class:`neurospeech.service.publisher.PublisherSettings`."""

    _sections: ClassVar[dict[str, str]] = {}  # filled below: every key lives in [publish]

    endpoint: str = Field("tcp://127.0.0.1:5556", description="ZeroMQ endpoint of the PUB socket")
    encoding: Literal["json", "msgpack"] = Field("json", description="header encoding")
    sndhwm: int = Field(1000, ge=1, le=10_000_000, description="per-subscriber queue (messages)")
    nodrop: bool = Field(False, description="a full queue drops the message for everyone, counted")
    state_endpoint: str | None = Field(None, description="REP endpoint answering late joiners")
    curve_secret_key: LaxPath | None = Field(None, description="server .key_secret file (enables CURVE)")
    curve_authorized_keys: LaxPath | None = Field(None, description="folder of allowed client .key files")
    jsonl_log: LaxPath | None = Field(None, description="append every published header here (JSON lines)")


PublishSection._sections = dict.fromkeys(PublishSection.model_fields, "publish")


def _publish(table: dict[str, Any]) -> dict[str, Any]:
    """The ``[publish]`` table, checked key by key (kept as given: PublisherSettings takes it as is)."""
    PublishSection.from_dict(table)
    return dict(table)


#: TOML section -> the ServeSettings fields it may hold
SECTIONS: dict[str, tuple[str, ...]] = {
    "model": tuple(ModelSection.model_fields),
    "stream": tuple(StreamSection.model_fields),
    "acquisition": tuple(AcquisitionSection.model_fields),
    "decode": tuple(DecodeSection.model_fields),
    "quality": tuple(QualitySection.model_fields),
}


class ServeFile(Settings):
    """A ``serve`` config file: its sections (each optional). Its JSON Schema is the file's."""

    _what: ClassVar[str] = "serve settings"

    model: ModelSection = Field(default_factory=ModelSection)
    stream: StreamSection = Field(default_factory=StreamSection)
    acquisition: AcquisitionSection = Field(default_factory=AcquisitionSection)
    decode: DecodeSection = Field(default_factory=DecodeSection)
    quality: QualitySection = Field(default_factory=QualitySection)
    publish: PublishSection = Field(default_factory=PublishSection)


class ServeSettings(QualitySection, DecodeSection, AcquisitionSection, StreamSection, ModelSection):
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
        A chunk stamp further than this from the clock model (s) is held as a candidate: a late push if later
        stamps return to the line, a clock jump / gap (new segment) if they settle on the new offset for 0.5 s
        of data (or stay off it for 3 s); see service/README.md "Clock model".
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
        ``skip`` (bad window not decoded) or ``interpolate`` (bad channels rebuilt from good channels of the
        same type, flagged ``interpolated:``; one that cannot be rebuilt is set to 0, flagged ``zeroed:``),
        when at most ``max_bad_fraction`` of the channels are bad.
    flat_rel : float
        Channel flat when its peak-to-peak over the window is below ``flat_rel`` x its scaler IQR.
    artefact_threshold : float
        Channel has a huge artefact when any robust-scaled value exceeds this (scaled units; clamp is 20).
    saturation_fraction : float
        Channel saturated when this fraction of its window sits at its min or max (clipping).
    max_bad_fraction : float
        More bad channels than this fraction: the window is skipped whatever the policy.
    n_neighbours : int
        Neighbours averaged when interpolating (same-type channels; EEG with 3-D locations in the contract:
        MNE's spherical splines instead, see :mod:`neurospeech.service.interpolation`).
    rescale_seconds : float or None
        Per-session scaling (:mod:`neurospeech.service.rescale`): re-estimate the subject's robust scaler from
        the first N seconds of clean data at the model rate and switch to it (status ``scaler``). 0: off;
        None: 60 s for a subject the contract marks as adapted (``training.adapted_subjects``), else off.
        At most 600 s; at least one model window.
    publish : dict
        Keyword arguments of ``PublisherSettings`` (endpoint, encoding, sndhwm, state_endpoint, curve keys,
        jsonl_log).
    """


    _what: ClassVar[str] = "serve settings"
    _sections: ClassVar[dict[str, str]] = {
        **{key: section for section, keys in SECTIONS.items() for key in keys}, "publish": "publish"}

    publish: Annotated[dict[str, Any], AfterValidator(_publish)] = Field(
        default_factory=dict, description="[publish] table: keyword arguments of PublisherSettings")

    @model_validator(mode="after")
    def _check_publish(self) -> ServeSettings:
        # refuse a bad [publish] table now (e.g. state_endpoint == endpoint), not after the model has loaded
        from .publisher import PublisherSettings

        PublisherSettings(**self.publish)
        return self

    # ------------------------------------------------------------------ validation
    def validate(self, need_stream: bool = False) -> None:  # type: ignore[override]
        """Check the values again (raises :class:`ConfigError` naming the key); ``need_stream``: a query is set."""
        type(self).from_dict(self.to_dict())
        if need_stream and not (self.stream_name or self.stream_type or self.source_id):
            raise ConfigError(
                "no stream to connect to: set stream_name, stream_type or source_id "
                "(e.g. --stream-name MyAmp, or [stream] stream_name = ... in the config)"
            )

    def replace(self, **changes: Any) -> ServeSettings:
        """A copy with some fields changed (None values are ignored), validated."""
        return super().replace(**{k: v for k, v in changes.items() if v is not None})

    @property
    def marker_stream_name(self) -> str | None:
        if self.marker_stream:
            return self.marker_stream
        return f"{self.stream_name}-markers" if self.stream_name else None


def load_settings(path: str | Path | None = None, **overrides: Any) -> ServeSettings:
    """Read a TOML config (sections as in :data:`SECTIONS` plus ``[publish]``) and apply overrides.

    Relative ``model``/``bank`` paths in the file are resolved against the file's folder. Overrides (the
    command-line options) are keys of :class:`ServeSettings`; None values are ignored; ``publish`` is merged
    into the file's ``[publish]`` table.

    Raises
    ------
    ConfigError
        Unreadable file, bad TOML, unknown section/key, or an invalid value.
    """
    values: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        doc = read_toml(p, what="config file", example=_EXAMPLE)
        parsed = ServeFile.from_dict(doc, source=p)
        for section in doc:
            table = getattr(parsed, section)
            if section == "publish":
                values["publish"] = dict(doc["publish"])
                continue
            for key in table.model_fields_set:
                value = getattr(table, key)
                if key in ("model", "bank"):
                    q = Path(value).expanduser()
                    value = q if q.is_absolute() else (p.parent / q)
                values[key] = value
    publish_over = overrides.pop("publish", None)
    values.update({k: v for k, v in overrides.items() if v is not None})
    if publish_over:
        values["publish"] = {**values.get("publish", {}), **publish_over}
    return ServeSettings.from_dict(values)
