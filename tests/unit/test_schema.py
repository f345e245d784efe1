"""JSON Schema (draft 2020-12) of every message: complete, valid, and in agreement with the codec.

Pure: no I/O. Needs `jsonschema` (a dev dependency): a missing validator fails here, never skips.
"""

from __future__ import annotations

import copy
import typing
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from contracts import ContractError, Entry, decode, encode, entries, structure
from contracts.schema import all_schemas, envelope_schema
from tests.unit.strategies import envelopes

ALL_ENTRIES = entries()
SCHEMAS = all_schemas()

per_message = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def entry_id(entry: Entry) -> str:
    return entry.tag


def validator_for(tag: str) -> Any:
    return Draft202012Validator(SCHEMAS[tag], format_checker=Draft202012Validator.FORMAT_CHECKER)


def test_there_is_one_schema_per_registered_tag() -> None:
    # Given the catalog, When every schema is generated, Then each tag has exactly one
    assert set(SCHEMAS) == {e.tag for e in ALL_ENTRIES}
    assert len({s["$id"] for s in SCHEMAS.values()}) == len(SCHEMAS)


@pytest.mark.parametrize("entry", ALL_ENTRIES, ids=entry_id)
def test_every_schema_is_a_valid_draft_2020_12_schema(entry: Entry) -> None:
    # Given the schema of one message type
    schema = SCHEMAS[entry.tag]
    # Then it is a valid draft 2020-12 document that names its tag, version, kind and area
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"urn:cars:message:{entry.tag}:v{entry.version}"
    assert schema["properties"]["type"] == {"const": entry.tag}
    assert schema["properties"]["version"]["maximum"] == entry.version
    assert schema["x-cars-kind"] == entry.kind.value
    assert schema["x-cars-area"] == entry.area.value
    # And its data part lists exactly the fields of the class, requiring those without a default
    data = schema["properties"]["data"]
    fields = attrs.fields(entry.cls)
    assert set(data["properties"]) == {f.name for f in fields}
    assert set(data.get("required", [])) == {f.name for f in fields if f.default is attrs.NOTHING}
    assert data["additionalProperties"] is False


@pytest.mark.parametrize("entry", ALL_ENTRIES, ids=entry_id)
def test_every_default_in_a_schema_decodes_to_the_class_default(entry: Entry) -> None:
    # Given the schema of a message and the defaults it advertises
    properties = SCHEMAS[entry.tag]["properties"]["data"]["properties"]
    hints = typing.get_type_hints(entry.cls)
    for f in attrs.fields(entry.cls):
        if "default" not in properties[f.name]:
            continue
        # When an advertised default is structured as the field's type
        # Then it is the default the class itself uses
        assert structure(properties[f.name]["default"], hints[f.name]) == f.default, f.name


@pytest.mark.parametrize("entry", ALL_ENTRIES, ids=entry_id)
@per_message
@given(data=st.data())
def test_every_encoded_message_validates_against_its_schema(entry: Entry, data: st.DataObject) -> None:
    # Given a valid envelope of this type
    envelope = data.draw(envelopes(entry), label="envelope")
    # When it is encoded for the wire
    wire = encode(envelope)
    # Then its own schema accepts it
    errors = [f"{e.json_path}: {e.message}" for e in validator_for(entry.tag).iter_errors(wire)]
    assert errors == []
    # And no other type's schema does: `type` is a const
    other = next(e.tag for e in ALL_ENTRIES if e.tag != entry.tag)
    assert not validator_for(other).is_valid(wire)


def test_a_minimal_payload_with_defaults_left_out_is_valid_for_both() -> None:
    # Given a producer that sends only the required fields and no envelope metadata
    payload = {"type": "run.reported", "data": {"project": "shop", "run_id": "ci-1", "results": []}}
    # Then the schema and the codec both accept it
    assert validator_for("run.reported").is_valid(payload)
    assert decode(copy.deepcopy(payload)).data.source == "unknown"


def test_an_old_version_is_allowed_by_the_schema_and_a_newer_one_is_not() -> None:
    schema = validator_for("run.reported")
    payload = {"type": "run.reported", "data": {"project": "shop", "run_id": "ci-1", "results": []}}
    assert schema.is_valid({**payload, "version": 1})
    assert not schema.is_valid({**payload, "version": 3})


UUID_TEXT = "6f1c1a55-9b0e-4c1e-8c55-ca125ca125c0"
RESULT = {"test_id": "tests/test_cart.py::test_total", "outcome": "passed"}


def run(**data: Any) -> dict[str, Any]:
    return {
        "type": "run.reported", "data": {"project": "shop", "run_id": "ci-1", "results": [RESULT], **data},
    }


BAD_PAYLOADS = [
    pytest.param(run(project=12), "$.data.project", id="number-for-string"),
    pytest.param(run(results="tests/test_cart.py"), "$.data.results", id="string-for-array"),
    pytest.param(run(results=[{**RESULT, "outcome": "exploded"}]), "$.data.results[0].outcome",
                 id="bad-enum"),
    pytest.param(run(results=[{**RESULT, "duration_s": True}]), "$.data.results[0].duration_s",
                 id="bool-for-number"),
    pytest.param(run(results=[{**RESULT, "colour": "red"}]), "$.data.results[0]", id="extra-nested-key"),
    pytest.param(run(colour="red"), "$.data", id="extra-data-key"),
    pytest.param({**run(), "colour": "red"}, "$", id="extra-envelope-key"),
    pytest.param({"type": "run.reported", "data": {"project": "shop", "results": []}}, "$.data",
                 id="missing-required"),
    pytest.param(run(commit=["abc"]), "$.data.commit", id="array-for-optional-string"),
    pytest.param({**run(), "version": 0}, "$.version", id="version-zero"),
    pytest.param({**run(), "id": "not-a-uuid"}, "$.id", id="bad-uuid-format"),
    pytest.param({"type": "monitoring.start", "data": {
        "project": "p", "path": "/src", "test_cmd": "pytest", "interval_s": True}}, "$.data.interval_s",
        id="bool-for-integer"),
    pytest.param({"type": "template.publish", "data": {"spec": {"name": "n", "version": "1", "services": [
        {"name": "db", "kind": "oracle", "image": "x", "version": "1", "port": 1}]}}},
        "$.data.spec.services[0].kind", id="bad-nested-enum"),
    pytest.param({"type": "environment.provisioned", "data": {
        "environment_id": UUID_TEXT, "backend": "k8s", "workspace": "ws", "service_urls": {"db": 5},
        "expires_at": "2024-01-01T00:00:00+00:00"}}, "$.data.service_urls.db", id="bad-mapping-value"),
]

# The codec writes `transform_error` paths, which quote mapping keys; jsonschema writes dotted ones.
CODEC_PATHS = {"$.data.service_urls.db": "$.data.service_urls['db']"}


@pytest.mark.parametrize(("payload", "path"), BAD_PAYLOADS)
def test_a_bad_payload_fails_the_schema_and_the_codec_alike(payload: dict[str, Any], path: str) -> None:
    # Given a payload that breaks the contract
    tag = payload["type"]
    # When the schema checks it, Then it fails at the expected place
    paths = {e.json_path for e in validator_for(tag).iter_errors(payload)}
    assert path in paths, paths
    # And the codec refuses it too, with an error at the same place
    with pytest.raises(ContractError) as caught:
        decode(copy.deepcopy(payload))
    codec_path = CODEC_PATHS.get(path, path)
    errors = caught.value.errors
    assert any(line.split(" @ ")[-1].startswith(codec_path) for line in errors), errors


def test_a_nested_class_is_described_once_and_referenced() -> None:
    # Given a message whose data nests classes (run.reported -> TestResult -> FailureEvidence)
    entry = next(e for e in ALL_ENTRIES if e.tag == "run.reported")
    schema = envelope_schema(entry)
    # Then the nested classes live in $defs and the data refers to them
    assert {"TestResult", "FailureEvidence", "ComparedValues"} <= set(schema["$defs"])
    assert schema["properties"]["data"]["properties"]["results"]["items"] == {"$ref": "#/$defs/TestResult"}
