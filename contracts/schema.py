"""JSON Schema (draft 2020-12) for every message envelope, derived from the attrs classes."""

from __future__ import annotations

import datetime as dt
import enum
import types
import typing
import uuid
from typing import Any

import attrs

from contracts import catalog
from contracts import codec as _codec  # importing it registers every message
from contracts.envelope import MAX_METADATA
from contracts.limits import MAX_ID

_SCALARS: dict[Any, dict[str, Any]] = {
    str: {"type": "string"},
    int: {"type": "integer"},
    float: {"type": "number"},
    bool: {"type": "boolean"},
    uuid.UUID: {"type": "string", "format": "uuid"},
    dt.datetime: {"type": "string", "format": "date-time"},
}


def type_schema(tp: Any, defs: dict[str, Any]) -> dict[str, Any]:
    """The schema of one annotation; nested attrs classes are collected into `defs`."""
    if tp in _SCALARS:
        return dict(_SCALARS[tp])
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        options = [type_schema(a, defs) for a in args if a is not type(None)]
        schema = options[0] if len(options) == 1 else {"anyOf": options}
        if type(None) in args:
            schema = {"anyOf": [schema, {"type": "null"}]}
        return schema
    if origin is tuple:
        return {"type": "array", "items": type_schema(args[0], defs)}
    if origin is list:
        return {"type": "array", "items": type_schema(args[0], defs)}
    if origin is dict:
        return {"type": "object", "additionalProperties": type_schema(args[1], defs)}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return {"type": "string", "enum": [m.value for m in tp]}
    if isinstance(tp, type) and attrs.has(tp):
        name = tp.__name__
        if name not in defs:
            defs[name] = {}  # placeholder against recursion
            defs[name] = class_schema(tp, defs)
        return {"$ref": f"#/$defs/{name}"}
    raise TypeError(f"no JSON Schema for {tp!r}")


def class_schema(cls: type[Any], defs: dict[str, Any]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for a in attrs.fields(cls):
        prop = type_schema(hints[a.name], defs)
        if a.default is attrs.NOTHING:
            required.append(a.name)
        elif not isinstance(a.default, attrs.Factory):  # type: ignore[arg-type]
            default = _codec.converter.unstructure(a.default)
            prop = {**prop, "default": default}
        properties[a.name] = prop
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = required
    if cls.__doc__ and not cls.__doc__.startswith(cls.__name__ + "("):
        schema["description"] = " ".join(cls.__doc__.split())
    return schema


def envelope_schema(entry: catalog.Entry) -> dict[str, Any]:
    """The schema of a whole wire message of one type."""
    defs: dict[str, Any] = {}
    data = class_schema(entry.cls, defs)
    schema: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"urn:cars:message:{entry.tag}:v{entry.version}",
        "title": entry.tag,
        "description": entry.doc or f"{entry.kind.value} {entry.tag}",
        "type": "object",
        "properties": {
            "type": {"const": entry.tag},
            "version": {"type": "integer", "minimum": 1, "maximum": entry.version, "default": entry.version},
            "id": {"type": "string", "format": "uuid"},
            "occurred_at": {"type": "string", "format": "date-time"},
            "correlation_id": {"type": "string"},
            "causation_id": {"type": ["string", "null"]},
            "stream_id": {"type": ["string", "null"], "format": "uuid"},
            "stream_version": {"type": ["integer", "null"]},
            "metadata": {"type": "object", "additionalProperties": {"type": "string", "maxLength": MAX_ID},
                         "maxProperties": MAX_METADATA,
                         "propertyNames": {"minLength": 1, "maxLength": MAX_ID},
                         "description": "How the message travelled, e.g. the W3C traceparent; optional"},
            "data": data,
        },
        "required": ["type", "data"],
        "additionalProperties": False,
        "x-cars-kind": entry.kind.value,
        "x-cars-area": entry.area.value,
    }
    if defs:
        schema["$defs"] = defs
    return schema


def all_schemas() -> dict[str, dict[str, Any]]:
    return {e.tag: envelope_schema(e) for e in catalog.entries()}
