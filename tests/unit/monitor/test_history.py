"""Per-test history and flakiness (actors/monitor/history.py): Given the watch stream, When a run
arrives, Then these outcomes and flakiness changes are recorded."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from actors.monitor.history import (
    FlakinessConfig,
    Watch,
    WatchFolds,
    collapse,
    fold,
    record_run,
    watch_id,
)
from contracts import Envelope, natural_id
from contracts.failures import FlakinessChanged
from contracts.monitoring import OutcomesRecorded, TestOutcome
from contracts.runs import RunReported
from contracts.values import FailureEvidence, Outcome, TestResult

P, F, S = Outcome.PASSED, Outcome.FAILED, Outcome.SKIPPED
CONFIG = FlakinessConfig()  # window 10, threshold 0.3, at least 4 runs
T = "tests/test_cart.py::test_total"
OTHER = "tests/test_cart.py::test_add"


def result(test_id: str, outcome: Outcome) -> TestResult:
    evidence = FailureEvidence(exception_type="AssertionError", message="assert 1 == 2") if outcome is F else None
    return TestResult(test_id=test_id, outcome=outcome, evidence=evidence)


def run(n: int, *results: TestResult, commit: str | None = None) -> RunReported:
    return RunReported(project="shop", run_id=f"r{n}", commit=commit or f"c{n}", results=results)


class Stream:
    """A watch stream: every run goes through `record_run` on the fold of what came before."""

    def __init__(self, config: FlakinessConfig = CONFIG) -> None:
        self.config = config
        self.history: list[Envelope[Any]] = []
        self.n = 0

    @property
    def watch(self) -> Watch:
        return fold(self.history, self.config)

    def report(self, *results: TestResult, commit: str | None = None) -> list[Any]:
        self.n += 1
        events = record_run(self.watch, run(self.n, *results, commit=commit), self.config)
        self.history += [Envelope(data=e) for e in events]
        return events

    def outcomes(self, test_id: str, sequence: Sequence[Outcome], **kw: Any) -> list[Any]:
        """Report one run per outcome; returns every flakiness change, in order."""
        changes: list[Any] = []
        for outcome in sequence:
            changes += [e for e in self.report(result(test_id, outcome), **kw) if isinstance(e, FlakinessChanged)]
        return changes


def test_a_green_run_with_nothing_watched_records_nothing() -> None:
    stream = Stream()
    assert stream.report(result(T, P), result(OTHER, P)) == []


def test_a_failure_starts_watching_and_only_watched_tests_are_recorded() -> None:
    stream = Stream()
    # When a test fails
    first = stream.report(result(T, F), result(OTHER, P))
    # Then its outcome is recorded, not the passing one's
    assert first == [OutcomesRecorded(project="shop", run_id="r1", commit="c1",
                                      outcomes=(TestOutcome(test_id=T, outcome=F),))]
    # And on the next run the watched test's pass is recorded too
    second = stream.report(result(T, P), result(OTHER, P))
    assert second == [OutcomesRecorded(project="shop", run_id="r2", commit="c2",
                                       outcomes=(TestOutcome(test_id=T, outcome=P),))]
    assert T in stream.watch.tests and OTHER not in stream.watch.tests


def test_a_test_is_unwatched_once_its_failure_leaves_the_window() -> None:
    stream = Stream(FlakinessConfig(window=3))
    stream.report(result(T, F))
    stream.report(result(T, P))
    stream.report(result(T, P))
    assert T in stream.watch.tests
    # When a third run passes after the failure, the failure has left the 3-run window
    stream.report(result(T, P))
    # Then the test is no longer watched, and a green run records nothing
    assert stream.watch.tests == {}
    assert stream.report(result(T, P)) == []


def test_the_flip_rate_over_the_window_makes_a_test_flaky() -> None:
    stream = Stream()
    # Given a test that alternates, on a new commit each run (so no same-commit evidence)
    changes = stream.outcomes(T, [F, P, F])
    # Then three runs are not enough to judge
    assert changes == []
    # When the fourth run flips again: 3 flips over 4 runs = 1.0 > 0.3
    changes = stream.outcomes(T, [P])
    # Then it becomes flaky, once
    assert [(c.flaky, c.flip_rate, c.window) for c in changes] == [(True, 1.0, 4)]
    assert T in stream.watch.flaky_tests()
    assert stream.outcomes(T, [F]) == []  # still flaky: no change to record


def test_a_flip_rate_at_the_threshold_is_not_flaky_above_it_is() -> None:
    stream = Stream(FlakinessConfig(threshold=0.5))
    # Given F F P P F F P: 3 flips over 6 intervals = 0.5, not above the threshold
    assert stream.outcomes(T, [F, F, P, P, F, F, P]) == []
    # When it fails again: 4 flips over 7 = 0.57
    changes = stream.outcomes(T, [F])
    # Then it is flaky
    assert [(c.flaky, round(c.flip_rate, 2), c.window) for c in changes] == [(True, 0.57, 8)]


def test_a_fix_is_not_flakiness() -> None:
    # Given a test that failed three times and then passes (fixed, or healed): 1 flip over 3 = 0.33
    stream = Stream()
    # Then no flakiness is recorded
    assert stream.outcomes(T, [F, F, F, P, P]) == []


def test_a_custom_threshold_and_minimum() -> None:
    stream = Stream(FlakinessConfig(window=10, threshold=0.6, min_runs=6))
    # 4 flips over 5 intervals = 0.8 but only 5 runs: not judged yet; at 6 runs 5/5 = 1.0
    assert stream.outcomes(T, [F, P, F, P, F]) == []
    assert [c.flaky for c in stream.outcomes(T, [P])] == [True]


def test_the_same_commit_passing_and_failing_is_flaky_at_once() -> None:
    stream = Stream()
    stream.outcomes(T, [F], commit="abc")
    # When the same commit passes
    changes = stream.outcomes(T, [P], commit="abc")
    # Then the test is flaky, and the reason names the commit
    assert [c.flaky for c in changes] == [True]
    assert "commit abc" in changes[0].reason


def test_a_rerun_that_passed_within_the_run_is_flaky_at_once() -> None:
    stream = Stream()
    # When one run lists the test twice: failed, then passed on a rerun
    events = stream.report(result(T, F), result(T, P), result(OTHER, P))
    # Then the run records it as passed with mixed attempts, and flags it flaky
    assert events[0].outcomes == (TestOutcome(test_id=T, outcome=P, mixed=True),)
    assert [(type(e).__name__, e.flaky) for e in events[1:]] == [("FlakinessChanged", True)]
    assert "within run r1" in events[1].reason


def test_flakiness_clears_when_the_evidence_leaves_the_window() -> None:
    stream = Stream(FlakinessConfig(window=4, min_runs=4))
    assert [c.flaky for c in stream.outcomes(T, [F, P, F, P])] == [True]
    # When the test passes steadily, its flips move out of the window: P F P P (2 flips over 3),
    # F P P P (1 flip: a fix, no longer flaky)
    changes = stream.outcomes(T, [P, P, P])
    # Then exactly one change clears the flag, in the run that left one flip in the window
    assert [(c.flaky, round(c.flip_rate, 2)) for c in changes] == [(False, 0.33)]
    assert stream.watch.flaky_tests() == frozenset()
    # And once clear with no failure in the window it is no longer watched
    stream.report(result(T, P))
    assert T not in stream.watch.tests


def test_a_flaky_test_that_disappears_is_cleared_after_the_window() -> None:
    stream = Stream(FlakinessConfig(window=3))
    stream.report(result(T, F), result(OTHER, F))
    stream.report(result(T, P), result(OTHER, F))  # T: different commits, 1 flip over 2 runs: not judged
    stream.report(result(T, F), result(OTHER, F), commit="c3")
    stream.report(result(T, P), result(OTHER, F), commit="c3")  # same commit: flaky
    assert T in stream.watch.flaky_tests()
    # When T stops appearing (deleted) for a whole window
    changes: list[Any] = []
    for _ in range(3):
        changes += [e for e in stream.report(result(OTHER, F)) if isinstance(e, FlakinessChanged)]
    # Then its flag is cleared, and it leaves the watch
    assert [(c.test_id, c.flaky) for c in changes] == [(T, False)]
    stream.report(result(OTHER, F))
    assert T not in stream.watch.tests


def test_skipped_runs_do_not_count_as_flips() -> None:
    stream = Stream()
    assert stream.outcomes(T, [F, S, F, S, F, S, F]) == []


def test_collapse_keeps_the_last_attempt_and_notes_mixed_ones() -> None:
    attempts = collapse([result(T, F), result(OTHER, P), result(T, P), result(OTHER, P)])
    assert [(a.test_id, a.outcome, a.mixed, a.failure is not None) for a in attempts] == [
        (T, P, True, True), (OTHER, P, False, False),
    ]


def test_watch_stream_id_is_the_natural_id_of_the_project() -> None:
    assert watch_id("shop") == natural_id("tests", "shop") != watch_id("other")


@pytest.mark.parametrize("window", [0, 1])
def test_window_must_hold_two_runs(window: int) -> None:
    with pytest.raises(ValueError):
        FlakinessConfig(window=window)


def test_a_remembered_fold_goes_forward_from_where_it_was_and_equals_a_fold_from_the_start() -> None:
    stream = Stream()
    folds = WatchFolds()
    sid = watch_id("shop")
    for outcome in [F, P, F, P, F, F, P, F, P, P, P, P, P, P, P, P, P, P]:
        stream.report(result(T, outcome), result(OTHER, F if outcome is P else P))
        assert folds.fold(sid, stream.history, CONFIG) == fold(stream.history, CONFIG)
    assert any(h.flaky for h in fold(stream.history[:12], CONFIG).tests.values())  # the fold had something to track


def test_a_shorter_history_than_the_remembered_one_is_folded_from_the_start() -> None:
    stream = Stream()
    stream.outcomes(T, [F, P, F, P, F])
    folds = WatchFolds()
    sid = watch_id("shop")
    folds.fold(sid, stream.history, CONFIG)
    shorter = stream.history[:3]
    assert folds.fold(sid, shorter, CONFIG) == fold(shorter, CONFIG) != fold(stream.history, CONFIG)


def test_remembered_folds_are_per_stream_and_per_config_and_bounded() -> None:
    stream = Stream()
    stream.outcomes(T, [F, P, F, P, F])
    strict = FlakinessConfig(window=3, min_runs=2, threshold=0.9)
    folds = WatchFolds(limit=2)
    a, b, c = watch_id("a"), watch_id("b"), watch_id("c")
    assert folds.fold(a, stream.history, CONFIG) == fold(stream.history, CONFIG)
    assert folds.fold(a, stream.history, strict) == fold(stream.history, strict)
    # A third stream pushes the oldest out; an unknown stream starts from nothing, never from another's fold.
    assert folds.fold(b, stream.history[:2], CONFIG) == fold(stream.history[:2], CONFIG)
    assert folds.fold(c, [], CONFIG) == Watch()
    assert folds.fold(a, stream.history, CONFIG) == fold(stream.history, CONFIG)
