"""Idempotent command execution against an aggregate stream in the event store."""

from __future__ import annotations

import logging
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
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

    def __init__(self, store: EventStore, clock: Clock, attempts: int = 5, cached_events: int = 20_000) -> None:
        self.store = store
        self.clock = clock
        self.attempts = attempts
        # Streams only grow, and a version never changes: a stream read before is completed with the
        # events after what is known, instead of decoding its whole history again (a project's stream
        # gains an event per run). Least recently used streams go first past `cached_events` events.
        self._known: OrderedDict[uuid.UUID, list[Envelope[Any]]] = OrderedDict()
        self._cached = 0
        self._limit = cached_events

    async def history(self, stream_id: uuid.UUID) -> list[Envelope[Any]]:
        return (await self.histories([stream_id]))[stream_id]

    async def histories(self, stream_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[Envelope[Any]]]:
        """The histories of several streams, read in one worker-thread call and one query (a batch of
        runs needs a stream per run: a thread hop or a query each would cost more than the reads)."""
        wanted = list(dict.fromkeys(stream_ids))
        known = {sid: self._known.get(sid, []) for sid in wanted}
        newer = await anyio.to_thread.run_sync(self.store.load_many, {sid: len(known[sid]) for sid in wanted})
        out = {}
        for sid in wanted:
            history = known[sid] + newer[sid]
            self._remember(sid, history)
            out[sid] = list(history)
        return out

    def _remember(self, stream_id: uuid.UUID, history: list[Envelope[Any]]) -> None:
        other = self._known.pop(stream_id, [])
        self._cached -= len(other)
        if len(history) > self._limit:
            return  # too long to keep: read whole next time
        # Another task may have stored this stream meanwhile (a read of the same length or longer):
        # keep the longer one, counted once.
        kept = history if len(history) >= len(other) else other
        self._known[stream_id] = kept
        self._cached += len(kept)
        while self._cached > self._limit:
            _, dropped = self._known.popitem(last=False)
            self._cached -= len(dropped)

    def caused(self, cause: Cause, decided: Sequence[Any]) -> list[Envelope[Any]]:
        """The envelopes of what `cause` decided: ids derived from the cause (so a redelivery derives
        the same ones), now, and the cause as their causation."""
        cause_id = str(cause.id)
        now = self.clock()
        return [
            Envelope(
                data=d, id=reply_id(cause.id, i), occurred_at=now,
                correlation_id=cause.correlation_id or cause_id, causation_id=cause_id,
            )
            for i, d in enumerate(decided)
        ]

    async def execute_many(
        self, stream_ids: Sequence[uuid.UUID],
        decide_all: Callable[[dict[uuid.UUID, list[Envelope[Any]]]], dict[uuid.UUID, list[Envelope[Any]]]],
    ) -> list[int]:
        """Read `stream_ids`, let `decide_all(histories)` say what to add to each (envelopes, e.g. from
        `caused`), and append all of it in ONE store transaction. On a ConcurrencyConflict, read and
        decide again (`decide_all` must skip causes already in a history, as `execute` does); after
        `attempts` tries the conflict is raised. Returns the positions of what was appended."""
        for _ in range(self.attempts):
            histories = await self.histories(stream_ids)
            added = decide_all(histories)
            appends = [(sid, len(histories[sid]), events) for sid, events in added.items() if events]
            if not appends:
                return []
            try:
                return await anyio.to_thread.run_sync(self.store.append_many, appends)
            except ConcurrencyConflict:
                continue
        raise ConcurrencyConflict(f"the {len(stream_ids)} streams kept moving for {self.attempts} attempts")

    async def execute(self, stream_id: uuid.UUID, cause: Cause, decide: Decide) -> list[int]:
        cause_id = str(cause.id)
        for _ in range(self.attempts):
            history = await self.history(stream_id)
            if any(e.causation_id == cause_id for e in history):
                log.debug("already handled", extra={"message_id": cause_id, "stream_id": str(stream_id)})
                return []
            events = self.caused(cause, decide(history))
            try:
                return await anyio.to_thread.run_sync(self.store.append, stream_id, len(history), events)
            except ConcurrencyConflict:
                continue  # someone else appended first: decide again on the new history
        raise ConcurrencyConflict(f"stream {stream_id} kept moving for {self.attempts} attempts")
