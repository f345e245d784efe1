"""Continuous monitoring's loop (actors/monitor/schedule.py) on a real SQLite event store: Given active
monitorings, When the loop runs, Then runs are reported on their interval, a failed run is retried,
and a stop recorded by another process ends the runs."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from actors.monitor import decide
from actors.monitor import router as monitor
from actors.monitor.schedule import run_id_for, run_monitoring
from bus.aggregates import AggregateStore
from bus.store import EventStore
from contracts import Envelope
from contracts.runs import MonitoringStarted, MonitoringStopped, RunReported
from contracts.values import Outcome, TestResult

T0 = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)


class StoreAggregates(AggregateStore):
    """The real aggregate store over a real SQLite event store, plus `append` to write history directly."""

    def __init__(self, path: Path) -> None:
        self.events = EventStore({"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(path)})
        super().__init__(self.events, lambda: T0)

    def append(self, stream_id: uuid.UUID, event: Any) -> None:
        version = len(self.events.load(stream_id))
        self.events.append(stream_id, version, [Envelope(data=event, occurred_at=T0)])


@pytest.fixture
def aggregates(tmp_path: Path) -> Iterator[StoreAggregates]:
    store = StoreAggregates(tmp_path / "events.sqlite")
    yield store
    store.events.close()


class Runner:
    """A `run_tests` function that fails its first `failures` calls."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.calls: list[tuple[str, str]] = []

    def __call__(self, path: str, test_cmd: str) -> Any:
        self.calls.append((path, test_cmd))
        if len(self.calls) <= self.failures:
            raise RuntimeError("pytest could not start")

        class Run:
            results = (TestResult(test_id="tests/test_a.py::test_a", outcome=Outcome.PASSED),)

        return Run()


async def wait_until(check: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail("timed out")
        await anyio.sleep(0.01)


def started(project: str, interval_s: int = 1) -> MonitoringStarted:
    return MonitoringStarted(project=project, path=f"/repos/{project}", test_cmd="pytest -q", interval_s=interval_s)


async def test_a_failed_run_is_logged_and_retried_next_interval(
    caplog: pytest.LogCaptureFixture, aggregates: StoreAggregates
) -> None:
    # Given an active monitoring every second, whose first test run fails
    aggregates.append(decide.monitoring_id("shop"), started("shop"))
    reports: list[RunReported] = []

    async def report(run: RunReported) -> None:
        reports.append(run)

    deps = monitor.MonitorDeps(aggregates=aggregates, clock=lambda: T0, report=report)
    runner = Runner(failures=1)

    async def projects() -> list[str]:
        return ["shop"]

    # When the loop runs
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: run_monitoring(deps, runner, projects, poll_s=0.01))
        await wait_until(lambda: reports)
        tg.cancel_scope.cancel()

    # Then the failure was logged with its error, and the next interval's run was reported
    assert "pytest could not start" in caplog.text
    assert len(runner.calls) == 2 and runner.calls[0] == ("/repos/shop", "pytest -q")
    assert [(r.project, r.source, r.repo_path, r.test_cmd) for r in reports] == [
        ("shop", "cars-monitor", "/repos/shop", "pytest -q")]


async def test_a_stop_recorded_elsewhere_ends_the_runs(aggregates: StoreAggregates) -> None:
    # Given this process believes "shop" is monitored, but another process recorded its stop
    aggregates.append(decide.monitoring_id("shop"), started("shop"))
    reports: list[RunReported] = []

    async def report(run: RunReported) -> None:
        reports.append(run)

    deps = monitor.MonitorDeps(aggregates=aggregates, clock=lambda: T0, report=report)
    runner = Runner()

    async def projects() -> list[str]:
        return ["shop"]

    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: run_monitoring(deps, runner, projects, poll_s=0.01))
        await wait_until(lambda: deps.monitorings.active())
        aggregates.append(decide.monitoring_id("shop"), MonitoringStopped(project="shop"))
        await anyio.sleep(1.5)  # past the next interval
        tg.cancel_scope.cancel()

    # Then at most the run begun before the stop was reported, and the monitoring is no longer active
    assert len(reports) <= 1
    assert deps.monitorings.active() == []


async def test_nothing_runs_when_nothing_is_monitored(aggregates: StoreAggregates) -> None:
    async def report(run: RunReported) -> None:
        raise AssertionError("nothing is monitored, so nothing is reported")

    deps = monitor.MonitorDeps(aggregates=aggregates, clock=lambda: T0, report=report)
    runner = Runner()

    async def projects() -> list[str]:
        return ["shop"]

    with anyio.move_on_after(0.2):
        await run_monitoring(deps, runner, projects, poll_s=0.01)
    assert runner.calls == []


def test_run_ids_are_the_same_within_one_interval() -> None:
    m = decide.Monitoring(project="shop", path="/p", test_cmd="pytest", interval_s=300)
    assert run_id_for(m, 600.0) == run_id_for(m, 899.9) == "monitor-2" != run_id_for(m, 900.0)


