"""A malformed entry on a stream that several actors' groups read is dead-lettered once, not once per
group (real Redis, real consumer groups)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from faststream.redis import RedisBroker, RedisRouter
from redis.asyncio import Redis

from bus import streams
from bus.consumer import ConsumerConfig, run_readers, subscribe
from bus.dlq import list_dead_letters
from contracts import Envelope


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Redis]:
    c = Redis.from_url(redis_url)
    yield c
    await c.aclose()


async def test_a_malformed_command_is_dead_lettered_once_whatever_the_number_of_groups(
    redis_url: str, client: Redis
) -> None:
    handled: list[str] = []

    async def handler(envelope: Envelope[Any]) -> None:
        handled.append(envelope.type)

    # Given three groups reading cars.commands, as registry, healer and provisioner do
    broker = RedisBroker(redis_url, logger=None)
    router = RedisRouter()
    config = ConsumerConfig(consumer=f"c-{uuid.uuid4().hex[:6]}", reclaim_idle_ms=60_000, max_deliveries=3,
                            max_message_bytes=1 << 20, maxlen=10_000, polling_ms=50)
    async def get_client() -> Redis:
        return client

    consumers, readers = zip(*(subscribe(router, client=get_client, stream=streams.COMMANDS, group=group,
                                         handler=handler, accepts=None, config=config, title=group)
                               for group in ("registry", "healer", "provisioner")), strict=True)
    broker.include_router(router)
    await broker.connect()
    await broker.start()
    try:
        async with run_readers(readers):
            # When one malformed entry arrives
            bad_id = (await client.xadd(streams.COMMANDS, {"message": "{not json"})).decode()
            for _ in range(300):
                seen = await client.xinfo_groups(streams.COMMANDS)
                if len(seen) == 3 and all(int(g["entries-read"] or 0) >= 1 and int(g["pending"]) == 0 for g in seen):
                    break
                await anyio.sleep(0.05)
            else:
                pytest.fail("the groups did not all read and ack the entry")
    finally:
        with anyio.CancelScope(shield=True):
            await broker.stop()
    # Then there is one dead letter for it, and no group left it pending
    letters = [d for d in await list_dead_letters(client) if d.original_id == bad_id]
    assert len(letters) == 1, letters
    assert letters[0].reason.startswith("invalid message: not valid JSON")
    for group in ("registry", "healer", "provisioner"):
        assert (await client.xpending(streams.COMMANDS, group))["pending"] == 0, group
    assert handled == []
    assert sorted(c.dead_lettered for c in consumers) == [0, 0, 1]
