"""The plain-JSON wire format on Redis Streams.

A stream entry is a set of fields:

- `message`: the JSON envelope (see `contracts.envelope`), UTF-8;
- `traceparent` / `tracestate` (optional): W3C trace context of the producer;
- `position` (relayed events only): the event's position in the store's notification log.

Any language can produce with `XADD cars.ingest * message '{...}'` and consume with XREADGROUP.
FastStream's own binary envelope is never used on CARS streams.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

import contracts
from bus.streams import MESSAGE_FIELD
from bus.telemetry import current_trace_context, trace_fields
from contracts import ContractError, Envelope


class MessageTooLarge(ContractError):
    """A message over CARS_MAX_MESSAGE_BYTES."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__([f"message is {size} bytes; the limit is {limit} (CARS_MAX_MESSAGE_BYTES) @ $"])


def entry_fields(
    envelope: Envelope[Any], *, extra: Mapping[str, str] | None = None, trace: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The stream-entry fields of one envelope, with the current trace context injected (or `trace`,
    trace fields given as they are)."""
    fields: dict[str, str] = {MESSAGE_FIELD: contracts.dumps(envelope)}
    fields.update(current_trace_context() if trace is None else trace_fields(trace))
    if extra:
        fields.update(extra)
    return fields


async def publish(
    client: Redis | Pipeline, stream: str, envelope: Envelope[Any], *, maxlen: int,
    extra: Mapping[str, str] | None = None, trace: Mapping[str, str] | None = None,
) -> Any:
    """XADD one envelope (`trace`: its trace fields, instead of the current context's). Returns the
    entry id (or the pipeline, when queued on one)."""
    fields: dict[Any, Any] = entry_fields(envelope, extra=extra, trace=trace)
    return await client.xadd(stream, fields, maxlen=maxlen, approximate=True)


def text(value: Any) -> str:
    """A Redis reply value (bytes or str) as text; undecodable bytes become U+FFFD."""
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def split_fields(fields: Mapping[Any, Any]) -> tuple[bytes | None, dict[str, str]]:
    """(the raw `message` field or None, every other field as text headers)."""
    raw: bytes | None = None
    headers: dict[str, str] = {}
    for key, value in fields.items():
        name = text(key)
        if name == MESSAGE_FIELD:
            raw = value if isinstance(value, bytes) else str(value).encode()
        else:
            headers[name] = text(value)[:1024]
    return raw, headers


def decode_fields(fields: Mapping[Any, Any], *, max_bytes: int) -> Envelope[Any]:
    """The envelope in a stream entry; ContractError (with a reason) when there is none or it is bad."""
    raw, _ = split_fields(fields)
    if raw is None:
        names = ", ".join(sorted(text(k) for k in fields)) or "none"
        raise ContractError([f"stream entry has no {MESSAGE_FIELD!r} field (fields: {names}) @ $"])
    if len(raw) > max_bytes:
        raise MessageTooLarge(len(raw), max_bytes)
    return contracts.loads(raw)


def decode_text(text: str | bytes, *, max_bytes: int) -> Envelope[Any]:
    raw = text.encode() if isinstance(text, str) else text
    if len(raw) > max_bytes:
        raise MessageTooLarge(len(raw), max_bytes)
    return contracts.loads(raw)


async def publish_inbound(client: Redis, envelope: Envelope[Any], *, maxlen: int) -> tuple[str, str]:
    """Put a command (or run.reported) on its inbound stream: (stream, entry id). ValueError for an event."""
    from bus.streams import inbound_stream

    stream = inbound_stream(envelope.entry)
    entry_id = await publish(client, stream, envelope, maxlen=maxlen)
    return stream, text(entry_id)
