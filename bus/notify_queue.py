"""The notifier's durable retry queue on a Redis stream (implements `actors.notifier.router.RetryQueue`).

Entries of `cars.notifications.retry` hold `target` and `message` (the event's envelope, in the wire
format). The stream is never trimmed: an entry leaves it only when its delivery has been recorded.
Every notifier process reads it through the consumer group `notifier`:

- new entries are read with XREADGROUP `>`;
- entries whose last try failed stay pending; once idle for `min_idle_ms` any notifier claims them with
  XAUTOCLAIM (its own, or those of a process that died) and tries again. Claiming resets the idle time,
  so one entry is tried at most once per interval.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

import contracts
from actors.notifier.router import Pending
from bus import wire
from bus.dlq import dead_letter
from bus.streams import MESSAGE_FIELD, NOTIFY_RETRY
from contracts import ContractError, Envelope

log = logging.getLogger(__name__)

GROUP = "notifier"


class RedisRetryQueue:
    def __init__(self, client: Callable[[], Awaitable[Redis]], *, consumer: str, min_idle_ms: int,
                 maxlen_dlq: int, batch: int = 100) -> None:
        self.client = client
        self.consumer = consumer
        self.min_idle_ms = min_idle_ms
        self.maxlen_dlq = maxlen_dlq
        self.batch = batch
        self._group_ready = False

    async def push(self, target: str, envelope: Envelope[Any]) -> None:
        fields: dict[Any, Any] = {"target": target, MESSAGE_FIELD: contracts.dumps(envelope)}
        await (await self.client()).xadd(NOTIFY_RETRY, fields)

    async def due(self) -> list[Pending]:
        redis = await self.client()
        try:
            await self._ensure_group(redis)
            autoclaimed: Any = await redis.xautoclaim(NOTIFY_RETRY, GROUP, self.consumer, self.min_idle_ms,
                                                   start_id="0-0", count=self.batch)
            fresh: Any = await redis.xreadgroup(GROUP, self.consumer, {NOTIFY_RETRY: ">"}, count=self.batch)
        except ResponseError as exc:
            if "NOGROUP" in str(exc):
                self._group_ready = False  # the stream was deleted; recreate the group next round
            raise
        entries = list(autoclaimed[1]) + [e for _, stream_entries in fresh for e in stream_entries]
        out: list[Pending] = []
        for entry_id, fields in entries:
            key = wire.text(entry_id)
            raw, other = wire.split_fields(fields)
            try:
                if raw is None:
                    raise ContractError([f"retry entry has no {MESSAGE_FIELD!r} field @ $"])
                envelope = contracts.loads(raw)
            except ContractError as exc:
                # Written by something else, or by a CARS whose contracts this one cannot read: park it.
                await dead_letter(redis, stream=NOTIFY_RETRY, group=GROUP, original_id=key, raw_message=raw,
                                  other_fields=other, reason="invalid retry entry: " + "; ".join(exc.errors),
                                  deliveries=1, maxlen=self.maxlen_dlq)
                await self.done(key)
                continue
            out.append(Pending(key=key, target=other.get("target", ""), envelope=envelope))
        return out

    async def done(self, key: str) -> None:
        async with (await self.client()).pipeline(transaction=True) as pipe:
            pipe.xack(NOTIFY_RETRY, GROUP, key)
            pipe.xdel(NOTIFY_RETRY, key)
            await pipe.execute()

    async def size(self) -> int:
        return int(await (await self.client()).xlen(NOTIFY_RETRY))

    async def _ensure_group(self, redis: Redis) -> None:
        if self._group_ready:
            return
        try:
            await redis.xgroup_create(NOTIFY_RETRY, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True
