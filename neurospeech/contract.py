"""The model's input contract: what a brain encoder expects, travelling inside the exported artifact.

The trainer writes a :class:`ModelContract` into the ONNX file's metadata (key ``neurospeech.contract``) and a
JSON sidecar ``<model>.contract.json``; the service reads it back and checks a stream against it when it
connects (:func:`match_channels`). No torch here.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ArtifactError, ConfigError, ContractMismatchError
from .preprocessing import PreprocessingSpec, RobustScaler, WindowSpec

__all__ = [
    "CONTRACT_FORMAT",
    "CONTRACT_SHA_KEY",
    "METADATA_KEY",
    "ChannelMap",
    "ChannelSpec",
    "ModelContract",
    "SpeechSpec",
    "embed_contract",
    "match_channels",
    "parse_unit",
    "parse_unit_override",
    "sha256_file",
    "unit_scale",
]

CONTRACT_FORMAT = 1
METADATA_KEY = "neurospeech.contract"
CONTRACT_SHA_KEY = METADATA_KEY + ".sha256"


def embed_contract(proto: Any, contract: ModelContract) -> None:
    """Write ``contract`` (and its sha256) into an ``onnx.ModelProto``'s metadata, replacing what was there.

    Also sets ``producer_name`` and ``doc_string``. Used by the exporter and the quantizer.
    """
    del proto.metadata_props[:]
    for key, value in ((METADATA_KEY, contract.to_json()), (CONTRACT_SHA_KEY, contract.sha256())):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "neurospeech"
    proto.doc_string = f"neurospeech brain encoder {contract.model_id}"

# unit name -> (dimension, multiplier to SI); dimensions: V (EEG and other potentials), T (magnetometers),
# T/m (planar gradiometers)
_UNITS: dict[str, tuple[str, float]] = {
    "v": ("V", 1.0), "volt": ("V", 1.0), "volts": ("V", 1.0),
    "mv": ("V", 1e-3), "millivolt": ("V", 1e-3), "millivolts": ("V", 1e-3),
    "uv": ("V", 1e-6), "µv": ("V", 1e-6), "μv": ("V", 1e-6), "microvolt": ("V", 1e-6), "microvolts": ("V", 1e-6),
    "nv": ("V", 1e-9),
    "t": ("T", 1.0), "tesla": ("T", 1.0), "pt": ("T", 1e-12), "nt": ("T", 1e-9),
    "ft": ("T", 1e-15), "femtotesla": ("T", 1e-15),
    "t/m": ("T/m", 1.0), "ft/cm": ("T/m", 1e-13), "ft/m": ("T/m", 1e-15), "pt/m": ("T/m", 1e-12),
}
# mne-lsl writes a channel's unit as the power-of-ten exponent of its FIFF unit multiplier ("0", "-6", "-15"),
# the base unit being given by the channel type (mne_lsl/lsl/stream_info.py, StreamInfo.set_channel_info:
# ``set_channel_units([ch["unit_mul"] ...])``; read back in mne_lsl/utils/meas_info.py, create_info: a string
# that is an integral Decimal and a key of ``mne._fiff.constants._ch_unit_mul_named`` is that exponent).
# mne-lsl's player stores SI x 10**-exponent (BasePlayer.set_channel_units rescales by 10**(before - after)),
# so a value times 10**exponent is SI. Unlike mne-lsl, an exponent outside that set is refused, not read as 0.
_FIFF_EXPONENTS = frozenset((18, 15, 12, 9, 6, 3, 2, 1, 0, -1, -2, -3, -6, -9, -12, -15, -18))
# the SI dimension of each channel type a model can be trained on
_TYPE_DIMENSION = {
    "eeg": "V", "eog": "V", "ecg": "V", "emg": "V", "seeg": "V", "ecog": "V", "dbs": "V",
    "mag": "T", "grad": "T/m", "ref_meg": "T",
}
_DIMENSION_WORD = {"V": "a voltage", "T": "a magnetic field", "T/m": "a field gradient"}
_DIMENSION_EXAMPLES = {"V": "V, mV, uV", "T": "T, pT, fT", "T/m": "T/m, fT/cm"}


def _exponent(unit: str) -> int | None:
    """The mne-lsl power-of-ten exponent a unit string holds ("-6" -> -6), or None if it is not a number."""
    try:
        d = Decimal(unit.strip())
    except InvalidOperation:
        return None
    if not d.is_finite() or d != d.to_integral_value():
        return None
    return int(d)


def parse_unit(unit: str, ch_type: str | None = None) -> tuple[str | None, float]:
    """Dimension and SI multiplier of a channel unit: a name (``'uV'``, ``'fT'``) or an mne-lsl exponent.

    Parameters
    ----------
    unit : str
        Unit as found in the stream's ``desc/channels/channel/unit``.
    ch_type : str or None
        Channel type (``eeg``, ``mag``, ``grad`` ...): the base unit of an exponent.

    Returns
    -------
    dimension : str or None
        ``'V'``, ``'T'`` or ``'T/m'`` (None: an exponent on a channel type of unknown dimension).
    factor : float
        Multiply values in ``unit`` by this to get SI.

    Raises
    ------
    ContractMismatchError
        If the unit is neither a known name nor an mne-lsl exponent.
    """
    key = unit.strip().lower().replace(" ", "")
    if key in _UNITS:
        return _UNITS[key]
    exp = _exponent(key)
    if exp is not None and exp in _FIFF_EXPONENTS:
        return _TYPE_DIMENSION.get((ch_type or "").strip().lower()), 10.0**exp
    raise ContractMismatchError(
        f"unknown channel unit {unit!r}; use one of V, mV, uV, nV, T, pT, fT, T/m, fT/cm, or the power-of-ten "
        f"exponent mne-lsl writes (one of {sorted(_FIFF_EXPONENTS)}) in the stream's channel metadata"
    )


def unit_scale(unit: str, ch_type: str | None = None) -> float:
    """Factor that converts values in ``unit`` to SI (e.g. ``'uV' -> 1e-6``, ``'fT' -> 1e-15``, ``'-6' -> 1e-6``).

    Raises
    ------
    ContractMismatchError
        If the unit is unknown.
    """
    return parse_unit(unit, ch_type)[1]


def parse_unit_override(text: str) -> dict[str, str]:
    """Read a ``--units`` override: one unit for every channel (``'fT'``) or per type (``'mag=fT,grad=fT/cm'``).

    Returns
    -------
    dict
        Channel type (lower case; ``'*'`` for all) -> unit.

    Raises
    ------
    ContractMismatchError
        A malformed entry or an unknown unit.
    """
    out: dict[str, str] = {}
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        typ, sep, unit = part.rpartition("=") if "=" in part else ("*", "", part)
        typ, unit = typ.strip().lower() or "*", unit.strip()
        if not unit or (sep and typ == "*"):
            raise ContractMismatchError(
                f"bad --units entry {part!r}; give one unit (e.g. fT) or type=unit pairs (e.g. mag=fT,grad=fT/cm)"
            )
        parse_unit(unit, None if typ == "*" else typ)  # refuse unknown units now
        out[typ] = unit
    if not out:
        raise ContractMismatchError(f"--units {text!r} names no unit; e.g. --units uV or --units mag=fT,grad=fT/cm")
    return out


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


@dataclass(frozen=True)
class ChannelSpec:
    """One input channel: name, MNE type (``eeg``, ``mag``, ``grad``), SI unit and 2-D layout position.

    ``loc`` (optional, additive): the sensor's 3-D location in metres (head or device frame, MNE's
    ``info["chs"][i]["loc"][:3]``); the service's bad-channel interpolation uses MNE's spherical splines for
    EEG when every EEG channel has one. Written to the contract only when set.
    """

    name: str
    type: str
    unit: str
    pos: tuple[float, float] | None = None
    loc: tuple[float, float, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "type": self.type, "unit": self.unit,
                             "pos": None if self.pos is None else [float(self.pos[0]), float(self.pos[1])]}
        if self.loc is not None:
            d["loc"] = [float(v) for v in self.loc]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ChannelSpec:
        pos = d.get("pos")
        loc = d.get("loc")
        return cls(d["name"], d["type"], d["unit"], None if pos is None else (float(pos[0]), float(pos[1])),
                   None if loc is None else (float(loc[0]), float(loc[1]), float(loc[2])))


@dataclass(frozen=True)
class SpeechSpec:
    """The speech representation the encoder was trained to match.

    Attributes
    ----------
    kind : str
        ``mel``, ``whisper`` or ``wav2vec2``.
    dim : int
        Feature dimension F of the encoder output.
    params : dict
        Extractor settings (layers, n_mels, model name/hash ...).
    mean, std : list of float
        Global standardisation statistics (per feature), applied before scoring.
    """

    kind: str
    dim: int
    params: dict[str, Any] = field(default_factory=dict)
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)


@dataclass
class ModelContract:
    """Everything the service needs to feed an exported encoder correctly.

    Attributes
    ----------
    model_id : str
        Human-readable id (preset + training data + date).
    preset : str
        Architecture preset (``paper``, ``efficient`` ...).
    channels : list of ChannelSpec
        Input channels in model order.
    sfreq_raw : float
        Sampling rate of the training recordings in Hz (informative; any rate the resampler handles works).
    window : WindowSpec
        Window geometry at the model rate.
    preprocessing : PreprocessingSpec
        Continuous preprocessing settings.
    scalers : dict
        Subject id -> :class:`RobustScaler` statistics (``{"center": [...], "scale": [...]}``).
    subjects : list of str
        Subject ids in the order of the model's subject layer.
    speech : SpeechSpec
        Target representation.
    output : dict
        Output layout: ``{"name": ..., "shape": [F, T]}`` of the scoring representation.
    inputs : dict
        ONNX input names (``{"brain": "brain", "subject": "subject"}``).
    training : dict
        Training data summary (dataset, n windows, split hash, seed, model hash).
    metrics : dict
        Evaluation metrics at export time.
    early_decisions : dict
        Empty for a model without early decisions (every model exported before them: the key is then absent
        from the JSON, so their contracts and sha256 are unchanged). Otherwise ``{"supported": true,
        "delays_s": [...], "unseen": "nan", ...}``: the model accepts windows whose samples after
        ``onset + delay`` are NaN (:mod:`neurospeech.early`).
    """

    model_id: str
    preset: str
    channels: list[ChannelSpec]
    sfreq_raw: float
    window: WindowSpec
    preprocessing: PreprocessingSpec
    scalers: dict[str, dict[str, list[float]]]
    subjects: list[str]
    speech: SpeechSpec
    output: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    format: int = CONTRACT_FORMAT
    early_decisions: dict[str, Any] = field(default_factory=dict)

    # -- helpers
    @property
    def channel_names(self) -> list[str]:
        return [c.name for c in self.channels]

    def scaler(self, subject: str) -> RobustScaler:
        """The robust scaler of ``subject`` (raises a clear error listing the known subjects)."""
        if subject not in self.scalers:
            raise ContractMismatchError(
                f"subject {subject!r} is not in the model (known: {sorted(self.scalers)}); "
                "pass --subject with one of these, or retrain including this subject"
            )
        return RobustScaler.from_dict(self.scalers[subject])

    @property
    def supports_early(self) -> bool:
        """True when the model accepts early (NaN-masked) windows (:func:`neurospeech.early.supports_early`)."""
        return self.early_decisions.get("supported") is True

    def to_dict(self) -> dict[str, Any]:
        d = self._to_dict()
        if self.early_decisions:  # additive key: absent for every older model (same JSON, same sha256)
            d["early_decisions"] = self.early_decisions
        return d

    def _to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "model_id": self.model_id,
            "preset": self.preset,
            "channels": [c.to_dict() for c in self.channels],
            "sfreq_raw": self.sfreq_raw,
            "window": self.window.to_dict(),
            "preprocessing": self.preprocessing.to_dict(),
            "scalers": self.scalers,
            "subjects": list(self.subjects),
            "speech": asdict(self.speech),
            "output": self.output,
            "inputs": self.inputs,
            "training": self.training,
            "metrics": self.metrics,
        }

    def to_json(self) -> str:
        """Canonical JSON (sorted keys), the input of :meth:`sha256`."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), default=_json_default)

    def sha256(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelContract:
        try:
            fmt = int(d.get("format", 0))
            if fmt != CONTRACT_FORMAT:
                raise ArtifactError(
                    f"model contract format {fmt} is not supported (expected {CONTRACT_FORMAT}); "
                    "re-export the model with this version of neurospeech"
                )
            return cls(
                model_id=str(d["model_id"]),
                preset=str(d["preset"]),
                channels=[ChannelSpec.from_dict(c) for c in d["channels"]],
                sfreq_raw=float(d["sfreq_raw"]),
                window=WindowSpec.from_dict(d["window"]),
                preprocessing=PreprocessingSpec.from_dict(d["preprocessing"]),
                scalers={str(k): v for k, v in d["scalers"].items()},
                subjects=[str(s) for s in d["subjects"]],
                speech=SpeechSpec(**d["speech"]),
                output=dict(d.get("output", {})),
                inputs=dict(d.get("inputs", {})),
                training=dict(d.get("training", {})),
                metrics=dict(d.get("metrics", {})),
                format=fmt,
                early_decisions=_early_entry(d.get("early_decisions")),
            )
        except ArtifactError:
            raise
        except ConfigError as exc:  # a window / preprocessing setting this version does not know or accept
            raise ArtifactError(f"model contract: {exc}") from exc
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"model contract is malformed ({exc!r}); re-export the model") from exc

    @classmethod
    def from_json(cls, text: str | bytes) -> ModelContract:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ArtifactError(f"model contract is not valid JSON: {exc}") from exc
        if not isinstance(d, dict):
            raise ArtifactError("model contract must be a JSON object")
        return cls.from_dict(d)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1, sort_keys=True, default=_json_default))

    @classmethod
    def load(cls, path: str | Path) -> ModelContract:
        p = Path(path)
        if not p.is_file():
            raise ArtifactError(f"contract file {str(p)!r} does not exist")
        return cls.from_json(p.read_text())


def _early_entry(v: Any) -> dict[str, Any]:
    """The contract's ``early_decisions`` value, checked (absent or null: a model without early decisions)."""
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise ArtifactError(f"model contract: early_decisions must be an object, got {type(v).__name__}; "
                            "re-export the model")
    if v.get("supported") is True:
        from .early import UNSEEN_MARKER, check_delays

        if v.get("unseen") != UNSEEN_MARKER:
            raise ArtifactError(
                f"model contract: early_decisions.unseen is {v.get('unseen')!r}, this version knows only "
                f"{UNSEEN_MARKER!r}; a newer model? upgrade neurospeech or re-export the model")
        try:
            check_delays(v.get("delays_s", []))
        except ConfigError as exc:
            raise ArtifactError(f"model contract: early_decisions.delays_s: {exc}") from exc
    return dict(v)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


@dataclass(frozen=True)
class ChannelMap:
    """How to turn stream channels into model channels.

    Attributes
    ----------
    index : array of int, shape (n_model_channels,)
        ``stream_data[:, index]`` gives model order.
    scale : array of float, shape (n_model_channels,)
        Multiply (after reordering) to get SI units.
    extra : list of str
        Stream channels the model does not use (ignored).
    assumed_units : list of str
        Model channels for which the stream declared no unit and none was given: assumed to be the
        contract's unit (SI). Empty when every unit is known (or the caller said the data are SI).
    overridden_units : list of str
        Model channels whose unit came from an explicit override (``--units``) instead of the stream.
    """

    index: np.ndarray
    scale: np.ndarray
    extra: list[str]
    assumed_units: list[str] = field(default_factory=list)
    overridden_units: list[str] = field(default_factory=list)


def match_channels(
    contract: ModelContract,
    names: list[str],
    units: list[str] | None = None,
    types: list[str] | None = None,
    unit_override: str | dict[str, str] | None = None,
) -> ChannelMap:
    """Map a stream's channels onto the model's by name, with unit conversion.

    Parameters
    ----------
    contract : ModelContract
        The model's contract.
    names : list of str
        Stream channel labels in stream order.
    units : list of str or None
        Stream channel units: names (``uV``, ``fT`` ...) or mne-lsl power-of-ten exponents (``-6``). None: the
        data are in the contract's SI units (a file read by MNE); empty strings: the stream declares no unit
        (assumed SI, reported in ``assumed_units``).
    types : list of str or None
        Stream channel types (checked where given).
    unit_override : str or dict or None
        Units to use instead of the stream's (see :func:`parse_unit_override`): ``'uV'`` or
        ``{'mag': 'fT', 'grad': 'fT/cm'}``.

    Raises
    ------
    ContractMismatchError
        Missing channels, duplicated labels, incompatible types, a unit of the wrong dimension for the channel
        type (a voltage on a magnetometer ...); the message lists what differs and the fix.
    """
    override = parse_unit_override(unit_override) if isinstance(unit_override, str) else dict(unit_override or {})
    lower = [n.strip() for n in names]
    dupes = sorted({n for n in lower if lower.count(n) > 1})
    if dupes:
        raise ContractMismatchError(
            f"stream has duplicated channel labels {dupes[:10]}; give every channel a unique label"
        )
    pos = {n: i for i, n in enumerate(lower)}
    missing = [c.name for c in contract.channels if c.name not in pos]
    if missing:
        raise ContractMismatchError(
            f"stream lacks {len(missing)} of the model's {len(contract.channels)} channels "
            f"(first missing: {missing[:10]}); stream has {len(names)} channels (first: {lower[:10]}). "
            "Fix: stream the montage the model was trained on, or export a model trained on this montage"
        )
    index = np.array([pos[c.name] for c in contract.channels], dtype=np.int64)
    scale = np.ones(len(index))
    problems = []
    assumed: list[str] = []
    overridden: list[str] = []
    for k, (c, i) in enumerate(zip(contract.channels, index, strict=True)):
        ctype = c.type.lower()
        if types is not None and i < len(types) and types[i]:
            st = types[i].strip().lower()
            compatible = {ctype} | ({"meg"} if ctype in ("mag", "grad") else set())
            if st not in compatible:
                problems.append(f"{c.name}: type {types[i]!r} but the model expects {c.type!r}")
        unit = override.get(ctype) or (override.get("meg") if ctype in ("mag", "grad") else None) or override.get("*")
        if unit:
            overridden.append(c.name)
        elif units is not None:
            unit = units[i].strip() if i < len(units) and units[i] else ""
            if not unit:
                assumed.append(c.name)
                continue
        else:
            continue
        expected = _TYPE_DIMENSION.get(ctype)
        try:
            dim, factor = parse_unit(unit, ctype)
            _, model_factor = parse_unit(c.unit, ctype)
        except ContractMismatchError as exc:
            problems.append(f"{c.name}: {exc}")
            continue
        if dim is not None and expected is not None and dim != expected:
            problems.append(
                f"{c.name}: unit {unit!r} is {_DIMENSION_WORD[dim]} but the model's channel is of type {c.type!r} "
                f"({_DIMENSION_WORD[expected]}, {_DIMENSION_EXAMPLES[expected]}); declare the unit the "
                "amplifier really sends in the stream's channel metadata, or override it with --units"
            )
            continue
        scale[k] = factor / model_factor
    if problems:
        raise ContractMismatchError(
            "stream channels are incompatible with the model: " + "; ".join(problems[:10])
            + (f" (+{len(problems) - 10} more)" if len(problems) > 10 else "")
        )
    extra = [n for n in lower if n not in {c.name for c in contract.channels}]
    return ChannelMap(index=index, scale=scale, extra=extra, assumed_units=assumed, overridden_units=overridden)
