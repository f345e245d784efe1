"""`cars repair`: one run of the whole loop for a local repository, through the bus and the store.

1. Run the project's tests (with CARS's pytest plugin, for evidence).
2. Publish one `run.reported` on cars.ingest, exactly as any CI would.
3. Follow the store while the monitor, healer, validator and provisioner work: a running platform
   (`cars up` reachable on this CARS_HOME / REDIS_URL) does the work, otherwise one is started in this
   process for the duration.
4. With `--apply`, approve every validated repair (`repair.approve`, so the decision is recorded), and
   wait until it is applied.
"""

from __future__ import annotations

import contextlib
import functools
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from attrs import define, evolve, field, frozen
from redis.asyncio import Redis

from actors.healer import repairs
from actors.projectconfig import load_project_config
from actors.testrun import run_tests
from bus import runtime, wire
from bus.embedded import running_bus_url
from bus.settings import Settings
from bus.store import EventStore
from contracts import Envelope
from contracts.failures import FailureDetected
from contracts.repairs import ApproveRepair
from contracts.runs import RunRecorded, RunReported, StormDetected

APPROVER = "cars repair --apply"


@frozen(kw_only=True)
class RepairOutcome:
    test_id: str
    category: str
    status: str  # validated | rejected | abandoned
    strategy: str | None
    confidence: float | None
    patch: str | None
    applied: bool
    detail: str


@frozen(kw_only=True)
class SessionResult:
    results: int  # test results in the run
    run_id: str
    failures: list[tuple[str, str]]  # (test_id, category)
    repairs: list[RepairOutcome]
    storm: str | None
    timed_out: bool

    @property
    def applied(self) -> bool:
        return any(r.applied for r in self.repairs)

    def to_json(self) -> dict[str, Any]:
        return {
            "failures": [{"test_id": t, "category": c} for t, c in self.failures],
            "repairs": [{"test_id": r.test_id, "strategy": r.strategy, "confidence": r.confidence,
                         "status": r.status, "patch": r.patch} for r in self.repairs],
            "applied": self.applied,
        }


@define
class _Tracker:
    """What the store has told us so far about this run."""

    run_id: str
    recorded: bool = False
    storm: str | None = None
    failures: dict[str, FailureDetected] = field(factory=dict)  # failure event id -> failure
    approved: set[uuid.UUID] = field(factory=set)  # candidate ids approved by this session
    # Repair histories loaded so far, and the streams that got new events since they were loaded: a
    # run with hundreds of failures does not reload hundreds of streams every poll.
    histories: dict[uuid.UUID, list[Envelope[Any]]] = field(factory=dict)
    stale: set[uuid.UUID] = field(factory=set)

    async def history(self, store: EventStore, failure: FailureDetected) -> list[Envelope[Any]]:
        rid = repairs.repair_id(failure.project, failure.fingerprint)
        if rid in self.stale or rid not in self.histories:
            self.histories[rid] = await anyio.to_thread.run_sync(store.load, rid)
            self.stale.discard(rid)
        return self.histories[rid]


def git_commit(path: Path) -> str | None:
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, timeout=30, check=False)
    return done.stdout.decode().strip() or None if done.returncode == 0 else None


MAX_ROUNDS = 3


async def repair(
    settings: Settings, path: Path, *, test_cmd: str | None, project: str | None, apply: bool,
    timeout_s: float, progress: Callable[[str], None],
) -> SessionResult:
    """Run the tests of the project at `path` (absolute), then `submit` their report.

    With `apply`, the tests run again after the repairs are written: a repair whose test still fails
    then is reported `rejected` (it was validated alone, but not together with the others), and
    failures that were hidden before (a module that could not be collected hides its tests) are
    repaired in another round, up to MAX_ROUNDS.
    """
    config = await anyio.to_thread.run_sync(load_project_config, path)
    cmd = test_cmd or config.test_cmd
    name = project or path.name
    commit = await anyio.to_thread.run_sync(git_commit, path)
    deadline = time.monotonic() + timeout_s
    attempts: dict[str, int] = {}
    hopeless: set[str] = set()  # no strategy had anything to propose: another round changes nothing
    results: list[SessionResult] = []
    for round_no in range(1, MAX_ROUNDS + 1):
        progress(f"running `{cmd}` in {path}" + (f" (round {round_no})" if round_no > 1 else ""))
        run = await anyio.to_thread.run_sync(lambda: run_tests(path, cmd, timeout_s=timeout_s))
        failing = {r.test_id for r in run.failed()}
        progress(f"{len(run.results)} results, {len(failing)} failing (exit code {run.exit_code})")
        if results:
            results[-1] = _verified(results[-1], failing)
        # A failure gets another round when the tree changed under it (other repairs were applied, or
        # a module that could not be collected hid it), at most twice.
        eligible = {t for t in failing if attempts.get(t, 0) < 2 and t not in hopeless}
        if results and not eligible:
            break
        report = RunReported(
            project=name, run_id=f"repair-{uuid.uuid4().hex[:12]}", commit=commit, repo_path=str(path),
            test_cmd=cmd, source="cars repair", auto_apply=apply,
            results=tuple(r for r in run.results if r.test_id not in failing or r.test_id in eligible),
        )
        for test_id in eligible:
            attempts[test_id] = attempts.get(test_id, 0) + 1
        left = max(deadline - time.monotonic(), 1.0)
        results.append(await submit(settings, report, apply=apply, timeout_s=left, progress=progress))
        hopeless |= {r.test_id for r in results[-1].repairs if r.strategy is None}
        if not apply or not any(r.applied for r in results[-1].repairs):
            break
        if results[-1].timed_out:
            run = await anyio.to_thread.run_sync(lambda: run_tests(path, cmd, timeout_s=timeout_s))
            results[-1] = _verified(results[-1], {r.test_id for r in run.failed()})
            break
    else:
        run = await anyio.to_thread.run_sync(lambda: run_tests(path, cmd, timeout_s=timeout_s))
        results[-1] = _verified(results[-1], {r.test_id for r in run.failed()})
    return _merged(results)


def _verified(result: SessionResult, failing: set[str]) -> SessionResult:
    """`result` with every applied repair whose test still fails after applying marked rejected."""
    def still_failing(test_id: str) -> bool:
        return any(f == test_id or f.startswith(test_id + "::") for f in failing)

    repairs_ = [
        evolve(r, status="rejected", detail="validated alone, but still failing once every repair was applied")
        if r.applied and r.status == "validated" and still_failing(r.test_id) else r
        for r in result.repairs
    ]
    return evolve(result, repairs=repairs_)


def _merged(results: list[SessionResult]) -> SessionResult:
    """One result for all rounds: each test once, with its latest round's outcome."""
    first = results[0]
    failures = {test_id: (test_id, category) for r in results for test_id, category in r.failures}
    latest = {x.test_id: x for r in results for x in r.repairs}
    # A repair applied in an earlier round stays applied, whatever a later round says of its test.
    for r in results:
        for x in r.repairs:
            if x.applied and not latest[x.test_id].applied and latest[x.test_id].status != "validated":
                latest[x.test_id] = x
    return SessionResult(
        results=first.results, run_id=first.run_id, failures=list(failures.values()), repairs=list(latest.values()),
        storm=next((r.storm for r in results if r.storm), None), timed_out=any(r.timed_out for r in results),
    )


async def submit(
    settings: Settings, report: RunReported, *, apply: bool, timeout_s: float, progress: Callable[[str], None],
) -> SessionResult:
    """Publish `report` and follow the loop until every failure in it has settled (or `timeout_s`)."""
    run_id = report.run_id
    async with _platform(settings, progress) as (client, store):
        start = await anyio.to_thread.run_sync(store.max_position)
        await wire.publish_inbound(client, Envelope(data=report, correlation_id=run_id),
                                   maxlen=settings.stream_maxlen)
        progress(f"published run.reported {run_id}; following the repair loop")
        tracker = _Tracker(run_id=run_id)
        deadline = time.monotonic() + timeout_s
        timed_out = False
        outcomes: list[RepairOutcome] | None = None
        while outcomes is None:
            if time.monotonic() > deadline:
                timed_out = True
                outcomes = await _outcomes(store, tracker, final=True)
                break
            start = await _read_new(store, start, tracker, progress)
            outcomes = await _settled(store, tracker, client, settings, apply, progress)
            if outcomes is None:
                await anyio.sleep(0.2)
    return SessionResult(
        results=len(report.results), run_id=run_id,
        failures=[(f.test_id, f.category.value) for f in tracker.failures.values()],
        repairs=outcomes, storm=tracker.storm, timed_out=timed_out,
    )


@contextlib.asynccontextmanager
async def _platform(settings: Settings, progress: Callable[[str], None]) -> AsyncIterator[tuple[Redis, EventStore]]:
    """The bus client and the store; a platform is started in this process unless one is running."""
    url = runtime.running_platform_url(settings)
    if url is not None:
        progress(f"using the CARS platform running on {url}")
        client = Redis.from_url(url)
        store = await anyio.to_thread.run_sync(EventStore, settings.store_env())
        try:
            yield client, store
        finally:
            await client.aclose()
            store.close()
        return
    progress("no CARS platform is running: starting one in this process")
    platform = runtime.Platform(settings=settings, actors=runtime.ACTORS, role="repair", api=False, relay=True,
                                projections=True, quiet=True)
    with _reachable_bus(settings) as bus:
        async with platform.started(bus), anyio.create_task_group() as tg:
            tg.start_soon(platform.serve, None)
            assert platform.store is not None
            try:
                yield await platform.redis(), platform.store
            finally:
                tg.cancel_scope.cancel()


@contextlib.contextmanager
def _reachable_bus(settings: Settings) -> Iterator[str]:
    """A bus that answers already (REDIS_URL, or the embedded Redis of a `cars up` on this CARS_HOME),
    else an embedded one started for the session."""
    import redis

    try:
        url = running_bus_url(settings)
        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        try:
            client.ping()
        finally:
            client.close()
    except (RuntimeError, redis.RedisError):
        with runtime.bus_url(settings) as started:
            yield started
        return
    yield url


async def _read_new(store: EventStore, after: int, tracker: _Tracker, progress: Callable[[str], None]) -> int:
    """Read every event after `after` (to the end of the log); returns the last position read."""
    while batch := await anyio.to_thread.run_sync(functools.partial(store.read, after=after, limit=1000)):
        for rec in batch:
            _track(rec.envelope, tracker, progress)
        after = batch[-1].position
    return after


def _track(env: Envelope[Any], tracker: _Tracker, progress: Callable[[str], None]) -> None:
    data = env.data
    if env.stream_id is not None:
        tracker.stale.add(env.stream_id)
    if isinstance(data, RunRecorded) and data.run_id == tracker.run_id:
        tracker.recorded = True
    elif isinstance(data, StormDetected) and data.run_id == tracker.run_id:
        tracker.storm = data.reason
        progress(f"infrastructure storm: {data.reason}; no heals started")
    elif isinstance(data, FailureDetected) and data.run_id == tracker.run_id:
        tracker.failures[str(env.id)] = data
        progress(f"failure {data.test_id}: {data.category.value}")
    elif env.correlation_id == tracker.run_id and env.type in _PROGRESS:
        progress(_PROGRESS[env.type](data))


_PROGRESS: dict[str, Callable[[Any], str]] = {
    "heal.proposed": lambda d: f"  candidate #{d.rank} by {d.strategy} (confidence {d.confidence:.2f})",
    "heal.validated": lambda d: "  candidate validated",
    "heal.rejected": lambda d: f"  candidate rejected: {d.reason[:200]}",
    "heal.abandoned": lambda d: f"  abandoned: {d.reason}",
    "repair.applied": lambda d: f"  applied to {', '.join(d.files)}" + (f" on branch {d.branch}" if d.branch else ""),
    "test.quarantined": lambda d: f"  {d.test_id} quarantined in {d.quarantine_file}",
}


async def _settled(store: EventStore, tracker: _Tracker, client: Redis, settings: Settings, apply: bool,
                   progress: Callable[[str], None]) -> list[RepairOutcome] | None:
    """The outcomes once every failure of the run has settled, else None (and approvals sent)."""
    if not tracker.recorded:
        return None
    # Failures of one cause share a repair (the instances of a parametrized test): whichever of them the
    # healer saw first is the one its events name as their cause.
    by_cause: dict[str, set[str]] = {}
    for failure_id, f in tracker.failures.items():
        by_cause.setdefault(f.fingerprint, set()).add(failure_id)
    for failure in tracker.failures.values():
        history = await tracker.history(store, failure)
        state = repairs.fold(history)
        if failure.category in repairs.UNREPAIRABLE:
            continue
        same = by_cause[failure.fingerprint]
        handled = any(e.causation_id in same for e in history)
        if state.status is repairs.RepairStatus.VALIDATING:
            return None
        if state.status in (repairs.RepairStatus.COMPLETED, repairs.RepairStatus.APPROVED):
            if not apply:
                continue
            done = state.completed
            applies_itself = state.request is not None and state.request.auto_apply is True
            if done is not None and not applies_itself and done.candidate_id not in tracker.approved \
                    and state.status is repairs.RepairStatus.COMPLETED:
                await wire.publish_inbound(client, Envelope(
                    data=ApproveRepair(repair_id=done.repair_id, by=APPROVER), correlation_id=tracker.run_id),
                    maxlen=settings.stream_maxlen)
                tracker.approved.add(done.candidate_id)
                progress(f"  approving {failure.test_id} (--apply)")
            return None
        if not handled:
            return None  # the healer has not seen this report yet (it reopens finished repairs)
        if apply and state.status is repairs.RepairStatus.QUARANTINED:
            return None  # validated quarantine: the healer writes it next
    return await _outcomes(store, tracker, final=False)


async def _outcomes(store: EventStore, tracker: _Tracker, *, final: bool) -> list[RepairOutcome]:
    return [_outcome(f, repairs.fold(await tracker.history(store, f)), timed_out=final)
            for f in tracker.failures.values()]


def _outcome(failure: FailureDetected, state: repairs.RepairState, *, timed_out: bool) -> RepairOutcome:
    category = failure.category.value
    if failure.category in repairs.UNREPAIRABLE:
        return RepairOutcome(test_id=failure.test_id, category=category, status="abandoned", strategy=None,
                             confidence=None, patch=None, applied=False, detail=repairs.UNREPAIRABLE[failure.category])
    validated = [c.proposal for c in state.candidates if c.verdict == "validated"]
    if validated and state.status is repairs.RepairStatus.REJECTED:
        p = validated[0]
        return RepairOutcome(test_id=failure.test_id, category=category, status="rejected", strategy=p.strategy,
                             confidence=p.confidence, patch=p.patch, applied=False,
                             detail=f"rejected by {state.rejected_reason}")
    if validated:
        p = validated[0]
        return RepairOutcome(
            test_id=failure.test_id, category=category, status="validated", strategy=p.strategy,
            confidence=p.confidence, patch=p.patch, applied=state.status is repairs.RepairStatus.APPLIED,
            detail="quarantined (not a heal)" if p.quarantine else state.status.value,
        )
    judged = sorted((c.proposal for c in state.candidates if c.verdict == "rejected"), key=lambda p: p.rank)
    if judged and state.status is repairs.RepairStatus.ABANDONED:
        p = judged[0]
        return RepairOutcome(test_id=failure.test_id, category=category, status="rejected", strategy=p.strategy,
                             confidence=p.confidence, patch=p.patch, applied=False, detail="every candidate rejected")
    detail = "timed out while validating" if timed_out else "no candidate proposed"
    return RepairOutcome(test_id=failure.test_id, category=category, status="abandoned", strategy=None,
                         confidence=None, patch=None, applied=False, detail=detail)


__all__ = ["RepairOutcome", "SessionResult", "repair", "submit"]
