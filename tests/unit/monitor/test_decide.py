"""The monitor's run decision (actors/monitor/decide.py): Given the run's stream and the project's
flaky tests, When a run is reported, Then these events."""

from __future__ import annotations

from typing import Any

import pytest

from actors.monitor.decide import (
    MonitorConfig,
    Monitoring,
    RunState,
    decide_monitoring,
    decide_run,
    fold_monitoring,
    fold_run,
    monitoring_id,
    run_stream_id,
)
from contracts import Envelope, natural_id
from contracts.failures import FailureDetected, FailureUnrepairable
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

CONFIG = MonitorConfig()
RENAMED = FailureEvidence(exception_type="AttributeError", message="module 'cart' has no attribute 'total_price'",
                          file="tests/test_cart.py", line=12, failing_frame="test_total")
REFUSED = FailureEvidence(exception_type="ConnectionRefusedError", message="[Errno 111] Connection refused")
PRODUCT = FailureEvidence(traceback='Traceback (most recent call last):\n  File "/ci/src/cart.py", line 4, in total\n'
                                    "ZeroDivisionError: division by zero")


def passed(name: str) -> TestResult:
    return TestResult(test_id=f"tests/test_cart.py::{name}", outcome=Outcome.PASSED)


def failed(name: str, evidence: FailureEvidence = RENAMED) -> TestResult:
    return TestResult(test_id=f"tests/test_cart.py::{name}", outcome=Outcome.FAILED, evidence=evidence)


def report(*results: TestResult) -> RunReported:
    return RunReported(project="shop", run_id="r1", results=results, commit="abc", repo_path="/repos/shop",
                       test_cmd="pytest -q", auto_apply=False)


def kinds(events: list[Any]) -> list[str]:
    return [type(e).__name__ for e in events]


def test_a_run_with_one_failure_records_the_run_and_detects_the_failure() -> None:
    # When a run with one renamed symbol among passing tests is reported
    events = decide_run(RunState(), report(passed("a"), failed("total"), passed("b"), passed("c")), CONFIG)
    # Then the run is recorded with its counts, and the failure is detected with class and evidence
    assert kinds(events) == ["RunRecorded", "FailureDetected"]
    recorded, detected = events
    assert recorded == RunRecorded(project="shop", run_id="r1", commit="abc", total=4, passed=3, failed=1,
                                   failed_tests=("tests/test_cart.py::total",))
    assert isinstance(detected, FailureDetected)
    assert detected.category is FailureClass.RENAMED_SYMBOL
    assert detected.evidence == RENAMED
    assert (detected.test_id, detected.run_id, detected.commit, detected.repo_path) == (
        "tests/test_cart.py::total", "r1", "abc", "/repos/shop")
    # And what the healer needs to run the tests is carried over from the report
    assert (detected.test_cmd, detected.auto_apply) == ("pytest -q", False)
    assert "total_price" in detected.reason and len(detected.fingerprint) == 16


def test_a_green_run_is_only_recorded() -> None:
    events = decide_run(RunState(), report(passed("a"), passed("b")), CONFIG)
    assert kinds(events) == ["RunRecorded"]


def test_product_regressions_are_detected_as_such() -> None:
    events = decide_run(RunState(), report(failed("t", PRODUCT), *(passed(str(i)) for i in range(5))), CONFIG)
    assert [e.category for e in events[1:]] == [FailureClass.PRODUCT_REGRESSION]


def test_a_run_already_recorded_decides_nothing() -> None:
    # Given the run's stream already records it (the same run reported again under a new message id)
    history = [Envelope(data=RunRecorded(project="shop", run_id="r1", total=2, passed=1, failed=1))]
    # When it is reported again
    events = decide_run(RunState(recorded=fold_run(history)), report(passed("a"), failed("t")), CONFIG)
    # Then nothing: no second failure.detected for (r1, t)
    assert events == []


def test_most_of_the_run_failing_is_a_storm_without_heals() -> None:
    # When 3 of 5 tests fail (60% > 50%)
    run = report(failed("a"), failed("b"), failed("c"), passed("d"), passed("e"))
    events = decide_run(RunState(), run, CONFIG)
    # Then the run is recorded, a storm is detected, and no failure is detected
    assert kinds(events) == ["RunRecorded", "StormDetected"]
    storm = events[1]
    assert isinstance(storm, StormDetected) and storm.failed_share == pytest.approx(0.6)
    assert "3 of 5" in storm.reason


def test_half_failing_is_not_a_storm() -> None:
    run = report(failed("a"), failed("b"), passed("c"), passed("d"))
    events = decide_run(RunState(), run, MonitorConfig(storm_min_tests=4))
    assert kinds(events) == ["RunRecorded", "FailureDetected", "FailureDetected"]


def test_small_runs_are_never_share_storms() -> None:
    # 4 tests, all failing with a renamed symbol: below the 5-test minimum, so each is healed
    run = report(*(failed(str(i)) for i in range(4)))
    assert kinds(decide_run(RunState(), run, CONFIG)) == ["RunRecorded", *["FailureDetected"] * 4]


def test_failures_mostly_from_infrastructure_are_a_storm() -> None:
    # When 2 of 3 failures are connection refused, in a large mostly-green run
    run = report(failed("a", REFUSED), failed("b", REFUSED), failed("c"), *(passed(str(i)) for i in range(20)))
    events = decide_run(RunState(), run, CONFIG)
    # Then it is a storm and nothing is detected
    assert kinds(events) == ["RunRecorded", "StormDetected"]
    assert "infrastructure" in events[1].reason


def test_a_lone_infrastructure_failure_is_unrepairable_not_detected() -> None:
    # When 1 of 3 failures is an environment failure (not predominant)
    run = report(failed("a", REFUSED), failed("b"), failed("c"), *(passed(str(i)) for i in range(20)))
    events = decide_run(RunState(), run, CONFIG)
    # Then it is recorded as unrepairable (no heal starts), and the others are detected
    assert kinds(events) == ["RunRecorded", "FailureUnrepairable", "FailureDetected", "FailureDetected"]
    unrepairable = events[1]
    assert isinstance(unrepairable, FailureUnrepairable)
    assert unrepairable.category is FailureClass.ENVIRONMENT and "Connection refused" in unrepairable.reason


def test_a_flaky_test_is_detected_as_flaky_with_one_fingerprint_per_test() -> None:
    flaky = frozenset({"tests/test_cart.py::total"})
    # When the flaky test fails twice for different reasons
    first = decide_run(RunState(flaky=flaky), report(failed("total"), passed("x")), CONFIG)
    second = decide_run(RunState(flaky=flaky), report(failed("total", PRODUCT), passed("x")), CONFIG)
    # Then both are detected as flaky, with the same fingerprint (one quarantine)
    assert [e.category for e in first[1:] + second[1:]] == [FailureClass.FLAKY] * 2
    assert first[1].fingerprint == second[1].fingerprint
    # And a non-flaky test failing the same way keeps its own class
    other = decide_run(RunState(flaky=flaky), report(failed("other"), passed("x")), CONFIG)
    assert other[1].category is FailureClass.RENAMED_SYMBOL


def test_a_rerun_that_passed_is_detected_as_flaky_but_counted_as_passed() -> None:
    # When a test failed and then passed on a rerun, and the watch calls it flaky
    run = report(failed("total"), passed("total"), passed("x"))
    events = decide_run(RunState(flaky=frozenset({"tests/test_cart.py::total"})), run, CONFIG)
    # Then the run counts it as passed, and its failure is detected as flaky (the quarantine's evidence)
    assert events[0].passed == 2 and events[0].failed == 0
    assert [(e.test_id, e.category) for e in events[1:]] == [("tests/test_cart.py::total", FailureClass.FLAKY)]


def test_stream_ids_follow_the_natural_keys() -> None:
    assert run_stream_id("shop", "r1") == natural_id("run", "shop", "r1")
    assert monitoring_id("shop") == natural_id("monitoring", "shop")


# --- monitoring.start / monitoring.stop -----------------------------------------------------------

START = StartMonitoring(project="shop", path="/repos/shop", test_cmd="pytest -q", interval_s=60)
STARTED = MonitoringStarted(project="shop", path="/repos/shop", test_cmd="pytest -q", interval_s=60)


def test_start_then_stop() -> None:
    assert decide_monitoring(None, START) == [STARTED]
    state = fold_monitoring([Envelope(data=STARTED)])
    assert state == Monitoring(project="shop", path="/repos/shop", test_cmd="pytest -q", interval_s=60)
    assert decide_monitoring(state, StopMonitoring(project="shop")) == [MonitoringStopped(project="shop")]
    stopped = fold_monitoring([Envelope(data=STARTED), Envelope(data=MonitoringStopped(project="shop"))])
    assert stopped is not None and not stopped.active


def test_start_again_is_a_no_op_unless_the_settings_change() -> None:
    state = fold_monitoring([Envelope(data=STARTED)])
    assert decide_monitoring(state, START) == []
    faster = StartMonitoring(project="shop", path="/repos/shop", test_cmd="pytest -q", interval_s=30)
    assert decide_monitoring(state, faster) == [
        MonitoringStarted(project="shop", path="/repos/shop", test_cmd="pytest -q", interval_s=30)]


def test_stopping_what_is_not_running_changes_nothing() -> None:
    assert decide_monitoring(None, StopMonitoring(project="shop")) == []
    stopped = fold_monitoring([Envelope(data=STARTED), Envelope(data=MonitoringStopped(project="shop"))])
    assert decide_monitoring(stopped, StopMonitoring(project="shop")) == []
