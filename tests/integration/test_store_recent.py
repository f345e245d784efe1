"""Reading back what this process appended (`bus.store.RecentAppends`): the relay and the projections
get, for an event this EventStore appended, the envelope it appended instead of decoding the stored
one again. That is only right if both are equal: checked against a second EventStore on the same
database, which has appended nothing and decodes everything. On SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest

from actors.monitor import batch
from bus.store import ConcurrencyConflict, EventStore, Recorded
from contracts import Envelope
from contracts.registry import HeartbeatRecorded
from tests.integration.store_views import WriterAndReader
from tests.integration.test_monitor_batch import T0, deps_on, flapping_runs


def everything(store: EventStore) -> list[Recorded]:
    out: list[Recorded] = []
    while page := store.read(after=out[-1].position if out else 0, limit=7):
        out += page
    return out


class RecentContract(WriterAndReader):
    async def test_what_was_appended_reads_back_equal_to_what_the_store_decodes(
        self, stores: tuple[EventStore, EventStore],
    ) -> None:
        writer, reader = stores
        # Given a history of many kinds (runs, watches, flakiness, failures) appended by `writer`
        runs = flapping_runs()
        for i in range(0, len(runs), 4):
            await batch.handle_runs(deps_on(writer), runs[i:i + 4])

        # When both read the log, in pages, and with a filter on types
        mine, decoded = everything(writer), everything(reader)

        # Then the writer served its own events from what it appended ...
        assert len(mine) > 40
        assert all(writer._recent.get(r.position, r.envelope.stream_id, r.envelope.stream_version or 0) is r.envelope
                   for r in mine)
        # ... and they equal, field by field, what the store decodes
        assert [(r.position, _fields(r.envelope)) for r in mine] == [
            (r.position, _fields(r.envelope)) for r in decoded]
        types = ["failure.detected", "test.flakiness.changed"]
        assert [_fields(r.envelope) for r in writer.read(limit=1000, types=types)] == [
            _fields(r.envelope) for r in reader.read(limit=1000, types=types)]

    def test_a_refused_append_is_not_remembered(self, stores: tuple[EventStore, EventStore]) -> None:
        writer, reader = stores
        # Given a stream with one event, appended by the reader (another process, for the writer)
        stream = flapping_runs()[0].id
        first = Envelope(data=HeartbeatRecorded(instance="a", at=T0))
        reader.append(stream, 0, [first])
        # When the writer appends at the same version and loses
        with pytest.raises(ConcurrencyConflict):
            writer.append(stream, 0, [Envelope(data=HeartbeatRecorded(instance="b", at=T0))])
        # Then it reads the winner's event, decoded from the store
        [recorded] = writer.read(limit=10)
        assert recorded.envelope.id == first.id and recorded.envelope.data.instance == "a"


def _fields(envelope: Envelope[Any]) -> tuple[Any, ...]:
    return (envelope.id, envelope.type, envelope.data, envelope.occurred_at, envelope.correlation_id,
            envelope.causation_id, envelope.stream_id, envelope.stream_version, dict(envelope.metadata))


class TestSQLite(RecentContract):
    @pytest.fixture
    def store_env(self, sqlite_env: dict[str, str]) -> dict[str, str]:
        return sqlite_env


@pytest.mark.postgres
class TestPostgres(RecentContract):
    @pytest.fixture
    def store_env(self, postgres_env: dict[str, str]) -> dict[str, str]:
        return postgres_env
