"""Heals (candidate repairs) and repairs (the outcome for one failure)."""

from __future__ import annotations

import uuid

from attrs import field, frozen, validators

from contracts.catalog import Area, Kind, message
from contracts.envelope import natural_id
from contracts.limits import MAX_ID, MAX_PATCH, MAX_TEXT, bounded, non_empty
from contracts.values import FailureClass, FailureEvidence, ValidationEvidence

_opt_id = validators.optional(non_empty(MAX_ID))
_confidence = [validators.ge(0.0), validators.le(1.0)]


@message("heal.request", kind=Kind.COMMAND, area=Area.REPAIRS)
@frozen(kw_only=True)
class RequestHeal:
    """Ask CARS to (re)try repairing a failing test."""

    project: str = field(validator=non_empty(MAX_ID))
    test_id: str = field(validator=non_empty(MAX_ID))
    fingerprint: str | None = field(default=None, validator=_opt_id)


@message("heal.requested", kind=Kind.EVENT, area=Area.REPAIRS)
@frozen(kw_only=True)
class HealRequested:
    repair_id: uuid.UUID
    project: str = field(validator=non_empty(MAX_ID))
    test_id: str = field(validator=non_empty(MAX_ID))
    fingerprint: str = field(validator=non_empty(MAX_ID))
    category: FailureClass
    repo_path: str | None = field(default=None, validator=_opt_id)
    test_cmd: str | None = field(default=None, validator=validators.optional(non_empty(MAX_TEXT)))
    commit: str | None = field(default=None, validator=_opt_id)
    run_id: str | None = field(default=None, validator=_opt_id)
    auto_apply: bool | None = None
    #: The failure being healed, so that a later `heal.request` can propose again without the run.
    reason: str = field(default="", validator=bounded(MAX_TEXT))
    evidence: FailureEvidence = FailureEvidence()  # noqa: RUF009  (frozen, so sharing it is safe)


@message("heal.proposed", kind=Kind.EVENT, area=Area.REPAIRS)
@frozen(kw_only=True)
class HealProposed:
    """One ranked candidate patch to the test code."""

    repair_id: uuid.UUID
    candidate_id: uuid.UUID
    strategy: str = field(validator=non_empty(MAX_ID))
    rank: int = field(validator=validators.ge(1))
    confidence: float = field(validator=_confidence)
    patch: str = field(validator=non_empty(MAX_PATCH))
    files: tuple[str, ...] = ()
    explanation: str = field(default="", validator=bounded(MAX_TEXT))
    #: A human must approve it even when validated (e.g. a changed expected value).
    needs_approval: bool = False
    #: A labelled quarantine of a flaky test: validated like a heal, never reported as one.
    quarantine: bool = False


@message("heal.abandoned", kind=Kind.EVENT, area=Area.REPAIRS)
@frozen(kw_only=True)
class HealAbandoned:
    """No strategy could propose a candidate, or every candidate was rejected."""

    repair_id: uuid.UUID
    reason: str = field(validator=non_empty(MAX_TEXT))


@message("heal.validated", kind=Kind.EVENT, area=Area.REPAIRS)
@frozen(kw_only=True)
class HealValidated:
    repair_id: uuid.UUID
    candidate_id: uuid.UUID
    environment_id: uuid.UUID | None = None
    evidence: ValidationEvidence


@message("heal.rejected", kind=Kind.EVENT, area=Area.REPAIRS)
@frozen(kw_only=True)
class HealRejected:
    repair_id: uuid.UUID
    candidate_id: uuid.UUID
    environment_id: uuid.UUID | None = None
    reason: str = field(validator=non_empty(MAX_TEXT))
    evidence: ValidationEvidence = ValidationEvidence()  # noqa: RUF009  (frozen, so sharing it is safe)
    #: The patch no longer applies to the project's current files (another repair changed them since it
    #: was proposed): the candidate was not wrong, it is out of date, and the healer proposes again.
    stale: bool = False


@message("repair.completed", kind=Kind.EVENT, area=Area.REPAIRS, summary=True)
@frozen(kw_only=True)
class RepairCompleted:
    """The best validated candidate for a failure, with its patch: the public result."""

    repair_id: uuid.UUID
    candidate_id: uuid.UUID
    project: str = field(validator=non_empty(MAX_ID))
    test_id: str = field(validator=non_empty(MAX_ID))
    category: FailureClass
    strategy: str = field(validator=non_empty(MAX_ID))
    confidence: float = field(validator=_confidence)
    patch: str = field(validator=non_empty(MAX_PATCH))
    evidence: ValidationEvidence = ValidationEvidence()  # noqa: RUF009  (frozen, so sharing it is safe)
    needs_approval: bool = False


@message("repair.approve", kind=Kind.COMMAND, area=Area.REPAIRS)
@frozen(kw_only=True)
class ApproveRepair:
    repair_id: uuid.UUID
    by: str = field(default="anonymous", validator=non_empty(MAX_ID))


@message("repair.reject", kind=Kind.COMMAND, area=Area.REPAIRS)
@frozen(kw_only=True)
class RejectRepair:
    repair_id: uuid.UUID
    reason: str = field(validator=non_empty(MAX_TEXT))
    by: str = field(default="anonymous", validator=non_empty(MAX_ID))


@message("repair.approved", kind=Kind.EVENT, area=Area.REPAIRS)
@frozen(kw_only=True)
class RepairApproved:
    repair_id: uuid.UUID
    by: str = field(validator=non_empty(MAX_ID))


@message("repair.rejected", kind=Kind.EVENT, area=Area.REPAIRS)
@frozen(kw_only=True)
class RepairRejected:
    repair_id: uuid.UUID
    reason: str = field(validator=non_empty(MAX_TEXT))
    by: str = field(validator=non_empty(MAX_ID))


@message("repair.applied", kind=Kind.EVENT, area=Area.REPAIRS)
@frozen(kw_only=True)
class RepairApplied:
    repair_id: uuid.UUID
    files: tuple[str, ...] = ()
    branch: str | None = field(default=None, validator=_opt_id)
    commit: str | None = field(default=None, validator=_opt_id)


def repair_stream_id(project: str, fingerprint: str) -> uuid.UUID:
    """The repair of one failure fingerprint: its stream id and its `repair_id` (one per fingerprint)."""
    return natural_id("repair", project, fingerprint)
