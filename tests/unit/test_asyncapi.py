"""The AsyncAPI document is generated from the catalog and the stream names, and is self-contained."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import attrs
import pytest

import contracts
from bus import streams
from bus.asyncapi import DEAD_LETTER, DLQ_FIELD_DOCS, asyncapi_document
from bus.dlq import DeadLetter
from contracts import Envelope, Kind
from contracts.runs import RunReported
from contracts.schema import envelope_schema
from contracts.values import Outcome, TestResult


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return asyncapi_document()


def refs_in(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs_in(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs_in(item)


def resolve(document: dict[str, Any], ref: str) -> Any:
    """The node a local JSON pointer names; KeyError when there is none."""
    assert ref.startswith("#/"), f"{ref} does not point into the document"
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def inline(document: dict[str, Any], node: Any) -> Any:
    """`node` with every $ref replaced by what it points at (the schemas here are not recursive).

    Keywords beside a `$ref` (or beside a one-item `allOf`, their draft-07 spelling) are merged in.
    """
    if isinstance(node, dict):
        rest = {k: inline(document, v) for k, v in node.items() if k != "$ref"}
        if "$ref" in node:
            return {**inline(document, resolve(document, node["$ref"])), **rest}
        if len(rest.get("allOf", ())) == 1:
            return {**rest.pop("allOf")[0], **rest}
        return rest
    if isinstance(node, list):
        return [inline(document, v) for v in node]
    return node


def channel_tags(doc: dict[str, Any], address: str) -> set[str]:
    [channel] = [c for c in doc["channels"].values() if c["address"] == address]
    return set(channel["messages"])


def test_it_is_an_asyncapi_3_document_that_survives_json(doc: dict[str, Any]) -> None:
    assert doc["asyncapi"] == "3.0.0"
    assert json.loads(json.dumps(doc)) == doc
    assert asyncapi_document() == doc  # deterministic: the same catalog gives the same document


def test_every_wire_tag_is_a_message_whose_payload_is_its_envelope_schema(doc: dict[str, Any]) -> None:
    messages = doc["components"]["messages"]
    for entry in contracts.entries():
        message = messages[entry.tag]
        assert message["name"] == entry.tag
        # The payload, with its shared parts put back in place, is exactly the contract's schema.
        schema = copy.deepcopy(envelope_schema(entry))
        expected = inline(schema, {k: v for k, v in schema.items() if k not in ("$defs", "$schema", "$id")})
        payload = inline(doc, message["payload"])
        assert payload.pop("x-cars-schema-id") == envelope_schema(entry)["$id"]
        assert payload == expected, entry.tag
    assert set(messages) == {e.tag for e in contracts.entries()} | {DEAD_LETTER}


def test_every_stream_is_a_channel(doc: dict[str, Any]) -> None:
    addresses = {c["address"] for c in doc["channels"].values()}
    assert addresses == {streams.INGEST, streams.COMMANDS, streams.RESULTS, streams.DLQ,
                         *streams.ALL_EVENT_STREAMS}


def test_each_message_sits_on_the_streams_that_carry_it(doc: dict[str, Any]) -> None:
    for entry in contracts.entries():
        on = {c["address"] for c in doc["channels"].values() if entry.tag in c["messages"]}
        if entry.kind is Kind.COMMAND:
            assert on == {streams.inbound_stream(entry)}, entry.tag
        else:
            expected = {streams.events_stream(entry.area)} | ({streams.RESULTS} if entry.summary else set())
            assert on == expected, entry.tag
    assert channel_tags(doc, streams.INGEST) == {"run.reported"}
    assert channel_tags(doc, streams.DLQ) == {DEAD_LETTER}


def test_channels_and_operations_reference_what_exists(doc: dict[str, Any]) -> None:
    for channel in doc["channels"].values():
        for tag, ref in channel["messages"].items():
            assert ref == {"$ref": f"#/components/messages/{tag}"}
            assert resolve(doc, ref["$ref"])["name"] == tag
    actions = {}
    for operation in doc["operations"].values():
        channel = resolve(doc, operation["channel"]["$ref"])
        for ref in operation["messages"]:
            # AsyncAPI 3: an operation's messages must be messages of its own channel.
            assert ref["$ref"].startswith(operation["channel"]["$ref"] + "/messages/")
            resolve(doc, ref["$ref"])
        actions[channel["address"]] = operation["action"]
    assert actions == {
        streams.INGEST: "send", streams.COMMANDS: "send", streams.RESULTS: "receive", streams.DLQ: "receive",
        **{s: "receive" for s in streams.ALL_EVENT_STREAMS},
    }


def test_every_ref_resolves_within_the_document(doc: dict[str, Any]) -> None:
    refs = set(refs_in(doc))
    assert refs  # the document does share its parts
    for ref in refs:
        resolve(doc, ref)


def test_the_entry_layout_is_described(doc: dict[str, Any]) -> None:
    description = doc["info"]["description"]
    for name in (streams.MESSAGE_FIELD, *streams.TRACE_FIELDS, streams.POSITION_FIELD):
        assert f"`{name}`" in description
    event_headers = resolve(doc, doc["components"]["messages"]["failure.detected"]["headers"]["$ref"])
    command_headers = resolve(doc, doc["components"]["messages"]["heal.request"]["headers"]["$ref"])
    assert event_headers["required"] == [streams.POSITION_FIELD]
    assert streams.POSITION_FIELD not in command_headers["properties"]


def test_the_dead_letter_fields_match_what_the_dlq_writes(doc: dict[str, Any]) -> None:
    written = {f.name for f in attrs.fields(DeadLetter)} - {"id", streams.MESSAGE_FIELD}
    assert set(DLQ_FIELD_DOCS) == written
    headers = resolve(doc, doc["components"]["messages"][DEAD_LETTER]["headers"]["$ref"])
    assert set(headers["required"]) == written


def test_a_real_message_validates_against_its_documented_payload(doc: dict[str, Any]) -> None:
    jsonschema = pytest.importorskip("jsonschema")  # a dev tool only: not a dependency of CARS itself
    envelope = Envelope(data=RunReported(
        project="demo", run_id="r-1",
        results=(TestResult(test_id="t::a", outcome=Outcome.FAILED, duration_s=0.1),),
    ))
    payload = inline(doc, doc["components"]["messages"]["run.reported"]["payload"])
    jsonschema.validate(contracts.encode(envelope), payload)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**contracts.encode(envelope), "type": "heal.request"}, payload)
