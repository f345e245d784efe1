"""What one reported run means (pure: no I/O, no clock).

A run's events go to its own stream, `run_stream_id(project, run_id)`:

- `run.recorded` always (counts and the failing test ids);
- then, when the run is a **storm**, one `run.storm_detected` and nothing else: no failure of a storm
  starts a heal, and no per-test event is recorded (a storm of 3,000 failures is one event, named by
  its cause). A run is a storm when more than `storm_share` of at least `storm_min_tests` tests
  failed, or when more than `environment_share` of its failures are `environment` failures;
- otherwise, per failing test, in the order the run listed them:
  - `environment` → `failure.unrepairable` (category environment): infrastructure is not the test's
    fault, so no heal is started and the public results topic says why;
  - a test that is currently flaky (by the watch, after this run) → `failure.detected` with
    category `flaky` and a per-test fingerprint, so every flaky failure of that test leads to the one
    quarantine, whatever it failed with;
  - anything else → `failure.detected` with its class (`product_regression` included: the healer
    records it as unrepairable).
  A flaky test that failed and then passed on a rerun within the run also gets its `failure.detected`
  (flaky): its final outcome is a pass, but it is the quarantine's evidence.

Redelivery: the store skips a message whose id already caused events in the stream, and a second
report of the same run under a new message id finds `run.recorded` in the run's stream and decides
nothing, so one (run_id, test_id) never gives two `failure.detected`.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from typing import Any

from attrs import evolve, field, frozen, validators

from actors.monitor.classify import Classification, classify, fingerprint
from actors.monitor.history import Attempts, FlakinessConfig, collapse
from contracts import Envelope, natural_id
from contracts.failures import FailureDetected, FailureUnrepairable
from contracts.limits import MAX_TEXT
from contracts.runs import (
    MonitoringStarted,
    MonitoringStopped,
    RunRecorded,
    RunReported,
    StartMonitoring,
    StopMonitoring,
    StormDetected,
)
from contracts.values import FailureClass, FailureEvidence, Outcome

_FAILING = frozenset({Outcome.FAILED, Outcome.ERROR})


@frozen(kw_only=True)
class MonitorConfig:
    """The monitor's thresholds."""

    storm_share: float = field(default=0.5, validator=[validators.ge(0.0), validators.le(1.0)])
    storm_min_tests: int = field(default=5, validator=validators.ge(1))
    environment_share: float = field(default=0.5, validator=[validators.ge(0.0), validators.le(1.0)])
    flakiness: FlakinessConfig = FlakinessConfig()  # noqa: RUF009  (frozen, so sharing it is safe)


@frozen(kw_only=True)
class RunState:
    """What the monitor knows when a run arrives: whether this run was already recorded (its own
    stream), and which of the project's tests are flaky (its watch, this run included)."""

    recorded: bool = False
    flaky: frozenset[str] = frozenset()


@frozen(kw_only=True)
class Failure:
    """A failing test of the run, classified."""

    attempts: Attempts
    classification: Classification

    @property
    def evidence(self) -> FailureEvidence:
        """The runner's evidence, plus the compared values only its message told (for the healer)."""
        failure = self.attempts.failure
        ev = failure.evidence if failure is not None and failure.evidence is not None else FailureEvidence()
        derived = self.classification.compared
        return evolve(ev, compared=derived) if derived is not None and ev.compared is None else ev


@frozen(kw_only=True)
class Assessment:
    """A run's tests collapsed, its failures classified, and whether it is a storm (and why)."""

    attempts: tuple[Attempts, ...]
    failures: tuple[Failure, ...]
    storm: str | None  # the reason, when it is a storm

    @property
    def failed_share(self) -> float:
        failed = sum(1 for a in self.attempts if a.outcome in _FAILING)
        return failed / len(self.attempts) if self.attempts else 0.0


def run_stream_id(project: str, run_id: str) -> uuid.UUID:
    """The stream of one run's events."""
    return natural_id("run", project, run_id)


def fold_run(history: Sequence[Envelope[Any]]) -> bool:
    """Whether the run's stream already records the run."""
    return any(isinstance(env.data, RunRecorded) for env in history)


def assess(run: RunReported, config: MonitorConfig) -> Assessment:
    """Collapse, classify and judge one run. Tests that failed at least once are classified."""
    attempts = tuple(collapse(run.results))
    failures = tuple(
        Failure(attempts=a, classification=classify(a.failure))
        for a in attempts if a.failure is not None
    )
    final_failed = [f for f in failures if f.attempts.outcome in _FAILING]
    total, failed = len(attempts), len(final_failed)
    environment = sum(1 for f in final_failed if f.classification.category is FailureClass.ENVIRONMENT)
    storm = None
    if total >= config.storm_min_tests and failed / total > config.storm_share:
        storm = f"{failed} of {total} tests failed (more than {config.storm_share:.0%})"
    elif failed and environment / failed > config.environment_share:
        storm = f"{environment} of {failed} failures are infrastructure (environment) failures"
    return Assessment(attempts=attempts, failures=failures, storm=storm)


def decide_run(
    state: RunState, run: RunReported, config: MonitorConfig, assessed: Assessment | None = None,
) -> list[Any]:
    """The events a reported run adds to its run stream (`assessed`: `assess(run, config)`, when the
    caller has it already)."""
    if state.recorded:
        return []  # the same run reported again under a new message id
    if assessed is None:
        assessed = assess(run, config)
    counts = Counter(a.outcome for a in assessed.attempts)  # (one pass, not one per outcome)
    events: list[Any] = [RunRecorded(
        project=run.project, run_id=run.run_id, commit=run.commit, total=len(assessed.attempts),
        passed=counts[Outcome.PASSED], failed=counts[Outcome.FAILED] + counts[Outcome.ERROR],
        skipped=counts[Outcome.SKIPPED],
        failed_tests=tuple(a.test_id for a in assessed.attempts if a.outcome in _FAILING),
    )]
    if assessed.storm is not None:
        events.append(StormDetected(
            project=run.project, run_id=run.run_id, failed_share=assessed.failed_share,
            reason=f"{assessed.storm}; no heals are started for this run",
        ))
        return events
    for failure in assessed.failures:
        event = _failure_event(state, run, failure)
        if event is not None:
            events.append(event)
    return events


def _failure_event(state: RunState, run: RunReported, failure: Failure) -> Any:
    test_id = failure.attempts.test_id
    found = failure.classification
    final_failed = failure.attempts.outcome in _FAILING
    if found.category is FailureClass.ENVIRONMENT:
        if not final_failed:
            return None  # it recovered within the run: nothing to report
        return FailureUnrepairable(
            project=run.project, test_id=test_id, fingerprint=found.fingerprint, category=found.category,
            reason=f"infrastructure failure, not the test's: {found.reason}"[:MAX_TEXT],
        )
    flaky = test_id in state.flaky
    if not final_failed and not flaky:
        return None  # failed, then passed on a rerun, but the watch does not call it flaky
    category = FailureClass.FLAKY if flaky else found.category
    return FailureDetected(
        project=run.project, test_id=test_id, run_id=run.run_id,
        # Flaky failures share one fingerprint per test: one quarantine, whatever the failure was.
        fingerprint=fingerprint("flaky", None, test_id, None) if flaky else found.fingerprint,
        category=category,
        reason=(f"flaky test; this time {found.reason}" if flaky else found.reason)[:MAX_TEXT],
        evidence=failure.evidence, commit=run.commit, repo_path=run.repo_path, test_cmd=run.test_cmd,
        auto_apply=run.auto_apply,
    )


# --- continuous monitoring: one stream per project, `monitoring_id(project)` ---------------------


@frozen(kw_only=True)
class Monitoring:
    """A project's continuous monitoring: where its tests are, how to run them, and how often."""

    project: str
    path: str
    test_cmd: str
    interval_s: int
    active: bool = True


def monitoring_id(project: str) -> uuid.UUID:
    """The stream of a project's monitoring starts and stops."""
    return natural_id("monitoring", project)


def fold_monitoring(history: Sequence[Envelope[Any]]) -> Monitoring | None:
    """The project's monitoring as last started (inactive once stopped), or None if never started."""
    state: Monitoring | None = None
    for env in history:
        event = env.data
        if isinstance(event, MonitoringStarted):
            state = Monitoring(project=event.project, path=event.path, test_cmd=event.test_cmd,
                               interval_s=event.interval_s)
        elif isinstance(event, MonitoringStopped) and state is not None:
            state = Monitoring(project=state.project, path=state.path, test_cmd=state.test_cmd,
                               interval_s=state.interval_s, active=False)
    return state


def decide_monitoring(state: Monitoring | None, command: Any) -> list[Any]:
    """What a monitoring.start/stop changes. Starting again with other settings restarts with them;
    starting again with the same ones, or stopping what is not running, changes nothing."""
    if isinstance(command, StartMonitoring):
        wanted = Monitoring(project=command.project, path=command.path, test_cmd=command.test_cmd,
                            interval_s=command.interval_s)
        if state == wanted:
            return []
        return [MonitoringStarted(project=command.project, path=command.path, test_cmd=command.test_cmd,
                                  interval_s=command.interval_s)]
    if isinstance(command, StopMonitoring):
        if state is None or not state.active:
            return []
        return [MonitoringStopped(project=command.project)]
    raise TypeError(f"not a monitoring command: {type(command).__name__}")
