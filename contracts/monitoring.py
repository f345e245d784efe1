"""Per-test outcome history that the monitor keeps to judge flakiness.

Passing tests produce no events of their own (a 5,000-test run stays one `run.reported`). The monitor
records outcomes only for *watched* tests: tests that failed at least once in the recent window, or
that are currently flagged flaky. A project with nothing watched records nothing for a green run.
"""

from __future__ import annotations

from attrs import field, frozen, validators

from contracts.catalog import Area, Kind, message
from contracts.limits import MAX_ID, MAX_RESULTS, max_items, non_empty
from contracts.values import Outcome

_opt_id = validators.optional(non_empty(MAX_ID))


@frozen(kw_only=True)
class TestOutcome:
    """One watched test's final outcome in one run.

    `mixed` is set when the run itself retried the test and saw it both pass and fail
    (pytest-rerunfailures reruns, Surefire `flakyFailure`): the strongest evidence of flakiness.
    """

    __test__ = False  # not a pytest test class

    test_id: str = field(validator=non_empty(MAX_ID))
    outcome: Outcome
    mixed: bool = False


@message("test.outcomes_recorded", kind=Kind.EVENT, area=Area.RUNS)
@frozen(kw_only=True)
class OutcomesRecorded:
    """The outcomes of a project's watched tests in one run, for the flakiness window."""

    project: str = field(validator=non_empty(MAX_ID))
    run_id: str = field(validator=non_empty(MAX_ID))
    commit: str | None = field(default=None, validator=_opt_id)
    outcomes: tuple[TestOutcome, ...] = field(default=(), validator=max_items(MAX_RESULTS))
