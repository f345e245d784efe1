"""Batched folds over a real event store and view database, on SQLite and PostgreSQL.

The runner folds a page of events per view in one transaction, and a view with `apply_many` reads
and writes each row once per page. These tests hold that to the one-event-at-a-time fold: pages of
one event (each its own transaction, every read going to the database) must give exactly the rows of
large pages (where later events of a page read the working copy), for every view; and a rebuild
interrupted between or inside pages resumes from its tracked positions to the same rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import pytest

from bus.store import EventStore, Recorded
from contracts import natural_id
from contracts.environments import (
    EnvironmentExpired,
    EnvironmentFailed,
    EnvironmentProvisioned,
    EnvironmentReleased,
    EnvironmentRequested,
)
from contracts.registry import HeartbeatRecorded, ServiceDeregistered, ServiceLost, ServiceRegistered
from contracts.repairs import HealRequested, RepairCompleted, repair_stream_id
from contracts.values import FailureClass
from projections.db import Tx, ViewDB
from projections.replay import rebuild
from projections.runner import ProjectionRunner
from projections.statistics import ALL, StatisticsView
from projections.views import LIVE_PREFIX, SCRATCH_PREFIX, View, default_views, fold
from tests.integration.operator_history import R1, Writer, at, failure, write_operator_history
from tests.integration.store_views import StoreAndViews


def write_environments(w: Writer) -> None:
    """Environments in every state: provisioned then released, failed, expired, one requested twice
    (a redelivery: the first request stays), and events about an environment never requested."""
    ids = [natural_id("batch-env", n) for n in range(4)]
    for n, env_id in enumerate(ids):
        w.append(env_id, [EnvironmentRequested(environment_id=env_id, template="python", backend="local",
                                               ttl_s=600, purpose=f"validate:{R1}:{uuid.uuid4()}" if n else "manual",
                                               services=("redis",))], 1000 + n)
    w.append(ids[0], [EnvironmentRequested(environment_id=ids[0], template="other", backend="k8s", ttl_s=60)], 1004)
    w.append(ids[1], [EnvironmentProvisioned(environment_id=ids[1], backend="local", workspace="/tmp/w1",
                                             expires_at=at(2000))], 1005)
    w.append(ids[1], [EnvironmentReleased(environment_id=ids[1])], 1006)
    w.append(ids[2], [EnvironmentFailed(environment_id=ids[2], reason="no disk")], 1007)
    w.append(ids[3], [EnvironmentProvisioned(environment_id=ids[3], backend="local", workspace="/tmp/w3",
                                             expires_at=at(1100)), EnvironmentExpired(environment_id=ids[3],
                                                                                      expired_at=at(1100))], 1008)
    stranger = natural_id("batch-env", "never requested")
    w.append(stranger, [EnvironmentReleased(environment_id=stranger)], 1009)


def write_services(w: Writer) -> None:
    """Registrations, heartbeats (one late), a loss and a comeback, a deregistration and a heartbeat
    after it (ignored), and a heartbeat of an instance never registered."""
    def stream(instance: str) -> uuid.UUID:
        return natural_id("service", instance)

    for n, instance in enumerate(("w1", "w2", "w3")):
        w.append(stream(instance), [ServiceRegistered(instance=instance, role="worker", version=f"1.{n}",
                                                      actors=("healer",), host="box", pid=n, started_at=at(n))], n)
    for t in (10, 20, 30):
        w.append(stream("w1"), [HeartbeatRecorded(instance="w1", at=at(t))], t)
    w.append(stream("w1"), [HeartbeatRecorded(instance="w1", at=at(15))], 31)  # late: last_seen stays at 30
    w.append(stream("w2"), [ServiceLost(instance="w2", last_seen_at=at(1), timeout_s=35.0)], 40)
    w.append(stream("w2"), [HeartbeatRecorded(instance="w2", at=at(41))], 41)
    w.append(stream("w3"), [ServiceDeregistered(instance="w3", reason="shutdown"),
                            HeartbeatRecorded(instance="w3", at=at(43))], 42)
    w.append(stream("ghost"), [HeartbeatRecorded(instance="ghost", at=at(44))], 44)


def write_history(store: EventStore) -> int:
    """Every view's events, mixed in one log; returns the log's last position."""
    w = write_operator_history(store)
    write_environments(w)
    write_services(w)
    return store.max_position()


def write_fractional_seconds(store: EventStore) -> None:
    """Sums of seconds whose rounding depends on their order, (0.1 + 0.2) + 0.3 != 0.1 + (0.2 + 0.3):
    three repairs of one project healed 0.1 s, 0.2 s and 0.3 s after their failures, and three
    validation environments of the first released after 0.1 s, 0.2 s and 0.3 s (the first one then
    also expires, which is not counted again). Every failure, request and environment comes first
    (9 events), then the first completion and release, then the other two of each: a page may start
    with a sum under way and add two amounts to it."""
    w = Writer(store)
    rids = [repair_stream_id("frac", f"fp{n}") for n in range(3)]
    for n, rid in enumerate(rids):
        w.append(natural_id("run", "frac", n), [failure("frac", f"fp{n}", f"t{n}", FailureClass.FLAKY, f"r{n}")], 100)
        w.append(rid, [HealRequested(repair_id=rid, project="frac", test_id=f"t{n}", fingerprint=f"fp{n}",
                                     category=FailureClass.FLAKY)], 100)
    envs = [natural_id("frac-env", n) for n in range(3)]
    for env_id in envs:
        w.append(env_id, [EnvironmentRequested(environment_id=env_id, template="python", backend="local", ttl_s=60,
                                               purpose=f"validate:{rids[0]}:{uuid.uuid4()}")], 100)
    for n in range(3):
        w.append(rids[n], [RepairCompleted(repair_id=rids[n], candidate_id=natural_id("frac-candidate", n),
                                           project="frac", test_id=f"t{n}", category=FailureClass.FLAKY,
                                           strategy="retry", confidence=0.5, patch="--- a\n+++ b\n")],
                 100 + (n + 1) / 10)
        ended: list[Any] = [EnvironmentReleased(environment_id=envs[n])]
        if n == 0:  # ended twice: the second end is not counted
            ended.append(EnvironmentExpired(environment_id=envs[n], expired_at=at(200)))
        w.append(envs[n], ended, 100 + (n + 1) / 10)


def dumps(db: ViewDB, views: Sequence[View], prefix: str) -> dict[str, list[dict[str, Any]]]:
    with db.transaction(readonly=True) as tx:
        return {v.name: v.dump(tx, prefix) for v in views}


class Interrupted(RuntimeError):
    pass


class InterruptedLog:
    """The event log, failing on its `fail_at`-th read (a process killed between two pages)."""

    def __init__(self, store: EventStore, fail_at: int) -> None:
        self.store = store
        self.fail_at = fail_at
        self.reads = 0

    def read(self, after: int = 0, limit: int = 500, types: Sequence[str] = ()) -> list[Recorded]:
        self.reads += 1
        if self.reads == self.fail_at:
            raise Interrupted(f"read #{self.reads}")
        return self.store.read(after=after, limit=limit, types=types)

    def max_position(self) -> int:
        return self.store.max_position()


class FailingView:
    """`view`, failing in its `fail_at`-th page after folding that page's first half into the
    transaction (a bug, or the database lost mid-page)."""

    def __init__(self, view: Any, fail_at: int) -> None:
        self.view = view
        self.name, self.types, self.key = view.name, view.types, view.key
        self.fail_at = fail_at
        self.pages = 0

    def tables(self, prefix: str) -> list[str]:
        return list(self.view.tables(prefix))

    def table_names(self, prefix: str) -> list[str]:
        return list(self.view.table_names(prefix))

    def apply(self, tx: Tx, recorded: Any, prefix: str) -> None:
        self.apply_many(tx, [recorded], prefix)

    def apply_many(self, tx: Tx, events: Sequence[Any], prefix: str) -> None:
        self.pages += 1
        if self.pages == self.fail_at:
            fold(self.view, tx, events[: len(events) // 2], prefix)
            raise Interrupted(f"{self.name}: page #{self.pages}")
        fold(self.view, tx, events, prefix)

    def dump(self, tx: Tx, prefix: str) -> list[dict[str, Any]]:
        return list(self.view.dump(tx, prefix))


class BatchesContract(StoreAndViews):
    @pytest.mark.parametrize("page", [3, 10_000])
    def test_pages_give_exactly_the_rows_of_one_event_at_a_time(
        self, store: EventStore, db: ViewDB, page: int
    ) -> None:
        # Given a mixed history of every view's events
        head = write_history(store)
        views = default_views()
        # When every view is folded one event per page (each event its own transaction), and again
        # in pages of `page` events
        one = rebuild(store, db, views, batch=1, prefix=SCRATCH_PREFIX)
        many = rebuild(store, db, views, batch=page)
        # Then both reach the end of the log, with the same rows in every view
        assert one == many == {v.name: head for v in views}
        singly, paged = dumps(db, views, SCRATCH_PREFIX), dumps(db, views, LIVE_PREFIX)
        for view in views:
            assert paged[view.name] == singly[view.name], view.name
        # and the history reached every view (no vacuous comparison)
        assert all(paged[v.name] for v in views if v.name != "templates")

    def test_live_folding_as_events_arrive_equals_one_page(self, store: EventStore, db: ViewDB) -> None:
        # Given every view caught up after each append (pages of whatever arrived), as a platform runs
        runner = ProjectionRunner(store, db, default_views(), batch=4)
        original = store.append

        def append_and_fold(*args: Any, **kwargs: Any) -> list[int]:
            positions = original(*args, **kwargs)
            runner.catch_up()
            return positions

        store.append = append_and_fold  # type: ignore[method-assign]
        write_history(store)
        store.append = original  # type: ignore[method-assign]
        # When the whole log is folded again in one page
        rebuild(store, db, default_views(), batch=100_000, prefix=SCRATCH_PREFIX)
        # Then every view has the same rows
        assert dumps(db, default_views(), LIVE_PREFIX) == dumps(db, default_views(), SCRATCH_PREFIX)

    @pytest.mark.parametrize("fail_at", [2, 5])
    def test_a_rebuild_killed_between_pages_resumes_to_the_same_rows(
        self, store: EventStore, db: ViewDB, fail_at: int
    ) -> None:
        # Given a history, and the rows of an uninterrupted rebuild
        head = write_history(store)
        rebuild(store, db, default_views(), batch=7, prefix=SCRATCH_PREFIX)
        expected = dumps(db, default_views(), SCRATCH_PREFIX)
        # When a rebuild dies on its `fail_at`-th read of the log
        with pytest.raises(Interrupted):
            rebuild(InterruptedLog(store, fail_at), db, default_views(), batch=7)
        # Then the views stopped part of the way, each with the rows of its tracked position
        runner = ProjectionRunner(store, db, default_views(), batch=7)
        stopped = runner.positions()
        assert 0 < min(stopped.values()) < head
        self._assert_rows_match_positions(store, db, stopped)
        # and a runner started afterwards resumes from there to the rows of the uninterrupted rebuild
        runner.catch_up()
        assert runner.positions() == {v.name: head for v in default_views()}
        assert dumps(db, default_views(), LIVE_PREFIX) == expected

    @pytest.mark.parametrize("failing", ["heals", "statistics"])
    def test_a_view_failing_mid_page_keeps_nothing_of_that_page_and_resumes(
        self, store: EventStore, db: ViewDB, failing: str
    ) -> None:
        # Given a history, and the rows of an uninterrupted rebuild
        head = write_history(store)
        rebuild(store, db, default_views(), batch=5, prefix=SCRATCH_PREFIX)
        expected = dumps(db, default_views(), SCRATCH_PREFIX)
        # When the view `failing` fails half-way through its third page of a rebuild
        views = [FailingView(v, 3) if v.name == failing else v for v in default_views()]
        with pytest.raises(Interrupted):
            rebuild(store, db, views, batch=5)
        # Then no half page was kept: every view has the rows of its tracked position, and the page
        # that failed was kept by no view (a page's rows and positions commit together, for all views)
        stopped = ProjectionRunner(store, db, default_views()).positions()
        assert 0 < stopped[failing] < head
        assert set(stopped.values()) == {stopped[failing]}
        self._assert_rows_match_positions(store, db, stopped)
        # and catching up again ends with the rows of the uninterrupted rebuild
        ProjectionRunner(store, db, default_views(), batch=5).catch_up()
        assert dumps(db, default_views(), LIVE_PREFIX) == expected

    def test_statistics_sums_of_seconds_round_as_one_event_at_a_time(self, store: EventStore, db: ViewDB) -> None:
        # Given sums of seconds whose rounding depends on the order of the additions
        write_fractional_seconds(store)
        # When the statistics view is folded in pages of every size from one event to the whole log
        dumped = {}
        for page in (1, 2, 3, 5, 10, 11, 100):
            rebuild(store, db, [StatisticsView()], batch=page, prefix=f"cars_page{page}_")
            with db.transaction(readonly=True) as tx:
                dumped[page] = StatisticsView().dump(tx, f"cars_page{page}_")
        # Then every page size gives the rows of one event at a time
        for page, rows in dumped.items():
            assert rows == dumped[1], page
        # which add the seconds in log order, each to the sum so far (not a page's sum to the stored one)
        totals = {r["metric"]: r["value"] for r in dumped[1] if r["kind"] == "count" and r["dim"] == ALL}
        assert totals["repair_seconds"] == totals["env_seconds"] == (0.1 + 0.2) + 0.3 != 0.1 + (0.2 + 0.3)
        assert totals["repair_timed"] == totals["environments"] == 3

    def _assert_rows_match_positions(self, store: EventStore, db: ViewDB, positions: dict[str, int]) -> None:
        """Each live view's rows are those of a one-event-at-a-time fold up to its tracked position."""
        for view in default_views():
            ProjectionRunner(store, db, [view], prefix="cars_probe_", batch=1).catch_up(upto=positions[view.name])
            with db.transaction(readonly=True) as tx:
                live, probe = view.dump(tx, LIVE_PREFIX), view.dump(tx, "cars_probe_")
            assert live == probe, f"{view.name} @ {positions[view.name]}"


class TestSQLite(BatchesContract):
    @pytest.fixture
    def store_env(self, sqlite_env: dict[str, str]) -> dict[str, str]:
        return sqlite_env


@pytest.mark.postgres
class TestPostgres(BatchesContract):
    @pytest.fixture
    def store_env(self, postgres_env: dict[str, str]) -> dict[str, str]:
        return postgres_env
