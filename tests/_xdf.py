"""A tiny XDF writer for tests (pyxdf only reads). Format: https://github.com/sccn/xdf/wiki/Specifications."""

from __future__ import annotations

import struct
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

_FMT = {"float32": "<f4", "double64": "<f8", "int32": "<i4", "int16": "<i2"}


def _varlen(n: int) -> bytes:
    if n < 256:
        return struct.pack("<BB", 1, n)
    if n < 2**32:
        return struct.pack("<BI", 4, n)
    return struct.pack("<BQ", 8, n)


def _chunk(tag: int, content: bytes) -> bytes:
    return _varlen(len(content) + 2) + struct.pack("<H", tag) + content


def _header_xml(name, stype, n_ch, srate, fmt, source_id, channels) -> bytes:
    chans = ""
    if channels:
        chans = "<channels>" + "".join(
            f"<channel><label>{escape(c['label'])}</label><type>{escape(c['type'])}</type>"
            f"<unit>{escape(c['unit'])}</unit></channel>" for c in channels) + "</channels>"
    return (f'<?xml version="1.0"?><info><name>{escape(name)}</name><type>{escape(stype)}</type>'
            f"<channel_count>{n_ch}</channel_count><nominal_srate>{srate}</nominal_srate>"
            f"<channel_format>{fmt}</channel_format><source_id>{escape(source_id)}</source_id>"
            f"<created_at>0</created_at><desc>{chans}</desc></info>").encode()


def write_xdf(path: Path, streams: list[dict]) -> None:
    """Write streams: dicts with name, type, srate, format ('float32'|'string'...), source_id, channels
    (list of {label,type,unit} or None), stamps (n,), data ((n, C) array, or list of strings for 'string')."""
    out = bytearray(b"XDF:")
    out += _chunk(1, b'<?xml version="1.0"?><info><version>1.0</version></info>')
    for sid, s in enumerate(streams, start=1):
        n_ch = 1 if s["format"] == "string" else int(np.asarray(s["data"]).shape[1])
        xml = _header_xml(s["name"], s["type"], n_ch, s["srate"], s["format"], s["source_id"],
                          s.get("channels"))
        out += _chunk(2, struct.pack("<I", sid) + xml)
    for sid, s in enumerate(streams, start=1):
        stamps = np.asarray(s["stamps"], dtype=np.float64)
        body = bytearray(struct.pack("<I", sid)) + _varlen(len(stamps))
        for k, t in enumerate(stamps):
            body += struct.pack("<Bd", 8, float(t))
            if s["format"] == "string":
                v = s["data"][k].encode()
                body += _varlen(len(v)) + v
            else:
                body += np.asarray(s["data"][k], dtype=_FMT[s["format"]]).tobytes()
        out += _chunk(3, bytes(body))
        out += _chunk(4, struct.pack("<Idd", sid, float(stamps[-1]) if len(stamps) else 0.0, 0.0))
    for sid, s in enumerate(streams, start=1):
        stamps = np.asarray(s["stamps"], dtype=np.float64)
        footer = (f'<?xml version="1.0"?><info><first_timestamp>{stamps[0]}</first_timestamp>'
                  f"<last_timestamp>{stamps[-1]}</last_timestamp><sample_count>{len(stamps)}</sample_count>"
                  "</info>").encode()
        out += _chunk(6, struct.pack("<I", sid) + footer)
    Path(path).write_bytes(bytes(out))
