"""One typed settings mechanism for every config file of neurospeech (pydantic v2 models).

Each config file is a :class:`Settings` model: unknown keys are refused (``extra="forbid"``), types are strict
(``nodrop = "no"`` is not a boolean, ``topk = 10.5`` is not an integer; an integer is accepted for a float),
bounds are declared on the fields (``Field(ge=..., le=...)``) and NaN/infinity are refused. The models give
the JSON Schema of each file for free (:func:`json_schema`; ``neurospeech config-schema KIND`` writes it).

pydantic's :class:`~pydantic.ValidationError` never leaves this module's models: constructing a model, or
:meth:`Settings.from_dict`, raises :class:`~neurospeech.errors.ConfigError` (exit code 2) whose message names
the key, the bad value and what is allowed (:func:`describe_errors`).

The models using it: ``neurospeech.service.config.ServeSettings`` (``serve``/``decode-file``),
``neurospeech.models.train.TrainConfig`` (``train``), the ``wm-rnn`` file model in
``neurospeech.models.wm_rnn._cli`` and the ``analyze noise-limits`` one in
``neurospeech.tools.analyses._noise_cli``.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from .errors import ConfigError, NeurospeechError

__all__ = [
    "LaxPath",
    "PathStr",
    "Settings",
    "describe_errors",
    "json_schema",
    "read_toml",
]


def _fspath(value: Any) -> Any:
    return os.fspath(value) if isinstance(value, os.PathLike) else value


#: a path kept as a ``str`` (a :class:`~pathlib.Path` is accepted and turned into its string)
PathStr = Annotated[str, BeforeValidator(_fspath)]
#: a :class:`~pathlib.Path` that also accepts a string (the strict mode would refuse ``"model.onnx"``)
LaxPath = Annotated[Path, Field(strict=False)]


class Settings(BaseModel):
    """Base of every settings model: strict, closed, bounded; errors are :class:`ConfigError`.

    Subclasses declare their fields with pydantic types and ``Field(ge=..., le=..., description=...)``; a
    check that spans fields goes in a ``model_validator(mode="after")`` raising :class:`ConfigError` (it is a
    ``ValueError``, so pydantic reports it with its key and :func:`describe_errors` keeps its message).
    """

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        allow_inf_nan=False,
        validate_default=False,
        frozen=False,
        populate_by_name=False,
    )

    #: what the settings are for, in messages ("serve settings")
    _what: ClassVar[str] = "settings"
    #: key -> TOML section, for messages about a flat model read from sectioned files
    _sections: ClassVar[dict[str, str]] = {}

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError(describe_errors(exc, type(self))) from exc

    # This __init__ only validates, like BaseModel's (pydantic's RootModel marks its own the same way): so
    # pydantic keeps validating nested models and ``model_validate`` input without calling it, and the error
    # of a nested model keeps its location (``[decode] hop``) instead of turning into one opaque ValueError.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str | Path | None = None) -> Self:
        """Validate a mapping (e.g. a TOML table); ``source`` (the file) is named in the error.

        Raises
        ------
        ConfigError
            A key that is not a field, a value of the wrong type or out of bounds.
        """
        if not isinstance(data, Mapping):
            where = f" in {str(source)!r}" if source is not None else ""
            raise ConfigError(f"{cls._what}{where} must be a table of key = value pairs, got {data!r}")
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            raise ConfigError(describe_errors(exc, cls, source=source)) from exc

    def to_dict(self) -> dict[str, Any]:
        """Every field as plain Python values (nested models as dicts)."""
        return self.model_dump(mode="python")

    def replace(self, **changes: Any) -> Self:
        """A validated copy with some fields changed (``ConfigError`` for an unknown key or a bad value)."""
        unknown = sorted(set(changes) - set(type(self).model_fields))
        if unknown:
            raise ConfigError(f"unknown setting(s) {unknown}; allowed: {sorted(type(self).model_fields)}")
        return type(self).from_dict({**self.to_dict(), **changes})


# ------------------------------------------------------------------------------------------------ files
def read_toml(path: str | Path, *, what: str = "config file", example: str | None = None) -> dict[str, Any]:
    """The parsed TOML document at ``path``.

    Raises
    ------
    ConfigError
        Missing or unreadable file, or not valid TOML (the message names the file and, when given, the
        example config to start from).
    """
    p = Path(path)
    hint = f"; see {example}" if example else ""
    if not p.is_file():
        raise ConfigError(f"{what} {str(p)!r} does not exist{hint}")
    try:
        return tomllib.loads(p.read_text("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what} {str(p)!r} is not valid TOML: {exc}; fix its syntax{hint}") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {str(p)!r}: {exc}") from exc


def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a settings model, i.e. of its config file.

    Validating a TOML document (parsed to a dict) against it accepts what the model accepts, apart from
    checks that need Python (e.g. unit strings, encoder presets): the model stays the authority.
    """
    schema = model.model_json_schema(mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


# ------------------------------------------------------------------------------------------------ messages
def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return _resolve(schema, schema.get("$defs", {}).get(ref.split("/")[-1], {}))
    return node


def _node_at(schema: dict[str, Any], loc: tuple[Any, ...]) -> dict[str, Any] | None:
    """The schema of the value at ``loc`` (None when the path leaves the schema)."""
    node = _resolve(schema, schema)
    for part in loc:
        node = _resolve(schema, node)
        for option in node.get("anyOf", []):  # X | None: the X branch
            option = _resolve(schema, option)
            if option.get("type") != "null":
                node = option
                break
        if isinstance(part, int):
            node = node.get("items", {}) if node.get("type") == "array" else {}
        else:
            props = node.get("properties", {})
            if part not in props:
                return None
            node = props[part]
    return _resolve(schema, node)


def _kind(schema: dict[str, Any], node: dict[str, Any]) -> str:
    if "enum" in node:
        return "one of " + ", ".join(repr(v) for v in node["enum"])
    if "const" in node:
        return repr(node["const"])
    kinds = []
    for option in node.get("anyOf", [node]):
        option = _resolve(schema, option)
        t = option.get("type")
        if "enum" in option:
            kinds.append("one of " + ", ".join(repr(v) for v in option["enum"]))
        elif t == "boolean":
            kinds.append("true or false (a TOML boolean, not a string)")
        elif t == "integer":
            kinds.append("an integer" + _bounds(option))
        elif t == "number":
            kinds.append("a number" + _bounds(option))
        elif t == "string":
            kinds.append("a path string" if option.get("format") == "path" else "a string")
        elif t == "array":
            n = option.get("minItems")
            items = _resolve(schema, option.get("items", {}))
            each = f", each {_kind(schema, items)}" if items else ""
            kinds.append(f"a list{f' of at least {n} values' if n else ''}{each}")
        elif t == "object":
            kinds.append("a table")
        elif t == "null":
            kinds.append("unset (leave the key out)")
    return " or ".join(kinds) if kinds else "a valid value"


def _num(v: Any) -> str:
    return str(v) if isinstance(v, int) else f"{v:g}"


def _bounds(node: dict[str, Any]) -> str:
    lo, hi = node.get("minimum"), node.get("maximum")
    xlo, xhi = node.get("exclusiveMinimum"), node.get("exclusiveMaximum")
    left = f"[{_num(lo)}" if lo is not None else (f"({_num(xlo)}" if xlo is not None else None)
    right = f"{_num(hi)}]" if hi is not None else (f"{_num(xhi)})" if xhi is not None else None)
    if left and right:
        return f" in {left}, {right}"
    if left:
        return f" >= {_num(lo)}" if lo is not None else f" > {_num(xlo)}"
    if right:
        return f" <= {_num(hi)}" if hi is not None else f" < {_num(xhi)}"
    return ""


def _value(v: Any) -> str:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


def _is_file_model(schema: dict[str, Any]) -> bool:
    """Whether the model's fields are TOML sections (tables) rather than keys."""
    props = _resolve(schema, schema).get("properties", {})
    return bool(props) and all(_resolve(schema, v).get("type") == "object" for v in props.values())


def _where(loc: tuple[Any, ...], schema: dict[str, Any], sections: dict[str, str]) -> tuple[str | None, str]:
    """(TOML section or None, key path inside it) of an error location."""

    def join(parts: tuple[Any, ...]) -> str:
        return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts).lstrip(".")

    if loc and isinstance(loc[0], str):
        if loc[0] in sections:  # a flat model whose keys live in sections of the file
            section = sections[loc[0]]
            return section, join(loc[1:] if section == loc[0] and len(loc) > 1 else loc)
        if len(loc) > 1 and _is_file_model(schema):
            return loc[0], join(loc[1:])
    return None, join(loc)


def describe_errors(exc: ValidationError, model: type[BaseModel], *, source: str | Path | None = None) -> str:
    """One message for every error in ``exc``: which key, which value, what is allowed.

    ``unknown key 'hopp' in [decode] of 'serve.toml'; allowed: [...]`` for an unknown key; otherwise
    ``hop = 0 in [decode] is not allowed (...): use a number in [0.01, 10] -- seconds of data between
    decisions``. A :class:`~neurospeech.errors.NeurospeechError` raised by a validator keeps its message.
    """
    schema = model.model_json_schema(mode="validation")
    sections: dict[str, str] = dict(getattr(model, "_sections", {}) or {})
    what = getattr(model, "_what", "settings")
    where = f" of {str(source)!r}" if source is not None else ""
    lines = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        section, key = _where(loc, schema, sections)
        in_section = f" in [{section}]" if section else ""
        cause = (err.get("ctx") or {}).get("error")
        if err["type"] == "extra_forbidden":
            parent = _node_at(schema, loc[:-1]) or {}
            allowed = sorted(parent.get("properties", {}))
            if len(loc) == 1 and _is_file_model(schema):
                lines.append(f"unknown config section [{loc[0]}]{where}; allowed: {allowed}")
                continue
            if len(loc) == 1 and sections:  # flat model: the section, if all its keys live in one
                one = set(sections.values())
                in_section = f" in [{one.pop()}]" if len(one) == 1 else ""
            lines.append(f"unknown key {str(loc[-1])!r}{in_section}{where}; allowed: {allowed}")
        elif isinstance(cause, NeurospeechError):
            text = str(cause)
            name = str(loc[-1]) if loc else ""
            lines.append(text if (not name or name in text) else f"{key}{in_section}: {text}")
        else:
            node = _node_at(schema, loc) or {}
            use = _kind(schema, node)
            desc = node.get("description")
            about = f" -- {desc}" if desc else ""
            msg = str(cause) if isinstance(cause, Exception) else str(err["msg"]).rstrip(".")
            if err["type"] == "missing":
                lines.append(f"{key}{in_section}{where} is required: set it to {use}{about}")
            else:
                lines.append(f"{key} = {_value(err['input'])}{in_section}{where} is not allowed ({msg}): "
                             f"use {use}{about}")
    if len(lines) == 1:
        return lines[0]
    if where:
        lines = [line.replace(where, "", 1) for line in lines]
    return f"{len(lines)} invalid {what}{where}:\n  - " + "\n  - ".join(lines)
