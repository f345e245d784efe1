"""Continuous monitoring: run each monitored project's tests every `interval_s` and report them.

The loop does not decide anything: it runs the tests (in a worker thread, through a function the
runtime passes in) and puts a `run.reported` on the ingest stream through `deps.report`, so a
scheduled run takes exactly the path a CI run takes.

Run ids come from the project's interval slot (`monitor-<slot>`), so two monitor processes that both
run a project in the same slot report the same run, and the second report is a no-op.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import anyio
from attrs import define, field

from actors.monitor import decide
from actors.monitor.router import MonitorDeps
from contracts.runs import RunReported
from contracts.values import TestResult

log = logging.getLogger(__name__)

SOURCE = "cars-monitor"


class TestRunLike(Protocol):
    """What a test run gives back; `actors.testrun.TestRun` is one."""

    @property
    def results(self) -> tuple[TestResult, ...]: ...


RunTests = Callable[[str, str], TestRunLike]  # (path, test_cmd) -> TestRun; blocking
ListProjects = Callable[[], Awaitable[list[str]]]


@define
class _Slot:
    """When a project runs next (monotonic seconds), and whether a run is under way."""

    due: float = 0.0
    running: bool = False
    failures: int = field(default=0)  # consecutive failed runs, for the log


def run_id_for(monitoring: decide.Monitoring, now_s: float) -> str:
    """The run id of a scheduled run: the same for every process within one interval."""
    return f"monitor-{math.floor(now_s / monitoring.interval_s)}"


async def load_active(deps: MonitorDeps, list_projects: ListProjects) -> int:
    """Fill `deps.monitorings` from the store. Returns how many monitorings are active."""
    for project in await list_projects():
        state = decide.fold_monitoring(await deps.aggregates.history(decide.monitoring_id(project)))
        deps.monitorings.update(project, state)
    return len(deps.monitorings.active())


async def run_once(deps: MonitorDeps, monitoring: decide.Monitoring, run_tests: RunTests,
                   limiter: anyio.CapacityLimiter | None = None) -> RunReported | None:
    """Run one project's tests now and report them; None when the monitoring was stopped meanwhile."""
    # Another process of the group may have consumed the stop: the store is the truth.
    current = decide.fold_monitoring(await deps.aggregates.history(decide.monitoring_id(monitoring.project)))
    deps.monitorings.update(monitoring.project, current)
    if current is None or not current.active:
        return None
    run_id = run_id_for(current, deps.clock().timestamp())
    # abandon_on_cancel: a test run cannot be interrupted from here; cancellation returns at once
    # and the worker thread finishes (or times out) on its own.
    test_run = await anyio.to_thread.run_sync(
        run_tests, current.path, current.test_cmd, limiter=limiter, abandon_on_cancel=True,
    )
    commit: Any = getattr(test_run, "commit", None)
    report = RunReported(
        project=current.project, run_id=run_id, results=tuple(test_run.results),
        commit=commit if isinstance(commit, str) and commit else None,
        repo_path=current.path, test_cmd=current.test_cmd, source=SOURCE,
    )
    await deps.report(report)
    return report


async def run_monitoring(deps: MonitorDeps, run_tests: RunTests, list_projects: ListProjects, *,
                         poll_s: float = 1.0, max_concurrent: int = 1) -> None:
    """Run every active monitoring on its interval, forever (cancel the surrounding scope to stop).

    At most `max_concurrent` test runs at once, and one per project. A failed run is logged with its
    error and tried again at the next interval.
    """
    await load_active(deps, list_projects)
    limiter = anyio.CapacityLimiter(max_concurrent)
    slots: dict[str, _Slot] = {}

    async def one(monitoring: decide.Monitoring, slot: _Slot) -> None:
        try:
            report = await run_once(deps, monitoring, run_tests, limiter)
            slot.failures = 0
            if report is not None:
                log.info("monitoring run reported", extra={
                    "project": monitoring.project, "run_id": report.run_id, "results": len(report.results)})
        except Exception as exc:
            slot.failures += 1
            log.exception("monitoring run of %s failed (%d in a row): %r; retrying in %ss",
                          monitoring.project, slot.failures, exc, monitoring.interval_s)
        finally:
            slot.running = False

    async with anyio.create_task_group() as tg:
        while True:
            now = time.monotonic()
            active = deps.monitorings.active()
            for gone in set(slots) - {m.project for m in active}:
                if not slots[gone].running:
                    del slots[gone]  # stopped: a later start begins a fresh schedule
            for monitoring in active:
                slot = slots.setdefault(monitoring.project, _Slot(due=now))
                if slot.running or now < slot.due:
                    continue
                slot.running = True
                slot.due = now + monitoring.interval_s
                tg.start_soon(one, monitoring, slot)
            await anyio.sleep(poll_s)
