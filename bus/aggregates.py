"""Idempotent command execution against an aggregate stream in the event store."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Any

import anyio

from actors.ports import Cause, Clock, Decide
from bus.store import ConcurrencyConflict, EventStore
from contracts import Envelope, reply_id

log = logging.getLogger(__name__)


class AggregateStore:
    """Implements `actors.ports.Aggregates` over an EventStore.

    Idempotency, twice over: every appended event records the id of the message that caused it
    (`causation_id`), so a redelivered message finds its effects already in the stream and is a
    no-op; and two deliveries racing each other collide on the store's optimistic concurrency check,
    after which the loser reloads and finds the winner's effects.
    """

    def __init__(self, store: EventStore, clock: Clock, attempts: int = 5) -> None:
        self.store = store
        self.clock = clock
        self.attempts = attempts

    async def history(self, stream_id: uuid.UUID) -> list[Envelope[Any]]:
        return await anyio.to_thread.run_sync(self.store.load, stream_id)

    async def execute(self, stream_id: uuid.UUID, cause: Cause, decide: Decide) -> list[int]:
        cause_id = str(cause.id)
        for _ in range(self.attempts):
            history = await self.history(stream_id)
            if any(e.causation_id == cause_id for e in history):
                log.debug("already handled", extra={"message_id": cause_id, "stream_id": str(stream_id)})
                return []
            decided: Sequence[Any] = decide(history)
            now = self.clock()
            events = [
                Envelope(
                    data=d, id=reply_id(cause.id, i), occurred_at=now,
                    correlation_id=cause.correlation_id or cause_id, causation_id=cause_id,
                )
                for i, d in enumerate(decided)
            ]
            try:
                return await anyio.to_thread.run_sync(self.store.append, stream_id, len(history), events)
            except ConcurrencyConflict:
                continue  # someone else appended first: decide again on the new history
        raise ConcurrencyConflict(f"stream {stream_id} kept moving for {self.attempts} attempts")
