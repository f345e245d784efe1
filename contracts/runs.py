"""Test runs and continuous monitoring."""

from __future__ import annotations

from attrs import field, frozen, validators

from contracts.catalog import Area, JsonDict, Kind, message, upcaster
from contracts.limits import MAX_ID, MAX_RESULTS, MAX_TEXT, bounded, max_items, non_empty
from contracts.values import TestResult

_opt_id = validators.optional(non_empty(MAX_ID))


@message("run.reported", kind=Kind.COMMAND, area=Area.RUNS, version=2)
@frozen(kw_only=True)
class RunReported:
    """A CI system reports the results of one test run. One message per run, however many tests."""

    project: str = field(validator=non_empty(MAX_ID))
    run_id: str = field(validator=non_empty(MAX_ID))
    results: tuple[TestResult, ...] = field(validator=max_items(MAX_RESULTS))
    commit: str | None = field(default=None, validator=_opt_id)
    branch: str | None = field(default=None, validator=_opt_id)
    repo_path: str | None = field(default=None, validator=_opt_id)
    test_cmd: str | None = field(default=None, validator=validators.optional(non_empty(MAX_TEXT)))
    source: str = field(default="unknown", validator=non_empty(64))
    #: Apply validated repairs of this run: True always, False never, None by the project's policy.
    auto_apply: bool | None = None


@upcaster("run.reported", from_version=1)
def _run_reported_v1_v2(data: JsonDict) -> JsonDict:
    """v1 results carried `duration_ms` (an integer); v2 carries `duration_s` (a float)."""
    if not isinstance(data.get("results"), list):
        return data  # nothing to convert; structuring reports the bad shape with its path
    results = []
    for result in data["results"]:
        if isinstance(result, dict) and "duration_ms" in result:
            result = dict(result)
            ms = result.pop("duration_ms")
            # A non-number is passed on unchanged, to fail as `duration_s` with its path.
            number = isinstance(ms, int | float) and not isinstance(ms, bool)
            result["duration_s"] = ms / 1000.0 if number else ms
        results.append(result)
    return {**data, "results": results}


@message("run.recorded", kind=Kind.EVENT, area=Area.RUNS)
@frozen(kw_only=True)
class RunRecorded:
    """The monitor accepted a run and counted its outcomes."""

    project: str = field(validator=non_empty(MAX_ID))
    run_id: str = field(validator=non_empty(MAX_ID))
    commit: str | None = field(default=None, validator=_opt_id)
    total: int = field(validator=validators.ge(0))
    passed: int = field(validator=validators.ge(0))
    failed: int = field(validator=validators.ge(0))
    skipped: int = field(default=0, validator=validators.ge(0))
    failed_tests: tuple[str, ...] = field(default=(), validator=max_items(MAX_RESULTS))


@message("run.storm_detected", kind=Kind.EVENT, area=Area.RUNS)
@frozen(kw_only=True)
class StormDetected:
    """Too much of a run failed, or it failed for infrastructure reasons: no heals are started."""

    project: str = field(validator=non_empty(MAX_ID))
    run_id: str = field(validator=non_empty(MAX_ID))
    failed_share: float = field(validator=[validators.ge(0.0), validators.le(1.0)])
    reason: str = field(validator=non_empty(MAX_TEXT))


@message("monitoring.start", kind=Kind.COMMAND, area=Area.RUNS)
@frozen(kw_only=True)
class StartMonitoring:
    """Run a project's tests every `interval_s` seconds and report them."""

    project: str = field(validator=non_empty(MAX_ID))
    path: str = field(validator=non_empty(MAX_ID))
    test_cmd: str = field(validator=non_empty(MAX_TEXT))
    interval_s: int = field(default=300, validator=[validators.ge(5), validators.le(7 * 24 * 3600)])


@message("monitoring.stop", kind=Kind.COMMAND, area=Area.RUNS)
@frozen(kw_only=True)
class StopMonitoring:
    project: str = field(validator=non_empty(MAX_ID))


@message("monitoring.started", kind=Kind.EVENT, area=Area.RUNS)
@frozen(kw_only=True)
class MonitoringStarted:
    project: str = field(validator=non_empty(MAX_ID))
    path: str = field(validator=non_empty(MAX_ID))
    test_cmd: str = field(validator=non_empty(MAX_TEXT))
    interval_s: int = field(validator=validators.ge(1))


@message("monitoring.stopped", kind=Kind.EVENT, area=Area.RUNS)
@frozen(kw_only=True)
class MonitoringStopped:
    project: str = field(validator=non_empty(MAX_ID))
    reason: str = field(default="requested", validator=bounded(MAX_TEXT))
