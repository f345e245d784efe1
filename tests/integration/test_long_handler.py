"""A handler that runs longer than the reclaim idle time keeps its entry: no second consumer of the
group takes it over while the first is still working (real Redis, real consumer groups)."""

from __future__ import annotations

import asyncio
import gc
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from redis.asyncio import Redis

import contracts
from bus import streams
from bus.consumer import ConsumerConfig
from contracts import Envelope
from contracts.registry import RegisterService
from tests.integration.consumer_child import running_consumer

IDLE_MS = 300
HANDLER_S = 2.0  # more than six times the idle time


def config(name: str) -> ConsumerConfig:
    return ConsumerConfig(consumer=name, reclaim_idle_ms=IDLE_MS, max_deliveries=5, max_message_bytes=1 << 20,
                          maxlen=10_000, polling_ms=50)


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Redis]:
    c = Redis.from_url(redis_url)
    yield c
    await c.aclose()


async def test_a_long_handler_is_not_reclaimed_by_another_consumer_while_it_works(
    redis_url: str, client: Redis,
) -> None:
    calls: list[tuple[str, str]] = []
    done = anyio.Event()

    def slow(name: str) -> Any:
        async def handle(envelope: Envelope[Any]) -> None:
            calls.append((name, envelope.data.instance))
            await anyio.sleep(HANDLER_S)
            done.set()
        return handle

    # Given two consumers of the registry group, each reclaiming entries idle for 300 ms
    async with running_consumer(redis_url, slow("a"), config(f"a-{uuid.uuid4().hex[:6]}")) as a, \
            running_consumer(redis_url, slow("b"), config(f"b-{uuid.uuid4().hex[:6]}")) as b:
        # When one command arrives whose handling takes 2 s
        envelope = Envelope(data=RegisterService(instance="slow-1", role="worker"))
        await client.xadd(streams.COMMANDS, {"message": contracts.dumps(envelope)})
        with anyio.fail_after(15):
            await done.wait()
            # (give any reclaimer that wrongly took it over a second to start its own call)
            await anyio.sleep(1.0)
        # Then it was handled exactly once, by one consumer, and acknowledged
        assert len(calls) == 1, calls
        for _ in range(100):
            if not (await client.xpending(streams.COMMANDS, "registry"))["pending"]:
                break
            await anyio.sleep(0.05)
        else:
            pytest.fail("the entry was never acknowledged")
        assert a.processed + b.processed == 1


async def test_quick_handlers_leave_no_reference_cycles_for_the_collector(redis_url: str, client: Redis) -> None:
    # Given a consumer whose handler returns at once (the common case: most deliveries are skipped or quick)
    handled = 0

    async def quick(envelope: Envelope[Any]) -> None:
        nonlocal handled
        handled += 1

    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what the collector finds is kept in gc.garbage instead of freed
    try:
        async with running_consumer(redis_url, quick, config(f"q-{uuid.uuid4().hex[:6]}")):
            # When 50 commands are handled
            for i in range(50):
                envelope = Envelope(data=RegisterService(instance=f"quick-{i}", role="worker"))
                await client.xadd(streams.COMMANDS, {"message": contracts.dumps(envelope)})
            with anyio.fail_after(15):
                while handled < 50:  # noqa: ASYNC110  (the handler's count is the event)
                    await anyio.sleep(0.02)
            gc.collect()
            # Then no cancelled refresher (or anything else of the delivery) was left in a cycle
            # (redis-py's connection handshake leaves a few ResponseErrors per new connection on Redis 7.0:
            # per connection, not per delivery)
            cancelled = [o for o in gc.garbage if isinstance(o, asyncio.CancelledError)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert cancelled == []
