"""The services view: Given registry events, When the runner folds them, Then these rows.

The log is a real SQLite event store and the view database a real SQLite file, both under tmp_path.
Gaps in the log's positions (PostgreSQL) are covered by tests/integration/test_projections.py.
"""

from __future__ import annotations

import datetime as dt
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from bus.store import EventStore
from contracts import Envelope
from contracts.registry import HeartbeatRecorded, ServiceDeregistered, ServiceLost, ServiceRegistered
from contracts.runs import RunRecorded
from projections.db import ViewDB
from projections.runner import ProjectionRunner
from projections.services import ServicesView, list_services

T0 = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def registered(instance: str, t: float, **fields: Any) -> Envelope[Any]:
    data = {
        "role": "worker", "version": "1.0", "actors": ("healer", "validator"), "host": "box-1", "pid": 41,
        "started_at": at(t - 1), **fields,
    }
    return Envelope(data=ServiceRegistered(instance=instance, **data), occurred_at=at(t))


def heartbeat(instance: str, t: float, recorded_at: float | None = None) -> Envelope[Any]:
    """A heartbeat sent at `t`, recorded in the log at `recorded_at` (default: at once)."""
    return Envelope(data=HeartbeatRecorded(instance=instance, at=at(t)), occurred_at=at(recorded_at or t))


def lost(instance: str, t: float) -> Envelope[Any]:
    return Envelope(data=ServiceLost(instance=instance, last_seen_at=at(t - 35), timeout_s=35.0),
                    occurred_at=at(t))


def deregistered(instance: str, t: float) -> Envelope[Any]:
    return Envelope(data=ServiceDeregistered(instance=instance), occurred_at=at(t))


def run_recorded(run_id: str, t: float) -> Envelope[Any]:
    data = RunRecorded(project="p", run_id=run_id, total=1, passed=1, failed=0)
    return Envelope(data=data, occurred_at=at(t))


def logged(path: Path, events: Sequence[Envelope[Any]]) -> EventStore:
    """A real SQLite event store holding `events` at positions 1..n, each in a stream of its own."""
    store = EventStore({"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(path)})
    for env in events:
        store.append(uuid.uuid4(), 0, [env])
    return store


@pytest.fixture
def db(tmp_path: Path) -> Iterator[ViewDB]:
    views = ViewDB.sqlite(tmp_path / "views.sqlite")
    yield views
    views.close()


def fold(db: ViewDB, events: Sequence[Envelope[Any]], batch: int = 1000) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        store = logged(Path(tmp) / "events.sqlite", events)
        try:
            ProjectionRunner(store, db, [ServicesView()], batch=batch).catch_up()
        finally:
            store.close()
    return list_services(db)


def by_instance(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["instance"]: row for row in rows}


def test_a_registration_becomes_an_alive_row(db: ViewDB) -> None:
    # Given a registration, When it is folded
    rows = fold(db, [registered("w1", 10, role="all", actors=("monitor",), pid=7, host="h")])
    # Then one alive row carries what the service announced, as JSON-ready values
    assert rows == [{
        "instance": "w1", "role": "all", "version": "1.0", "actors": ["monitor"], "host": "h", "pid": 7,
        "started_at": "2025-03-01T12:00:09.000000+00:00", "status": "alive",
        "last_seen_at": "2025-03-01T12:00:10.000000+00:00", "updated_position": 1,
    }]


def test_heartbeats_move_last_seen_forward_but_never_back(db: ViewDB) -> None:
    # Given a registration, a heartbeat at t=30, then a heartbeat sent at t=20 but recorded later
    events = [registered("w1", 10), heartbeat("w1", 30), heartbeat("w1", 20, recorded_at=31)]
    # When folded
    row = fold(db, events)[0]
    # Then last_seen_at is the newest heartbeat, and the row remembers the last event that touched it
    assert row["last_seen_at"] == at(30).isoformat(timespec="microseconds")
    assert row["status"] == "alive"
    assert row["updated_position"] == 3


def test_a_lost_service_that_heartbeats_again_is_alive(db: ViewDB) -> None:
    # Given w1 lost, and w2 lost then heard from again
    events = [registered("w1", 1), registered("w2", 2), lost("w1", 40), lost("w2", 41), heartbeat("w2", 50)]
    # When folded
    rows = by_instance(fold(db, events))
    # Then only w2 is alive again, seen at its heartbeat
    assert rows["w1"]["status"] == "lost"
    assert rows["w1"]["last_seen_at"] == at(1).isoformat(timespec="microseconds")
    assert rows["w2"]["status"] == "alive"
    assert rows["w2"]["last_seen_at"] == at(50).isoformat(timespec="microseconds")


def test_deregistered_stays_deregistered_until_it_registers_again(db: ViewDB) -> None:
    # Given w1 deregistered, then a heartbeat in flight and a late lost; w2 deregistered then back
    events = [
        registered("w1", 1), registered("w2", 2), deregistered("w1", 10), heartbeat("w1", 9, recorded_at=11),
        lost("w1", 50), deregistered("w2", 12), registered("w2", 20, version="2.0", pid=99),
    ]
    # When folded
    rows = by_instance(fold(db, events))
    # Then w1 is untouched after its deregistration, and w2 is alive with its new registration
    assert rows["w1"]["status"] == "deregistered"
    assert rows["w1"]["updated_position"] == 3
    assert rows["w1"]["last_seen_at"] == at(1).isoformat(timespec="microseconds")
    assert (rows["w2"]["status"], rows["w2"]["version"], rows["w2"]["pid"]) == ("alive", "2.0", 99)


def test_events_about_an_unknown_instance_change_nothing(db: ViewDB) -> None:
    # Given heartbeats, lost and deregistered for a service never registered
    events = [heartbeat("ghost", 1), lost("ghost", 2), deregistered("ghost", 3), registered("w1", 4)]
    # When folded, Then only the registered service has a row
    assert [r["instance"] for r in fold(db, events)] == ["w1"]


def test_services_are_listed_by_instance(db: ViewDB) -> None:
    # Given registrations out of order
    events = [registered("w3", 1), registered("w1", 2), registered("w2", 3)]
    # When folded, Then the listing is ordered by instance
    assert [r["instance"] for r in fold(db, events)] == ["w1", "w2", "w3"]


def test_the_view_tracks_the_log_past_unrelated_events(db: ViewDB, tmp_path: Path) -> None:
    # Given a log whose newest events are of types the view does not fold
    events = [registered("w1", 1), run_recorded("r1", 2), heartbeat("w1", 3), run_recorded("r2", 4)]
    log = logged(tmp_path / "events.sqlite", events)
    runner = ProjectionRunner(log, db, [ServicesView()])
    # When the runner catches up
    applied = runner.catch_up()
    # Then it applied the two service events and tracks the end of the log
    assert applied == 2
    assert runner.positions() == {"services": 4}
    assert list_services(db)[0]["updated_position"] == 3
    # And a second catch-up has nothing to do
    assert runner.catch_up() == 0
    log.close()


@pytest.mark.parametrize("batch", [1, 2, 3])
def test_the_batch_size_does_not_change_the_rows(db: ViewDB, tmp_path: Path, batch: int) -> None:
    # Given a history mixing service events and unrelated events
    events = [
        registered("w1", 1), run_recorded("r1", 2), registered("w2", 3), heartbeat("w1", 4), lost("w2", 40),
        run_recorded("r2", 41), heartbeat("w2", 42), deregistered("w1", 43), run_recorded("r3", 44),
    ]
    # When folded in small batches and in one batch
    small = fold(db, events, batch=batch)
    other = ViewDB.sqlite(tmp_path / "one-batch.sqlite")
    try:
        whole = fold(other, events)
    finally:
        other.close()
    # Then the rows are the same
    assert small == whole
    assert [(r["instance"], r["status"]) for r in small] == [("w1", "deregistered"), ("w2", "alive")]
