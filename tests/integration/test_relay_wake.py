"""The relay wakes when its own process appends (`EventStore.on_append` -> `Relay.wake`), instead of
at its next poll; appends of another process are still found by the poll. Real Redis, real SQLite."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator

import anyio
import pytest
from redis.asyncio import Redis

from bus.relay import Relay
from bus.store import EventStore
from tests.integration.test_relay import MAXLEN, append_events, assert_exactly_once, read_all, wait_for_position

POLL_S = 3.0  # far longer than a wake-up may take


@pytest.fixture
def stores(sqlite_env: dict[str, str]) -> Iterator[tuple[EventStore, EventStore]]:
    mine, other = EventStore(sqlite_env), EventStore(sqlite_env)
    yield mine, other
    mine.close()
    other.close()


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Redis]:
    c = Redis.from_url(redis_url)
    yield c
    await c.aclose()


async def test_an_append_of_this_process_is_published_without_waiting_for_the_poll(
    stores: tuple[EventStore, EventStore], client: Redis,
) -> None:
    mine, other = stores
    # Given an idle relay that polls every 3 s, woken by appends to `mine`
    relay = Relay(mine, client, maxlen=MAXLEN, batch=100)
    mine.on_append(relay.wake)
    async with anyio.create_task_group() as tg:
        tg.start_soon(relay.run, None, POLL_S)
        await anyio.sleep(0.3)  # its first round found nothing: it waits for the poll now

        # When this process appends
        started = time.monotonic()
        positions = await anyio.to_thread.run_sync(append_events, mine, 5)

        # Then the events are published at once, well before the poll would have looked
        await wait_for_position(relay, positions[-1])
        assert time.monotonic() - started < POLL_S / 2

        # And an append by another process (nobody wakes the relay) is found by the poll
        positions = await anyio.to_thread.run_sync(lambda: append_events(other, 3, start=5))
        await anyio.sleep(0.3)
        assert await relay.position() < positions[-1]
        await wait_for_position(relay, positions[-1])
        tg.cancel_scope.cancel()
    # (each of the eight once, in order)
    assert_exactly_once(await read_all(client), mine)
