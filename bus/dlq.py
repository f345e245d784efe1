"""The dead-letter stream `cars.dlq`: what could not be processed, with the reason, never lost.

An entry's fields: `message` (the original text, even when it is not valid JSON), `reason`, `stream`
and `group` (where it failed), `original_id` (its entry id there), `deliveries`, `failed_at`.
`retry` puts the message back on its origin stream (every group sees it again; handlers are
idempotent, so groups that had processed it are unaffected) and removes it from the DLQ.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from attrs import frozen
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from bus.streams import DLQ, MESSAGE_FIELD
from bus.wire import text

MAX_REASON = 4000


class DeadLetterNotFound(LookupError):
    pass


@frozen(kw_only=True)
class DeadLetter:
    id: str
    message: str
    reason: str
    stream: str
    group: str
    original_id: str
    deliveries: int
    failed_at: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "reason": self.reason, "stream": self.stream, "group": self.group,
            "original_id": self.original_id, "deliveries": self.deliveries, "failed_at": self.failed_at,
            "message": self.message,
        }


async def dead_letter(
    client: Redis, *, stream: str, group: str, original_id: str, raw_message: bytes | str | None,
    other_fields: Mapping[str, str] | None = None, reason: str, deliveries: int, maxlen: int,
) -> str:
    """Record one message in cars.dlq; returns the DLQ entry id."""
    if raw_message is None:
        # No `message` field: keep whatever the producer sent, so nothing is lost.
        import json

        raw_message = json.dumps(dict(other_fields or {}), sort_keys=True)
    fields: dict[Any, Any] = {
        MESSAGE_FIELD: raw_message,
        "reason": reason[:MAX_REASON],
        "stream": stream,
        "group": group,
        "original_id": original_id,
        "deliveries": str(deliveries),
        "failed_at": dt.datetime.now(dt.UTC).isoformat(),
    }
    entry_id = await client.xadd(DLQ, fields, maxlen=maxlen, approximate=True)
    return text(entry_id)


def _parse(entry_id: Any, fields: Mapping[Any, Any]) -> DeadLetter:
    f = {text(k): text(v) for k, v in fields.items()}
    deliveries = f.get("deliveries", "0")
    return DeadLetter(
        id=text(entry_id), message=f.get(MESSAGE_FIELD, ""), reason=f.get("reason", ""),
        stream=f.get("stream", ""), group=f.get("group", ""), original_id=f.get("original_id", ""),
        deliveries=int(deliveries) if deliveries.isdigit() else 0, failed_at=f.get("failed_at", ""),
    )


async def list_dead_letters(client: Redis, *, after: str = "-", count: int = 100) -> list[DeadLetter]:
    """Dead letters oldest first, starting after entry id `after` (exclusive)."""
    start = "-" if after == "-" else f"({after}"
    rows = await client.xrange(DLQ, min=start, max="+", count=count)
    return [_parse(i, f or {}) for i, f in rows or []]


async def dlq_size(client: Redis) -> int:
    return int(await client.xlen(DLQ))


async def retry_dead_letter(client: Redis, entry_id: str, *, maxlen: int) -> str:
    """Put a dead letter back on its origin stream and remove it from the DLQ. Returns the new id."""
    try:
        rows = await client.xrange(DLQ, min=entry_id, max=entry_id, count=1)
    except ResponseError as exc:  # not an entry id at all, e.g. a typo
        raise DeadLetterNotFound(
            f"{entry_id!r} is not a stream entry id (<milliseconds>-<sequence>, as `cars dlq list` shows)"
        ) from exc
    if not rows:
        raise DeadLetterNotFound(f"no dead letter with id {entry_id} in {DLQ}")
    entry, fields = rows[0]
    letter = _parse(entry, fields or {})
    if not letter.stream:
        raise DeadLetterNotFound(f"dead letter {entry_id} does not name its origin stream")
    new_id = await client.xadd(letter.stream, {MESSAGE_FIELD: letter.message}, maxlen=maxlen, approximate=True)
    await client.xdel(DLQ, entry_id)
    return text(new_id)
