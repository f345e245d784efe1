"""The monitor on a real event store (SQLite): `handle()` appends through `bus.aggregates`, and
continuous monitoring runs a real pytest project in a subprocess."""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from actors.monitor import decide, history
from actors.monitor import router as monitor
from actors.monitor.schedule import RunTests, run_monitoring
from bus.aggregates import AggregateStore
from bus.store import EventStore
from contracts import Envelope, natural_id
from contracts.failures import FailureDetected, FlakinessChanged
from contracts.monitoring import OutcomesRecorded
from contracts.runs import (
    MonitoringStarted,
    MonitoringStopped,
    RunRecorded,
    RunReported,
    StartMonitoring,
    StopMonitoring,
    StormDetected,
)
from contracts.values import FailureClass, FailureEvidence, Outcome, TestResult

T0 = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)
PROJECT = "shop"
RENAMED = FailureEvidence(exception_type="AttributeError", message="module 'cart' has no attribute 'total_price'",
                          file="tests/test_cart.py", line=12, failing_frame="test_total")


@pytest.fixture
def store(sqlite_env: dict[str, str]) -> Iterator[EventStore]:
    es = EventStore(sqlite_env)
    yield es
    es.close()


class Reports:
    """`deps.report` for the tests: what continuous monitoring reported, in order."""

    def __init__(self) -> None:
        self.runs: list[RunReported] = []
        self.first = anyio.Event()

    async def __call__(self, run: RunReported) -> None:
        self.runs.append(run)
        self.first.set()


def make_deps(store: EventStore, report: Reports | None = None) -> monitor.MonitorDeps:
    clock = lambda: T0  # noqa: E731
    return monitor.MonitorDeps(aggregates=AggregateStore(store, clock), clock=clock, report=report or Reports())


def result(name: str, outcome: Outcome, evidence: FailureEvidence | None = None) -> TestResult:
    return TestResult(test_id=f"tests/test_cart.py::{name}", outcome=outcome, evidence=evidence)


def reported(run_id: str, *results: TestResult, commit: str = "abc") -> Envelope[Any]:
    return Envelope(data=RunReported(project=PROJECT, run_id=run_id, results=results, commit=commit,
                                     repo_path="/repos/shop", source="ci"))


def mostly_green(run_id: str, *results: TestResult, commit: str = "abc") -> Envelope[Any]:
    return reported(run_id, *results, *(result(f"ok{i}", Outcome.PASSED) for i in range(6)), commit=commit)


def run_events(store: EventStore, run_id: str) -> list[Envelope[Any]]:
    return store.load(natural_id("run", PROJECT, run_id))


async def test_a_run_with_a_failure_is_recorded_and_detected_once(store: EventStore) -> None:
    deps = make_deps(store)
    # Given a run with a renamed symbol among passing tests
    envelope = mostly_green("r1", result("total", Outcome.FAILED, RENAMED))
    # When the monitor handles it
    await monitor.handle(deps, envelope)
    # Then the run's stream holds run.recorded and one failure.detected, caused by the report
    events = run_events(store, "r1")
    assert [type(e.data) for e in events] == [RunRecorded, FailureDetected]
    assert {e.causation_id for e in events} == {str(envelope.id)}
    detected = events[1].data
    assert detected.category is FailureClass.RENAMED_SYMBOL and detected.test_id == "tests/test_cart.py::total"
    # And the project's watch now follows the failing test
    watch = store.load(history.watch_id(PROJECT))
    assert [type(e.data) for e in watch] == [OutcomesRecorded]
    position = store.max_position()

    # When the same envelope is delivered again, and the same run is reported under a new message id
    await monitor.handle(deps, envelope)
    await monitor.handle(deps, mostly_green("r1", result("total", Outcome.FAILED, RENAMED)))
    # Then nothing more is appended anywhere
    assert store.max_position() == position


async def test_flakiness_found_through_the_store_turns_failures_into_flaky(store: EventStore) -> None:
    deps = make_deps(store)
    # Given a test that failed and then passed on the same commit
    await monitor.handle(deps, mostly_green("r1", result("total", Outcome.FAILED, RENAMED)))
    await monitor.handle(deps, mostly_green("r2", result("total", Outcome.PASSED)))
    watch = [e.data for e in store.load(history.watch_id(PROJECT))]
    assert [type(e) for e in watch] == [OutcomesRecorded, OutcomesRecorded, FlakinessChanged]
    assert watch[-1].flaky is True
    # When it fails again
    await monitor.handle(deps, mostly_green("r3", result("total", Outcome.FAILED, RENAMED)))
    # Then the failure is detected as flaky, for quarantine
    detected = [e.data for e in run_events(store, "r3") if isinstance(e.data, FailureDetected)]
    assert [d.category for d in detected] == [FailureClass.FLAKY]


async def test_a_storm_starts_no_heals_and_leaves_the_watch_alone(store: EventStore) -> None:
    deps = make_deps(store)
    refused = FailureEvidence(exception_type="ConnectionRefusedError", message="[Errno 111] Connection refused")
    envelope = reported("r1", *(result(f"t{i}", Outcome.FAILED, refused) for i in range(8)),
                        result("ok", Outcome.PASSED))
    await monitor.handle(deps, envelope)
    assert [type(e.data) for e in run_events(store, "r1")] == [RunRecorded, StormDetected]
    assert store.load(history.watch_id(PROJECT)) == []


async def test_monitoring_start_then_stop_is_recorded(store: EventStore) -> None:
    deps = make_deps(store)
    start = Envelope(data=StartMonitoring(project=PROJECT, path="/repos/shop", test_cmd="pytest -q", interval_s=60))
    await monitor.handle(deps, start)
    await monitor.handle(deps, start)  # redelivered
    assert [m.project for m in deps.monitorings.active()] == [PROJECT]
    await monitor.handle(deps, Envelope(data=StopMonitoring(project=PROJECT)))
    events = [e.data for e in store.load(natural_id("monitoring", PROJECT))]
    assert events == [
        MonitoringStarted(project=PROJECT, path="/repos/shop", test_cmd="pytest -q", interval_s=60),
        MonitoringStopped(project=PROJECT),
    ]
    assert deps.monitorings.active() == []


# --- continuous monitoring of a real pytest project -------------------------------------------

PROJECT_FILES = {
    "cart.py": "def subtotal(items):\n    return sum(items)\n",
    "tests/__init__.py": "",
    "tests/test_cart.py": textwrap.dedent("""\
        import cart


        def test_subtotal():
            assert cart.subtotal([1, 2]) == 3


        def test_total():
            assert cart.total_price([1, 2]) == 3
        """),
}


def simple_run_tests(path: str, test_cmd: str) -> Any:
    """A minimal runner for when `actors.testrun` is not there: pytest's `-rA` summary, one result per
    line, with the exception as the message."""
    wide = {**os.environ, "COLUMNS": "1000"}  # pytest shortens summary lines to the terminal's width
    out = subprocess.run([*test_cmd.split(), "-rA"], cwd=path, capture_output=True, text=True, timeout=120,
                         env=wide).stdout
    results = []
    for m in re.finditer(r"^(PASSED|FAILED|ERROR) (\S+)(?: - (\w+): (.*))?$", out, re.MULTILINE):
        outcome = Outcome[m.group(1)]
        evidence = FailureEvidence(exception_type=m.group(3), message=m.group(4)) if m.group(3) else None
        results.append(TestResult(test_id=m.group(2), outcome=outcome, evidence=evidence))

    class Run:
        def __init__(self) -> None:
            self.results = tuple(results)

    return Run()


def runner() -> RunTests:
    try:
        from actors.testrun import run_tests
    except ImportError:
        return simple_run_tests
    return run_tests


async def test_continuous_monitoring_runs_a_real_project_and_reports_it(store: EventStore, tmp_path: Path) -> None:
    for name, text in PROJECT_FILES.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    reports = Reports()
    deps = make_deps(store, reports)
    test_cmd = f"{sys.executable} -m pytest -q -p no:cacheprovider"
    # Given monitoring was started (by a command another process handled: this one loads it from the store)
    await monitor.handle(make_deps(store), Envelope(data=StartMonitoring(
        project=PROJECT, path=str(tmp_path), test_cmd=test_cmd, interval_s=3600)))

    async def projects() -> list[str]:
        return [PROJECT]

    # When continuous monitoring runs until its first report
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: run_monitoring(deps, runner(), projects, poll_s=0.05))
        with anyio.move_on_after(90):
            await reports.first.wait()
        tg.cancel_scope.cancel()

    # Then it reported the run, as the monitor's own source, with the failing and passing tests
    assert len(reports.runs) == 1, "no run was reported within 90s"
    run = reports.runs[0]
    assert run.source == "cars-monitor" and run.project == PROJECT and run.run_id.startswith("monitor-")
    outcomes = {r.test_id.split("::")[-1]: r.outcome for r in run.results}
    assert outcomes == {"test_subtotal": Outcome.PASSED, "test_total": Outcome.FAILED}

    # And the report, handled as the ingest stream would deliver it, detects the renamed symbol
    await monitor.handle(deps, Envelope(data=run, id=uuid.uuid4()))
    detected = [e.data for e in run_events(store, run.run_id) if isinstance(e.data, FailureDetected)]
    assert [(d.test_id.split("::")[-1], d.category) for d in detected] == [("test_total", FailureClass.RENAMED_SYMBOL)]
    assert decide.fold_run(run_events(store, run.run_id))
