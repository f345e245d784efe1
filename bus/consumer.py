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

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio
from attrs import frozen
from faststream import AckPolicy
from faststream.redis import RedisRouter, RedisStreamMessage, StreamSub
from opentelemetry import trace
from redis.asyncio import Redis

from actors.errors import Rejected
from bus import wire
from bus.dlq import dead_letter
from bus.metrics import BusMetrics
from bus.streams import DLQ, errors_key
from contracts import ContractError, Envelope

log = logging.getLogger(__name__)

Handler = Callable[[Envelope[Any]], Awaitable[None]]

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
        redis = await self.client()
        entry_id = _entry_id(msg)
        fields = msg.raw_message.get("data") or {}
        raw, other = wire.split_fields(fields)
        deliveries = await msg.get_delivery_count() if reclaimed else 1
        if reclaimed and deliveries > self.config.max_deliveries:
            last = await redis.hget(errors_key(self.stream, self.group), entry_id)
            reason = f"failed {deliveries - 1} deliveries; last error: " + (
                wire.text(last) if last else "unknown (the consumer died while handling it)"
            )
            await self._dead_letter(redis, msg, raw, other, reason, deliveries - 1)
            return
        try:
            envelope = wire.decode_fields(fields, max_bytes=self.config.max_message_bytes)
        except ContractError as exc:
            # Every group on this stream sees the same malformed entry; only the first records it.
            first = await redis.set(f"cars:dlq:seen:{self.stream}:{entry_id}", self.group, nx=True,
                                    ex=MALFORMED_SEEN_TTL_S)
            if first:
                await self._dead_letter(redis, msg, raw, other, "invalid message: " + "; ".join(exc.errors),
                                        deliveries)
            else:
                await msg.ack()
                self._count("ignored")
            return
        if self.accepts is not None and envelope.type not in self.accepts:
            await msg.ack()
            self._count("ignored")
            return
        trace.get_current_span().set_attributes({
            "cars.message.type": envelope.type, "cars.message.id": str(envelope.id),
            "cars.correlation_id": envelope.correlation_id, "cars.consumer_group": self.group,
        })
        try:
            if self.metrics is None:
                await self._handle_kept_claimed(redis, entry_id, envelope, reclaimed=reclaimed)
            else:
                with self.metrics.timed(self.stream, self.group):
                    await self._handle_kept_claimed(redis, entry_id, envelope, reclaimed=reclaimed)
        except Rejected as exc:
            await self._dead_letter(redis, msg, raw, other, f"rejected: {exc}", deliveries)
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
        await msg.ack()
        self.processed += 1
        log.debug("handled", extra={"stream": self.stream, "group": self.group, "entry_id": entry_id,
                                    "type": envelope.type, "consumer": self.config.consumer, "reclaimed": reclaimed})
        self._count("handled")
        if reclaimed:
            await redis.hdel(errors_key(self.stream, self.group), entry_id)

    async def _handle_kept_claimed(
        self, redis: Redis, entry_id: str, envelope: Envelope[Any], *, reclaimed: bool
    ) -> None:
        """Run the handler. Meanwhile keep resetting the entry's idle time, so that a long handler (a
        validation rerunning tests for minutes) is not mistaken for a dead one and reclaimed by another
        consumer. XCLAIM ... JUSTID to the current owner resets the idle time without counting a
        delivery. A process that dies stops doing this, and its entries become reclaimable as before.
        """
        owner = f"{self.config.consumer}-reclaim" if reclaimed else self.config.consumer
        every_s = max(self.config.reclaim_idle_ms / 3000, 0.05)

        async def refresh() -> None:
            while True:
                await anyio.sleep(every_s)
                try:
                    await redis.xclaim(self.stream, self.group, owner, 0, [entry_id], justid=True)
                except Exception as exc:  # a missed refresh risks a duplicate delivery, which is idempotent
                    log.warning("could not refresh a pending entry", extra={"entry_id": entry_id, "error": str(exc)})

        error: Exception | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(refresh)
            try:
                await self.handler(envelope)
            except Exception as exc:  # re-raised below, outside the task group (which would wrap it)
                error = exc
            finally:
                tg.cancel_scope.cancel()
        if error is not None:
            raise error

    async def _dead_letter(
        self, redis: Redis, msg: RedisStreamMessage, raw: bytes | None, other: dict[str, str], reason: str,
        deliveries: int,
    ) -> None:
        entry_id = _entry_id(msg)
        await dead_letter(
            redis, stream=self.stream, group=self.group, original_id=entry_id, raw_message=raw,
            other_fields=other, reason=reason, deliveries=deliveries, maxlen=self.config.maxlen,
        )
        await msg.ack()
        await redis.hdel(errors_key(self.stream, self.group), entry_id)
        self.dead_lettered += 1
        self._count("dead_lettered")
        if self.metrics is not None:
            self.metrics.published_one(DLQ)
        log.warning("dead-lettered", extra={"stream": self.stream, "group": self.group, "entry_id": entry_id,
                                            "reason": reason})


    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.consumed_one(self.stream, self.group, outcome)


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
        await consumer.process(msg, reclaimed=False)

    @router.subscriber(
        stream=StreamSub(
            stream, group=group, consumer=f"{config.consumer}-reclaim", min_idle_time=config.reclaim_idle_ms,
            polling_interval=max(config.polling_ms, 200),
        ),
        parser=wire_parser, decoder=raw_decoder, ack_policy=AckPolicy.MANUAL, title=f"{title}:{stream}:reclaim",
    )
    async def reclaim(body: Any, msg: RedisStreamMessage) -> None:
        await consumer.process(msg, reclaimed=True)

    return consumer
