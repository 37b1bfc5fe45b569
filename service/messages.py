"""Wire format of the messages the service publishes over ZeroMQ (schema ``neurospeech.v1``).

Every message is a ZeroMQ multipart message::

    [topic, header, *array frames]

- ``topic``: ``b"neurospeech.v1.decode"``, ``b"neurospeech.v1.status"`` or ``b"neurospeech.v1.word_early"``
  (the major version is part of the topic, so a SUB socket's prefix filter selects a version; only additive
  changes happen within ``v1``).
- ``word_early`` (added within v1): a *provisional* word decision at word onset + ``delay_s`` (0.5 .. 2.0 s),
  made from the data available then, by a model that declares early decisions (:mod:`neurospeech.early`). The
  final decision is still the ``decode`` message of kind ``word``. Its own topic, so a subscriber of
  ``decode``/``status`` (every client written before) receives exactly what it received before -- no new
  header kind, no sequence gap; :class:`~neurospeech.service.client.Subscriber` receives it only when asked
  (``topics=ALL_TOPICS`` or ``[..., "word_early"]``).
- ``header``: one object, encoded as **JSON** (UTF-8, the default) or **msgpack** (optional). The content
  type is recognisable from the first byte: a JSON header always starts with ``{`` (0x7B); a msgpack header is
  a map and starts with 0x80-0x8F, 0xDE or 0xDF (never 0x7B). The header also names it (``"encoding"``).
  Non-finite floats are sent as ``null`` (JSON has no NaN).
- ``array frames``: optional raw little-endian C-order array bytes, one frame per array, described in order
  by ``header["arrays"] = [{"name", "dtype", "shape"}]`` (``dtype`` a numpy type string such as ``"<f4"``;
  only bool/int/uint/float/complex dtypes are accepted, so nothing executable can ever be decoded).

The publisher adds ``schema`` (= the topic as text), ``seq`` (per topic, starting at 0, incremented for every
message including those dropped at the high-water mark, so subscribers detect loss as gaps), ``t_sent``
(``pylsl.local_clock()`` when sent), ``model_id``, ``model_sha256`` and ``encoding``. JSON Schemas (draft
2020-12) of the headers lie in ``service/schema/{decode,status,state,word_early}.v1.json``.

Nothing here ever uses pickle.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import msgpack
import numpy as np

from ..errors import DataFormatError

__all__ = [
    "ALL_TOPICS",
    "DEFAULT_TOPICS",
    "ENCODINGS",
    "KINDS",
    "SCHEMA_VERSION",
    "TOPIC_PREFIX",
    "Message",
    "decode_header",
    "decode_message",
    "encode_header",
    "encode_message",
    "kind_of_topic",
    "load_schema",
    "topic_of",
    "validate_header",
]

SCHEMA_VERSION = "v1"
TOPIC_PREFIX = "neurospeech." + SCHEMA_VERSION + "."
KINDS = ("decode", "status", "word_early")
# what a Subscriber receives by default: the topics every client has always received (word_early is opt-in)
DEFAULT_TOPICS = ("decode", "status")
ALL_TOPICS = KINDS
ENCODINGS = ("json", "msgpack")
# the reply of the state (REQ/REP) endpoint uses the same header encoding and this schema name
STATE_SCHEMA = TOPIC_PREFIX + "state"
_ALLOWED_DTYPE_KINDS = set("biufc")  # bool, int, uint, float, complex: never objects


def topic_of(kind: str) -> bytes:
    """Topic frame of a message kind: ``'decode' -> b'neurospeech.v1.decode'``."""
    if kind not in KINDS and kind != "state":
        raise DataFormatError(f"unknown message kind {kind!r}; use one of {KINDS}")
    return (TOPIC_PREFIX + kind).encode()


def kind_of_topic(topic: bytes) -> str:
    """Inverse of :func:`topic_of` (raises :class:`DataFormatError` for a foreign topic)."""
    t = topic.decode("utf-8", errors="replace")
    if not t.startswith(TOPIC_PREFIX):
        raise DataFormatError(
            f"topic {t!r} is not a {TOPIC_PREFIX}* topic; is the publisher a neurospeech v1 service?"
        )
    return t[len(TOPIC_PREFIX):]


def _finite(o: Any) -> Any:
    """Recursively replace NaN/Inf floats by None and numpy scalars/arrays by Python objects."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {str(k): _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    if isinstance(o, np.ndarray):
        return _finite(o.tolist())
    if isinstance(o, np.generic):
        return _finite(o.item())
    return o


def _default(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    if hasattr(o, "__fspath__"):
        return str(o)
    raise TypeError(f"header value of type {type(o).__name__} cannot be encoded; use str/int/float/list/dict")


def encode_header(header: dict[str, Any], encoding: str = "json") -> bytes:
    """Encode a header object as JSON (compact UTF-8) or msgpack.

    NaN/Inf become ``null``; numpy scalars and arrays become numbers and lists.
    """
    if encoding == "json":
        try:
            return json.dumps(header, separators=(",", ":"), allow_nan=False, default=_default,
                              ensure_ascii=False).encode("utf-8")
        except ValueError:  # a non-finite float somewhere: sanitise (slow path) and retry
            return json.dumps(_finite(header), separators=(",", ":"), allow_nan=False, default=_default,
                              ensure_ascii=False).encode("utf-8")
    if encoding == "msgpack":
        return msgpack.packb(_finite(header), use_bin_type=True, default=_default)
    raise DataFormatError(f"unknown header encoding {encoding!r}; use one of {ENCODINGS}")


def decode_header(data: bytes) -> dict[str, Any]:
    """Decode a header frame, recognising JSON (first byte ``{``) or msgpack (a map).

    Raises
    ------
    DataFormatError
        Empty, undecodable, or not an object/map.
    """
    if not data:
        raise DataFormatError("empty header frame; the message is not a neurospeech v1 message")
    try:
        if data[:1] == b"{":
            obj = json.loads(data.decode("utf-8"))
        else:
            obj = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise DataFormatError(
            f"header frame is neither JSON nor msgpack ({exc}); first bytes {data[:16]!r}"
        ) from exc
    if not isinstance(obj, dict):
        raise DataFormatError(f"header must be a JSON object / msgpack map, got {type(obj).__name__}")
    return obj


def _array_meta(name: str, a: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
    a = np.asarray(a)
    if a.dtype.kind not in _ALLOWED_DTYPE_KINDS:
        raise DataFormatError(
            f"array {name!r} has dtype {a.dtype} which cannot be sent; use a numeric (bool/int/float) array"
        )
    a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype)
    return {"name": str(name), "dtype": a.dtype.str, "shape": list(a.shape)}, a


def encode_message(
    kind: str,
    header: dict[str, Any],
    arrays: dict[str, np.ndarray] | None = None,
    encoding: str = "json",
) -> list[Any]:
    """Frames of one message: ``[topic, header, *arrays]``.

    ``header["arrays"]`` is filled with the array descriptions (the caller's dict is not modified). Array
    frames are returned as contiguous numpy arrays (zero-copy for ``send_multipart``); ``bytes(frame)``
    gives their bytes.
    """
    frames: list[Any] = [topic_of(kind)]
    if arrays:
        header = dict(header)
        metas = []
        data = []
        for name, a in arrays.items():
            meta, arr = _array_meta(name, a)
            metas.append(meta)
            data.append(arr)
        header["arrays"] = metas
        frames.append(encode_header(header, encoding))
        frames.extend(data)
    else:
        frames.append(encode_header(header, encoding))
    return frames


@dataclass
class Message:
    """One received message.

    Attributes
    ----------
    kind : str
        ``'decode'``, ``'status'``, ``'word_early'`` (or a newer kind of a later minor version).
    header : dict
        The decoded header (see the JSON Schemas).
    arrays : dict of str to ndarray
        Arrays sent as raw frames (read-only views on the received bytes).
    t_received : float or None
        ``pylsl.local_clock()`` at receipt (set by :class:`neurospeech.service.client.Subscriber`).
    missed : int
        Messages of this topic lost just before this one (sequence gap; set by the subscriber).
    """

    kind: str
    header: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    t_received: float | None = None
    missed: int = 0

    @property
    def seq(self) -> int | None:
        s = self.header.get("seq")
        return int(s) if isinstance(s, int) else None

    @property
    def provisional(self) -> bool:
        """True for an early (provisional) word decision: ``kind == 'word_early'``."""
        return self.kind == "word_early"

    @property
    def delay_s(self) -> float | None:
        """Seconds after the word onset at which an early decision was made (None for other messages)."""
        d = self.header.get("delay_s")
        return float(d) if isinstance(d, (int, float)) and not isinstance(d, bool) else None

    @property
    def latency(self) -> float | None:
        """Seconds from the LSL stamp of the newest sample the decision used to receipt (decode messages)."""
        t = self.header.get("t_newest_sample")
        if self.t_received is None or not isinstance(t, (int, float)):
            return None
        return self.t_received - float(t)

    def __getitem__(self, key: str) -> Any:
        return self.header[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.header.get(key, default)


def decode_message(frames: list[bytes] | list[Any]) -> Message:
    """Parse the frames of one message (inverse of :func:`encode_message`).

    Raises
    ------
    DataFormatError
        Foreign topic, bad header, or array frames that disagree with their descriptions.
    """
    if len(frames) < 2:
        raise DataFormatError(
            f"a neurospeech message has at least 2 frames (topic, header), got {len(frames)}"
        )
    kind = kind_of_topic(bytes(frames[0]))
    header = decode_header(bytes(frames[1]))
    metas = header.get("arrays") or []
    data = frames[2:]
    if len(metas) != len(data):
        raise DataFormatError(
            f"header describes {len(metas)} arrays but the message has {len(data)} array frames"
        )
    arrays: dict[str, np.ndarray] = {}
    for meta, buf in zip(metas, data, strict=True):
        try:
            dt = np.dtype(str(meta["dtype"]))
            shape = tuple(int(s) for s in meta["shape"])
            name = str(meta["name"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DataFormatError(f"bad array description {meta!r}: {exc}") from exc
        if dt.kind not in _ALLOWED_DTYPE_KINDS:
            raise DataFormatError(f"array {name!r} has a non-numeric dtype {dt}; refusing to decode it")
        b = memoryview(buf.buffer if hasattr(buf, "buffer") else buf).cast("B")
        n = int(np.prod(shape)) * dt.itemsize
        if b.nbytes != n:
            raise DataFormatError(
                f"array {name!r}: {b.nbytes} bytes for dtype {dt} shape {shape} (expected {n})"
            )
        arrays[name] = np.frombuffer(b, dtype=dt).reshape(shape)
    return Message(kind=kind, header=header, arrays=arrays)


@cache
def load_schema(kind: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a header kind: ``'decode'``, ``'status'``, ``'word_early'``,
    ``'state'``."""
    if kind not in (*KINDS, "state"):
        raise DataFormatError(f"no schema for message kind {kind!r}; known: {(*KINDS, 'state')}")
    text = resources.files(__package__).joinpath("schema", f"{kind}.{SCHEMA_VERSION}.json").read_text("utf-8")
    return json.loads(text)


def validate_header(kind: str, header: dict[str, Any]) -> None:
    """Validate a header against its JSON Schema.

    Raises
    ------
    DataFormatError
        With the path of the first offending field and the reason.
    """
    import jsonschema

    validator = jsonschema.Draft202012Validator(load_schema(kind))
    errors = sorted(validator.iter_errors(header), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        where = "/".join(str(p) for p in e.absolute_path) or "(root)"
        raise DataFormatError(
            f"{kind} header invalid at {where}: {e.message} ({len(errors)} error(s) in all)"
        )
