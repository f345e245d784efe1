"""Subscribing an actor's handler to a stream: consumer groups, reclaim, dead letters.

`subscribe()` adds two FastStream subscribers to a router, in the same consumer group:

- `fresh` reads new entries (`XREADGROUP >`) under this process's unique consumer name;
- `reclaim` claims entries that stayed pending longer than `reclaim_idle_ms` in ANY consumer of the
  group (a crashed or stuck process) with XAUTOCLAIM, and retries them.

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
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
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
tracer = trace.get_tracer(__name__)

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
    # The most entries one read of a batch reader takes (`subscribe_batch`).
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
    ) -> None:
        self.client = client
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
        """Handle one entry that FastStream delivered (the one-at-a-time path, and every reclaim)."""
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
        batch: list[tuple[str, Mapping[Any, Any], Envelope[Any]]] = []
        ignored: list[str] = []
        for raw_id, fields in entries:
            entry_id = wire.text(raw_id)
            envelope = await self._decode(redis, entry_id, fields, 1)
            if envelope is None:
                continue
            if self.accepts is not None and envelope.type not in self.accepts:
                ignored.append(entry_id)
                continue
            batch.append((entry_id, fields, envelope))
        if ignored:
            await redis.xack(self.stream, self.group, *ignored)
            for _ in ignored:
                self._count("ignored")
        if not batch:
            return
        with _consume_span(self.stream, self.group, [(f, e) for _, f, e in batch]):
            ids = [entry_id for entry_id, _, _ in batch]
            try:
                with self._timed():
                    await self._kept_claimed(redis, ids, handle_batch([e for _, _, e in batch]), reclaimed=False)
            except Exception as exc:
                log.info("batch of %d failed (%s: %s); handling its entries one at a time", len(batch),
                         type(exc).__name__, exc, extra={"stream": self.stream, "group": self.group})

                async def one_at_a_time() -> None:
                    for entry_id, fields, envelope in batch:
                        await self._handle_one(redis, entry_id, fields, envelope, deliveries=1, reclaimed=False)

                # The entries still waiting their turn stay claimed: reclaim must not take them meanwhile.
                await self._kept_claimed(redis, ids, one_at_a_time(), reclaimed=False)
                return
            await redis.xack(self.stream, self.group, *ids)
        for entry_id, _, envelope in batch:
            self.processed += 1
            log.debug("handled", extra={"stream": self.stream, "group": self.group, "entry_id": entry_id,
                                        "type": envelope.type, "consumer": self.config.consumer,
                                        "reclaimed": False, "batch": len(batch)})
            self._count("handled")

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
    """Reads the new entries of (stream, group) and hands them to `process_batch` a read at a time.

    How much one read takes adapts to the load. An idle reader waits (XREADGROUP BLOCK, woken by the
    next XADD at once) for ONE entry, so a burst arriving while several consumers of the group wait
    is shared between them, as with the one-at-a-time subscribers. After each batch it takes, without
    waiting, up to `batch_records` entries that queued up meanwhile: under load the batches grow, and
    so does what one transaction stores. An empty read sends it back to waiting for one.

    A batch that was started is finished (and acknowledged) even on shutdown, but within `GRACE_S`,
    at shutdown or not: a batch that takes longer (a store that hangs) is given up with a warning, and
    its entries not acknowledged stay pending for the reclaim subscriber to retry (idempotently).
    """

    GRACE_S = 10.0
    ERROR_PAUSE_S = 1.0

    def __init__(self, consumer: StreamConsumer, handle_batch: BatchHandler) -> None:
        self.consumer = consumer
        self.handle_batch = handle_batch
        self.batches = 0

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        c = self.consumer
        redis = await c.client()
        with contextlib.suppress(ResponseError):  # BUSYGROUP: it exists. New groups start at `$`, as FastStream's.
            await redis.xgroup_create(c.stream, c.group, id="$", mkstream=True)
        task_status.started()
        count: int = 1
        block: int | None = c.config.polling_ms
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
                count, block = 1, c.config.polling_ms
                continue
            entries = [entry for _, stream_entries in reply or [] for entry in stream_entries]
            if not entries:
                count, block = 1, c.config.polling_ms
                continue
            try:
                with anyio.CancelScope(shield=True), anyio.move_on_after(self.GRACE_S) as bounded:
                    await c.process_batch(entries, self.handle_batch)
                if bounded.cancelled_caught:
                    log.warning("a batch of %d from %s took over %.0f s and was given up; its entries not "
                                "acknowledged stay pending for reclaim", len(entries), c.stream, self.GRACE_S)
            except (RedisError, OSError) as exc:
                # Redis went away mid-batch (an XACK, a dead letter): what was not acked stays pending,
                # and reclaim retries it (idempotently).
                log.warning("a batch of %s was cut short: %s", c.stream, exc)
                await anyio.sleep(self.ERROR_PAUSE_S)
                count, block = 1, c.config.polling_ms
                continue
            self.batches += 1
            count, block = c.config.batch_records, None  # no BLOCK: what is there now, or nothing


@contextlib.contextmanager
def _consume_span(stream: str, group: str, batch: Sequence[tuple[Mapping[Any, Any], Envelope[Any]]]) -> Iterator[None]:
    """The CONSUMER span a batch is handled in, named as FastStream names its spans. One entry with a
    producer's trace context continues that trace, as the one-at-a-time subscriber does; a batch of
    several starts a trace of its own, linked to each producer's (a span has one parent)."""
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
) -> StreamConsumer:
    """Add the fresh and reclaim subscribers of `handler` on `stream` in consumer group `group`."""
    consumer = StreamConsumer(
        client=client, stream=stream, group=group, handler=handler, accepts=accepts, config=config,
        metrics=metrics,
    )

    # One entry per read (XREADGROUP COUNT 1): without a count, the first consumer to read takes every
    # entry waiting (a relay batch, a burst of runs) and works through them alone while the other
    # consumers of the group idle. The next entry goes to whichever consumer asks next.
    @router.subscriber(
        stream=StreamSub(stream, group=group, consumer=config.consumer, polling_interval=config.polling_ms,
                         max_records=1),
        parser=wire_parser, decoder=raw_decoder, ack_policy=AckPolicy.MANUAL, title=f"{title}:{stream}",
    )
    async def fresh(body: Any, msg: RedisStreamMessage) -> None:
        with continued(msg.headers):
            await consumer.process(msg, reclaimed=False)

    _reclaim_subscriber(router, consumer, title)
    return consumer


def subscribe_batch(
    router: RedisRouter, *, client: Callable[[], Awaitable[Redis]], stream: str, group: str, handler: Handler,
    handle_batch: BatchHandler, accepts: frozenset[str] | None, config: ConsumerConfig, title: str,
    metrics: BusMetrics | None = None,
) -> tuple[StreamConsumer, BatchReader]:
    """As `subscribe`, but new entries are read by a BatchReader (to run in the caller's task group)
    and handled `handle_batch` a read at a time; `handler` handles them one at a time when a batch
    fails, and on every reclaim (the reclaim subscriber is added to `router` as by `subscribe`)."""
    consumer = StreamConsumer(
        client=client, stream=stream, group=group, handler=handler, accepts=accepts, config=config,
        metrics=metrics,
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
