"""The envelope every message travels in, on the bus and in the store.

Wire form (plain UTF-8 JSON)::

    {"type": "run.reported", "version": 2, "id": "<uuid>", "occurred_at": "<ISO 8601>",
     "correlation_id": "<str>", "causation_id": "<str>|null", "stream_id": "<uuid>|null",
     "stream_version": <int>|null, "metadata": {"<str>": "<str>"}, "data": {...}}

`stream_id`/`stream_version` are set on events read from the store (the aggregate an event belongs
to and its position in that aggregate's history); producers leave them out.

`metadata` (optional, written only when not empty) carries string facts about how the message
travelled rather than what it says: CARS keeps the W3C trace context (`traceparent`, `tracestate`)
of the handler that recorded an event there, so that the relay continues that trace. It takes part
in equality (a round trip keeps it) but not in the hash.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Generic, TypeVar

from attrs import field, frozen

from contracts import catalog
from contracts.limits import MAX_ID, bounded, non_empty, string_map

M = TypeVar("M")

# Namespace for ids derived from natural keys (uuid5). Never change it: stored ids depend on it.
CARS_NAMESPACE = uuid.UUID("6f1c1a55-9b0e-4c1e-8c55-ca125ca125c0")

# At most this many metadata entries per envelope (each key and value at most MAX_ID characters).
MAX_METADATA = 16


def natural_id(kind: str, *keys: object) -> uuid.UUID:
    """A stable id for `kind` identified by `keys`: the same keys always give the same id."""
    return uuid.uuid5(CARS_NAMESPACE, "\x1f".join([kind, *map(str, keys)]))


@frozen(kw_only=True)
class Envelope(Generic[M]):
    data: M
    id: uuid.UUID = field(factory=uuid.uuid4)
    occurred_at: dt.datetime = field(factory=lambda: dt.datetime.now(dt.UTC))
    correlation_id: str = field(default="", validator=bounded(MAX_ID))
    causation_id: str | None = None
    stream_id: uuid.UUID | None = None
    stream_version: int | None = None
    metadata: dict[str, str] = field(factory=dict, hash=False, validator=string_map(MAX_METADATA, MAX_ID))

    def __attrs_post_init__(self) -> None:
        if self.occurred_at.tzinfo is None:
            raise ValueError("occurred_at must carry a time zone")
        if not self.correlation_id:
            # A message that starts a conversation correlates with itself.
            object.__setattr__(self, "correlation_id", str(self.id))

    @property
    def type(self) -> str:
        return catalog.by_class(type(self.data)).tag

    @property
    def version(self) -> int:
        return catalog.by_class(type(self.data)).version

    @property
    def entry(self) -> catalog.Entry:
        return catalog.by_class(type(self.data))

    def follow(self, data: Any, *, id: uuid.UUID | None = None, occurred_at: dt.datetime) -> Envelope[Any]:
        """A message caused by this one: same correlation id, causation = this message's id."""
        return Envelope(
            data=data, id=id or uuid.uuid4(), occurred_at=occurred_at,
            correlation_id=self.correlation_id, causation_id=str(self.id),
        )


def reply_id(cause: uuid.UUID, index: int = 0) -> uuid.UUID:
    """The id of the `index`-th event caused by message `cause`: redelivery gives the same ids."""
    return natural_id("caused-by", cause, index)


__all__ = ["CARS_NAMESPACE", "MAX_METADATA", "Envelope", "natural_id", "non_empty", "reply_id"]
