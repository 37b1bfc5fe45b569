"""Wire format: encode/decode round trips (JSON and msgpack), array frames, schemas, refusal of bad input."""

from __future__ import annotations

import json
import pickle

import jsonschema
import msgpack
import numpy as np
import pytest
from _transport import decode_header_fields, status_header_fields
from neurospeech.service.messages import (
    decode_header,
    decode_message,
    encode_header,
    encode_message,
    kind_of_topic,
    load_schema,
    topic_of,
    validate_header,
)

from neurospeech.errors import DataFormatError


def _full(kind, h, seq=0):
    return {**h, "schema": f"neurospeech.v1.{kind}", "seq": seq, "t_sent": 12.5, "model_id": "m",
            "model_sha256": "ab" * 32, "encoding": "json"}


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
def test_round_trip_with_arrays(encoding):
    h = _full("decode", decode_header_fields())
    arrays = {"z": np.arange(12, dtype=np.float32).reshape(3, 4), "idx": np.array([3, 1, 2], dtype=np.int64),
              "big": np.arange(4, dtype=">f8")}
    frames = encode_message("decode", h, arrays, encoding)
    assert frames[0] == b"neurospeech.v1.decode"
    assert "arrays" not in h  # the caller's dict is untouched
    raw = [bytes(f) if not isinstance(f, bytes) else f for f in frames]
    msg = decode_message(raw)
    assert msg.kind == "decode" and msg.seq == 0
    for k in ("topk", "truth", "t_window_end", "subject"):
        assert msg.header[k] == h[k]
    np.testing.assert_array_equal(msg.arrays["z"], arrays["z"])
    np.testing.assert_array_equal(msg.arrays["idx"], arrays["idx"])
    np.testing.assert_array_equal(msg.arrays["big"], arrays["big"])  # big-endian sent as little-endian
    assert msg.arrays["big"].dtype == np.dtype("<f8")
    validate_header("decode", msg.header)


def test_content_type_is_recognisable_from_first_byte():
    h = {"a": 1, "b": [1.5, "x"]}
    j = encode_header(h, "json")
    m = encode_header(h, "msgpack")
    assert j[:1] == b"{" and m[:1] != b"{" and (0x80 <= m[0] <= 0x8F or m[0] in (0xDE, 0xDF))
    assert decode_header(j) == decode_header(m) == h


def test_non_finite_floats_become_null_and_numpy_scalars_numbers():
    h = {"x": float("nan"), "y": [np.float32(1.5), float("inf")], "n": np.int64(3)}
    for enc in ("json", "msgpack"):
        d = decode_header(encode_header(h, enc))
        assert d == {"x": None, "y": [1.5, None], "n": 3}
    json.loads(encode_header(h, "json"))  # strict JSON, no NaN tokens


def test_object_arrays_and_pickles_are_refused():
    with pytest.raises(DataFormatError, match="cannot be sent"):
        encode_message("decode", {}, {"o": np.array([{"a": 1}], dtype=object)})
    # a forged description asking for an object dtype is refused, never unpickled
    hdr = encode_header({"arrays": [{"name": "o", "dtype": "|O", "shape": [1]}]})
    with pytest.raises(DataFormatError, match="non-numeric"):
        decode_message([b"neurospeech.v1.decode", hdr, pickle.dumps([1])])
    with pytest.raises(DataFormatError):
        decode_header(pickle.dumps({"a": 1}))


def test_malformed_messages_are_refused():
    with pytest.raises(DataFormatError, match="at least 2 frames"):
        decode_message([b"neurospeech.v1.decode"])
    with pytest.raises(DataFormatError, match="not a neurospeech"):
        decode_message([b"other.topic", b"{}"])
    with pytest.raises(DataFormatError, match="neither JSON nor msgpack"):
        decode_message([b"neurospeech.v1.status", b"{not json"])
    with pytest.raises(DataFormatError, match="must be a JSON object"):
        decode_header(msgpack.packb([1, 2]))
    hdr = encode_header({"arrays": [{"name": "a", "dtype": "<f4", "shape": [3]}]})
    with pytest.raises(DataFormatError, match="bytes for dtype"):
        decode_message([b"neurospeech.v1.decode", hdr, b"\x00" * 8])
    with pytest.raises(DataFormatError, match="describes 1 arrays"):
        decode_message([b"neurospeech.v1.decode", hdr])
    with pytest.raises(DataFormatError):
        encode_header({}, "xml")


def test_topics():
    assert topic_of("status") == b"neurospeech.v1.status"
    assert kind_of_topic(b"neurospeech.v1.decode") == "decode"
    with pytest.raises(DataFormatError):
        topic_of("other")


@pytest.mark.parametrize("kind", ["decode", "status", "state"])
def test_schemas_are_valid_draft_2020_12(kind):
    jsonschema.Draft202012Validator.check_schema(load_schema(kind))


def test_schema_accepts_complete_and_additive_headers_and_rejects_broken_ones():
    validate_header("decode", _full("decode", decode_header_fields(truth=None)))
    validate_header("status", _full("status", status_header_fields()))
    # additive change within v1: unknown fields pass
    validate_header("decode", _full("decode", decode_header_fields(new_field_v1_1={"x": 1})))
    with pytest.raises(DataFormatError, match="topk"):
        bad_rank = [{"rank": 0, "id": "a", "score": 1}]
        validate_header("decode", _full("decode", decode_header_fields(topk=bad_rank)))
    bad = _full("decode", decode_header_fields())
    del bad["t_newest_sample"]
    with pytest.raises(DataFormatError, match="t_newest_sample"):
        validate_header("decode", bad)
    with pytest.raises(DataFormatError, match="state"):
        validate_header("status", _full("status", status_header_fields(state="sleeping")))
    with pytest.raises(DataFormatError, match="schema"):
        v2 = {**_full("status", status_header_fields()), "schema": "neurospeech.v2.status"}
        validate_header("status", v2)
