"""Subscribing an actor's handler to a stream: consumer groups, reclaim, dead letters.

`subscribe()` sets up the two readers of one (stream, group), under this process's unique consumer
name:

- a `BatchReader` reads new entries (`XREADGROUP >`), as many as are queued (see its docstring), and
  acknowledges the types the group does not handle in one XACK; the caller runs it (`run_readers`);
- the `reclaim` FastStream subscriber, added to the router, claims entries that stayed pending longer
  than `reclaim_idle_ms` in ANY consumer of the group (a crashed or stuck process) with XAUTOCLAIM,
  and retries them one at a time.

Why new entries are not read by a FastStream subscriber too: its one-entry-per-read delivery cost
~740 us of CPU per entry (an XREADGROUP, its middleware and dependency injection, measured with a
handler that only XACKs; ~300 us for the same XREADGROUP COUNT 1 and XACK alone), and most entries
of an event stream are of types the group skips (in the ingest benchmark, 20 of the 28 entries a
run with 4 failures sends to the groups): at 100 runs/s those deliveries were a quarter of the
process's main thread (bench/README.md, "Latency").

Outcomes of one delivery:

- malformed (not JSON, not a known type, fails its contract, too large): dead-lettered at once with
  the validation errors, then acknowledged;
- rejected by the actor (`actors.errors.Rejected`: can never succeed): dead-lettered at once;
- any other error: left pending (a transient fault) and retried through reclaim; the error text is
  kept so that, after `max_deliveries`, the dead letter says why;
- success, or a type this actor does not handle: acknowledged.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any

import anyio
import anyio.abc
from attrs import frozen
from faststream import AckPolicy
from faststream.redis import RedisRouter, RedisStreamMessage, StreamSub
from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from actors.errors import Rejected
from bus import wire
from bus.dlq import dead_letter
from bus.metrics import BusMetrics
from bus.streams import DLQ, errors_key
from bus.telemetry import context_from, continued
from contracts import ContractError, Envelope

log = logging.getLogger(__name__)
default_tracer = trace.get_tracer(__name__)

Handler = Callable[[Envelope[Any]], Awaitable[None]]
# Handles the envelopes of one read together (all stored, or none and an exception).
BatchHandler = Callable[[Sequence[Envelope[Any]]], Awaitable[object]]

# How long the first group to dead-letter a malformed entry remembers it, so the other groups reading
# the same stream ack it without a second dead letter.
MALFORMED_SEEN_TTL_S = 7 * 24 * 3600


@frozen(kw_only=True)
class ConsumerConfig:
    consumer: str  # unique per process
    reclaim_idle_ms: int
    max_deliveries: int
    max_message_bytes: int
    maxlen: int
    polling_ms: int = 100
    # The most entries one read of a reader takes (`BatchReader`).
    batch_records: int = 50


async def wire_parser(raw: Mapping[str, Any], original: Callable[..., Awaitable[Any]]) -> Any:
    """FastStream parser for CARS entries: body = the `message` field, headers = the other fields.

    Putting `traceparent` into the headers lets FastStream's telemetry middleware continue the
    producer's trace.
    """
    msg = await original(raw)
    body, headers = wire.split_fields(raw.get("data") or {})
    if body is not None:
        msg.body = body
        msg.headers = headers
        msg.content_type = "application/json"
    return msg


async def raw_decoder(msg: Any) -> Any:
    # The handler decodes the body itself, so that a malformed body becomes a dead letter instead
    # of an exception inside FastStream.
    return msg.body


class StreamConsumer:
    """The processing of one (stream, group) for one handler."""

    def __init__(
        self, *, client: Callable[[], Awaitable[Redis]], stream: str, group: str, handler: Handler,
        accepts: frozenset[str] | None, config: ConsumerConfig, metrics: BusMetrics | None = None,
        tracer: trace.Tracer | None = None,
    ) -> None:
        self.client = client
        # Makes a CONSUMER span per entry handled (None: no span; the handler runs in its producer's
        # trace context, see `_delivery_context`).
        self.tracer = tracer
        self.metrics = metrics
        self.stream = stream
        self.group = group
        self.handler = handler
        self.accepts = accepts
        self.config = config
        self.processed = 0
        self.dead_lettered = 0
        self.failures = 0

    async def process(self, msg: RedisStreamMessage, *, reclaimed: bool) -> None:
        """Handle one entry that the reclaim subscriber (FastStream) claimed and delivered."""
        redis = await self.client()
        entry_id = _entry_id(msg)
        fields = msg.raw_message.get("data") or {}
        deliveries = await msg.get_delivery_count() if reclaimed else 1
        if reclaimed and deliveries > self.config.max_deliveries:
            last = await redis.hget(errors_key(self.stream, self.group), entry_id)
            reason = f"failed {deliveries - 1} deliveries; last error: " + (
                wire.text(last) if last else "unknown (the consumer died while handling it)"
            )
            await self._dead_letter(redis, entry_id, fields, reason, deliveries - 1)
            return
        envelope = await self._decode(redis, entry_id, fields, deliveries)
        if envelope is None:
            return
        await self._handle_one(redis, entry_id, fields, envelope, deliveries=deliveries, reclaimed=reclaimed)

    async def process_batch(self, entries: Sequence[tuple[Any, Mapping[Any, Any]]], handle_batch: BatchHandler) -> None:
        """Handle the new entries of one read together: `handle_batch` gets every valid entry this
        consumer accepts and stores what they decide at once; they are acknowledged in one XACK only
        once it returned. Malformed entries are dead-lettered first, as one at a time. When the batch
        fails (a store error, a conflict that persists, a rejected message), nothing of it was stored,
        and each entry goes through the one-at-a-time path, which gives each its own outcome: stored
        and acked, dead-lettered (Rejected), or left pending with its error for reclaim."""
        redis = await self.client()
        batch = await self._accepted(redis, entries)
        if not batch:
            return
        with _consume_span(self.tracer or default_tracer, self.stream, self.group, [(f, e) for _, f, e in batch]):
            ids = [entry_id for entry_id, _, _ in batch]
            try:
                with self._timed():
                    await self._kept_claimed(redis, ids, handle_batch([e for _, _, e in batch]), reclaimed=False)
            except Exception as exc:
                log.info("batch of %d failed (%s: %s); handling its entries one at a time", len(batch),
                         type(exc).__name__, exc, extra={"stream": self.stream, "group": self.group})
                await self._handle_each(redis, batch)
                return
            await redis.xack(self.stream, self.group, *ids)
        for entry_id, _, envelope in batch:
            self.processed += 1
            log.debug("handled", extra={"stream": self.stream, "group": self.group, "entry_id": entry_id,
                                        "type": envelope.type, "consumer": self.config.consumer,
                                        "reclaimed": False, "batch": len(batch)})
            self._count("handled")

    async def process_each(self, entries: Sequence[tuple[Any, Mapping[Any, Any]]]) -> None:
        """Handle the new entries of one read one at a time, in order, each with its own outcome as on
        the reclaim path. The entries of types this consumer does not handle are acknowledged first, in
        one XACK."""
        redis = await self.client()
        await self._handle_each(redis, await self._accepted(redis, entries))

    async def _accepted(
        self, redis: Redis, entries: Sequence[tuple[Any, Mapping[Any, Any]]]
    ) -> list[tuple[str, Mapping[Any, Any], Envelope[Any]]]:
        """The valid entries of a read of new entries that this consumer handles. Of the others, the
        malformed are dead-lettered, and those of types it does not handle acknowledged in one XACK."""
        accepted: list[tuple[str, Mapping[Any, Any], Envelope[Any]]] = []
        ignored: list[str] = []
        for raw_id, fields in entries:
            entry_id = wire.text(raw_id)
            envelope = await self._decode(redis, entry_id, fields, 1)
            if envelope is None:
                continue
            if self.accepts is not None and envelope.type not in self.accepts:
                ignored.append(entry_id)
            else:
                accepted.append((entry_id, fields, envelope))
        if ignored:
            await redis.xack(self.stream, self.group, *ignored)
            for _ in ignored:
                self._count("ignored")
        return accepted

    async def _handle_each(self, redis: Redis, items: Sequence[tuple[str, Mapping[Any, Any], Envelope[Any]]]) -> None:
        """Handle new entries one at a time, in order; those still waiting their turn stay claimed, so
        that reclaim does not take them meanwhile."""

        async def one_at_a_time() -> None:
            for entry_id, fields, envelope in items:
                with self._delivery_context(fields, envelope):
                    await self._handle_one(redis, entry_id, fields, envelope, deliveries=1, reclaimed=False)

        if len(items) <= 1:
            await one_at_a_time()  # `_handle_one` keeps its entry claimed
        else:
            await self._kept_claimed(redis, [entry_id for entry_id, _, _ in items], one_at_a_time(), reclaimed=False)

    async def _decode(
        self, redis: Redis, entry_id: str, fields: Mapping[Any, Any], deliveries: int
    ) -> Envelope[Any] | None:
        """The entry's envelope; None when it is malformed (then dead-lettered, or acked if another
        group of the stream dead-lettered it already)."""
        try:
            return wire.decode_fields(fields, max_bytes=self.config.max_message_bytes)
        except ContractError as exc:
            # Every group on this stream sees the same malformed entry; only the first records it.
            first = await redis.set(f"cars:dlq:seen:{self.stream}:{entry_id}", self.group, nx=True,
                                    ex=MALFORMED_SEEN_TTL_S)
            if first:
                await self._dead_letter(redis, entry_id, fields, "invalid message: " + "; ".join(exc.errors),
                                        deliveries)
            else:
                await redis.xack(self.stream, self.group, entry_id)
                self._count("ignored")
            return None

    async def _handle_one(
        self, redis: Redis, entry_id: str, fields: Mapping[Any, Any], envelope: Envelope[Any], *,
        deliveries: int, reclaimed: bool,
    ) -> None:
        if self.accepts is not None and envelope.type not in self.accepts:
            await redis.xack(self.stream, self.group, entry_id)
            self._count("ignored")
            return
        trace.get_current_span().set_attributes({
            "cars.message.type": envelope.type, "cars.message.id": str(envelope.id),
            "cars.correlation_id": envelope.correlation_id, "cars.consumer_group": self.group,
        })
        try:
            with self._timed():
                await self._kept_claimed(redis, [entry_id], self.handler(envelope), reclaimed=reclaimed)
        except Rejected as exc:
            await self._dead_letter(redis, entry_id, fields, f"rejected: {exc}", deliveries)
            return
        except Exception as exc:
            # Transient until proven otherwise: leave it pending for reclaim, remember why.
            self.failures += 1
            self._count("failed")
            reason = f"{type(exc).__name__}: {exc}"
            await redis.hset(errors_key(self.stream, self.group), entry_id, reason[:2000])
            log.warning(
                "handler failed; left pending for retry",
                extra={"stream": self.stream, "group": self.group, "entry_id": entry_id,
                       "deliveries": deliveries, "error": reason},
                exc_info=log.isEnabledFor(logging.DEBUG),
            )
            return
        await redis.xack(self.stream, self.group, entry_id)
        self.processed += 1
        log.debug("handled", extra={"stream": self.stream, "group": self.group, "entry_id": entry_id,
                                    "type": envelope.type, "consumer": self.config.consumer, "reclaimed": reclaimed})
        self._count("handled")
        if reclaimed:
            await redis.hdel(errors_key(self.stream, self.group), entry_id)

    async def _kept_claimed(
        self, redis: Redis, entry_ids: Sequence[Any], work: Awaitable[object], *, reclaimed: bool
    ) -> None:
        """Await `work` (the handler). Meanwhile keep resetting the entries' idle time, so that a long
        handler (a validation rerunning tests for minutes) is not mistaken for a dead one and reclaimed
        by another consumer. XCLAIM ... JUSTID to the current owner resets the idle time without
        counting a delivery. A process that dies stops doing this, and its entries become reclaimable
        as before.
        """
        owner = f"{self.config.consumer}-reclaim" if reclaimed else self.config.consumer
        every_s = max(self.config.reclaim_idle_ms / 3000, 0.05)

        done = anyio.Event()

        async def refresh() -> None:
            # Told to stop by `done`, not cancelled: a cancellation per delivery left a CancelledError
            # and its traceback in a reference cycle each time, hundreds a second under load, for the
            # garbage collector to find (its young collections then took up to ~60 ms).
            while True:
                with anyio.move_on_after(every_s):
                    await done.wait()
                if done.is_set():
                    return
                try:
                    await redis.xclaim(self.stream, self.group, owner, 0, list(entry_ids), justid=True)
                except Exception as exc:  # a missed refresh risks a duplicate delivery, which is idempotent
                    log.warning("could not refresh a pending entry",
                                extra={"entry_id": entry_ids[0], "error": str(exc)})

        error: Exception | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(refresh)
            try:
                await work
            except Exception as exc:  # re-raised below, outside the task group (which would wrap it)
                error = exc
            finally:
                done.set()
        if error is not None:
            raise error

    async def _dead_letter(
        self, redis: Redis, entry_id: str, fields: Mapping[Any, Any], reason: str, deliveries: int,
    ) -> None:
        raw, other = wire.split_fields(fields)
        await dead_letter(
            redis, stream=self.stream, group=self.group, original_id=entry_id, raw_message=raw,
            other_fields=other, reason=reason, deliveries=deliveries, maxlen=self.config.maxlen,
        )
        await redis.xack(self.stream, self.group, entry_id)
        await redis.hdel(errors_key(self.stream, self.group), entry_id)
        self.dead_lettered += 1
        self._count("dead_lettered")
        if self.metrics is not None:
            self.metrics.published_one(DLQ)
        log.warning("dead-lettered", extra={"stream": self.stream, "group": self.group, "entry_id": entry_id,
                                            "reason": reason})

    def _delivery_context(
        self, fields: Mapping[Any, Any], envelope: Envelope[Any]
    ) -> contextlib.AbstractContextManager[None]:
        """What one new entry is handled in: a CONSUMER span continuing its producer's trace when this
        consumer makes spans (as FastStream's telemetry middleware does on the reclaim path), otherwise
        the producer's trace context as it is (`bus.telemetry.continued`)."""
        if self.tracer is not None:
            return _consume_span(self.tracer, self.stream, self.group, [(fields, envelope)])
        return continued(wire.split_fields(fields)[1])

    def _timed(self) -> contextlib.AbstractContextManager[None]:
        """Around a handler: its duration into the metrics, when there are metrics."""
        return contextlib.nullcontext() if self.metrics is None else self.metrics.timed(self.stream, self.group)

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.consumed_one(self.stream, self.group, outcome)


class ConsumerGroupGone(RuntimeError):
    """The consumer group of a batch reader no longer exists (deleted, or the stream or Redis flushed):
    the process exits non-zero, and the supervisor's restart recreates it (as for FastStream's
    subscribers, see `bus.runtime.Platform.watch_subscribers`)."""


class BatchReader:
    """Reads the new entries of (stream, group) and hands them to the consumer a read at a time: to
    `handle_batch` together (`StreamConsumer.process_batch`), or, without one, one at a time
    (`StreamConsumer.process_each`).

    How much one read takes adapts to the load. An idle reader waits (XREADGROUP BLOCK, woken by the
    next XADD at once) for ONE entry, so a burst arriving while several consumers of the group wait
    is shared between them. After each read it takes, without waiting, what queued up meanwhile, up
    to `batch_records` entries: under load the reads grow, and so does what one transaction stores
    (or one XACK skips). An empty read sends it back to waiting for one. Without `handle_batch`, a
    read whose handling took longer than `LONG_S` (a validation rerunning tests) is followed by a read
    of one entry, as if idle: the next entries of a group of slow handlers go to whichever consumer
    is free, as they would one at a time; only quick handlers take entries by the batch.

    A batch given to `handle_batch` is finished (and acknowledged) even on shutdown, within `GRACE_S`
    at shutdown or not: a batch that takes longer (a store that hangs) is given up with a warning, and
    its entries not acknowledged stay pending for the reclaim subscriber to retry (idempotently).
    Entries handled one at a time take as long as their handler does; at shutdown (`stop`), what is
    under way is given `GRACE_S` to finish, as FastStream gives its subscribers' handlers.
    """

    GRACE_S = 10.0
    ERROR_PAUSE_S = 1.0
    LONG_S = 0.05

    def __init__(self, consumer: StreamConsumer, handle_batch: BatchHandler | None = None) -> None:
        self.consumer = consumer
        self.handle_batch = handle_batch
        self.batches = 0  # reads handled
        self._handling: anyio.CancelScope | None = None
        self._stopping = False

    def stop(self) -> None:
        """Shutting down: what is being handled gets at most `GRACE_S` more (cancel the reader's task
        after this; it finishes the read under way first, within that time)."""
        self._stopping = True
        if self._handling is not None:
            self._handling.deadline = min(self._handling.deadline, anyio.current_time() + self.GRACE_S)

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        c = self.consumer
        redis = await c.client()
        with contextlib.suppress(ResponseError):  # BUSYGROUP: it exists. New groups start at `$`, as FastStream's.
            await redis.xgroup_create(c.stream, c.group, id="$", mkstream=True)
        task_status.started()
        idle: tuple[int, int | None] = (1, c.config.polling_ms)  # wait for one entry
        count, block = idle
        while True:
            try:
                reply: Any = await redis.xreadgroup(c.group, c.config.consumer, {c.stream: ">"}, count=count,
                                                    block=block)
            except (RedisError, OSError) as exc:
                if isinstance(exc, ResponseError) and "NOGROUP" in str(exc):
                    raise ConsumerGroupGone(
                        f"stopped consuming {c.stream} (group {c.group}): the consumer group no longer exists "
                        "(deleted, or the stream was deleted or Redis flushed). Exiting so that a restart "
                        "recreates it.") from None
                # Redis away, or UNBLOCKED (the stream was deleted while we waited: the next read says
                # NOGROUP); FastStream's subscribers pause and read again too.
                log.warning("reading %s failed: %s; again in %.1f s", c.stream, exc, self.ERROR_PAUSE_S)
                await anyio.sleep(self.ERROR_PAUSE_S)
                count, block = idle
                continue
            entries = [entry for _, stream_entries in reply or [] for entry in stream_entries]
            if not entries:
                count, block = idle
                continue
            started = anyio.current_time()
            try:
                if await self._handle(entries):
                    log.warning("handling a read of %d entries from %s was given up after %.1f s; its entries "
                                "not acknowledged stay pending for reclaim", len(entries), c.stream,
                                anyio.current_time() - started)
            except (RedisError, OSError) as exc:
                # Redis went away mid-batch (an XACK, a dead letter): what was not acked stays pending,
                # and reclaim retries it (idempotently).
                log.warning("a batch of %s was cut short: %s", c.stream, exc)
                await anyio.sleep(self.ERROR_PAUSE_S)
                count, block = idle
                continue
            self.batches += 1
            slow = self.handle_batch is None and anyio.current_time() - started > self.LONG_S
            count, block = (1 if slow else c.config.batch_records), None  # no BLOCK: what is there now, or nothing

    async def _handle(self, entries: list[Any]) -> bool:
        """Handle one read, shielded from the reader's cancellation (see `stop`); True if it was given up."""
        c = self.consumer
        deadline = anyio.current_time() + self.GRACE_S
        if self.handle_batch is None and not self._stopping:
            deadline = math.inf
        with anyio.CancelScope(shield=True, deadline=deadline) as scope:
            self._handling = scope
            try:
                if self.handle_batch is None:
                    await c.process_each(entries)
                else:
                    await c.process_batch(entries, self.handle_batch)
            finally:
                self._handling = None
        return scope.cancelled_caught


@contextlib.asynccontextmanager
async def run_readers(readers: Sequence[BatchReader]) -> AsyncIterator[None]:
    """Run `readers` while inside (each has created its group and started reading once this yields);
    on the way out, each finishes what it is handling within `BatchReader.GRACE_S`. An error of a
    reader (ConsumerGroupGone) cancels the body and propagates."""
    async with anyio.create_task_group() as tg:
        for reader in readers:
            await tg.start(reader.run)
        try:
            yield
        finally:
            for reader in readers:
                reader.stop()
            tg.cancel_scope.cancel()


@contextlib.contextmanager
def _consume_span(
    tracer: trace.Tracer, stream: str, group: str, batch: Sequence[tuple[Mapping[Any, Any], Envelope[Any]]]
) -> Iterator[None]:
    """The CONSUMER span entries are handled in, named as FastStream names its spans. One entry with a
    producer's trace context continues that trace, as FastStream's telemetry middleware does; a batch
    of several starts a trace of its own, linked to each producer's (a span has one parent)."""
    contexts = [context_from(wire.split_fields(fields)[1]) for fields, _ in batch]
    parent = contexts[0] if len(batch) == 1 else None
    links = [Link(trace.get_current_span(ctx).get_span_context()) for ctx in contexts if ctx is not None]
    if parent is None:
        create = tracer.start_span(f"{stream} create", kind=SpanKind.CONSUMER, links=links)
        create.end()
        parent = trace.set_span_in_context(create)
    types = sorted({e.type for _, e in batch})
    attributes: dict[str, Any] = {
        "messaging.system": "redis", "messaging.operation": "process",
        "messaging.destination_publish.name": stream, "messaging.batch.message_count": len(batch),
        "cars.message.type": ",".join(types), "cars.consumer_group": group,
    }
    if len(batch) == 1:
        envelope = batch[0][1]
        attributes.update({"cars.message.id": str(envelope.id), "cars.correlation_id": envelope.correlation_id})
    with tracer.start_as_current_span(f"{stream} process", context=parent, kind=SpanKind.CONSUMER,
                                      links=links, attributes=attributes):
        yield


def _entry_id(msg: RedisStreamMessage) -> str:
    ids = msg.raw_message.get("message_ids") or []
    return wire.text(ids[0]) if ids else ""


def subscribe(
    router: RedisRouter, *, client: Callable[[], Awaitable[Redis]], stream: str, group: str, handler: Handler,
    accepts: frozenset[str] | None, config: ConsumerConfig, title: str, metrics: BusMetrics | None = None,
    handle_batch: BatchHandler | None = None, tracer: trace.Tracer | None = None,
) -> tuple[StreamConsumer, BatchReader]:
    """`handler` on `stream` in consumer group `group`: the reader of new entries (for the caller to run,
    see `run_readers`) and the reclaim subscriber, added to `router`. With `handle_batch`, the new
    entries of one read are handled together by it; `handler` then handles them one at a time when a
    batch fails, and on every reclaim. `tracer`: see `StreamConsumer.tracer` (the reclaim subscriber's
    spans come from the broker's telemetry middleware)."""
    consumer = StreamConsumer(
        client=client, stream=stream, group=group, handler=handler, accepts=accepts, config=config,
        metrics=metrics, tracer=tracer,
    )
    _reclaim_subscriber(router, consumer, title)
    return consumer, BatchReader(consumer, handle_batch)


def _reclaim_subscriber(router: RedisRouter, consumer: StreamConsumer, title: str) -> None:
    config, stream, group = consumer.config, consumer.stream, consumer.group

    @router.subscriber(
        stream=StreamSub(
            stream, group=group, consumer=f"{config.consumer}-reclaim", min_idle_time=config.reclaim_idle_ms,
            polling_interval=max(config.polling_ms, 200),
        ),
        parser=wire_parser, decoder=raw_decoder, ack_policy=AckPolicy.MANUAL, title=f"{title}:{stream}:reclaim",
    )
    async def reclaim(body: Any, msg: RedisStreamMessage) -> None:
        with continued(msg.headers):
            await consumer.process(msg, reclaimed=True)
