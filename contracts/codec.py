"""The one cattrs converter of CARS, and the envelope codec built on it.

The bus, the event store and the HTTP edge all go through `encode`/`decode` here, so that every
message has one JSON form, every version is upcast the same way, and every validation error reads
the same: a list of `$.path: problem` lines.

Decoding has two paths. The fast one (orjson, and the structuring code `contracts.fastpath` generates
per class) takes well-formed input; on anything else it gives up and the cattrs path (`structure_slow`,
`decode_slow`, the stdlib json parser) decides, so what is accepted, what it decodes to, and every
error's wording are the cattrs path's. Encoding likewise runs generated code: `encode` gives the
converter's dict, and `dumps` has orjson write the text `json.dumps` would write, byte for byte; an
instance whose fields do not hold exactly their declared types goes the converter's and json.dumps' way.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import math
import typing
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import attrs
import cattrs
import orjson
from attrs import NOTHING
from cattrs.cols import homogenous_tuple_structure_factory
from cattrs.preconf.json import make_converter
from cattrs.v import format_exception

from contracts import catalog
from contracts import environments as _environments  # noqa: F401  (registers messages)
from contracts import failures as _failures  # noqa: F401
from contracts import monitoring as _monitoring  # noqa: F401
from contracts import notifications as _notifications  # noqa: F401
from contracts import registry as _registry  # noqa: F401
from contracts import repairs as _repairs  # noqa: F401
from contracts import runs as _runs  # noqa: F401
from contracts.envelope import Envelope
from contracts.fastpath import (
    Structurer,
    compile_builder,
    compile_json_writer,
    compile_structurers,
    compile_unstructurer,
    to_datetime,
    to_uuid,
)

T = TypeVar("T")

ENVELOPE_KEYS = frozenset(
    {"type", "version", "id", "occurred_at", "correlation_id", "causation_id", "stream_id",
     "stream_version", "metadata", "data"}
)


class ContractError(ValueError):
    """A message that does not match its contract. `errors` lists `$.path: problem` lines."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("; ".join(errors))


def _structure_datetime(value: Any, _: type) -> dt.datetime:
    if isinstance(value, dt.datetime):
        parsed = value
    elif isinstance(value, str):
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    else:
        raise ValueError(f"expected an ISO 8601 string, got {type(value).__name__}")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _structure_uuid(value: Any, _: type) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a UUID string, got {type(value).__name__}")
    return uuid.UUID(value)


def _structure_str(value: Any, _: type) -> str:
    # cattrs would turn 12 into "12"; a contract says string, so a number is a producer's mistake.
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type(value).__name__}")
    return value


def _structure_int(value: Any, _: type) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, got {type(value).__name__}")
    return value


def _structure_float(value: Any, _: type) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number, got {type(value).__name__}")
    if not math.isfinite(value):
        # Python's json reads NaN/Infinity, but they are not JSON: `dumps` could not write them back.
        raise ValueError(f"expected a finite number, got {value}")
    return float(value)


def _structure_bool(value: Any, _: type) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {type(value).__name__}")
    return value


def _is_enum(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, enum.Enum)


def _structure_enum(value: Any, cls: type[enum.Enum]) -> enum.Enum:
    # `cls(value)` goes through EnumType.__call__ (about 1.6 us; a 200-result run has 200 outcomes):
    # look the value up first, and let `cls(value)` raise its usual error for anything else.
    try:
        return cls._value2member_map_[value]
    except (KeyError, TypeError):
        return cls(value)


def _is_array(tp: Any) -> bool:
    args = typing.get_args(tp)
    return typing.get_origin(tp) is tuple and len(args) == 2 and args[1] is Ellipsis


def _only_arrays(conv: cattrs.Converter) -> Callable[[Any], Any]:
    # cattrs turns any iterable into a tuple, so "a.py" would become ("a", ".", "p", "y").
    def factory(tp: Any) -> Any:
        inner = homogenous_tuple_structure_factory(tp, conv)

        def structure_array(value: Any, _: Any) -> Any:
            if not isinstance(value, list | tuple):
                raise ValueError(f"expected an array, got {type(value).__name__}")
            return inner(value, tp)

        return structure_array

    return factory


def _only_objects(conv: cattrs.Converter) -> Callable[[Any], Any]:
    # Without this a string for a nested class fails as "'str' object has no attribute 'keys'".
    def factory(cls: Any) -> Any:
        inner = conv.gen_structure_attrs_fromdict(cls)

        def structure_object(value: Any, _: Any) -> Any:
            if not isinstance(value, dict):
                raise ValueError(f"expected a JSON object, got {type(value).__name__}")
            return inner(value, cls)

        return structure_object

    return factory


def _make() -> cattrs.Converter:
    conv = make_converter(forbid_extra_keys=True)
    conv.register_structure_hook_factory(_is_array, _only_arrays(conv))
    conv.register_structure_hook_factory(attrs.has, _only_objects(conv))
    conv.register_unstructure_hook(uuid.UUID, str)
    conv.register_structure_hook(uuid.UUID, _structure_uuid)
    conv.register_unstructure_hook(dt.datetime, lambda d: d.isoformat())
    conv.register_structure_hook(dt.datetime, _structure_datetime)
    conv.register_structure_hook(str, _structure_str)
    conv.register_structure_hook(int, _structure_int)
    conv.register_structure_hook(float, _structure_float)
    conv.register_structure_hook(bool, _structure_bool)
    conv.register_structure_hook_func(_is_enum, _structure_enum)
    return conv


converter: cattrs.Converter = _make()

# The converter's structure hook of each class, looked up once: every decode of a stored or bus
# message would otherwise go through the converter's dispatch again (a measurable share of a replay).
_hooks: dict[Any, Callable[[Any, Any], Any]] = {}


def _hook(cls: Any) -> Callable[[Any, Any], Any]:
    hook = _hooks.get(cls)
    if hook is None:
        hook = _hooks[cls] = converter.get_structure_hook(cls)
    return hook


def _describe(exc: BaseException, tp: type | None) -> str:
    # Our hooks and the attrs validators say what is wrong ("test_id must not be empty"); cattrs'
    # default formatter would replace that with a bare "invalid value".
    if isinstance(exc, ValueError) and str(exc):
        return str(exc)
    return format_exception(exc, tp)


def _errors(exc: BaseException, root: str) -> list[str]:
    if isinstance(exc, cattrs.BaseValidationError):
        return list(cattrs.transform_error(exc, path=root, format_exception=_describe))
    return [f"{exc} @ {root}"]


# The generated fast structuring function of each type, compiled on first use.
_fast: dict[Any, Structurer] = {}
# `Envelope(**fields)` without attrs' `__init__` (same checks, same instance).
_build_envelope = compile_builder(Envelope)


def _structurer(cls: Any) -> Structurer:
    fast = _fast.get(cls)
    if fast is None:
        fast = _fast[cls] = compile_structurers([cls], converter.get_structure_hook)[cls]
    return fast


def structure(data: Any, cls: type[T], *, root: str = "$") -> T:
    """Structure `data` into `cls`, raising ContractError with field paths."""
    try:
        return _structurer(cls)(data)  # type: ignore[no-any-return]
    except Exception:  # the fast path only gives up: the cattrs path decides, and words any error
        return structure_slow(data, cls, root=root)


def structure_slow(data: Any, cls: type[T], *, root: str = "$") -> T:
    """`structure` through the cattrs converter alone: the reference the fast path agrees with."""
    try:
        return _hook(cls)(data, cls)  # type: ignore[no-any-return]
    except (cattrs.BaseValidationError, ValueError, TypeError, KeyError) as exc:
        raise ContractError(_errors(exc, root)) from None


# The generated unstructure function of each attrs class, compiled on first use.
_fast_out: dict[Any, Callable[[Any], Any]] = {}


def _unstructurer(cls: Any) -> Callable[[Any], Any]:
    fast = _fast_out.get(cls)
    if fast is None:
        fast = _fast_out[cls] = compile_unstructurer(cls, converter.get_unstructure_hook)
    return fast


def _unstructure_as(obj: Any, cls: Any) -> Any:
    try:
        return _unstructurer(cls)(obj)
    except Exception:  # a field not of its declared type: the converter decides, or raises
        return converter.unstructure(obj, cls)


def unstructure(obj: Any) -> Any:
    cls = obj.__class__
    return _unstructure_as(obj, cls) if attrs.has(cls) else converter.unstructure(obj)


def encode(envelope: Envelope[Any]) -> dict[str, Any]:
    """The JSON-ready dict of an envelope (`metadata` only when it has entries)."""
    entry = envelope.entry
    return _envelope_dict(envelope, entry, _unstructure_as(envelope.data, entry.cls))


def _envelope_dict(envelope: Envelope[Any], entry: catalog.Entry, data: Any) -> dict[str, Any]:
    encoded = {
        "type": entry.tag,
        "version": entry.version,
        "id": str(envelope.id),
        "occurred_at": envelope.occurred_at.isoformat(),
        "correlation_id": envelope.correlation_id,
        "causation_id": envelope.causation_id,
        "stream_id": None if envelope.stream_id is None else str(envelope.stream_id),
        "stream_version": envelope.stream_version,
        "data": data,
    }
    if envelope.metadata:
        encoded["metadata"] = dict(envelope.metadata)
    return encoded


def decode(obj: Any) -> Envelope[Any]:
    """An envelope from its JSON-ready dict: validates, upcasts old versions, structures `data`."""
    try:
        return _decode_fast(obj)
    except Exception:  # the fast path only gives up: the cattrs path decides, and words any error
        return decode_slow(obj)


def _optional(value: Any, cls: type, name: str) -> Any:
    """An optional envelope key on the fast path: NOTHING (the field's default) when absent or null,
    else exactly of `cls` (anything else falls back to the cattrs path, which words the error)."""
    if value is None:
        return NOTHING
    if value.__class__ is not cls:
        raise ValueError(name)
    return value


def _decode_fast(obj: Any) -> Envelope[Any]:
    """`decode_slow` for well-formed input, without collecting errors: on anything it would not accept
    as is, it raises (anything), and `decode_slow` decides. It never changes `obj`."""
    if obj.__class__ is not dict or not obj.keys() <= ENVELOPE_KEYS:
        raise ValueError("not a dict, or an unknown key")
    get = obj.get
    entry = catalog.by_tag(obj["type"])
    data = obj["data"]
    if entry is None or data.__class__ is not dict:
        raise ValueError("unknown type or no data")
    version = get("version", entry.version)
    if version.__class__ is not int or version < 1:
        raise ValueError("version")
    if version != entry.version:
        data = catalog.upcast(entry.tag, version, data)
    message = _structurer(entry.cls)(data)
    # Absent or null: the field's default, as in decode_slow.
    value = get("id")
    id_ = NOTHING if value is None else to_uuid(value)
    value = get("occurred_at")
    occurred_at = NOTHING if value is None else to_datetime(value)
    value = get("stream_id")
    stream_id = NOTHING if value is None else to_uuid(value)
    correlation_id = _optional(get("correlation_id"), str, "correlation_id")
    causation_id = _optional(get("causation_id"), str, "causation_id")
    stream_version = _optional(get("stream_version"), int, "stream_version")
    # (the metadata's keys and values: the builder checks them, as attrs would)
    metadata = _optional(get("metadata"), dict, "metadata")
    return _build_envelope(  # type: ignore[no-any-return]
        data=message, id=id_, occurred_at=occurred_at, correlation_id=correlation_id, causation_id=causation_id,
        stream_id=stream_id, stream_version=stream_version, metadata=metadata,
    )


def decode_slow(obj: Any) -> Envelope[Any]:
    """`decode` through the cattrs converter alone: the reference the fast path agrees with, and the
    one that words every error."""
    if not isinstance(obj, dict):
        raise ContractError([f"expected a JSON object, got {type(obj).__name__} @ $"])
    errors = [f"unknown field {k!r} @ $" for k in sorted(set(obj) - ENVELOPE_KEYS)]
    tag = obj.get("type")
    entry = catalog.by_tag(tag) if isinstance(tag, str) else None
    if entry is None:
        known = ", ".join(e.tag for e in catalog.entries())
        errors.append(f"unknown message type {tag!r}; known types: {known} @ $.type")
    version = obj.get("version", entry.version if entry else 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        errors.append("version must be a positive integer @ $.version")
    if not isinstance(obj.get("data"), dict):
        errors.append("data must be a JSON object @ $.data")
    if errors or entry is None:
        raise ContractError(errors)
    try:
        data = catalog.upcast(entry.tag, version, obj["data"])
    except ValueError as exc:
        raise ContractError([f"{exc} @ $.version"]) from None
    message = structure_slow(data, entry.cls, root="$.data")
    fields: dict[str, Any] = {"data": message}
    problems: list[str] = []
    for key, cls in (("id", uuid.UUID), ("occurred_at", dt.datetime), ("stream_id", uuid.UUID)):
        if obj.get(key) is not None:
            try:
                fields[key] = structure_slow(obj[key], cls, root=f"$.{key}")
            except ContractError as exc:
                problems += exc.errors
    for key in ("correlation_id", "causation_id"):
        if obj.get(key) is not None:
            if isinstance(obj[key], str):
                fields[key] = obj[key]
            else:
                problems.append(f"{key} must be a string @ $.{key}")
    if obj.get("stream_version") is not None:
        if isinstance(obj["stream_version"], int) and not isinstance(obj["stream_version"], bool):
            fields["stream_version"] = obj["stream_version"]
        else:
            problems.append("stream_version must be an integer @ $.stream_version")
    if obj.get("metadata") is not None:
        metadata = obj["metadata"]
        if isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values()):
            fields["metadata"] = metadata
        else:
            problems.append("metadata must be an object of strings @ $.metadata")
    if problems:
        raise ContractError(problems)
    try:
        return Envelope(**fields)
    except (ValueError, TypeError) as exc:
        raise ContractError([f"{exc} @ $"]) from None


# allow_nan=False: NaN and Infinity are not JSON; fail at the producer, not at every consumer. One encoder
# for every call: `json.dumps` with these arguments builds the same encoder anew each time.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)

# The generated function giving what orjson is to write for each message class (None: not one it can).
_json_writers: dict[Any, Callable[[Any], Any] | None] = {}


def _json_writer(cls: Any) -> Callable[[Any], Any] | None:
    try:
        return _json_writers[cls]
    except KeyError:
        writer = _json_writers[cls] = compile_json_writer(cls, orjson.Fragment)
        return writer


def _plain_envelope(envelope: Envelope[Any]) -> bool:
    """Its own fields hold exactly their declared types, as orjson would write them like json.dumps."""
    metadata = envelope.metadata
    return (
        envelope.id.__class__ is uuid.UUID and envelope.occurred_at.__class__ is dt.datetime
        and envelope.correlation_id.__class__ is str
        and (envelope.causation_id is None or envelope.causation_id.__class__ is str)
        and (envelope.stream_id is None or envelope.stream_id.__class__ is uuid.UUID)
        and (envelope.stream_version is None or envelope.stream_version.__class__ is int)
        and metadata.__class__ is dict
        and (not metadata or all(k.__class__ is str and v.__class__ is str for k, v in metadata.items()))
    )


def dumps(envelope: Envelope[Any]) -> str:
    """The envelope as compact JSON text: `json.dumps` of `encode(envelope)`, byte for byte. orjson writes
    it when every field holds exactly its declared type (see contracts.fastpath._JsonWriter)."""
    writer = _json_writer(envelope.data.__class__)
    if writer is not None and _plain_envelope(envelope):
        try:
            data = writer(envelope.data)
            return orjson.dumps(_envelope_dict(envelope, envelope.entry, data)).decode()
        except Exception:  # a field the writer refuses, or an integer past 64 bits: json.dumps decides
            pass
    return _ENCODER.encode(encode(envelope))


def loads(text: str | bytes) -> Envelope[Any]:
    """Parse and decode one JSON envelope; any problem is a ContractError."""
    if text.__class__ is bytes or text.__class__ is str:
        try:
            return _decode_fast(orjson.loads(text))
        except Exception:  # the stdlib parser and the cattrs path decide, and word any error
            pass
    return decode_slow(_parse(text))


def loads_stored(text: str | bytes, *, stream_id: uuid.UUID | str, stream_version: int) -> Envelope[Any]:
    """`loads` for an envelope read back from the event store, which is the authority on where an
    event sits: its stream id and version replace the JSON's, and the envelope is built once."""
    if text.__class__ is bytes or text.__class__ is str:
        try:
            obj = orjson.loads(text)
            if obj.__class__ is dict:
                obj["stream_id"] = stream_id
                obj["stream_version"] = stream_version
            return _decode_fast(obj)
        except Exception:  # the stdlib parser and the cattrs path decide, and word any error
            pass
    obj = _parse(text)
    if isinstance(obj, dict):
        obj["stream_id"] = stream_id
        obj["stream_version"] = stream_version
    return decode_slow(obj)


def _parse(text: str | bytes) -> Any:
    # The stdlib parser, not orjson: it reads integers of any size as integers (orjson makes a float of
    # one past 64 bits) and reads NaN/Infinity so that the error can name the field.
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        # ValueError: malformed JSON, bad encoding, or an integer over 4300 digits;
        # RecursionError: nesting deeper than the parser's stack.
        raise ContractError([f"not valid JSON: {exc} @ $"]) from None
