"""The relay: publishes the notification log to the topic streams, exactly once per log position.

Actors never publish their own state changes; they append them to the event store. The relay tails
the store's notification log (a transactional outbox built on it) and XADDs every new event, in
the plain-JSON wire format of `bus.wire` plus a `position` field, to `cars.events.<area>`, and also
to `cars.results` when the message is a public summary.

Exactly once per position: the XADDs of a batch and the new relay position go to Redis in one
MULTI/EXEC, so a crash before EXEC repeats the whole batch and a crash after it repeats nothing. The
position is read back from Redis on every round and never cached, so whatever happened to the last
EXEC (applied, or lost with its connection) the next round starts from the truth. The position key
is WATCHed: EXEC is refused when anything moved it since it was read (a second relay running by
mistake), and redis-py cannot silently re-send a transaction whose reply it lost.

Tracing: each event is published inside a PRODUCER span of its own whose parent is the trace context
the event was recorded in (its envelope's `metadata`, see `bus.store`), so the entry's `traceparent`
continues the trace of the message that caused the event, and the next actor continues it in turn.
The batch span `cars.relay publish` is linked from each of them. An event recorded outside any trace
is published as a child of the batch span. When no span would be exported (no span processor, the
default `OTEL_TRACES_EXPORTER=none`), the per-event span is not made: the entry carries the trace
context the event was recorded in as it is, the same trace a span would continue, for a fraction
of the cost (`bus.telemetry.recording`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any, Protocol

import anyio
from attrs import define
from eventsourcing.persistence import PersistenceError
from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanKind
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError, WatchError

from bus.metrics import BusMetrics
from bus.store import Recorded
from bus.streams import POSITION_FIELD, RELAY_POSITION_KEY, RESULTS, events_stream
from bus.telemetry import context_from, recording, trace_fields
from bus.wire import publish
from contracts import ContractError

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

# Faults the run loop outlives. Redis and the store come back by themselves. A stored event that no
# longer decodes (ContractError: written by a newer CARS) cannot be skipped without losing it, so the
# relay waits, loudly, for a CARS that can read it.
RETRYABLE: tuple[type[Exception], ...] = (RedisError, OSError, PersistenceError, ContractError)

BACKOFF_FIRST_S = 0.1


class RelayError(Exception):
    """Root of the relay's own errors."""


class PositionAhead(RelayError):
    """Redis says more was relayed than the store holds: this Redis was used with another store."""

    def __init__(self, position: int, store_max: int) -> None:
        super().__init__(
            f"relay position {position} ({RELAY_POSITION_KEY}) is past the end of the event store "
            f"({store_max}); this Redis belongs to another store. Reset the key to relay this store."
        )


class NotificationLog(Protocol):
    """What the relay needs of the event store (`bus.store.EventStore` is one)."""

    def read(self, after: int = 0, limit: int = 500, types: Sequence[str] = ()) -> list[Recorded]: ...

    def max_position(self) -> int: ...


@define
class RelayStats:
    """Counters of one relay since it started (a stand-in until metrics exist)."""

    published: int = 0  # events committed to Redis (each once, however many streams it went to)
    batches: int = 0
    errors: int = 0  # rounds of `run` that failed and were retried
    conflicts: int = 0  # EXECs refused because the position moved
    lost: int = 0  # XADDs Redis refused inside a committed EXEC (see `_check_results`)


class Relay:
    """Publishes the notification log of `store` to the topic streams of `redis`.

    `maxlen` caps every stream (approximately); `batch` is the most events per transaction.
    """

    def __init__(
        self, store: NotificationLog, redis: Redis, *, maxlen: int, batch: int = 500,
        backoff_max_s: float = 5.0, metrics: BusMetrics | None = None,
    ) -> None:
        if batch < 1:
            raise ValueError(f"batch must be at least 1, got {batch}")
        self.store = store
        self.redis = redis
        self.maxlen = maxlen
        self.batch = batch
        self.backoff_max_s = backoff_max_s
        self.stats = RelayStats()
        self.metrics = metrics
        self._checked_store = False
        self._woken = anyio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def wake(self) -> None:
        """Look at the log now rather than at the next poll; safe to call from any thread (the event
        store calls it in the appending thread, see `EventStore.on_append`)."""
        loop = self._loop
        if loop is None:
            return  # not running yet: its first round reads everything anyway
        with contextlib.suppress(RuntimeError):  # the loop has closed: nothing left to wake
            loop.call_soon_threadsafe(self._woken.set)

    async def position(self) -> int:
        """The last log position committed to Redis (0: nothing relayed yet)."""
        return _as_int(await self.redis.get(RELAY_POSITION_KEY))

    async def relay_once(self) -> int:
        """Publish at most one batch of new events; returns how many were published.

        Redis and store errors propagate: nothing was committed then, or (a lost EXEC reply) all of
        it was, and the next call reads which from Redis.
        """
        async with self.redis.pipeline(transaction=True) as pipe:
            await pipe.watch(RELAY_POSITION_KEY)
            after = _as_int(await pipe.get(RELAY_POSITION_KEY))
            records = await anyio.to_thread.run_sync(self._read, after)
            if not records:
                return 0
            first, last = records[0].position, records[-1].position
            with tracer.start_as_current_span(
                "cars.relay publish", kind=SpanKind.PRODUCER,
                attributes={
                    "messaging.system": "redis", "messaging.operation.type": "publish",
                    "messaging.batch.message_count": len(records),
                    "cars.relay.first_position": first, "cars.relay.last_position": last,
                },
            ) as span, contextlib.ExitStack() as event_spans:
                pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
                spans = recording()
                for record in records:
                    if not spans:
                        # No span would go anywhere: pass on the context the event was recorded in,
                        # which is what a span's would continue (the same trace).
                        # (None: recorded outside any trace, published as a child of the batch span.)
                        await self._queue(pipe, record, trace_fields(record.envelope.metadata) or None)
                        continue
                    event_span = self._event_span(record, span)
                    event_spans.callback(event_span.end)  # once EXEC has answered
                    with trace.use_span(event_span, end_on_exit=False):
                        await self._queue(pipe, record)
                pipe.set(RELAY_POSITION_KEY, last)
                try:
                    results = await pipe.execute(raise_on_error=False)
                except WatchError:
                    # Someone else moved the position, or the connection died before EXEC's reply
                    # came back. Either way nothing is re-sent; the next round re-reads the position.
                    self.stats.conflicts += 1
                    span.set_attribute("cars.relay.conflict", True)
                    log.info("relay: position moved during batch %d..%d; re-reading it", first, last)
                    return 0
        self._check_results(records, results)
        self._count(records, results)
        self.stats.published += len(records)
        self.stats.batches += 1
        return len(records)

    async def run(self, stop: anyio.Event | None = None, poll_s: float = 0.05) -> None:
        """Relay until `stop` is set (or the task is cancelled).

        A full batch is followed at once by the next one; an idle relay looks again every `poll_s`, or
        as soon as `wake()` is called (an append of this process).
        Transient faults (RETRYABLE) are logged and retried with a backoff capped at `backoff_max_s`.
        """
        stop = stop or anyio.Event()
        self._loop = asyncio.get_running_loop()
        delay = BACKOFF_FIRST_S
        while not stop.is_set():
            self._woken = anyio.Event()  # an append from now on wakes the wait below
            try:
                published = await self.relay_once()
            except RETRYABLE as exc:
                self.stats.errors += 1
                level = logging.ERROR if isinstance(exc, ContractError) else logging.WARNING
                log.log(level, "relay: %s: %s; retrying in %.2f s", type(exc).__name__, exc, delay)
                await _sleep_unless(stop, delay)
                delay = min(delay * 2, self.backoff_max_s)
                continue
            delay = BACKOFF_FIRST_S
            if published < self.batch:
                # (`stop` is looked at after the pause: at most `poll_s` late)
                await _sleep_unless(self._woken, poll_s)

    def _read(self, after: int) -> list[Recorded]:
        """Runs in a worker thread: the store is blocking."""
        records = self.store.read(after=after, limit=self.batch)
        if not records and not self._checked_store:
            # Checked once, while idle: an empty read past the end of the store would otherwise
            # wait, silently, until the store catches up, and never publish what it skipped.
            store_max = self.store.max_position()
            if after > store_max:
                raise PositionAhead(after, store_max)
            self._checked_store = True
        return records

    async def _queue(self, pipe: Pipeline, record: Recorded, trace: dict[str, str] | None = None) -> None:
        """XADD one event (`trace`: its trace fields; the current span's context when None)."""
        entry = record.envelope.entry
        extra = {POSITION_FIELD: str(record.position)}
        await publish(pipe, events_stream(entry.area), record.envelope, maxlen=self.maxlen, extra=extra, trace=trace)
        if entry.summary:
            await publish(pipe, RESULTS, record.envelope, maxlen=self.maxlen, extra=extra, trace=trace)

    def _event_span(self, record: Recorded, batch: Span) -> Span:
        """The PRODUCER span one event is published in, continuing the trace it was recorded in."""
        envelope = record.envelope
        stream = events_stream(envelope.entry.area)
        return tracer.start_span(
            f"{stream} publish", context=context_from(envelope.metadata), kind=SpanKind.PRODUCER,
            links=[Link(batch.get_span_context())],
            attributes={
                "messaging.system": "redis", "messaging.operation.type": "publish",
                "messaging.destination.name": stream, "cars.message.type": envelope.type,
                "cars.message.id": str(envelope.id), "cars.correlation_id": envelope.correlation_id,
                "cars.relay.position": record.position,
            },
        )

    def _count(self, records: Sequence[Recorded], results: Sequence[Any]) -> None:
        """Count the entries Redis took, per stream (XADD replies in the order `_queue` sent them)."""
        if self.metrics is None:
            return
        replies = iter(results)
        for record in records:
            entry = record.envelope.entry
            for stream in (events_stream(entry.area), *((RESULTS,) if entry.summary else ())):
                if not isinstance(next(replies, None), Exception):
                    self.metrics.published_one(stream)

    def _check_results(self, records: Sequence[Recorded], results: Sequence[Any]) -> None:
        """Report XADDs that Redis refused inside the committed transaction.

        Redis does not roll a transaction back when one command fails at run time (WRONGTYPE: a key
        named like a CARS stream holds something else), so the position moved on without those
        entries. They cannot be retried safely here; say exactly what to replay.
        """
        failures = [r for r in results if isinstance(r, Exception)]
        if not failures:
            return
        self.stats.lost += len(failures)
        log.error(
            "relay: Redis refused %d XADD(s) of positions %d..%d (first: %s); the relay position "
            "moved on. Fix the keys, then SET %s %d to publish the batch again.",
            len(failures), records[0].position, records[-1].position, failures[0],
            RELAY_POSITION_KEY, records[0].position - 1,
        )


def _as_int(raw: Any) -> int:
    return int(raw) if raw is not None else 0


async def _sleep_unless(stop: anyio.Event, seconds: float) -> None:
    """Sleep `seconds`, waking early when `stop` is set."""
    with anyio.move_on_after(seconds):
        await stop.wait()
