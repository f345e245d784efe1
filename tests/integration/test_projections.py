"""Projections over a real event store and a real view database, on SQLite and on PostgreSQL.

Every test body is written once in `ProjectionContract` and runs on both stores (STYLE rule 19).
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import anyio.to_thread
import pytest

from bus.store import ConcurrencyConflict, EventStore
from contracts import Envelope, natural_id
from contracts.registry import HeartbeatRecorded, ServiceDeregistered, ServiceLost, ServiceRegistered
from contracts.runs import RunRecorded
from projections.db import Tx, ViewDB
from projections.replay import check, rebuild
from projections.runner import ProjectionRunner
from projections.services import ServicesView, list_services
from projections.views import RecordedEvent, default_views
from tests.integration.store_views import StoreAndViews

T0 = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)


def at(seconds: float) -> str:
    return (T0 + dt.timedelta(seconds=seconds)).isoformat(timespec="microseconds")


class History:
    """Appends envelopes to their streams, keeping each stream's expected version."""

    def __init__(self, store: EventStore, after_each: Callable[[], object]) -> None:
        self.store = store
        self.after_each = after_each
        self.versions: dict[uuid.UUID, int] = {}

    def append(self, stream: uuid.UUID, data: Any, t: float) -> int:
        version = self.versions.get(stream, 0)
        env = Envelope(data=data, occurred_at=T0 + dt.timedelta(seconds=t))
        [position] = self.store.append(stream, version, [env])
        self.versions[stream] = version + 1
        self.after_each()
        return position

    def service(self, data: Any, t: float) -> int:
        return self.append(natural_id("service", data.instance), data, t)

    def run(self, run_id: str, t: float) -> int:
        data = RunRecorded(project="shop", run_id=run_id, total=3, passed=2, failed=1, failed_tests=("t_a",))
        return self.append(natural_id("run", "shop", run_id), data, t)


def register(instance: str, t: float, **fields: Any) -> ServiceRegistered:
    values = {"role": "worker", "version": "1.0", "actors": ("healer",), "host": "box", "pid": 10,
              "started_at": T0 + dt.timedelta(seconds=t - 1), **fields}
    return ServiceRegistered(instance=instance, **values)


def beat(instance: str, t: float) -> HeartbeatRecorded:
    return HeartbeatRecorded(instance=instance, at=T0 + dt.timedelta(seconds=t))


def write_mixed_history(store: EventStore, after_each: Callable[[], object] = lambda: None) -> None:
    """Registrations, heartbeats, a loss and a comeback, a deregistration, unrelated runs, a
    conflicting append (a permanent gap on PostgreSQL), and unrelated events at the very end.

    `after_each` runs after every append (to fold the history as it is written)."""
    h = History(store, after_each)
    h.service(register("w1", 1, actors=("monitor", "healer")), 1)
    h.service(register("w2", 2, role="validator", pid=20), 2)
    h.run("r1", 3)
    h.service(beat("w1", 10), 10)
    h.service(beat("w2", 11), 11)
    h.service(ServiceLost(instance="w2", last_seen_at=T0, timeout_s=35.0), 50)
    h.run("r2", 51)
    h.service(beat("w2", 60), 60)
    h.service(register("w3", 61, version="2.0"), 61)
    h.service(ServiceDeregistered(instance="w3", reason="shutdown"), 62)
    h.service(beat("w1", 70), 70)
    with pytest.raises(ConcurrencyConflict):  # a redelivered registration of w1
        store.append(natural_id("service", "w1"), 0, [Envelope(data=register("w1", 1), occurred_at=T0)])
    h.run("r3", 80)
    h.run("r4", 81)


EXPECTED = [
    {"instance": "w1", "role": "worker", "version": "1.0", "actors": ["monitor", "healer"], "host": "box",
     "pid": 10, "started_at": at(0), "status": "alive", "last_seen_at": at(70)},
    {"instance": "w2", "role": "validator", "version": "1.0", "actors": ["healer"], "host": "box",
     "pid": 20, "started_at": at(1), "status": "alive", "last_seen_at": at(60)},
    {"instance": "w3", "role": "worker", "version": "2.0", "actors": ["healer"], "host": "box",
     "pid": 10, "started_at": at(60), "status": "deregistered", "last_seen_at": at(61)},
]


def without_position(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k != "updated_position"} for row in rows]


def table_exists(db: ViewDB, name: str) -> bool:
    with db.transaction(readonly=True) as tx:
        if db.dialect == "sqlite":
            tx.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
        else:
            tx.execute("SELECT table_name FROM information_schema.tables "
                       "WHERE table_schema = current_schema() AND table_name = ?", (name,))
        return tx.fetchone() is not None


class Boom(RuntimeError):
    pass


class CrashingServicesView(ServicesView):
    """The services view, failing on its `fail_at`-th event (a bug or a lost database mid-batch), after
    writing the rows of the events before it in that batch."""

    def __init__(self, fail_at: int) -> None:
        self.fail_at = fail_at
        self.calls = 0

    def apply_many(self, tx: Tx, events: Sequence[RecordedEvent], prefix: str) -> None:
        before, self.calls = self.calls, self.calls + len(events)
        if before < self.fail_at <= self.calls:
            super().apply_many(tx, events[: self.fail_at - before - 1], prefix)
            raise Boom(f"event #{self.fail_at}")
        super().apply_many(tx, events, prefix)


class CountingView:
    """Counts the events it folds: applying one twice shows up as a wrong count."""

    name: str = "counting"
    types: frozenset[str] = frozenset({"service.heartbeat_recorded", "run.recorded"})
    key: tuple[str, ...] = ("kind",)

    def table_names(self, prefix: str) -> list[str]:
        return [f"{prefix}counting"]

    def tables(self, prefix: str) -> list[str]:
        return [f"CREATE TABLE IF NOT EXISTS {prefix}counting (kind TEXT PRIMARY KEY, n BIGINT NOT NULL)"]

    def apply(self, tx: Tx, recorded: RecordedEvent, prefix: str) -> None:
        tx.execute(f"INSERT INTO {prefix}counting (kind, n) VALUES (?, 1) "
                   f"ON CONFLICT (kind) DO UPDATE SET n = {prefix}counting.n + 1", (recorded.envelope.type,))

    def dump(self, tx: Tx, prefix: str) -> list[dict[str, Any]]:
        tx.execute(f"SELECT kind, n FROM {prefix}counting")
        return sorted(tx.fetchall(), key=lambda row: row["kind"])


class ProjectionContract(StoreAndViews):
    """The test bodies; subclasses choose the store."""

    def test_the_view_folds_a_mixed_history(self, store: EventStore, db: ViewDB) -> None:
        # Given a mixed history in the store
        write_mixed_history(store)
        # When the runner catches up
        runner = ProjectionRunner(store, db, default_views())
        applied = runner.catch_up()
        # Then the services view shows each service's final state, and each view was given only its events:
        # the 9 service events to the services view, the 4 runs to the run trends view
        assert without_position(list_services(db)) == EXPECTED
        assert applied == 9 + 4

    def test_tracking_reaches_the_end_of_the_log_when_it_ends_with_other_types(
        self, store: EventStore, db: ViewDB
    ) -> None:
        # Given a history whose last events are runs, which the services view does not fold
        write_mixed_history(store)
        # When the runner catches up
        runner = ProjectionRunner(store, db, [ServicesView()])
        runner.catch_up()
        # Then its position is the store's, past the last service event
        last_service_event = max(r["updated_position"] for r in list_services(db))
        assert runner.positions() == {"services": store.max_position()}
        assert store.max_position() > last_service_event
        runner.wait_for(store.max_position(), timeout=1)

    def test_check_finds_no_difference_after_a_mixed_history(self, store: EventStore, db: ViewDB) -> None:
        # Given live views folded incrementally, in small batches, as the mixed history was written
        runner = ProjectionRunner(store, db, default_views(), batch=2)
        write_mixed_history(store, after_each=runner.catch_up)
        # When the live views are checked against a rebuild from position 0
        report = check(store, db, default_views())
        # Then nothing differs, and the scratch tables are gone
        assert report.ok, report.render()
        assert [d.position for d in report.views] == [store.max_position()] * len(default_views())
        assert not table_exists(db, "cars_scratch_services")
        assert not table_exists(db, "cars_scratch_tracking")

    def test_check_reports_a_tampered_view_and_rebuild_repairs_it(
        self, store: EventStore, db: ViewDB
    ) -> None:
        # Given a caught-up view whose rows someone edited behind the runner's back
        write_mixed_history(store)
        ProjectionRunner(store, db, default_views()).catch_up()
        with db.transaction() as tx:
            tx.execute("UPDATE cars_v_services SET status = ? WHERE instance = ?", ("lost", "w1"))
            tx.execute("DELETE FROM cars_v_services WHERE instance = ?", ("w3",))
            tx.execute("INSERT INTO cars_v_services (instance, role, version, actors, host, pid, started_at, "
                       "status, last_seen_at, updated_position) VALUES ('zz', 'r', 'v', '[]', 'h', NULL, "
                       "'x', 'alive', 'x', 1)")
        # When checked
        report = check(store, db, default_views())
        # Then the report names the changed, missing and extra rows
        assert not report.ok
        [diff] = report.differences
        assert diff.view == "services"
        [change] = diff.changed
        assert (change.key, change.columns) == ({"instance": "w1"}, {"status": ("lost", "alive")})
        assert [r["instance"] for r in diff.missing] == ["w3"]
        assert [r["instance"] for r in diff.extra] == ["zz"]
        text = report.render()
        assert "services @" in text and "1 changed, 1 missing, 1 extra" in text
        assert "instance='w1'" in text and "status: live 'lost', rebuilt 'alive'" in text
        # When the view is rebuilt from the log
        positions = rebuild(store, db, default_views(), names=["services"])
        # Then it is right again, and a second check agrees
        assert positions == {"services": store.max_position()}
        assert without_position(list_services(db)) == EXPECTED
        assert check(store, db, default_views()).ok

    def test_rebuild_refuses_an_unknown_view(self, store: EventStore, db: ViewDB) -> None:
        with pytest.raises(ValueError, match=r"unknown view.*nope"):
            rebuild(store, db, default_views(), names=["nope"])

    def test_a_crash_mid_batch_leaves_nothing_half_applied_and_a_restart_completes(
        self, store: EventStore, db: ViewDB
    ) -> None:
        # Given a mixed history and a view that fails on its 5th event, folding 2 events per batch
        write_mixed_history(store)
        crashing = ProjectionRunner(store, db, [CrashingServicesView(fail_at=5)], batch=2)
        # When the runner crashes
        with pytest.raises(Boom):
            crashing.catch_up()
        # Then two whole batches are committed, and the rows are exactly the fold up to the tracked position
        tracked = crashing.positions()["services"]
        fourth_service_event = store.read(after=0, limit=4, types=sorted(ServicesView.types))[-1].position
        assert tracked == fourth_service_event
        reference = ProjectionRunner(store, db, [ServicesView()], prefix="cars_ref_")
        reference.catch_up(upto=tracked)
        with db.transaction(readonly=True) as tx:
            assert ServicesView().dump(tx, "cars_v_") == ServicesView().dump(tx, "cars_ref_")
            assert len(ServicesView().dump(tx, "cars_v_")) == 2
        # When a fresh runner starts again
        restarted = ProjectionRunner(store, db, [ServicesView()], batch=2)
        applied = restarted.catch_up()
        # Then it applies only the rest and ends where the log ends, with the full view
        assert applied == 9 - 4
        assert restarted.positions() == {"services": store.max_position()}
        assert without_position(list_services(db)) == EXPECTED

    def test_two_runners_racing_never_apply_an_event_twice(self, store: EventStore, db: ViewDB) -> None:
        # Given a mixed history and two runners on the same view database
        write_mixed_history(store)
        runners = [ProjectionRunner(store, db, [CountingView(), ServicesView()], batch=1) for _ in range(2)]
        errors: list[BaseException] = []

        def catch_up(runner: ProjectionRunner) -> None:
            try:
                runner.catch_up()
            except BaseException as exc:  # reported below: a thread's exception is otherwise lost
                errors.append(exc)

        # When both set up their tables and catch up at the same time
        threads = [threading.Thread(target=catch_up, args=(r,)) for r in runners]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        # Then every event was counted exactly once
        assert errors == []
        with db.transaction(readonly=True) as tx:
            counts = CountingView().dump(tx, "cars_v_")
        assert counts == [{"kind": "run.recorded", "n": 4}, {"kind": "service.heartbeat_recorded", "n": 4}]
        assert runners[0].positions() == {"counting": store.max_position(), "services": store.max_position()}

    def test_sql_is_written_once_for_both_databases(self, db: ViewDB) -> None:
        # Given a statement with a placeholder, and a literal holding '%' and '?'
        with db.transaction() as tx:
            tx.execute("CREATE TABLE IF NOT EXISTS cars_t_probe (k TEXT PRIMARY KEY, n BIGINT NOT NULL)")
            # When it runs (and an upsert hits an existing key)
            for n in (1, 2):
                tx.execute("INSERT INTO cars_t_probe (k, n) VALUES ('100%?', ?) "
                           "ON CONFLICT (k) DO UPDATE SET n = cars_t_probe.n + excluded.n", (n,))
            tx.execute("SELECT k, n FROM cars_t_probe WHERE k LIKE '100%' AND n > ?", (0,))
            rows = tx.fetchall()
        # Then only the real placeholder took a value
        assert rows == [{"k": "100%?", "n": 3}]

    async def test_run_follows_new_events_until_stopped(self, store: EventStore, db: ViewDB) -> None:
        # Given a running runner (set up first, as the platform does: waiting needs its tracking table)
        runner = ProjectionRunner(store, db, default_views())
        await anyio.to_thread.run_sync(runner.setup)
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(runner.run, stop, 0.01)
            # When events are appended while it runs
            await anyio.to_thread.run_sync(write_mixed_history, store)
            # Then it catches up on its own (the read-your-writes barrier returns)
            await anyio.to_thread.run_sync(runner.wait_for, store.max_position(), 10.0)
            assert without_position(list_services(db)) == EXPECTED
            stop.set()
        # And it stops when asked, leaving nothing more to wait for
        with pytest.raises(TimeoutError):
            runner.wait_for(store.max_position() + 1, timeout=0.05)


class TestSQLite(ProjectionContract):
    @pytest.fixture
    def store_env(self, sqlite_env: dict[str, str]) -> dict[str, str]:
        return sqlite_env


@pytest.mark.postgres
class TestPostgres(ProjectionContract):
    @pytest.fixture
    def store_env(self, postgres_env: dict[str, str]) -> dict[str, str]:
        return postgres_env
