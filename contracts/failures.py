"""Classified failures, flakiness and quarantine."""

from __future__ import annotations

import uuid

from attrs import field, frozen, validators

from contracts.catalog import Area, Kind, message
from contracts.limits import MAX_ID, MAX_TEXT, bounded, non_empty
from contracts.values import FailureClass, FailureEvidence

_opt_id = validators.optional(non_empty(MAX_ID))


@message("failure.detected", kind=Kind.EVENT, area=Area.FAILURES)
@frozen(kw_only=True)
class FailureDetected:
    """The monitor classified a failing test. The fingerprint is stable across runs of the same cause."""

    project: str = field(validator=non_empty(MAX_ID))
    test_id: str = field(validator=non_empty(MAX_ID))
    run_id: str = field(validator=non_empty(MAX_ID))
    fingerprint: str = field(validator=non_empty(MAX_ID))
    category: FailureClass
    reason: str = field(default="", validator=bounded(MAX_TEXT))
    evidence: FailureEvidence = FailureEvidence()  # noqa: RUF009  (frozen, so sharing it is safe)
    commit: str | None = field(default=None, validator=_opt_id)
    repo_path: str | None = field(default=None, validator=_opt_id)
    test_cmd: str | None = field(default=None, validator=validators.optional(non_empty(MAX_TEXT)))
    #: Carried over from run.reported: True always apply, False never, None by the project's policy.
    auto_apply: bool | None = None


@message("failure.unrepairable", kind=Kind.EVENT, area=Area.FAILURES, summary=True)
@frozen(kw_only=True)
class FailureUnrepairable:
    """CARS will not repair this failure (a product regression, an infrastructure fault, or no
    candidate survived validation)."""

    project: str = field(validator=non_empty(MAX_ID))
    test_id: str = field(validator=non_empty(MAX_ID))
    fingerprint: str = field(validator=non_empty(MAX_ID))
    category: FailureClass
    reason: str = field(validator=non_empty(MAX_TEXT))


@message("test.flakiness.changed", kind=Kind.EVENT, area=Area.FAILURES)
@frozen(kw_only=True)
class FlakinessChanged:
    project: str = field(validator=non_empty(MAX_ID))
    test_id: str = field(validator=non_empty(MAX_ID))
    flaky: bool
    flip_rate: float = field(validator=[validators.ge(0.0), validators.le(1.0)])
    window: int = field(validator=validators.ge(1))
    reason: str = field(default="", validator=bounded(MAX_TEXT))


@message("test.quarantined", kind=Kind.EVENT, area=Area.FAILURES)
@frozen(kw_only=True)
class TestQuarantined:
    """A flaky test was put in quarantine. This is a labelled outcome, never a heal."""

    __test__ = False

    project: str = field(validator=non_empty(MAX_ID))
    test_id: str = field(validator=non_empty(MAX_ID))
    quarantine_file: str = field(validator=non_empty(MAX_ID))
    reason: str = field(default="", validator=bounded(MAX_TEXT))
    repair_id: uuid.UUID | None = None
