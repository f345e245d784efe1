"""The AsyncAPI 3.0.0 document of the CARS wire format, generated from the catalog and the stream names.

Nothing here is written by hand per message: every wire tag in `contracts` becomes one message whose
payload is its envelope JSON Schema (`contracts.schema.envelope_schema`), and every stream in
`bus.streams` becomes one channel. Adding a message to the catalog therefore documents it.

The document takes the view of a client of CARS (a CI job, a bot, a dashboard): it *sends* on
`cars.ingest` and `cars.commands` and *receives* from the event, result and dead-letter streams.
"""

from __future__ import annotations

import copy
from importlib import metadata
from typing import Any

from bus.streams import (
    COMMANDS,
    DLQ,
    EVENTS_PREFIX,
    INGEST,
    MESSAGE_FIELD,
    POSITION_FIELD,
    RESULTS,
    TRACE_FIELDS,
    events_stream,
    inbound_stream,
)
from contracts import Area, Entry, Kind, entries
from contracts.schema import envelope_schema

Json = dict[str, Any]

ASYNCAPI_VERSION = "3.0.0"
DEAD_LETTER = "dead_letter"
ENTRY_FIELDS = "StreamEntryFields"
RELAYED_ENTRY_FIELDS = "RelayedEntryFields"
DEAD_LETTER_FIELDS = "DeadLetterFields"

# The fields bus/dlq.py writes beside `message` on every cars.dlq entry (a unit test keeps them in step).
DLQ_FIELD_DOCS: dict[str, Json] = {
    "reason": {"type": "string", "description": "Why the message was given up on (last handler error)."},
    "stream": {"type": "string", "description": "The stream the message was read from."},
    "group": {"type": "string", "description": "The consumer group that failed to process it."},
    "original_id": {"type": "string", "description": "Its entry id in the origin stream."},
    "deliveries": {
        "type": "string", "pattern": "^[0-9]+$",
        "description": "How many times it was delivered before it was dead-lettered (decimal text).",
    },
    "failed_at": {"type": "string", "format": "date-time", "description": "When it was dead-lettered."},
}

_ENTRY_LAYOUT = f"""\
Every message is one Redis stream entry (XADD/XREADGROUP), never a FastStream envelope:

- `{MESSAGE_FIELD}`: the message itself, UTF-8 JSON text: the envelope described by the message's payload
  schema (`type`, `version`, `id`, `occurred_at`, `correlation_id`, ..., `data`). Producers may leave out
  `id`, `occurred_at` and `correlation_id`; CARS fills them in.
- `{TRACE_FIELDS[0]}` / `{TRACE_FIELDS[1]}` (optional): W3C trace context of the producer.
- `{POSITION_FIELD}` (relayed events only): the event's position in the event store's notification log,
  as decimal text. It grows with every event and is the idempotency key of a subscriber.

In this document a message's `payload` is the JSON in the `{MESSAGE_FIELD}` field and its `headers` are
the entry's other fields. Any language can produce with
`XADD {INGEST} * {MESSAGE_FIELD} '{{"type": "run.reported", "data": {{...}}}}'` and consume with a consumer
group of its own (XGROUP CREATE ... MKSTREAM, XREADGROUP, XACK).

This document takes the view of a client of CARS: it sends on `{INGEST}` and `{COMMANDS}` and receives
from `{EVENTS_PREFIX}<area>`, `{RESULTS}` and `{DLQ}`. Events are never
accepted from outside: only CARS records them."""


def _package_version() -> str:
    try:
        return metadata.version("cars")
    except metadata.PackageNotFoundError:  # running from a checkout that was never installed
        return "0.0.0"


def _rewrite_refs(node: Any) -> Any:
    """Point `#/$defs/X` at `#/components/schemas/X`: in AsyncAPI `#` is the whole document."""
    if isinstance(node, dict):
        out: Json = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith("#/$defs/"):
                out[key] = "#/components/schemas/" + value.removeprefix("#/$defs/")
            else:
                out[key] = _rewrite_refs(value)
        if "$ref" in out and len(out) > 1:
            # AsyncAPI schemas follow draft-07, which ignores keywords beside `$ref` (a `default`, here).
            return {"allOf": [{"$ref": out.pop("$ref")}], **out}
        return out
    if isinstance(node, list):
        return [_rewrite_refs(item) for item in node]
    return node


def _hoist(entry: Entry, schemas: Json) -> Json:
    """The envelope schema of `entry` with its `$defs` moved into the shared `schemas`.

    `$schema` and `$id` are dropped: an `$id` would make `#` refer to the schema, not the document.
    """
    schema = copy.deepcopy(envelope_schema(entry))
    defs: Json = schema.pop("$defs", {})
    schema.pop("$schema", None)
    schema_id = schema.pop("$id", None)
    if schema_id:
        schema["x-cars-schema-id"] = schema_id
    for name, definition in defs.items():
        rewritten = _rewrite_refs(definition)
        if schemas.setdefault(name, rewritten) != rewritten:
            raise ValueError(f"two different message types define a nested schema named {name!r}")
    return _rewrite_refs(schema)  # type: ignore[no-any-return]


def _header_schemas() -> Json:
    trace = {
        TRACE_FIELDS[0]: {"type": "string", "description": "W3C traceparent of the producer."},
        TRACE_FIELDS[1]: {"type": "string", "description": "W3C tracestate of the producer."},
    }
    return {
        ENTRY_FIELDS: {
            "type": "object",
            "description": f"Stream-entry fields beside `{MESSAGE_FIELD}` on an inbound message.",
            "properties": trace,
        },
        RELAYED_ENTRY_FIELDS: {
            "type": "object",
            "description": f"Stream-entry fields beside `{MESSAGE_FIELD}` on an event the relay published.",
            "properties": {
                **trace,
                POSITION_FIELD: {
                    "type": "string", "pattern": "^[0-9]+$",
                    "description": "Position of the event in the notification log (decimal text).",
                },
            },
            "required": [POSITION_FIELD],
        },
        DEAD_LETTER_FIELDS: {
            "type": "object",
            "description": f"Stream-entry fields beside `{MESSAGE_FIELD}` on a {DLQ} entry.",
            "properties": DLQ_FIELD_DOCS,
            "required": sorted(DLQ_FIELD_DOCS),
        },
    }


def _message(entry: Entry) -> Json:
    summary = entry.doc.split("\n\n")[0].replace("\n", " ").strip() or f"The {entry.kind.value} {entry.tag}."
    headers = RELAYED_ENTRY_FIELDS if entry.kind is Kind.EVENT else ENTRY_FIELDS
    who = "Published by the CARS relay; never accepted from producers." if entry.kind is Kind.EVENT else (
        f"Sent by any producer to {inbound_stream(entry)}."
    )
    return {
        "name": entry.tag,
        "title": entry.tag,
        "summary": summary,
        "description": f"{entry.kind.value.capitalize()} of area `{entry.area.value}`, schema version "
        f"{entry.version}. {who}",
        "contentType": "application/json",
        "headers": {"$ref": f"#/components/schemas/{headers}"},
        "payload": {"$ref": f"#/components/schemas/{entry.tag}"},
        "x-cars-kind": entry.kind.value,
        "x-cars-area": entry.area.value,
        "x-cars-version": entry.version,
    }


def _dead_letter_message() -> Json:
    return {
        "name": DEAD_LETTER,
        "title": "dead letter",
        "summary": "A message CARS gave up on after repeated failed deliveries, kept verbatim, with why.",
        "description": f"The `{MESSAGE_FIELD}` field holds the original message text exactly as it was "
        "received: possibly not JSON, not UTF-8, or not a valid envelope. `cars dlq` lists and retries them.",
        "contentType": "text/plain",
        "headers": {"$ref": f"#/components/schemas/{DEAD_LETTER_FIELDS}"},
        "payload": {"type": "string", "description": "The original message text."},
    }


def _channel(address: str, description: str, tags: list[str]) -> Json:
    return {
        "address": address,
        "title": address,
        "description": description,
        "messages": {tag: {"$ref": f"#/components/messages/{tag}"} for tag in tags},
    }


def _operation(action: str, channel_id: str, channel: Json, summary: str) -> Json:
    return {
        "action": action,
        "channel": {"$ref": f"#/channels/{channel_id}"},
        "summary": summary,
        # An operation may only name messages of its own channel (AsyncAPI 3.0).
        "messages": [{"$ref": f"#/channels/{channel_id}/messages/{tag}"} for tag in channel["messages"]],
    }


def _channels(catalog: list[Entry]) -> Json:
    commands = [e for e in catalog if e.kind is Kind.COMMAND]
    events = [e for e in catalog if e.kind is Kind.EVENT]
    channels: Json = {
        INGEST: _channel(
            INGEST, "Test results from CI systems (`run.reported`), read by the monitor.",
            [e.tag for e in commands if inbound_stream(e) == INGEST],
        ),
        COMMANDS: _channel(
            COMMANDS, "Commands to CARS, each read by the actor that owns it.",
            [e.tag for e in commands if inbound_stream(e) == COMMANDS],
        ),
    }
    for area in Area:
        stream = events_stream(area)
        channels[stream] = _channel(
            stream, f"Every recorded event of area `{area.value}`, in store order, published by the relay.",
            [e.tag for e in events if e.area is area],
        )
    channels[RESULTS] = _channel(
        RESULTS, "The public, stable summary topic: the outcomes CI bots, chat and dashboards act on.",
        [e.tag for e in events if e.summary],
    )
    channels[DLQ] = _channel(
        DLQ, "Messages that failed too many deliveries, with the reason and where they came from.",
        [DEAD_LETTER],
    )
    return channels


def _operations(channels: Json) -> Json:
    operations: Json = {}
    for channel_id, channel in channels.items():
        action = "send" if channel_id in (INGEST, COMMANDS) else "receive"
        verb = "Send a message to" if action == "send" else "Receive messages from"
        summary = f"{verb} {channel_id}."
        operations[f"{action}.{channel_id}"] = _operation(action, channel_id, channel, summary)
    return operations


def asyncapi_document() -> Json:
    """The AsyncAPI 3.0.0 document (a JSON-ready dict) of every CARS stream and message."""
    catalog = entries()
    schemas: Json = _header_schemas()
    for entry in catalog:
        schemas[entry.tag] = _hoist(entry, schemas)
    messages: Json = {entry.tag: _message(entry) for entry in catalog}
    messages[DEAD_LETTER] = _dead_letter_message()
    channels = _channels(catalog)
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "id": "urn:cars:bus",
        "info": {
            "title": "CARS bus",
            "version": _package_version(),
            "description": _ENTRY_LAYOUT,
            "license": {"name": "Apache-2.0"},
        },
        "defaultContentType": "application/json",
        "servers": {
            "redis": {
                "host": "{host}:{port}",
                "protocol": "redis",
                "description": "The Redis named by REDIS_URL (or the embedded one of `cars up`).",
                "variables": {
                    "host": {"default": "127.0.0.1"},
                    "port": {"default": "6380", "description": "6380 is the embedded Redis of `cars up`."},
                },
            }
        },
        "channels": channels,
        "operations": _operations(channels),
        "components": {"schemas": schemas, "messages": messages},
    }
