"""The notifier against real parts: a real HTTP receiver (aiohttp) on loopback, real Redis for the retry
queue, and a real SQLite event store for the delivery records."""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from aiohttp import web
from redis.asyncio import Redis

import contracts
from actors.notifier import router as notifier
from actors.notifier.config import NotifierSettings, WebhookTarget
from actors.notifier.deliver import Sender, delivery_id
from actors.notifier.signing import DELIVERY_HEADER, EVENT_HEADER, SignatureError, verify
from bus import streams
from bus.aggregates import AggregateStore
from bus.notify_queue import RedisRetryQueue
from bus.runtime import Platform, utcnow
from bus.settings import Settings
from bus.store import EventStore
from contracts import Envelope
from contracts.environments import EnvironmentFailed
from contracts.failures import FailureUnrepairable
from contracts.notifications import NotificationDelivered, NotificationFailed
from contracts.repairs import RepairCompleted
from contracts.values import FailureClass

SECRET = "receiver-secret-0123456789"
RETRY_IDLE_MS = 100


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Receiver:
    """A webhook receiver on 127.0.0.1 that checks signatures as the README tells receivers to.

    It can be stopped and started again on the same port (a target that is down, then comes back), and
    told to answer an error status. Every request it accepted is in `received`; refused ones in `refused`.
    """

    def __init__(self, secret: str | None = SECRET) -> None:
        self.secret = secret
        self.port = free_port()
        self.status = 200
        self.delay_s = 0.0
        self.received: list[dict[str, Any]] = []
        self.refused: list[str] = []
        self.requests = 0
        self._runner: web.AppRunner | None = None
        self._arrived = anyio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _hook(self, request: web.Request) -> web.Response:
        self.requests += 1
        body = await request.read()
        if self.delay_s:
            await anyio.sleep(self.delay_s)
        if self.secret is not None:
            try:
                verify(self.secret, request.headers, body, now=time.time())
            except SignatureError as exc:
                self.refused.append(str(exc))
                return web.Response(status=401, text=str(exc))
        if self.status >= 300:
            return web.Response(status=self.status)
        self.received.append({"headers": dict(request.headers), "body": json.loads(body)})
        self._arrived.set()
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def wait_for(self, count: int, timeout_s: float = 20.0) -> None:
        with anyio.fail_after(timeout_s):
            while len(self.received) < count:
                self._arrived = anyio.Event()
                await self._arrived.wait()

    def deliveries(self) -> list[str]:
        return [r["headers"][DELIVERY_HEADER] for r in self.received]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


@pytest.fixture
def store(sqlite_env: dict[str, str]) -> Iterator[EventStore]:
    es = EventStore(sqlite_env)
    yield es
    es.close()


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Redis]:
    c = Redis.from_url(redis_url)
    yield c
    await c.aclose()


def settings(*targets: WebhookTarget, **overrides: Any) -> NotifierSettings:
    values: dict[str, Any] = {"targets": targets, "timeout_s": 2.0, "attempts": 2, "backoff_s": 0.01,
                              "breaker_failures": 3, "breaker_reset_s": 0.4, "retry_s": RETRY_IDLE_MS / 1000}
    values.update(overrides)
    return NotifierSettings(**values)


def target(url: str, *, name: str = "ops", fmt: str = "json", secret: str | None = SECRET,
           events: frozenset[str] = frozenset(notifier.ACCEPTS)) -> WebhookTarget:
    return WebhookTarget(name=name, url=url, format=fmt, events=events, secret=secret)


def make_deps(store: EventStore, client: Redis, config: NotifierSettings) -> notifier.NotifierDeps:
    async def redis() -> Redis:
        return client

    queue = RedisRetryQueue(redis, consumer="test-notifier", min_idle_ms=RETRY_IDLE_MS, maxlen_dlq=1000)
    return notifier.NotifierDeps(aggregates=AggregateStore(store, utcnow), sender=Sender(config), queue=queue,
                                 settings=config)


def repair_completed(test_id: str = "tests/test_cart.py::test_total") -> Envelope[Any]:
    return Envelope(data=RepairCompleted(
        repair_id=uuid.uuid4(), candidate_id=uuid.uuid4(), project="shop", test_id=test_id,
        category=FailureClass.RENAMED_SYMBOL, strategy="renamed_symbol", confidence=0.92,
        patch="--- a/tests/test_cart.py\n+++ b/tests/test_cart.py\n@@ -1 +1 @@\n-x\n+y\n",
    ))


def unrepairable() -> Envelope[Any]:
    return Envelope(data=FailureUnrepairable(
        project="shop", test_id="tests/test_pay.py::test_refund", fingerprint="fp-1",
        category=FailureClass.PRODUCT_REGRESSION, reason="the product returns 3 instead of 2 <really>",
    ))


async def records(store: EventStore, did: uuid.UUID) -> list[Any]:
    return [e.data for e in await anyio.to_thread.run_sync(store.load, did)]


async def queued(client: Redis) -> int:
    return int(await client.xlen(streams.NOTIFY_RETRY))


async def retry_until_empty(deps: notifier.NotifierDeps, client: Redis, timeout_s: float = 10.0) -> int:
    """Run retry rounds (as `run_retries` does, without its sleep between rounds) until the queue is empty."""
    delivered = 0
    with anyio.fail_after(timeout_s):
        while await queued(client):
            delivered += await notifier.retry_once(deps)
            await anyio.sleep(RETRY_IDLE_MS / 1000)
    return delivered


# ----------------------------------------------------------------------------- delivery


async def test_a_repair_is_delivered_signed_once_and_recorded(
    receiver: Receiver, store: EventStore, client: Redis,
) -> None:
    deps = make_deps(store, client, settings(target(receiver.url)))
    event = repair_completed()
    did = delivery_id(event.id, "ops")
    # When the notifier handles the event, and then the same event again (a redelivery)
    await notifier.handle(deps, event)
    await notifier.handle(deps, event)
    # Then the receiver got it once, signed (the receiver verified it), with the delivery id
    assert receiver.refused == []
    assert receiver.deliveries() == [str(did)]
    got = receiver.received[0]
    assert got["headers"][EVENT_HEADER] == "repair.completed"
    assert got["body"] == {"delivery_id": str(did), "target": "ops", "type": "repair.completed",
                           "event": contracts.encode(event)}
    # And the delivery is recorded in the store, under the delivery id, and nothing is queued
    [delivered] = await records(store, did)
    assert isinstance(delivered, NotificationDelivered)
    assert (delivered.event_id, delivered.target) == (event.id, "ops")
    assert (delivered.attempts, delivered.status_code) == (1, 204)
    assert await queued(client) == 0


async def test_only_the_events_a_target_asks_for_are_sent(
    receiver: Receiver, store: EventStore, client: Redis,
) -> None:
    only_failures = target(receiver.url, events=frozenset({"failure.unrepairable"}))
    deps = make_deps(store, client, settings(only_failures))
    await notifier.handle(deps, repair_completed())
    await notifier.handle(deps, unrepairable())
    assert [r["body"]["type"] for r in receiver.received] == ["failure.unrepairable"]


async def test_a_receiver_that_is_down_and_comes_back_loses_nothing(
    receiver: Receiver, store: EventStore, client: Redis,
) -> None:
    deps = make_deps(store, client, settings(target(receiver.url)))
    events = [repair_completed(f"tests/test_a.py::test_{i}") for i in range(3)]
    # Given the receiver is down (its port refuses connections)
    await receiver.stop()
    # When three results are handled (and acknowledged: handle returns normally)
    for event in events:
        await notifier.handle(deps, event)
    # Then each is recorded as failed and waits in the durable retry queue (the first after its two
    # attempts; by the second the target's circuit is open: 3 consecutive failures)
    dids = [delivery_id(e.id, "ops") for e in events]
    failures = [(await records(store, did))[0] for did in dids]
    assert all(isinstance(f, NotificationFailed) for f in failures)
    assert failures[0].attempts == 2 and "ConnectError" in failures[0].reason
    assert "circuit open" in failures[2].reason
    assert await queued(client) == 3
    # And retrying while it is still down delivers nothing and keeps everything queued
    await anyio.sleep(RETRY_IDLE_MS / 1000)
    assert await notifier.retry_once(deps) == 0
    assert await queued(client) == 3
    # When the receiver comes back (on the same port) and the circuit half-opens
    await receiver.start()
    await anyio.sleep(deps.settings.breaker_reset_s)
    delivered = await retry_until_empty(deps, client)
    # Then every notification arrives exactly once, and each delivery is recorded after its failure
    assert delivered == 3
    assert sorted(receiver.deliveries()) == sorted(str(d) for d in dids)
    for did in dids:
        history = await records(store, did)
        assert [type(e) for e in history] == [NotificationFailed, NotificationDelivered]
    assert await queued(client) == 0


async def test_the_circuit_opens_after_consecutive_failures_and_closes_on_a_good_trial(
    receiver: Receiver, store: EventStore, client: Redis,
) -> None:
    config = settings(target(receiver.url), attempts=1, breaker_failures=3, breaker_reset_s=0.5)
    deps = make_deps(store, client, config)
    receiver.status = 503
    events = [repair_completed(f"tests/test_b.py::test_{i}") for i in range(5)]
    # When three deliveries fail in a row
    for event in events[:3]:
        await notifier.handle(deps, event)
    assert receiver.requests == 3
    assert await deps.sender.circuit("ops") == "opened"
    # Then the next ones are not even sent: queued at once, recorded with zero attempts
    for event in events[3:]:
        await notifier.handle(deps, event)
    assert receiver.requests == 3
    last = (await records(store, delivery_id(events[-1].id, "ops")))[0]
    assert isinstance(last, NotificationFailed)
    assert last.attempts == 0 and "circuit open" in last.reason
    assert await queued(client) == 5
    # When the target recovers and the reset time passes, the first retry is the trial; it closes the circuit
    receiver.status = 200
    await anyio.sleep(config.breaker_reset_s)
    assert await retry_until_empty(deps, client) == 5
    assert await deps.sender.circuit("ops") == "closed"
    assert sorted(receiver.deliveries()) == sorted(str(delivery_id(e.id, "ops")) for e in events)


async def test_a_wrong_secret_is_refused_by_the_receiver_and_kept_for_retry(
    receiver: Receiver, store: EventStore, client: Redis,
) -> None:
    deps = make_deps(store, client, settings(target(receiver.url, secret="not-the-receivers-secret")))
    event = repair_completed()
    await notifier.handle(deps, event)
    # The receiver checked the signature and refused it; a 401 is not retried at once, but kept
    assert receiver.received == []
    assert receiver.refused == ["signature does not match the body"]
    [failed] = await records(store, delivery_id(event.id, "ops"))
    assert isinstance(failed, NotificationFailed)
    assert failed.attempts == 1 and "401" in failed.reason
    assert await queued(client) == 1


async def test_a_receiver_that_does_not_answer_in_time_is_a_failure_kept_for_retry(
    receiver: Receiver, store: EventStore, client: Redis,
) -> None:
    deps = make_deps(store, client, settings(target(receiver.url), timeout_s=0.2, attempts=1))
    receiver.delay_s = 1.0
    event = repair_completed()
    started = time.monotonic()
    await notifier.handle(deps, event)
    assert time.monotonic() - started < 1.0  # the timeout, not the receiver, ended the attempt
    [failed] = await records(store, delivery_id(event.id, "ops"))
    assert isinstance(failed, NotificationFailed)
    assert failed.reason == "ops: no answer within 0.2 s"
    assert await queued(client) == 1


async def test_queued_deliveries_of_a_notifier_that_died_are_taken_over(
    receiver: Receiver, store: EventStore, client: Redis,
) -> None:
    async def redis() -> Redis:
        return client

    # Given a queued delivery that notifier A took from the queue and then died with
    dead = RedisRetryQueue(redis, consumer="notifier-a", min_idle_ms=RETRY_IDLE_MS, maxlen_dlq=1000)
    event = repair_completed()
    await dead.push("ops", event)
    assert [p.envelope for p in await dead.due()] == [event]
    # When notifier B works the queue once A's entry has been idle long enough
    deps = make_deps(store, client, settings(target(receiver.url)))
    await anyio.sleep(RETRY_IDLE_MS / 1000)
    delivered = await notifier.retry_once(deps)
    # Then B delivers it, records it, and the queue is empty
    assert delivered == 1
    assert receiver.deliveries() == [str(delivery_id(event.id, "ops"))]
    assert [type(e) for e in await records(store, delivery_id(event.id, "ops"))] == [NotificationDelivered]
    assert await queued(client) == 0


async def test_an_unreadable_queue_entry_is_dead_lettered_not_retried_forever(
    receiver: Receiver, store: EventStore, client: Redis,
) -> None:
    # Given something that is not a CARS envelope in the retry queue
    await client.xadd(streams.NOTIFY_RETRY, {"target": "ops", "message": "{not json"})
    deps = make_deps(store, client, settings(target(receiver.url)))
    # When the queue is worked
    assert await notifier.retry_once(deps) == 0
    # Then it is in cars.dlq with the reason, and out of the queue; nothing was sent
    [(_, fields)] = await client.xrange(streams.DLQ)
    assert fields[b"reason"].startswith(b"invalid retry entry: ")
    assert fields[b"stream"] == streams.NOTIFY_RETRY.encode()
    assert await queued(client) == 0
    assert receiver.requests == 0


def test_verify_refuses_tampered_stale_and_unsigned_requests() -> None:
    from actors.notifier.signing import signed_headers

    body = b'{"type":"repair.completed"}'
    now = 1_800_000_000
    headers = signed_headers(SECRET, now, body)
    verify(SECRET, headers, body, now=now)  # the genuine request passes
    with pytest.raises(SignatureError, match="does not match"):
        verify(SECRET, headers, body + b" ", now=now)
    with pytest.raises(SignatureError, match="does not match"):
        verify("another-secret", headers, body, now=now)
    with pytest.raises(SignatureError, match="away from now"):
        verify(SECRET, headers, body, now=now + 301)
    with pytest.raises(SignatureError, match="missing"):
        verify(SECRET, {}, body, now=now)


async def test_slack_targets_get_a_slack_message(store: EventStore, client: Redis) -> None:
    receiver = Receiver(secret=None)  # like Slack: the URL is the secret, no signature check
    await receiver.start()
    try:
        deps = make_deps(store, client, settings(target(receiver.url, name="chat", fmt="slack", secret=None)))
        event = unrepairable()
        await notifier.handle(deps, event)
    finally:
        await receiver.stop()
    [got] = receiver.received
    body = got["body"]
    # Slack's incoming-webhook shape: a plain `text` fallback and Block Kit blocks
    assert set(body) == {"text", "blocks"}
    assert body["text"] == "CARS cannot repair tests/test_pay.py::test_refund (shop)"
    assert [b["type"] for b in body["blocks"]] == ["section", "section", "context"]
    assert all(b["text"]["type"] == "mrkdwn" for b in body["blocks"][:2])
    facts = body["blocks"][1]["text"]["text"]
    assert "*Class:* product_regression" in facts
    assert "&lt;really&gt;" in facts  # mrkdwn control characters escaped
    assert str(delivery_id(event.id, "chat")) in body["blocks"][2]["elements"][0]["text"]


# ----------------------------------------------------------------------------- through the platform


async def test_the_platform_notifies_events_the_relay_publishes(
    receiver: Receiver, tmp_path: Path, redis_url: str,
) -> None:
    """`cars up` wiring: an event appended to the store goes through the relay and the topic streams
    to the notifier actor, and out to the receiver."""
    config = Settings.from_env({
        "CARS_HOME": str(tmp_path), "REDIS_URL": redis_url, "CARS_CONSUMER": f"test-{uuid.uuid4().hex[:8]}",
        "CARS_POLL_MS": "20", "HOOK_SECRET": SECRET,
        "CARS_WEBHOOKS": json.dumps([{"name": "ops", "url": receiver.url, "secret_env": "HOOK_SECRET"}]),
    })
    platform = Platform(settings=config, actors=["notifier"], role="worker", api=False, relay=True,
                        projections=False, quiet=True)
    env_failed = Envelope(data=EnvironmentFailed(environment_id=uuid.uuid4(), reason="out of disk"))
    async with platform.started(redis_url), anyio.create_task_group() as tg:
        tg.start_soon(platform.serve)
        assert platform.store is not None
        for event in (repair_completed(), env_failed):
            await anyio.to_thread.run_sync(platform.store.append, uuid.uuid4(), 0, [event])
        await receiver.wait_for(2)
        tg.cancel_scope.cancel()
    assert sorted(r["body"]["type"] for r in receiver.received) == ["environment.failed", "repair.completed"]
    # read from the results topic alone (the area streams carry every other event too)
    assert {(c.stream, c.group) for c in platform.consumers.values()} == {(streams.RESULTS, "notifier")}
