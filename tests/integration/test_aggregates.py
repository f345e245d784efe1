"""AggregateStore keeps the streams it read and completes them with newer events only."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator

import pytest

from bus.aggregates import AggregateStore
from bus.store import EventStore
from contracts import Envelope
from contracts.registry import HeartbeatRecorded

AT = dt.datetime(2026, 11, 23, tzinfo=dt.UTC)


def clock() -> dt.datetime:
    return AT


@pytest.fixture
def store(sqlite_env: dict[str, str]) -> Iterator[EventStore]:
    s = EventStore(sqlite_env)
    yield s
    s.close()


def beat(n: int) -> list[HeartbeatRecorded]:
    return [HeartbeatRecorded(instance=f"i-{n}", at=AT)]


async def test_a_stream_read_before_is_completed_with_what_others_appended(store: EventStore) -> None:
    # Given two processes' aggregate stores over one event store, and a stream the first has read
    mine, theirs = AggregateStore(store, clock), AggregateStore(store, clock)
    stream = uuid.uuid4()
    for n in range(3):
        await mine.execute(stream, Envelope(data=beat(n)[0]), lambda h, n=n: beat(n))
    assert len(await mine.history(stream)) == 3
    # When the other appends more (and the first decides on top of them)
    for n in range(3, 5):
        await theirs.execute(stream, Envelope(data=beat(n)[0]), lambda h, n=n: beat(n))
    await mine.execute(stream, Envelope(data=beat(5)[0]), lambda h: beat(len(h)))
    # Then each history is the whole stream, in order, exactly as a fresh read gives it
    fresh = store.load(stream)
    assert [e.id for e in await mine.history(stream)] == [e.id for e in fresh]
    assert [e.data.instance for e in fresh] == [f"i-{n}" for n in range(6)]
    assert store.load(stream, after_version=4) == fresh[4:]


async def test_the_cache_is_bounded_and_a_dropped_stream_is_read_again(store: EventStore) -> None:
    aggregates = AggregateStore(store, clock, cached_events=4)
    a, b = uuid.uuid4(), uuid.uuid4()
    for stream in (a, b):
        for n in range(3):
            await aggregates.execute(stream, Envelope(data=beat(n)[0]), lambda h, n=n: beat(n))
    # b pushed a out (3 + 3 > 4); reading a again still gives all of it
    assert len(await aggregates.history(a)) == 3
    assert len(await aggregates.history(b)) == 3
    assert sum(len(h) for h in aggregates._known.values()) <= 4
