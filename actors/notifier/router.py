"""The notifier actor: webhooks for `repair.completed`, `failure.unrepairable` and `environment.failed`.

For each such event and each configured target that wants it, one delivery with id
uuid5(event id, target name) (`deliver.delivery_id`), sent as the `X-CARS-Delivery` header:

1. If the delivery's stream in the event store already holds `notification.delivered`, nothing is sent
   (a redelivered event, or a second notifier process).
2. The notification is POSTed with retries and backoff, through the target's circuit breaker.
3. Delivered: `notification.delivered` is appended (stream id = the delivery id).
   Not delivered after the retries (or the circuit is open): the delivery is pushed onto the durable
   retry queue FIRST, then `notification.failed` is appended, and only then is the event acknowledged.
   A crash in between redelivers the event, which pushes it again (harmless: see 1) - nothing is lost.

`run_retries` works the retry queue forever: every `retry_s` it takes the queued deliveries (new ones,
and ones whose last try failed at least `retry_s` ago, including those a dead process held) and tries
each once through the target's breaker. While a circuit is open nothing is sent to that target; once it
half-opens, the first queued delivery is the trial, and when it succeeds the circuit closes and the rest
follow. A delivered entry is recorded (`notification.delivered`) and then removed from the queue.

Delivery is at least once: a crash after the target answered and before the record is written sends
again, with the same delivery id, which receivers use to deduplicate.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Any, Protocol

import anyio
from attrs import frozen

from actors.notifier.config import EVENTS, NotifierSettings, WebhookTarget
from actors.notifier.deliver import Delivered, DeliveryError, Sender, delivery_id
from actors.ports import Aggregates, Tick
from contracts import Envelope, natural_id
from contracts.notifications import NotificationDelivered, NotificationFailed

log = logging.getLogger(__name__)

ROLE = "notifier"
ACCEPTS = frozenset(EVENTS)


@frozen(kw_only=True)
class Pending:
    """One queued delivery: `key` identifies it in the queue."""

    key: str
    target: str
    envelope: Envelope[Any]


class RetryQueue(Protocol):
    """Durable storage of undelivered notifications (the bus implements it on a Redis stream)."""

    async def push(self, target: str, envelope: Envelope[Any]) -> None: ...

    async def due(self) -> Sequence[Pending]:
        """Queued deliveries to try now: new ones, and ones last tried at least one interval ago."""
        ...

    async def done(self, key: str) -> None: ...


@frozen(kw_only=True)
class NotifierDeps:
    aggregates: Aggregates
    sender: Sender
    queue: RetryQueue
    settings: NotifierSettings


async def handle(deps: NotifierDeps, envelope: Envelope[Any]) -> None:
    if envelope.type not in ACCEPTS:
        return
    wanted = [t for t in deps.settings.targets if t.wants(envelope.type)]
    if not wanted:
        return
    # Targets are independent: one slow or dead target must not delay the others.
    async with anyio.create_task_group() as tg:
        for target in wanted:
            tg.start_soon(_notify, deps, target, envelope)


async def _notify(deps: NotifierDeps, target: WebhookTarget, envelope: Envelope[Any]) -> None:
    did = delivery_id(envelope.id, target.name)
    if await _is_delivered(deps, did):
        return
    try:
        done = await deps.sender.send(target, envelope)
    except DeliveryError as exc:
        await deps.queue.push(target.name, envelope)
        failed = NotificationFailed(delivery_id=did, event_id=envelope.id, event_type=envelope.type,
                                    target=target.name, attempts=exc.attempts, reason=str(exc))
        await deps.aggregates.execute(did, envelope, lambda h: [] if _settled(h) else [failed])
        log.warning("notification queued for retry", extra={"target": target.name, "delivery_id": str(did),
                                                             "event_type": envelope.type, "error": str(exc)})
        return
    await _record_delivered(deps, did, target, envelope, done)


def _settled(history: Sequence[Envelope[Any]]) -> bool:
    """True once the delivery has been recorded as failed or delivered (the first outcome is enough)."""
    return any(isinstance(e.data, NotificationDelivered | NotificationFailed) for e in history)


async def _is_delivered(deps: NotifierDeps, did: uuid.UUID) -> bool:
    return any(isinstance(e.data, NotificationDelivered) for e in await deps.aggregates.history(did))


async def _record_delivered(
    deps: NotifierDeps, did: uuid.UUID, target: WebhookTarget, envelope: Envelope[Any], done: Delivered
) -> None:
    delivered = NotificationDelivered(delivery_id=did, event_id=envelope.id, event_type=envelope.type,
                                      target=target.name, attempts=done.attempts, status_code=done.status_code)
    tick = Tick(id=natural_id("notification.delivered", did), correlation_id=envelope.correlation_id)
    await deps.aggregates.execute(
        did, tick, lambda h: [] if any(isinstance(e.data, NotificationDelivered) for e in h) else [delivered]
    )


async def retry_once(deps: NotifierDeps) -> int:
    """Try every due queued delivery once; returns how many were delivered."""
    targets = {t.name: t for t in deps.settings.targets}
    delivered = 0
    for item in await deps.queue.due():
        target = targets.get(item.target)
        if target is None:
            # Kept, not dropped: configuring the target again delivers it.
            log.warning("queued notification for a target that is no longer configured; kept",
                        extra={"target": item.target, "event_id": str(item.envelope.id)})
            continue
        did = delivery_id(item.envelope.id, target.name)
        if not await _is_delivered(deps, did):
            try:
                done = await deps.sender.send(target, item.envelope, attempts=1)
            except DeliveryError as exc:
                log.info("queued notification not delivered yet",
                         extra={"target": target.name, "delivery_id": str(did), "error": str(exc)})
                continue
            await _record_delivered(deps, did, target, item.envelope, done)
            delivered += 1
        await deps.queue.done(item.key)
    return delivered


async def run_retries(deps: NotifierDeps) -> None:
    """Work the retry queue forever; a failed round (Redis or the store down) is logged and tried again."""
    every = deps.settings.retry_s
    while True:
        await anyio.sleep(every)
        try:
            n = await retry_once(deps)
            if n:
                log.info("queued notifications delivered", extra={"count": n})
        except Exception:
            log.exception("notification retry round failed; trying again in %.1fs", every)
