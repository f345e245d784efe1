"""Per-test outcome history and flakiness (pure: no I/O, no clock).

What is recorded: one `test.outcomes_recorded` per run on the project's *watch* stream
(`watch_id(project)`), listing the outcomes of the watched tests only. A test is watched while it
has a failure within the window or is flagged flaky; a run that fails nothing while nothing is
watched records nothing, so a green 5,000-test suite costs no events.

The window is the last `window` recorded runs of the project (not of each test): a watched test that
was not in a run (deselected, deleted, skipped) simply has fewer observations in it.

A test is flaky when, within the window,
- one run retried it and saw it both pass and fail (rerunfailures, Surefire `flakyFailure`), or
- the same commit saw it both pass and fail, or
- it has at least `min_runs` observations and its flip rate (outcome changes / (n - 1)) exceeds
  `threshold`, with at least two changes: a single change is a break or a fix, not flakiness.

`test.flakiness.changed` is recorded whenever that verdict differs from the recorded flag, in both
directions. Storm runs are never recorded here (the caller leaves them out): when half the suite
fails because Redis is down, that says nothing about any one test.
"""

from __future__ import annotations

import itertools
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from attrs import evolve, field, frozen, validators

from contracts import Envelope, natural_id
from contracts.failures import FlakinessChanged
from contracts.monitoring import OutcomesRecorded, TestOutcome
from contracts.runs import RunReported
from contracts.values import Outcome, TestResult

_FAILING = frozenset({Outcome.FAILED, Outcome.ERROR})


@frozen(kw_only=True)
class FlakinessConfig:
    """How much history judges flakiness."""

    window: int = field(default=10, validator=validators.ge(2))
    threshold: float = field(default=0.3, validator=[validators.ge(0.0), validators.le(1.0)])
    min_runs: int = field(default=4, validator=validators.ge(2))


@frozen(kw_only=True)
class Observation:
    """One watched test's outcome in one recorded run."""

    seq: int  # which recorded run of the project (1, 2, ...)
    run_id: str
    commit: str | None
    outcome: Outcome
    mixed: bool = False

    @property
    def failed(self) -> bool:
        return self.outcome in _FAILING


@frozen(kw_only=True)
class TestHistory:
    """A watched test's observations within the window, oldest first, and its recorded flag."""

    __test__ = False

    observations: tuple[Observation, ...] = ()
    flaky: bool = False


@frozen(kw_only=True)
class Watch:
    """A project's watched tests. `seq` counts the runs recorded so far."""

    seq: int = 0
    tests: Mapping[str, TestHistory] = field(factory=dict)

    def flaky_tests(self) -> frozenset[str]:
        return frozenset(t for t, h in self.tests.items() if h.flaky)


@frozen(kw_only=True)
class Verdict:
    """Whether a test is flaky now, with the measure behind it."""

    flaky: bool
    flip_rate: float
    runs: int
    reason: str


class Attempts(NamedTuple):
    """A test's attempts in one run collapsed into one outcome (the last attempt's), noting whether
    the attempts disagreed. (A named tuple, not an attrs class: a run makes one per test, and a
    frozen attrs instance costs ~8x more to build; nothing outside the monitor sees it.)"""

    test_id: str
    outcome: Outcome
    mixed: bool
    failure: TestResult | None  # the last failing attempt, with its evidence


def watch_id(project: str) -> uuid.UUID:
    """The stream of a project's watched-test outcomes."""
    return natural_id("tests", project)


def collapse(results: Iterable[TestResult]) -> list[Attempts]:
    """One entry per test id, in order of first appearance.

    A result list may name a test more than once when the runner retried it; the last attempt is the
    outcome, and a pass next to a failure marks the run as having seen the test flake.
    """
    listed = list(results)
    if len({r.test_id for r in listed}) == len(listed):
        # The common case, kept cheap (a run lists thousands of tests): every test ran once.
        # (Positional: a named tuple built from keywords costs three times as much.)
        failed, error = Outcome.FAILED, Outcome.ERROR
        return [Attempts(r.test_id, r.outcome, False, r if r.outcome is failed or r.outcome is error else None)
                for r in listed]
    seen: dict[str, list[TestResult]] = {}
    for result in listed:
        seen.setdefault(result.test_id, []).append(result)
    collapsed = []
    for test_id, attempts in seen.items():
        failures = [a for a in attempts if a.outcome in _FAILING]
        passed = any(a.outcome is Outcome.PASSED for a in attempts)
        collapsed.append(Attempts(
            test_id=test_id, outcome=attempts[-1].outcome, mixed=bool(failures) and passed,
            failure=failures[-1] if failures else None,
        ))
    return collapsed


def fold(history: Sequence[Envelope[Any]], config: FlakinessConfig) -> Watch:
    """A project's watch from its stream."""
    watch = Watch()
    for env in history:
        watch = apply(watch, env.data, config)
    return watch


class WatchFolds:
    """Watches folded before, by stream and version, so that a project's watch is folded forward from
    where it was last seen instead of from its first run (its stream gains an event per run, and a
    batch of runs would otherwise fold every project's whole history again).

    A stream's first N events never change (the store is append-only), so the watch after N events is
    the same whenever it is asked for: `fold` starts from the one remembered for the stream when it
    is at most as long as `history`, and from nothing otherwise. Only fold what is stored: events
    decided but not yet committed may never be. The least recently used streams go first past `limit`.
    """

    def __init__(self, limit: int = 10_000) -> None:
        self._known: OrderedDict[tuple[uuid.UUID, FlakinessConfig], tuple[int, Watch]] = OrderedDict()
        self._limit = limit

    def fold(self, stream_id: uuid.UUID, history: Sequence[Envelope[Any]], config: FlakinessConfig) -> Watch:
        """`fold(history, config)` of the stream `stream_id`, remembered for next time."""
        key = (stream_id, config)
        start, watch = self._known.get(key, (0, Watch()))
        if start > len(history):
            start, watch = 0, Watch()  # a shorter history than the one remembered: fold it all
        for env in history[start:]:
            watch = apply(watch, env.data, config)
        self._known[key] = (len(history), watch)
        self._known.move_to_end(key)
        if len(self._known) > self._limit:
            self._known.popitem(last=False)
        return watch


def apply(watch: Watch, event: Any, config: FlakinessConfig) -> Watch:
    """`watch` after one event of its stream."""
    if isinstance(event, OutcomesRecorded):
        return _record(watch, event, config)
    if isinstance(event, FlakinessChanged) and event.test_id in watch.tests:
        tests = dict(watch.tests)
        tests[event.test_id] = evolve(tests[event.test_id], flaky=event.flaky)
        return evolve(watch, tests=tests)
    return watch


def _record(watch: Watch, event: OutcomesRecorded, config: FlakinessConfig) -> Watch:
    seq = watch.seq + 1
    oldest = seq - config.window + 1
    by_test = {o.test_id: o for o in event.outcomes}
    tests: dict[str, TestHistory] = {}
    for test_id in [*watch.tests, *(t for t in by_test if t not in watch.tests)]:
        past = watch.tests.get(test_id, TestHistory())
        observations = [o for o in past.observations if o.seq >= oldest]  # older runs left the window
        outcome = by_test.get(test_id)
        if outcome is not None:
            observations.append(Observation(
                seq=seq, run_id=event.run_id, commit=event.commit, outcome=outcome.outcome, mixed=outcome.mixed,
            ))
        if past.flaky or any(o.failed or o.mixed for o in observations):
            tests[test_id] = TestHistory(observations=tuple(observations), flaky=past.flaky)
        # else: no failure left in the window and not flagged: no longer watched
    return Watch(seq=seq, tests=tests)


def verdict(history: TestHistory, config: FlakinessConfig) -> Verdict:
    """Whether the observations in `history` make the test flaky."""
    observed = [o for o in history.observations if o.outcome is not Outcome.SKIPPED]
    n = len(observed)
    flips = sum(1 for a, b in itertools.pairwise(observed) if a.failed != b.failed)
    rate = flips / (n - 1) if n > 1 else 0.0
    summary = f"flip rate {rate:.2f} over {n} run(s)"
    mixed = next((o for o in observed if o.mixed), None)
    if mixed is not None:
        return Verdict(flaky=True, flip_rate=rate, runs=n,
                       reason=f"passed and failed within run {mixed.run_id}; {summary}")
    by_commit: dict[str, set[bool]] = {}
    for o in observed:
        if o.commit is not None:
            by_commit.setdefault(o.commit, set()).add(o.failed)
    both = next((c for c, seen in by_commit.items() if len(seen) == 2), None)
    if both is not None:
        return Verdict(flaky=True, flip_rate=rate, runs=n, reason=f"passed and failed on commit {both}; {summary}")
    # One change of state is a break or a fix (a heal, too), not flakiness: it takes two.
    if n >= config.min_runs and flips >= 2 and rate > config.threshold:
        return Verdict(flaky=True, flip_rate=rate, runs=n, reason=f"{summary} exceeds {config.threshold:.2f}")
    return Verdict(flaky=False, flip_rate=rate, runs=n, reason=summary)


def outcomes(watch: Watch, attempts: Sequence[Attempts]) -> tuple[TestOutcome, ...]:
    """What to record for a run: every watched test in it, and every test that failed in it."""
    return tuple(
        TestOutcome(test_id=a.test_id, outcome=a.outcome, mixed=a.mixed)
        for a in attempts
        if a.outcome is not Outcome.SKIPPED and (a.test_id in watch.tests or a.failure is not None)
    )


def record_run(
    watch: Watch, run: RunReported, config: FlakinessConfig, attempts: Sequence[Attempts] | None = None,
) -> list[Any]:
    """The events one (non-storm) run adds to the watch stream: its watched outcomes, then a
    `test.flakiness.changed` for each test whose verdict no longer matches its flag (`attempts`:
    `collapse(run.results)`, when the caller has it already)."""
    recorded = outcomes(watch, collapse(run.results) if attempts is None else attempts)
    if not recorded and not watch.tests:
        return []
    event = OutcomesRecorded(project=run.project, run_id=run.run_id, commit=run.commit, outcomes=recorded)
    events: list[Any] = [event]
    after = apply(watch, event, config)
    for test_id in sorted(after.tests):
        history = after.tests[test_id]
        judged = verdict(history, config)
        if judged.flaky != history.flaky:
            events.append(FlakinessChanged(
                project=run.project, test_id=test_id, flaky=judged.flaky, flip_rate=judged.flip_rate,
                window=max(judged.runs, 1), reason=judged.reason,
            ))
    return events
