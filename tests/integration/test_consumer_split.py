"""A burst of entries is shared by the consumers of a group: an idle consumer's read, and every read
after a slow handler, takes one entry, so a consumer busy with one leaves the next to the others
(real Redis, real consumer groups; see `bus.consumer.BatchReader`)."""

from __future__ import annotations

import collections
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

BURST = 6
HANDLER_S = 0.4


def config(name: str) -> ConsumerConfig:
    # Reclaim far off: only fresh reads are at work here.
    return ConsumerConfig(consumer=name, reclaim_idle_ms=60_000, max_deliveries=5, max_message_bytes=1 << 20,
                          maxlen=10_000, polling_ms=50)


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Redis]:
    c = Redis.from_url(redis_url)
    yield c
    await c.aclose()


async def test_a_burst_written_in_one_transaction_is_shared_by_both_consumers(redis_url: str, client: Redis) -> None:
    handled: list[tuple[str, str]] = []
    all_handled = anyio.Event()

    def slow(name: str) -> Any:
        async def handle(envelope: Envelope[Any]) -> None:
            handled.append((name, envelope.data.instance))
            await anyio.sleep(HANDLER_S)
            if len(handled) == BURST:
                all_handled.set()
        return handle

    # Given two consumers of one group, both waiting for entries
    async with running_consumer(redis_url, slow("a"), config(f"a-{uuid.uuid4().hex[:6]}")), \
            running_consumer(redis_url, slow("b"), config(f"b-{uuid.uuid4().hex[:6]}")):
        await anyio.sleep(0.5)
        # When six commands arrive at once (one MULTI/EXEC, as the relay publishes a batch)
        async with client.pipeline(transaction=True) as pipe:
            for i in range(BURST):
                envelope = Envelope(data=RegisterService(instance=f"burst-{i}", role="ci"))
                pipe.xadd(streams.COMMANDS, {"message": contracts.dumps(envelope)})
            await pipe.execute()
        with anyio.fail_after(30):
            await all_handled.wait()
        for _ in range(100):  # the last acks follow the handlers' return
            if not (await client.xpending(streams.COMMANDS, "registry"))["pending"]:
                break
            await anyio.sleep(0.05)

        assert (await client.xpending(streams.COMMANDS, "registry"))["pending"] == 0
    # Then each was handled once, and both consumers did part of the work
    assert sorted(instance for _, instance in handled) == [f"burst-{i}" for i in range(BURST)]
    per_consumer = collections.Counter(name for name, _ in handled)
    assert set(per_consumer) == {"a", "b"} and min(per_consumer.values()) >= 2, per_consumer
