"""The reader of new entries (`bus.consumer.BatchReader` without a batch handler), on real Redis: what
one read takes, what is skipped, and what a shutdown leaves pending."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from redis.asyncio import Redis

import contracts
from bus.consumer import BatchReader, ConsumerConfig, StreamConsumer, run_readers
from contracts import Envelope
from contracts.registry import Heartbeat, RegisterService
from tests.integration.waiting import eventually

GROUP = "readers"
TIMEOUT_S = 15.0  # the longest a test waits


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Redis]:
    c = Redis.from_url(redis_url)
    yield c
    await c.aclose()


def reader_of(client: Redis, stream: str, handler: Any) -> BatchReader:
    async def get_client() -> Redis:
        return client

    config = ConsumerConfig(consumer=f"c-{uuid.uuid4().hex[:6]}", reclaim_idle_ms=60_000, max_deliveries=5,
                            max_message_bytes=1 << 20, maxlen=10_000, polling_ms=50)
    consumer = StreamConsumer(client=get_client, stream=stream, group=GROUP, handler=handler,
                              accepts=frozenset({"service.register"}), config=config)
    return BatchReader(consumer)


async def xadd_all(client: Redis, stream: str, envelopes: list[Envelope[Any]]) -> None:
    async with client.pipeline(transaction=True) as pipe:
        for envelope in envelopes:
            pipe.xadd(stream, {"message": contracts.dumps(envelope)})
        await pipe.execute()


async def test_skipped_types_are_acked_together_and_the_rest_handled_in_order(client: Redis) -> None:
    stream = f"test.reader.{uuid.uuid4().hex[:8]}"
    handled: list[str] = []

    async def quick(envelope: Envelope[Any]) -> None:
        handled.append(envelope.data.instance)

    # Given 40 entries queued before the reader starts: 10 of the type its actor handles, 30 it skips
    await client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    envelopes: list[Envelope[Any]] = []
    for i in range(40):
        if i % 4 == 0:
            envelopes.append(Envelope(data=RegisterService(instance=f"svc-{i}", role="ci")))
        else:
            envelopes.append(Envelope(data=Heartbeat(instance=f"svc-{i}")))
    await xadd_all(client, stream, envelopes)

    reader = reader_of(client, stream, quick)
    async with run_readers([reader]):
        async def done() -> bool:
            return int((await client.xinfo_groups(stream))[0]["lag"] or 0) == 0 and len(handled) == 10 \
                and int((await client.xpending(stream, GROUP))["pending"]) == 0

        await eventually(done, "every entry was read and acknowledged")

    # Then the handled type was handled in stream order, each once, and the others were skipped
    assert handled == [f"svc-{i}" for i in range(0, 40, 4)]
    assert reader.consumer.processed == 10
    # in a read of one entry, then a read of everything else that was queued (the handlers are quick;
    # 3 if the first one took over LONG_S on a loaded machine: then the second read takes one entry)
    assert reader.batches <= 3


async def test_after_a_slow_handler_each_read_takes_one_entry(client: Redis) -> None:
    stream = f"test.reader.{uuid.uuid4().hex[:8]}"
    handled: list[str] = []

    async def slow(envelope: Envelope[Any]) -> None:
        await anyio.sleep(BatchReader.LONG_S * 2)
        handled.append(envelope.data.instance)

    # Given five entries its actor handles, queued at once
    await client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    await xadd_all(client, stream, [Envelope(data=RegisterService(instance=f"slow-{i}", role="ci")) for i in range(5)])

    reader = reader_of(client, stream, slow)
    most_pending = 0
    async with run_readers([reader]):
        async def done() -> bool:
            nonlocal most_pending
            most_pending = max(most_pending, int((await client.xpending(stream, GROUP))["pending"]))
            return len(handled) == 5

        await eventually(done, "the five entries were handled")

    # Then every read took one entry: the others stayed in the stream for any free consumer of the group
    assert reader.batches == 5
    assert most_pending == 1
    assert handled == [f"slow-{i}" for i in range(5)]


async def test_a_shutdown_gives_a_running_handler_its_grace_then_leaves_the_entry_pending(client: Redis) -> None:
    stream = f"test.reader.{uuid.uuid4().hex[:8]}"
    started = anyio.Event()

    async def stuck(envelope: Envelope[Any]) -> None:
        started.set()
        await anyio.sleep_forever()

    await client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    await xadd_all(client, stream, [Envelope(data=RegisterService(instance="stuck", role="ci"))])
    reader = reader_of(client, stream, stuck)
    reader.GRACE_S = 0.3

    # Given a handler that never returns, under way
    with anyio.fail_after(TIMEOUT_S):
        async with run_readers([reader]):
            await started.wait()
            before = anyio.current_time()
        # When the readers stop, it is given GRACE_S, then cancelled
        waited = anyio.current_time() - before

    assert 0.25 <= waited < 5.0, waited
    # And its entry stays pending, for the reclaim subscriber of a process that runs
    assert int((await client.xpending(stream, GROUP))["pending"]) == 1
    assert reader.consumer.processed == 0
