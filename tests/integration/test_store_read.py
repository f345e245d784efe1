"""`EventStore.read`, the runner's and the relay's way into the log, against eventsourcing's own path,
and `EventStore.load_many` against `load`.

On SQLite the store selects the rows itself (no Notification object, no UUID parsed twice per
event); on PostgreSQL it goes through `select_notifications`. Either way a page must hold exactly
what eventsourcing's notifications decode to, one by one through the mapper: the same positions,
envelopes, stream ids and versions, with and without a filter on types, from any position.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import pytest

import bus.store
from bus.store import EventStore
from tests.integration.store_views import WriterAndReader
from tests.integration.test_replay_batches import write_history


def by_recorder(store: EventStore, after: int, limit: int, types: Sequence[str]) -> list[tuple[int, Any]]:
    """The page as eventsourcing gives it, each notification decoded by the mapper."""
    found = store.recorder.select_notifications(start=after, limit=limit, topics=types, inclusive_of_start=False)
    return [(n.id, store.mapper.to_envelope(n)) for n in found]


def by_store(store: EventStore, after: int, limit: int, types: Sequence[str]) -> list[tuple[int, Any]]:
    return [(r.position, r.envelope) for r in store.read(after=after, limit=limit, types=types)]


class ReadContract(WriterAndReader):
    @pytest.mark.parametrize("types", [(), ("heal.requested", "repair.applied", "service.heartbeat_recorded")])
    def test_every_page_equals_the_recorders_notifications_decoded(
        self, stores: tuple[EventStore, EventStore], types: tuple[str, ...]
    ) -> None:
        writer, reader = stores
        # Given a history of every view's events
        head = write_history(writer)
        # When the log is read in pages of a few sizes, from every kind of starting point
        for limit in (1, 7, 1000):
            after, pages = 0, 0
            while page := by_store(reader, after, limit, types):
                # Then each page is what eventsourcing's path gives, envelope for envelope
                assert page == by_recorder(reader, after, limit, types)
                after, pages = page[-1][0], pages + 1
            assert pages > 0
        everything = by_store(reader, 0, head, types)
        assert len(everything) > 10
        assert by_store(reader, head, 10, types) == []
        # and the stream of each event is the stream it was appended to, as a UUID
        for _, envelope in everything:
            assert isinstance(envelope.stream_id, uuid.UUID)
            assert writer.load(envelope.stream_id)[envelope.stream_version - 1] == envelope
        if types:
            assert {e.type for _, e in everything} == set(types)


    @pytest.mark.parametrize("chunk", [2, bus.store.LOAD_MANY_CHUNK])
    def test_load_many_is_load_of_each_stream(
        self, stores: tuple[EventStore, EventStore], chunk: int, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        writer, reader = stores
        monkeypatch.setattr(bus.store, "LOAD_MANY_CHUNK", chunk)
        # Given a history of many streams, some long
        write_history(writer)
        streams = sorted({r.envelope.stream_id for r in reader.read(after=0, limit=100_000)}, key=str)
        assert len(streams) > 5
        # When several streams are loaded at once, each from its own version (0: all of it; past the
        # end: nothing), along with a stream that does not exist
        after = {sid: i % 3 for i, sid in enumerate(streams)}
        after[streams[0]] = len(writer.load(streams[0])) + 5
        missing = uuid.uuid4()
        after[missing] = 0
        # Then each is what `load` gives for it, by the store that wrote them and by another one
        for store in (writer, reader):
            loaded = store.load_many(after)
            assert loaded == {sid: store.load(sid, version) for sid, version in after.items()}
            assert loaded[streams[0]] == [] and loaded[missing] == []
            assert sum(len(events) for events in loaded.values()) > len(streams)


class TestSQLite(ReadContract):
    @pytest.fixture
    def store_env(self, sqlite_env: dict[str, str]) -> dict[str, str]:
        return sqlite_env


class TestSQLiteCompressed(ReadContract):
    @pytest.fixture
    def store_env(self, sqlite_env: dict[str, str]) -> dict[str, str]:
        return {**sqlite_env, "COMPRESSOR_TOPIC": "eventsourcing.compressor:ZlibCompressor"}


@pytest.mark.postgres
class TestPostgres(ReadContract):
    @pytest.fixture
    def store_env(self, postgres_env: dict[str, str]) -> dict[str, str]:
        return postgres_env
