"""The codec's fast path (orjson + the structuring code contracts/fastpath.py generates) against the
cattrs path it stands in for: for every registered message, the same input gives the same envelope, or
the same ContractError lines.

Pure: no I/O. Valid messages come from `tests.unit.strategies`; bad ones are valid wire messages with one
value anywhere in them replaced, removed or added, so every nested class and every envelope field is hit.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import math
import uuid
from typing import Any

import attrs
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts import (
    ContractError,
    Entry,
    Envelope,
    catalog,
    decode,
    dumps,
    encode,
    entries,
    loads,
    structure,
    unstructure,
)
from contracts.codec import (
    _decode_fast,
    _json_writer,
    _parse,
    _structurer,
    converter,
    decode_slow,
    loads_stored,
    structure_slow,
)
from contracts.fastpath import Miss, _UnstructureWriter, generated_source, to_uuid
from contracts.runs import RunReported
from contracts.values import Outcome, TestResult
from tests.unit.strategies import envelopes, json_values, messages

ALL_ENTRIES = entries()
per_message = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ENVELOPE_ID = uuid.UUID("0b5d3c1e-2f7a-4c1b-9a7e-3d2c1b0a9f8e")
OCCURRED_AT = dt.datetime(2024, 5, 1, 12, tzinfo=dt.UTC)


def entry_id(entry: Entry) -> str:
    return entry.tag


def outcome(fn: Any, *args: Any, **kwargs: Any) -> tuple[str, Any]:
    """What a decode gives: ("ok", the value's repr) or ("error", the ContractError lines). The repr
    rather than ==: 1 == 1.0 and True == 1, but a field must also keep its type."""
    try:
        value = fn(*args, **kwargs)
    except ContractError as exc:
        return "error", exc.errors
    text = repr(value)
    if isinstance(value, Envelope):
        # An envelope that arrived without an id or a time gets a fresh one (and correlates with it).
        text = text.replace(str(value.id), "<id>").replace(repr(value.occurred_at), "<time>")
    return "ok", text


def assert_same_as_slow(wire: Any) -> None:
    """decode(wire) agrees with the cattrs path, as a dict and as JSON text, and leaves `wire` alone."""
    before = copy.deepcopy(wire)
    assert outcome(decode, wire) == outcome(decode_slow, copy.deepcopy(before))
    assert wire == before
    text = json.dumps(wire)
    assert outcome(loads, text) == outcome(decode_slow, _parse(text))
    assert outcome(loads, text.encode()) == outcome(decode_slow, _parse(text))


# ---------------------------------------------------------------------------------------------------
# Valid messages: the fast path takes them, and builds what the cattrs path builds
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("entry", ALL_ENTRIES, ids=entry_id)
def test_every_message_class_is_structured_by_generated_code_alone(entry: Entry) -> None:
    # Given a registered message class, When its fast structuring code is generated
    source = generated_source(entry.cls, converter.get_structure_hook)
    # Then no field of it (at any depth) is handed to a cattrs hook: every contract type is known
    assert "_hook" not in source, source
    # And the same holds for its generated unstructure code
    writer = _UnstructureWriter(converter.get_unstructure_hook)
    writer.function_for(entry.cls)
    assert not writer.ns, "\n".join(writer.lines)


@pytest.mark.parametrize("entry", ALL_ENTRIES, ids=entry_id)
@per_message
@given(data=st.data())
def test_the_fast_path_decodes_every_valid_message_as_the_cattrs_path_does(entry: Entry, data: st.DataObject) -> None:
    # Given a valid envelope of this message type, every field drawn, as a dict and as JSON text
    envelope = data.draw(envelopes(entry), label="envelope")
    wire = encode(envelope)
    text = dumps(envelope)

    # When the fast path decodes it, Then it takes it (no fallback) and builds the same envelope
    fast = _decode_fast(copy.deepcopy(wire))
    slow = decode_slow(copy.deepcopy(wire))
    assert fast == slow == envelope
    assert repr(fast) == repr(slow)
    assert outcome(loads, text) == outcome(decode_slow, _parse(text))
    # And the message alone structures the same way, through `structure`
    assert repr(structure(copy.deepcopy(wire["data"]), entry.cls)) == repr(
        structure_slow(copy.deepcopy(wire["data"]), entry.cls))
    # And the store's path agrees too
    stream_id = uuid.uuid4()
    assert outcome(loads_stored, text, stream_id=stream_id, stream_version=7) == outcome(
        decode_slow, {**_parse(text), "stream_id": stream_id, "stream_version": 7})


@pytest.mark.parametrize("entry", ALL_ENTRIES, ids=entry_id)
@per_message
@given(data=st.data())
def test_the_generated_unstructure_writes_what_the_converter_writes(entry: Entry, data: st.DataObject) -> None:
    # Given a valid envelope of this message type
    envelope = data.draw(envelopes(entry), label="envelope")
    # When it is encoded, Then `data` is the converter's dict, key for key, of the same JSON kinds
    encoded = encode(envelope)
    reference = converter.unstructure(envelope.data, entry.cls)
    assert json.dumps(encoded["data"]) == json.dumps(reference)
    assert json.dumps(unstructure(envelope.data)) == json.dumps(converter.unstructure(envelope.data))
    # And the text is byte for byte what json.dumps wrote
    assert dumps(envelope) == json.dumps(
        {**encoded, "data": reference}, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


@pytest.mark.parametrize("entry", ALL_ENTRIES, ids=entry_id)
def test_every_message_class_is_written_by_orjson(entry: Entry) -> None:
    # Given a registered message class, Then dumps has a generated orjson writer for it
    assert _json_writer(entry.cls) is not None


def json_dumps(envelope: Envelope[Any]) -> str:
    """What `dumps` wrote before orjson: json.dumps of the converter's envelope dict."""
    encoded = {**encode(envelope), "data": converter.unstructure(envelope.data, envelope.entry.cls)}
    return json.dumps(encoded, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


@pytest.mark.parametrize(
    "duration",
    [0, 7, 2**63, 0.0, -0.0, 1.0, 0.5, 1e-4, 9.999999999999999e-05, 1e-05, 2.5e-07, 3.2e-09, 1e-10, 5e-324,
     1e16, 1.2345678901234567e+16, 1e300, 123456789.123],
)
def test_dumps_writes_every_float_as_json_dumps_does(duration: float) -> None:
    # Given a message whose float field holds a value orjson might spell differently (or an int)
    run = RunReported(project="p", run_id="r", results=(TestResult(test_id="t", outcome=Outcome.PASSED,
                                                                   duration_s=duration),))
    envelope = Envelope(data=run, id=ENVELOPE_ID, occurred_at=OCCURRED_AT)
    # When it is written, Then the text is byte for byte json.dumps'
    assert dumps(envelope) == json_dumps(envelope)


@pytest.mark.parametrize(
    ("change", "value"),
    [
        ("duration", math.nan), ("duration", math.inf), ("duration", True), ("duration", 2**64),
        ("duration", 10**30), ("test_id", "\ud800"), ("test_id", "é\u2028\x00\x1f\x7f😀"), ("test_id", 5),
        ("test_id", uuid.UUID(int=5)), ("outcome", "passed"), ("causation_id", uuid.UUID(int=5)),
        ("causation_id", 5), ("stream_version", 2**64), ("stream_version", -(2**63) - 1), ("stream_version", True),
        ("metadata", {"k": "v"}),
    ],
)
def test_dumps_of_odd_values_is_json_dumps_or_its_error(change: str, value: Any) -> None:
    # Given an envelope built in Python with a value orjson and json.dumps might treat differently
    result: dict[str, Any] = {"test_id": "t", "outcome": Outcome.FAILED, "duration_s": 0.5}
    result[{"duration": "duration_s"}.get(change, change)] = value
    with attrs.validators.disabled():  # values no validator would let through, to see what dumps does
        run = RunReported(project="p", run_id="r", results=(TestResult(**result),)) if change in (
            "duration", "test_id", "outcome") else RunReported(project="p", run_id="r", results=())
        fields: dict[str, Any] = {change: value} if change in ("causation_id", "stream_version", "metadata") else {}
        envelope = Envelope(data=run, id=ENVELOPE_ID, occurred_at=OCCURRED_AT, **fields)
    # When it is written, Then dumps gives json.dumps' text, or raises json.dumps' error
    try:
        expected: Any = json_dumps(envelope)
    except (ValueError, TypeError, AttributeError) as exc:
        expected = type(exc), str(exc)
    try:
        got: Any = dumps(envelope)
    except (ValueError, TypeError, AttributeError) as exc:
        got = type(exc), str(exc)
    assert got == expected


def test_an_instance_holding_other_types_than_declared_is_unstructured_by_the_converter() -> None:
    # Given a message built in Python with a list where a tuple of results is declared, and a str for an enum
    run = RunReported(project="p", run_id="r", results=[TestResult(test_id="t", outcome="passed")])  # type: ignore[arg-type]
    # When it is unstructured, Then the outcome is the converter's: here, its error
    with pytest.raises(AttributeError):
        converter.unstructure(run, RunReported)
    with pytest.raises(AttributeError):
        encode(Envelope(data=run))


# ---------------------------------------------------------------------------------------------------
# Bad (or odd) messages: whatever the change, the same envelope or the same error lines
# ---------------------------------------------------------------------------------------------------


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON tree: dict keys and list indexes, at every depth (the root excluded)."""
    found: list[tuple[Any, ...]] = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        found.append((*path, key))
        found += _paths(child, (*path, key))
    return found


def _at(tree: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


# Values at the edge of what some field accepts: a number for a string, a bool for an int, a blank or
# oversized string, a naive time, the other spellings of a UUID, an enum's name for its value, ...
NEAR_MISSES: list[Any] = [
    0, 1, -1, 5, 65536, 1.5, -0.5, 1.0, True, False, None, "", " ", "x", "12", 2**70, 1e300, [], {}, ["x"], [1],
    {"k": "v"}, {"k": 1}, "x" * 65, "x" * 513, "2024-05-01T12:00:00", "2024-05-01T12:00:00Z", "2024-05-01",
    "6f1c1a55-9b0e-4c1e-8c55-ca125ca125c0", "6f1c1a559b0e4c1e8c55ca125ca125c0",
    "{6f1c1a55-9b0e-4c1e-8c55-ca125ca125c0}", "passed", "PASSED", "unknown", "redis", "1.2.0", "500m", "2Gi",
]


@st.composite
def mutated_wires(draw: st.DrawFn, entry: Entry) -> dict[str, Any]:
    """A valid wire envelope of `entry` with one change somewhere: a value replaced by any JSON value
    (or by a near miss: a number for a string, a bool for an int, ...), a key removed, or a key added."""
    message = draw(messages(entry.cls), label="message")
    wire = encode(Envelope(data=message, id=ENVELOPE_ID, occurred_at=OCCURRED_AT, correlation_id="c"))
    places = _paths(wire)
    path = draw(st.sampled_from(places), label="path")
    parent, key = _at(wire, path[:-1]), path[-1]
    change = draw(st.sampled_from(["replace", "remove", "add"]), label="change")
    if change == "replace" or not isinstance(parent, dict):
        parent[key] = draw(st.sampled_from(NEAR_MISSES) | json_values, label="value")
    elif change == "remove":
        del parent[key]
    else:
        parent[draw(st.text(max_size=8), label="new key")] = draw(json_values, label="new value")
    return wire


@pytest.mark.parametrize("entry", ALL_ENTRIES, ids=entry_id)
@per_message
@given(data=st.data())
def test_a_changed_message_decodes_or_fails_exactly_as_on_the_cattrs_path(entry: Entry, data: st.DataObject) -> None:
    # Given a valid wire message changed in one place
    wire = data.draw(mutated_wires(entry), label="wire")
    # When it is decoded, Then the result is the cattrs path's: the same envelope or the same error lines
    assert_same_as_slow(wire)


@pytest.mark.parametrize("entry", ALL_ENTRIES, ids=entry_id)
@settings(per_message, max_examples=2)
@given(data=st.data())
def test_every_place_in_a_message_takes_every_near_miss_as_the_cattrs_path_does(
    entry: Entry, data: st.DataObject
) -> None:
    # Given a valid wire message, and each place in it (any depth, the envelope's fields too)
    message = data.draw(messages(entry.cls), label="message")
    valid = encode(Envelope(data=message, id=ENVELOPE_ID, occurred_at=OCCURRED_AT, correlation_id="c"))
    for path in _paths(valid):
        for value in NEAR_MISSES:
            # When that one place holds a near miss
            wire = copy.deepcopy(valid)
            _at(wire, path[:-1])[path[-1]] = value
            # Then the message decodes, or fails, as on the cattrs path (as a dict and as text)
            assert outcome(decode, wire) == outcome(decode_slow, copy.deepcopy(wire)), (path, value)
            text = json.dumps(wire)
            assert outcome(loads, text) == outcome(decode_slow, _parse(text)), (path, value)


@pytest.mark.parametrize(
    ("where", "value"),
    [
        (("data", "results", 0, "duration_s"), 2**70),  # an integer past 64 bits: orjson reads a float
        (("data", "results", 0, "duration_s"), 10**400),  # too large for a float at all
        (("data", "results", 0, "duration_s"), 1),
        (("data", "results", 0, "test_id"), "\ud800"),  # a lone surrogate: JSON allows it, orjson does not
        (("data", "results", 0, "outcome"), "PASSED"),
        (("data", "project"), "x" * 512),
        (("data", "project"), "x" * 513),
        (("stream_version",), 2**70),
        (("stream_version",), True),
        (("version",), 1),  # upcast from v1 on the fast path
        (("version",), 3),
        (("id",), "6F1C1A55-9B0E-4C1E-8C55-CA125CA125C0"),
        (("id",), "urn:uuid:6f1c1a55-9b0e-4c1e-8c55-ca125ca125c0"),
        (("id",), "6f1c1a55-9b0e-4c1e-8c55-ca125ca125c"),
        (("id",), "6f1c1a55_9b0e-4c1e-8c55-ca125ca125c0"),
        (("id",), "+f1c1a55-9b0e-4c1e-8c55-ca125ca125c0"),
        (("occurred_at",), "2024-05-01T12:00:00"),
        (("occurred_at",), "2024-05-01"),
        (("occurred_at",), "2024-05-01T14:00:00.123456+02:00"),
        (("correlation_id",), None),
        (("correlation_id",), "c" * 513),
        (("causation_id",), 5),
        (("metadata",), {}),
        (("metadata",), {" ": "v"}),
        (("metadata",), {str(i): "v" for i in range(17)}),
        (("metadata",), {"traceparent": "00-abc"}),
    ],
)
def test_edge_values_decode_or_fail_exactly_as_on_the_cattrs_path(where: tuple[Any, ...], value: Any) -> None:
    # Given a run report with one value at an edge of what the contract (or a JSON parser) accepts
    wire: dict[str, Any] = {
        "type": "run.reported", "version": 2, "id": str(ENVELOPE_ID), "occurred_at": OCCURRED_AT.isoformat(),
        "data": {"project": "shop", "run_id": "ci-1",
                 "results": [{"test_id": "t", "outcome": "passed", "duration_s": 0.5}]},
    }
    _at(wire, where[:-1])[where[-1]] = value
    # When it is decoded, Then it is decoded, or refused, as on the cattrs path
    assert_same_as_slow(wire)


def test_an_integer_past_64_bits_stays_an_integer() -> None:
    # Given an envelope whose stream_version does not fit in 64 bits (orjson would read it as a float)
    text = json.dumps({"type": "repair.applied", "stream_version": 2**70,
                       "data": {"repair_id": str(ENVELOPE_ID)}})
    # When it is loaded, Then the exact integer is kept
    assert loads(text).stream_version == 2**70


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet='{}[]",:0123456789.eE+-tfrulnaNI \\ux\ud800', max_size=40))
def test_any_text_loads_as_on_the_cattrs_path(text: str) -> None:
    # Given any JSON-ish text (valid or not), When it is loaded, Then the outcome is the stdlib parser's
    expected: tuple[str, Any]
    try:
        expected = outcome(decode_slow, _parse(text))
    except ContractError as exc:
        expected = "error", exc.errors
    assert outcome(loads, text) == expected


def test_orjson_reads_what_it_accepts_as_the_stdlib_does() -> None:
    # Given the documents where the two parsers could differ, Then orjson either refuses or agrees
    for text in ['{"a":1,"a":2}', "-0", "1e400", "1.0e-7", '"\\u00e9"', '"\x7f"', "123456789012345678901"]:
        try:
            parsed = orjson.loads(text)
        except orjson.JSONDecodeError:
            continue
        if parsed != json.loads(text) or type(parsed) is not type(json.loads(text)):
            # Only integers past 64 bits: the fast path's exact type checks refuse the float orjson makes.
            assert isinstance(parsed, float) and isinstance(json.loads(text), int)


# ---------------------------------------------------------------------------------------------------
# Pieces
# ---------------------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(value=st.uuids().map(str) | st.text(alphabet="0123456789abcdefABCDEF-{}:urn_ +", max_size=45))
def test_to_uuid_parses_exactly_what_uuid_parses(value: str) -> None:
    try:
        expected = uuid.UUID(value)
    except ValueError:
        with pytest.raises((ValueError, Miss)):
            to_uuid(value)
        return
    parsed = to_uuid(value)
    assert parsed == expected and parsed.int == expected.int and parsed.is_safe == expected.is_safe
    assert str(parsed) == str(expected) and hash(parsed) == hash(expected)


def test_structure_of_a_value_class_agrees_for_good_and_bad_items() -> None:
    # Given what the ingest path structures one at a time
    good = {"test_id": "t", "outcome": "failed", "duration_s": 3, "evidence": {"line": 4}}
    bad = {"test_id": " ", "outcome": "failed", "duration_s": True, "evidence": {"line": "4"}}
    # Then the fast path builds the cattrs path's result, and a bad item reads the same error lines
    assert repr(structure(good, TestResult)) == repr(structure_slow(good, TestResult))
    assert outcome(structure, bad, TestResult, root="$.results[3]") == outcome(
        structure_slow, bad, TestResult, root="$.results[3]")


def test_a_v1_run_report_is_upcast_on_the_fast_path() -> None:
    # Given a v1 run report (durations in milliseconds)
    wire = {"type": "run.reported", "version": 1, "id": str(ENVELOPE_ID), "occurred_at": OCCURRED_AT.isoformat(),
            "data": {"project": "p", "run_id": "r", "results": [{"test_id": "t", "outcome": "passed",
                                                                  "duration_ms": 1500}]}}
    # When the fast path decodes it, Then it is upcast exactly as on the cattrs path
    fast = _decode_fast(copy.deepcopy(wire))
    assert isinstance(fast.data, RunReported) and fast.data.results[0].duration_s == 1.5
    assert fast == decode_slow(copy.deepcopy(wire))


def test_the_generated_code_is_compiled_once_per_type() -> None:
    assert _structurer(RunReported) is _structurer(RunReported)
    assert catalog.by_class(RunReported).cls is RunReported
