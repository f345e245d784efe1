"""The wire codec: every message round-trips, old versions are upcast, bad input is a ContractError.

Pure: no I/O. Message instances come from `tests.unit.strategies`, which derives them from the attrs
classes, so a message added to the catalog later is covered here without editing this file.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import math
import uuid
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts import (
    CARS_NAMESPACE,
    ContractError,
    Entry,
    Envelope,
    by_tag,
    catalog,
    decode,
    dumps,
    encode,
    entries,
    loads,
    natural_id,
    reply_id,
)
from contracts.limits import MAX_ID, MAX_PATCH
from contracts.repairs import RepairApplied
from contracts.runs import RunReported
from contracts.values import FailureEvidence, Outcome, TestResult
from tests.unit.strategies import envelopes, json_values, messages

# The wire form documented in contracts/envelope.py, written out here so that a change to it is a
# deliberate change to this test too.
ENVELOPE_KEYS = {
    "type", "version", "id", "occurred_at", "correlation_id", "causation_id", "stream_id",
    "stream_version", "data",
}
# Written only when it has entries.
OPTIONAL_ENVELOPE_KEYS = {"metadata"}

per_message = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
per_message_mutation = settings(per_message, max_examples=15)
fuzz = settings(max_examples=100, deadline=None)

ALL_ENTRIES = entries()
ENVELOPE_ID = uuid.UUID("0b5d3c1e-2f7a-4c1b-9a7e-3d2c1b0a9f8e")
OCCURRED_AT = dt.datetime(2024, 5, 1, 12, tzinfo=dt.UTC)


def entry_id(entry: Entry) -> str:
    return entry.tag


def is_json_native(value: Any) -> bool:
    """Only what `json.loads` itself could have produced: no tuples, UUIDs, datetimes or enums."""
    if value is None or isinstance(value, str | bool | int):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(is_json_native(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_json_native(v) for k, v in value.items())
    return False


def strict_json(text: str) -> Any:
    """`json.loads`, refusing the NaN/Infinity extensions that Python accepts and JSON does not."""

    def refuse(constant: str) -> Any:
        raise AssertionError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def errors_of(payload: Any) -> list[str]:
    with pytest.raises(ContractError) as caught:
        decode(payload) if not isinstance(payload, str | bytes) else loads(payload)
    assert caught.value.errors, "a ContractError must say what is wrong"
    return caught.value.errors


# ---------------------------------------------------------------------------------------------------
# 1. Every registered message survives the wire
# ---------------------------------------------------------------------------------------------------


def test_the_catalog_is_not_empty_and_tags_are_explicit_strings() -> None:
    # Given the catalog
    # Then it lists messages whose tags are dotted strings, never class names
    assert len(ALL_ENTRIES) > 30
    for entry in ALL_ENTRIES:
        assert "." in entry.tag and entry.tag != entry.cls.__name__
        assert by_tag(entry.tag) is entry


@pytest.mark.parametrize("entry", ALL_ENTRIES, ids=entry_id)
def test_every_message_class_is_keyword_only(entry: Entry) -> None:
    # Given a registered message class, Then nobody can build it positionally (STYLE rule 2)
    assert all(f.kw_only for f in attrs.fields(entry.cls)), f"{entry.tag} has positional fields"


@pytest.mark.parametrize("entry", ALL_ENTRIES, ids=entry_id)
@per_message
@given(data=st.data())
def test_every_message_round_trips_through_json_text_and_dicts(entry: Entry, data: st.DataObject) -> None:
    # Given a valid envelope of this message type, every field drawn
    envelope = data.draw(envelopes(entry), label="envelope")
    assert type(envelope.data) is entry.cls
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        setattr(envelope.data, attrs.fields(entry.cls)[0].name, None)

    # When it is written as JSON text
    text = dumps(envelope)

    # Then the text is strict JSON with exactly the documented envelope keys
    wire = strict_json(text)
    assert ENVELOPE_KEYS <= set(wire) <= ENVELOPE_KEYS | OPTIONAL_ENVELOPE_KEYS
    assert ("metadata" in wire) == bool(envelope.metadata)
    assert wire["type"] == entry.tag
    assert wire["version"] == entry.version
    assert wire["id"] == str(envelope.id)
    assert isinstance(wire["data"], dict)
    # And reading it back gives the same envelope, by text and by dict
    assert loads(text) == envelope
    assert loads(text.encode()) == envelope
    encoded = encode(envelope)
    assert is_json_native(encoded)
    assert encoded == wire
    assert decode(encoded) == envelope


@pytest.mark.parametrize("entry", ALL_ENTRIES, ids=entry_id)
@per_message_mutation
@given(data=st.data())
def test_a_decoded_message_is_read_with_any_accepted_value_kept_as_its_json_kind(
    entry: Entry, data: st.DataObject
) -> None:
    # Given a valid wire message with one data field replaced by an arbitrary JSON value
    message = data.draw(messages(entry.cls), label="message")
    wire = encode(Envelope(data=message, id=ENVELOPE_ID, occurred_at=OCCURRED_AT))
    field = data.draw(st.sampled_from(sorted(wire["data"])), label="field") if wire["data"] else None
    if field is not None:
        wire["data"][field] = data.draw(json_values, label="value")

    # When it is decoded
    try:
        decoded = decode(copy.deepcopy(wire))
    except ContractError as exc:
        # Then it is either rejected with located errors...
        assert all(" @ $" in line for line in exc.errors)
        return
    # ...or accepted without coercion: the value re-encodes as the same JSON kind it arrived as
    again = encode(decoded)
    assert decode(again) == decoded
    if field is not None:
        assert _json_kind(again["data"][field]) == _json_kind(wire["data"][field])


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return {str: "string", list: "array", dict: "object", type(None): "null"}[type(value)]


def test_dumps_refuses_to_write_a_non_finite_number() -> None:
    # Given a message built in Python with an infinite duration (the validator only says >= 0)
    run = RunReported(
        project="shop", run_id="ci-1",
        results=(TestResult(test_id="t", outcome=Outcome.PASSED, duration_s=math.inf),),
    )
    # When it is written, Then the producer fails instead of emitting `Infinity`, which is not JSON
    with pytest.raises(ValueError, match="JSON"):
        dumps(Envelope(data=run))


# ---------------------------------------------------------------------------------------------------
# 2. Upcasting run.reported v1 -> v2
# ---------------------------------------------------------------------------------------------------

V1_RUN_REPORTED: dict[str, Any] = {
    "type": "run.reported",
    "version": 1,
    "id": "0b5d3c1e-2f7a-4c1b-9a7e-3d2c1b0a9f8e",
    "occurred_at": "2024-05-01T12:00:00+00:00",
    "correlation_id": "ci-41",
    "data": {
        "project": "shop",
        "run_id": "ci-41",
        "results": [
            {"test_id": "tests/test_cart.py::test_total", "outcome": "failed", "duration_ms": 1500,
             "evidence": {"exception_type": "AssertionError", "line": 12}},
            {"test_id": "tests/test_cart.py::test_empty", "outcome": "passed", "duration_ms": 7},
            {"test_id": "tests/test_cart.py::test_slow", "outcome": "skipped"},
        ],
    },
}


def test_a_v1_run_reported_is_upcast_to_v2_with_durations_in_seconds() -> None:
    # Given a run.reported payload as a v1 producer wrote it (durations in integer milliseconds)
    payload = copy.deepcopy(V1_RUN_REPORTED)

    # When it is decoded
    envelope = decode(payload)

    # Then it is the current class, with `duration_s` in seconds
    current = by_tag("run.reported")
    assert current is not None and current.version == 2
    assert isinstance(envelope.data, RunReported)
    assert [r.duration_s for r in envelope.data.results] == [1.5, 0.007, 0.0]
    assert envelope.data.results[0].evidence == FailureEvidence(exception_type="AssertionError", line=12)
    assert envelope.id == uuid.UUID("0b5d3c1e-2f7a-4c1b-9a7e-3d2c1b0a9f8e")
    assert envelope.correlation_id == "ci-41"
    # And the caller's payload is left as it was
    assert payload == V1_RUN_REPORTED
    # And writing it again gives the v2 form
    rewritten = encode(envelope)
    assert rewritten["version"] == 2
    assert rewritten["data"]["results"][0]["duration_s"] == 1.5
    assert "duration_ms" not in rewritten["data"]["results"][0]


def test_the_bus_path_and_the_store_path_upcast_the_same_way() -> None:
    # Given the v1 payload as JSON text (the bus) and as a dict (the store)
    text = json.dumps(V1_RUN_REPORTED)
    # When both are decoded, Then they agree
    assert loads(text) == decode(copy.deepcopy(V1_RUN_REPORTED))


def test_a_v2_payload_still_carrying_duration_ms_is_rejected() -> None:
    # Given a payload that claims v2 but uses the v1 field
    payload = {**copy.deepcopy(V1_RUN_REPORTED), "version": 2}
    # When it is decoded, Then the old field is an extra field: v2 is not silently upcast
    errors = errors_of(payload)
    assert any("duration_ms" in e and "$.data.results[0]" in e for e in errors), errors


def test_a_version_newer_than_known_is_rejected_clearly() -> None:
    # Given a payload from a newer CARS
    payload = {**copy.deepcopy(V1_RUN_REPORTED), "version": 3}
    # When it is decoded, Then the error names the versions and points at $.version
    errors = errors_of(payload)
    assert errors == ["run.reported v3 is newer than this CARS understands (v2) @ $.version"]


def test_a_missing_upcaster_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a catalog in which nobody registered the v1 -> v2 step for run.reported
    monkeypatch.delitem(catalog._UPCASTERS, ("run.reported", 1))
    # When a v1 payload arrives, Then it is refused rather than structured as if it were v2
    errors = errors_of(copy.deepcopy(V1_RUN_REPORTED))
    assert errors == ["no upcaster from run.reported v1 to v2 @ $.version"]


@pytest.mark.parametrize(
    ("results", "expected"),
    [
        (5, "expected an array, got int @ $.data.results"),
        (["x"], "expected a JSON object, got str @ $.data.results[0]"),
        ([{"test_id": "t", "outcome": "passed", "duration_ms": "5"}],
         "expected a number, got str @ $.data.results[0].duration_s"),
        ([{"test_id": "t", "outcome": "passed", "duration_ms": None}],
         "expected a number, got NoneType @ $.data.results[0].duration_s"),
        ([{"test_id": "t", "outcome": "passed", "duration_ms": -5}],
         "'duration_s' must be >= 0.0: -0.005 @ $.data.results[0]"),
    ],
)
def test_a_malformed_v1_payload_is_a_contract_error_with_a_path(results: Any, expected: str) -> None:
    # Given a v1 payload whose results the upcaster cannot convert
    payload = copy.deepcopy(V1_RUN_REPORTED)
    payload["data"]["results"] = results
    # When it is decoded, Then it is a located ContractError, never a TypeError from the upcaster
    assert expected in errors_of(payload)


def test_an_upcaster_that_fails_becomes_a_contract_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given an upcaster that trips over what an old producer wrote
    def broken(data: dict[str, Any]) -> dict[str, Any]:
        raise KeyError("results")

    monkeypatch.setitem(catalog._UPCASTERS, ("run.reported", 1), broken)
    # When a v1 payload arrives, Then the failure is a ContractError that names the step
    errors = errors_of(copy.deepcopy(V1_RUN_REPORTED))
    assert len(errors) == 1 and errors[0].startswith("cannot upcast run.reported v1 to v2")


# ---------------------------------------------------------------------------------------------------
# 3. Bad input: ContractError with `$.path` lines
# ---------------------------------------------------------------------------------------------------

UUID_TEXT = "6f1c1a55-9b0e-4c1e-8c55-ca125ca125c0"


def run_reported(**data: Any) -> dict[str, Any]:
    return {
        "type": "run.reported", "version": 2,
        "data": {"project": "shop", "run_id": "ci-1", "results": [], **data},
    }


def one_result(**fields: Any) -> dict[str, Any]:
    return run_reported(results=[{"test_id": "t", "outcome": "passed", **fields}])


def start_monitoring(**data: Any) -> dict[str, Any]:
    return {
        "type": "monitoring.start", "data": {"project": "p", "path": "/src", "test_cmd": "pytest", **data},
    }


def repair_applied(**data: Any) -> dict[str, Any]:
    return {"type": "repair.applied", "data": {"repair_id": UUID_TEXT, **data}}


BAD_PAYLOADS = [
    # a number where a string is expected is rejected, not turned into "12"
    pytest.param(run_reported(project=12), "expected a string, got int @ $.data.project", id="int-for-str"),
    pytest.param(run_reported(commit=None, branch=3.5), "expected a string, got float @ $.data.branch",
                 id="float-for-optional-str"),
    pytest.param(start_monitoring(interval_s="300"), "expected an integer, got str @ $.data.interval_s",
                 id="str-for-int"),
    pytest.param(start_monitoring(interval_s=300.0), "expected an integer, got float @ $.data.interval_s",
                 id="float-for-int"),
    # booleans are not integers or numbers on the wire, whatever Python thinks
    pytest.param(start_monitoring(interval_s=True), "expected an integer, got bool @ $.data.interval_s",
                 id="bool-for-int"),
    pytest.param(one_result(duration_s=False), "expected a number, got bool @ $.data.results[0].duration_s",
                 id="bool-for-float"),
    pytest.param({"type": "test.flakiness.changed", "data": {
        "project": "p", "test_id": "t", "flaky": 1, "flip_rate": 0.5, "window": 10}},
        "expected true or false, got int @ $.data.flaky", id="int-for-bool"),
    # arrays and objects must be arrays and objects
    pytest.param(repair_applied(files="src/a.py"), "expected an array, got str @ $.data.files",
                 id="str-for-array"),
    pytest.param(repair_applied(files={"src/a.py": 1}), "expected an array, got dict @ $.data.files",
                 id="object-for-array"),
    pytest.param(repair_applied(files=["a.py", 3]), "expected a string, got int @ $.data.files[1]",
                 id="bad-array-item"),
    pytest.param(run_reported(results=["t"]), "expected a JSON object, got str @ $.data.results[0]",
                 id="str-for-object"),
    pytest.param({"type": "environment.provisioned", "data": {
        "environment_id": UUID_TEXT, "backend": "k8s", "workspace": "ws", "service_urls": [["db", "x"]],
        "expires_at": "2024-01-01T00:00:00+00:00"}},
        "expected a mapping @ $.data.service_urls", id="array-for-mapping"),
    # extra keys, at every level
    pytest.param(run_reported(colour="red"), "extra fields found (colour) @ $.data", id="extra-data-key"),
    pytest.param(one_result(colour="red"), "extra fields found (colour) @ $.data.results[0]",
                 id="extra-nested-key"),
    pytest.param({**run_reported(), "colour": "red"}, "unknown field 'colour' @ $", id="extra-envelope-key"),
    # missing and empty required strings
    pytest.param({"type": "run.reported", "data": {"project": "shop", "results": []}},
                 "required field missing @ $.data.run_id", id="missing-field"),
    pytest.param(run_reported(project=""), "project must not be empty @ $.data", id="empty-str"),
    pytest.param(run_reported(project=" \t\n"), "project must not be empty @ $.data", id="blank-str"),
    pytest.param(one_result(test_id=""), "test_id must not be empty @ $.data.results[0]",
                 id="empty-nested-str"),
    # limits
    pytest.param(run_reported(project="x" * (MAX_ID + 1)),
                 f"project is {MAX_ID + 1} characters long; the limit is {MAX_ID} @ $.data",
                 id="oversized-id"),
    pytest.param({"type": "heal.proposed", "data": {
        "repair_id": UUID_TEXT, "candidate_id": UUID_TEXT, "strategy": "s", "rank": 1, "confidence": 0.5,
        "patch": "+" * (MAX_PATCH + 1)}},
        f"patch is {MAX_PATCH + 1} characters long; the limit is {MAX_PATCH} @ $.data", id="oversized-patch"),
    pytest.param(one_result(duration_s=-0.5), "'duration_s' must be >= 0.0: -0.5 @ $.data.results[0]",
                 id="below-minimum"),
    pytest.param(start_monitoring(interval_s=1), "'interval_s' must be >= 5: 1 @ $.data", id="int-bound"),
    pytest.param({"type": "template.publish", "data": {"spec": {"name": "n", "version": "1", "services": [
        {"name": "db", "kind": "redis", "image": "redis", "version": "7", "port": 70000}]}}},
        "'port' must be <= 65535: 70000 @ $.data.spec.services[0]", id="deep-bound"),
    # enums, ids, times
    pytest.param(one_result(outcome="exploded"),
                 "'exploded' is not a valid Outcome @ $.data.results[0].outcome", id="bad-enum"),
    pytest.param(one_result(outcome=["passed"]),
                 "['passed'] is not a valid Outcome @ $.data.results[0].outcome", id="unhashable-enum"),
    pytest.param(repair_applied(repair_id="not-a-uuid"), "@ $.data.repair_id", id="bad-uuid"),
    pytest.param(repair_applied(repair_id=12), "expected a UUID string, got int @ $.data.repair_id",
                 id="int-uuid"),
    pytest.param({"type": "environment.expired", "data": {
        "environment_id": UUID_TEXT, "expired_at": 1714560000}},
        "expected an ISO 8601 string, got int @ $.data.expired_at", id="epoch-datetime"),
    pytest.param({**run_reported(), "occurred_at": "yesterday"},
                 "Invalid isoformat string: 'yesterday' @ $.occurred_at", id="bad-occurred-at"),
    # the envelope itself
    pytest.param({**run_reported(), "id": "x"}, "@ $.id", id="bad-id"),
    pytest.param({**run_reported(), "correlation_id": 7},
                 "correlation_id must be a string @ $.correlation_id", id="int-correlation"),
    pytest.param({**run_reported(), "correlation_id": "c" * (MAX_ID + 1)}, "the limit is 512 @ $",
                 id="oversized-correlation"),
    pytest.param({**run_reported(), "stream_version": True},
                 "stream_version must be an integer @ $.stream_version", id="bool-stream-version"),
    pytest.param({**run_reported(), "metadata": {"traceparent": 1}},
                 "metadata must be an object of strings @ $.metadata", id="int-metadata-value"),
    pytest.param({**run_reported(), "metadata": ["traceparent"]},
                 "metadata must be an object of strings @ $.metadata", id="array-metadata"),
    pytest.param({**run_reported(), "metadata": {str(i): "v" for i in range(17)}},
                 "metadata has 17 entries; the limit is 16 @ $", id="too-much-metadata"),
    pytest.param({**run_reported(), "metadata": {"k": "v" * (MAX_ID + 1)}},
                 "metadata['k'] must be a string of at most 512 characters @ $", id="oversized-metadata"),
    pytest.param({**run_reported(), "version": True}, "version must be a positive integer @ $.version",
                 id="bool-version"),
    pytest.param({**run_reported(), "version": 0}, "version must be a positive integer @ $.version",
                 id="zero-version"),
    pytest.param({**run_reported(), "version": "2"}, "version must be a positive integer @ $.version",
                 id="str-version"),
    pytest.param({"type": "run.reported", "data": []}, "data must be a JSON object @ $.data",
                 id="array-data"),
    pytest.param({"type": "run.reported"}, "data must be a JSON object @ $.data", id="no-data"),
    # what is not an envelope at all
    pytest.param([1, 2], "expected a JSON object, got list @ $", id="array"),
    pytest.param("[1, 2]", "expected a JSON object, got list @ $", id="array-text"),
    pytest.param("42", "expected a JSON object, got int @ $", id="number-text"),
    pytest.param("null", "expected a JSON object, got NoneType @ $", id="null-text"),
    pytest.param('"run.reported"', "expected a JSON object, got str @ $", id="string-text"),
]


@pytest.mark.parametrize(("payload", "expected"), BAD_PAYLOADS)
def test_bad_input_is_a_contract_error_with_a_located_reason(payload: Any, expected: str) -> None:
    # Given a payload that breaks the contract in one way
    # When it is decoded
    errors = errors_of(payload)
    # Then one error line says what is wrong and where
    assert any(expected in line for line in errors), errors
    assert all(" @ $" in line for line in errors), errors


def test_an_unknown_type_lists_the_known_types() -> None:
    # Given a payload of a type nobody registered
    errors = errors_of({"type": "run.exploded", "data": {}})
    # When it is decoded, Then the one error names the type and every known tag
    assert len(errors) == 1
    assert errors[0].startswith("unknown message type 'run.exploded'; known types: ")
    assert errors[0].endswith(" @ $.type")
    for entry in ALL_ENTRIES:
        assert entry.tag in errors[0]


@pytest.mark.parametrize("tag", [None, 12, ["run.reported"]], ids=["null", "int", "list"])
def test_a_type_that_is_not_a_string_is_an_unknown_type(tag: Any) -> None:
    errors = errors_of({"type": tag, "data": {}})
    assert errors[0].startswith(f"unknown message type {tag!r}")


def test_every_problem_is_reported_at_once() -> None:
    # Given a payload with several independent problems
    payload = {"type": "run.reported", "data": {"project": 1, "results": "none", "extra": True}}
    # When it is decoded
    errors = errors_of(payload)
    # Then each problem has its own line
    assert "expected a string, got int @ $.data.project" in errors
    assert "required field missing @ $.data.run_id" in errors
    assert "expected an array, got str @ $.data.results" in errors
    assert "extra fields found (extra) @ $.data" in errors


@pytest.mark.parametrize(
    "text",
    [
        "{", "", "   ", "{'type': 'run.reported'}", "NaN-ish", b"\xff\xfe\xfa", b"\x80abc",
        "1" * 5000,  # longer than Python's int parsing limit: a ValueError that is not a JSONDecodeError
        "[" * 100_000 + "]" * 100_000,  # deeper than the parser's recursion limit
    ],
    ids=["unclosed", "empty", "blank", "single-quotes", "garbage", "utf16-bom-garbage", "bad-utf8",
         "huge-int", "deep"],
)
def test_invalid_json_is_a_contract_error(text: str | bytes) -> None:
    # Given text that is not a JSON document (or not one Python can read)
    # When it is loaded, Then it is a ContractError at $, not a ValueError or RecursionError
    errors = errors_of(text)
    assert len(errors) == 1 and errors[0].startswith("not valid JSON") and errors[0].endswith(" @ $")


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_rejected(constant: str) -> None:
    # Given Python's JSON extensions for non-finite numbers in a float field
    text = json.dumps(one_result(duration_s="PLACEHOLDER")).replace('"PLACEHOLDER"', constant)
    # When it is loaded, Then the number is refused, so `dumps` can never be asked to write it back
    errors = errors_of(text)
    assert any(e.startswith("expected a finite number") for e in errors), errors
    assert all(e.endswith("@ $.data.results[0].duration_s") for e in errors), errors


# Times: naive is taken as UTC; aware keeps its instant


def test_a_naive_occurred_at_is_taken_as_utc() -> None:
    envelope = decode({**run_reported(), "occurred_at": "2024-05-01T12:00:00"})
    assert envelope.occurred_at == dt.datetime(2024, 5, 1, 12, tzinfo=dt.UTC)
    assert envelope.occurred_at.utcoffset() == dt.timedelta(0)


def test_a_z_suffix_is_utc() -> None:
    envelope = decode({**run_reported(), "occurred_at": "2024-05-01T12:00:00Z"})
    assert envelope.occurred_at == dt.datetime(2024, 5, 1, 12, tzinfo=dt.UTC)


def test_an_offset_is_kept_and_compares_as_the_same_instant() -> None:
    envelope = decode({**run_reported(), "occurred_at": "2024-05-01T14:00:00+02:00"})
    assert envelope.occurred_at.utcoffset() == dt.timedelta(hours=2)
    assert envelope.occurred_at == dt.datetime(2024, 5, 1, 12, tzinfo=dt.UTC)
    assert encode(envelope)["occurred_at"] == "2024-05-01T14:00:00+02:00"


def test_a_naive_datetime_inside_data_is_taken_as_utc_too() -> None:
    envelope = decode({"type": "environment.expired", "data": {
        "environment_id": UUID_TEXT, "expired_at": "2024-05-01T12:00:00"}})
    assert envelope.data.expired_at == dt.datetime(2024, 5, 1, 12, tzinfo=dt.UTC)


def test_a_missing_occurred_at_and_id_are_filled_in() -> None:
    # Given a producer that leaves the envelope fields out
    envelope = decode(run_reported())
    # Then the message gets a fresh id, correlates with itself, and happened now-ish, in UTC
    assert envelope.correlation_id == str(envelope.id)
    assert envelope.occurred_at.tzinfo is not None


def test_an_envelope_built_in_python_needs_an_aware_time() -> None:
    with pytest.raises(ValueError, match="time zone"):
        Envelope(data=RepairApplied(repair_id=uuid.uuid4()), occurred_at=dt.datetime(2024, 5, 1, 12))


# Fuzz: nothing but ContractError ever escapes


@fuzz
@given(value=json_values)
def test_any_json_value_decodes_or_is_a_contract_error(value: Any) -> None:
    # Given any JSON value, as a dict from the store and as text from the bus
    for as_dict, payload in ((True, value), (False, json.dumps(value))):
        # When it is decoded, Then it is an envelope or a ContractError, never another exception
        try:
            decode(payload) if as_dict else loads(payload)
        except ContractError as exc:
            assert exc.errors


@fuzz
@given(tag=st.sampled_from([e.tag for e in ALL_ENTRIES]), version=st.none() | st.integers(-2, 4),
       data=st.dictionaries(st.text(max_size=12), json_values, max_size=6))
def test_any_data_under_a_known_type_decodes_or_is_a_contract_error(
    tag: str, version: int | None, data: Any
) -> None:
    payload: dict[str, Any] = {"type": tag, "data": data}
    if version is not None:
        payload["version"] = version
    try:
        decode(payload)
    except ContractError as exc:
        assert exc.errors


@fuzz
@given(results=json_values)
def test_any_v1_results_decode_or_are_a_contract_error(results: Any) -> None:
    payload = copy.deepcopy(V1_RUN_REPORTED)
    payload["data"]["results"] = results
    try:
        decode(payload)
    except ContractError as exc:
        assert exc.errors


@fuzz
@given(raw=st.binary(max_size=200) | st.text(max_size=200))
def test_any_bytes_or_text_load_or_are_a_contract_error(raw: bytes | str) -> None:
    try:
        loads(raw)
    except ContractError as exc:
        assert exc.errors


# ---------------------------------------------------------------------------------------------------
# 5. Natural ids
# ---------------------------------------------------------------------------------------------------


def test_natural_id_is_pinned_to_the_cars_namespace() -> None:
    # Given the natural keys of a repair
    # When its id is derived, Then it is this exact UUID: stored ids depend on the namespace never changing
    assert CARS_NAMESPACE == uuid.UUID("6f1c1a55-9b0e-4c1e-8c55-ca125ca125c0")
    assert natural_id("repair", "proj", "tests/test_a.py::test_x", "fp1") == uuid.UUID(
        "e78bd818-4169-5829-b92d-5f1f95d356dc"
    )
    assert natural_id("repair", "proj", 7) == uuid.UUID("c79a4523-552e-5eed-8dac-f72d2dc2b9f9")


def test_natural_id_is_stable_and_separates_kinds_and_keys() -> None:
    same = natural_id("repair", "proj", "t")
    assert natural_id("repair", "proj", "t") == same
    assert natural_id("heal", "proj", "t") != same
    assert natural_id("repair", "proj", "u") != same
    # keys are joined with a separator that does not occur in ordinary keys: no ("ab", "c") == ("a", "bc")
    assert natural_id("repair", "ab", "c") != natural_id("repair", "a", "bc")


def test_reply_id_is_stable_per_cause_and_differs_per_index() -> None:
    cause = uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert reply_id(cause) == reply_id(cause, 0) == uuid.UUID("40aa1021-8724-5f68-af50-d32def5c73de")
    assert reply_id(cause, 1) == uuid.UUID("1b94c94c-9577-5ad4-9144-cbf1555fd8d4")
    ids = {reply_id(cause, i) for i in range(50)}
    assert len(ids) == 50
    assert reply_id(uuid.UUID(int=cause.int + 1), 0) not in ids


def test_validation_evidence_recorded_before_runs_were_timed_still_decodes() -> None:
    # Given a heal.validated as written before the evidence listed its timed test runs
    payload = {
        "type": "heal.validated", "version": 1, "id": "2f1c8c0e-5d1a-4e53-9a57-6a3f1e0b7c11",
        "occurred_at": "2026-11-23T20:00:00+00:00",
        "data": {"repair_id": "0b5d3c1e-2f7a-4c1b-9a7e-3d2c1b0a9f8e",
                 "candidate_id": "1c6e2d2f-3a8b-4d2c-8b8f-4e3d2c1b0a9f",
                 "evidence": {"reruns": 3, "passes": 3, "duration_s": 4.5}},
    }
    # When it is decoded, Then it has no timed runs, and the rest is kept
    data = decode(payload).data
    assert data.evidence.runs == ()
    assert (data.evidence.reruns, data.evidence.duration_s) == (3, 4.5)
    # And evidence with timed runs round-trips, and a bad one is refused with its path
    timed = {**payload["data"]["evidence"], "runs": [{"purpose": "rerun", "started_at": 1.8e9, "duration_s": 0.7}]}
    again = decode(encode(decode({**payload, "data": {**payload["data"], "evidence": timed}})))
    assert [(r.purpose, r.started_at, r.duration_s) for r in again.data.evidence.runs] == [("rerun", 1.8e9, 0.7)]
    bad = {**timed, "runs": [{"purpose": "rerun", "started_at": -1.0}]}
    errors = errors_of({**payload, "data": {**payload["data"], "evidence": bad}})
    assert any("$.data.evidence.runs[0]" in e for e in errors), errors
