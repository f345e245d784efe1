"""The repair of one failure fingerprint: pure fold and decisions (no I/O, `now` passed in).

One stream per (project, fingerprint): `repair_id(project, fingerprint)`. While a repair is open
(candidates proposed and being validated, or a validated patch waiting to be applied) the same failure
reported again starts nothing: one open repair per fingerprint. A finished repair (applied, abandoned,
rejected, quarantined) is reopened by the next report of the failure, as a new round whose candidates
get new ids.

    heal.requested -> heal.proposed x k            (or heal.abandoned + failure.unrepairable)
    heal.validated -> repair.completed             (or test.quarantined for a quarantine)
    heal.rejected  -> next candidate, or heal.abandoned + failure.unrepairable
                      (or, when patches went out of date, heal.requested again: a new round)
    repair.completed -> repair.applied             (by policy, or after repair.approved)
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Sequence
from typing import Any

from attrs import evolve, frozen

from actors.errors import Rejected
from actors.healer.strategy import Proposal
from actors.patching import make_patch
from contracts import Envelope, natural_id
from contracts.failures import FailureDetected, FailureUnrepairable, TestQuarantined
from contracts.limits import MAX_PATCH
from contracts.repairs import (
    HealAbandoned,
    HealProposed,
    HealRejected,
    HealRequested,
    HealValidated,
    RepairApplied,
    RepairApproved,
    RepairCompleted,
    RepairRejected,
    repair_stream_id,
)
from contracts.values import FailureClass, ValidationEvidence

#: Failures CARS never "heals": a real bug must stay red, and infrastructure is not the test's fault.
UNREPAIRABLE = {
    FailureClass.PRODUCT_REGRESSION: "a product regression: the code under test is wrong, not the test",
    FailureClass.ENVIRONMENT: "an infrastructure failure (connection, DNS or disk), not a problem of the test",
}
MAX_CANDIDATES = 5
MAX_ROUNDS = 3  # proposals per repair while its patches keep going out of date under other repairs


class RepairStatus(enum.Enum):
    NONE = "none"
    VALIDATING = "validating"
    COMPLETED = "completed"  # a validated patch, not applied yet
    APPROVED = "approved"
    APPLIED = "applied"
    ABANDONED = "abandoned"
    REJECTED = "rejected"  # by a human
    QUARANTINED = "quarantined"
    UNREPAIRABLE = "unrepairable"


OPEN = frozenset({RepairStatus.VALIDATING, RepairStatus.COMPLETED, RepairStatus.APPROVED})


class RepairNotReady(Rejected):
    """An approve/reject/apply for a repair that has no validated patch waiting."""


@frozen(kw_only=True)
class Candidate:
    proposal: HealProposed
    verdict: str | None = None  # "validated" | "rejected"
    stale: bool = False  # rejected because the patch no longer applies to the current files


@frozen(kw_only=True)
class RepairState:
    status: RepairStatus = RepairStatus.NONE
    round: int = 0
    request: HealRequested | None = None
    candidates: tuple[Candidate, ...] = ()
    completed: RepairCompleted | None = None
    approved_by: str | None = None
    applied: RepairApplied | None = None
    rejected_reason: str | None = None

    def candidate(self, candidate_id: uuid.UUID) -> Candidate | None:
        return next((c for c in self.candidates if c.proposal.candidate_id == candidate_id), None)

    def validated(self) -> HealProposed | None:
        """The candidate validated in this round, if any."""
        return next((c.proposal for c in self.candidates if c.verdict == "validated"), None)

    def next_candidate(self) -> HealProposed | None:
        """The best candidate not validated or rejected yet (None once one was validated)."""
        if self.status is not RepairStatus.VALIDATING:
            return None
        pending = [c.proposal for c in self.candidates if c.verdict is None]
        return min(pending, key=lambda p: p.rank) if pending else None

    def out_of_date(self) -> bool:
        """Every candidate of this round was rejected, some only because other repairs changed the files
        since they were proposed, and rounds are left: propose again against the current files."""
        return (self.status is RepairStatus.VALIDATING and self.round < MAX_ROUNDS and bool(self.candidates)
                and all(c.verdict == "rejected" for c in self.candidates) and any(c.stale for c in self.candidates))


def repair_id(project: str, fingerprint: str) -> uuid.UUID:
    return repair_stream_id(project, fingerprint)


def candidate_id(repair: uuid.UUID, round_: int, rank: int) -> uuid.UUID:
    return natural_id("candidate", repair, round_, rank)


def fold(history: Sequence[Envelope[Any]], start: RepairState | None = None) -> RepairState:
    """The state after `history` (continuing from `start`, else from nothing)."""
    state = start or RepairState()
    for env in history:
        e = env.data
        if isinstance(e, HealRequested):
            state = RepairState(status=RepairStatus.VALIDATING, round=state.round + 1, request=e)
        elif isinstance(e, HealProposed):
            state = evolve(state, candidates=(*state.candidates, Candidate(proposal=e)))
        elif isinstance(e, HealValidated | HealRejected):
            verdict = "validated" if isinstance(e, HealValidated) else "rejected"
            stale = isinstance(e, HealRejected) and e.stale
            state = evolve(state, candidates=tuple(
                evolve(c, verdict=verdict, stale=stale) if c.proposal.candidate_id == e.candidate_id else c
                for c in state.candidates
            ))
        elif isinstance(e, RepairCompleted):
            state = evolve(state, status=RepairStatus.COMPLETED, completed=e)
        elif isinstance(e, TestQuarantined):
            state = evolve(state, status=RepairStatus.QUARANTINED)
        elif isinstance(e, HealAbandoned):
            state = evolve(state, status=RepairStatus.ABANDONED)
        elif isinstance(e, FailureUnrepairable) and state.status is not RepairStatus.ABANDONED:
            state = evolve(state, status=RepairStatus.UNREPAIRABLE, round=state.round + 1)
        elif isinstance(e, RepairApproved):
            state = evolve(state, status=RepairStatus.APPROVED, approved_by=e.by)
        elif isinstance(e, RepairRejected):
            state = evolve(state, status=RepairStatus.REJECTED, rejected_reason=f"{e.by}: {e.reason}")
        elif isinstance(e, RepairApplied):
            state = evolve(state, status=RepairStatus.APPLIED, applied=e)
    return state


def open_repair(
    state: RepairState, failure: FailureDetected, proposals: Sequence[Proposal], rid: uuid.UUID
) -> list[Any]:
    """What a newly detected failure starts (or an out-of-date round: `RepairState.out_of_date`).
    `proposals` come ranked, best first."""
    if state.status in OPEN and not state.out_of_date():
        return []  # one open repair per fingerprint: the same failure again adds no work
    if failure.category in UNREPAIRABLE:
        if state.status is RepairStatus.UNREPAIRABLE:
            return []
        return [_unrepairable(failure, UNREPAIRABLE[failure.category])]
    round_ = state.round + 1
    events: list[Any] = [HealRequested(
        repair_id=rid, project=failure.project, test_id=failure.test_id, fingerprint=failure.fingerprint,
        category=failure.category, repo_path=failure.repo_path, test_cmd=failure.test_cmd, commit=failure.commit,
        run_id=failure.run_id, auto_apply=failure.auto_apply, reason=failure.reason, evidence=failure.evidence,
    )]
    proposed = [p for p in proposals if p.edits][:MAX_CANDIDATES]
    patches = [(p, make_patch(p.edits)) for p in proposed]
    patches = [(p, patch) for p, patch in patches if patch and len(patch) <= MAX_PATCH]
    if not patches:
        reason = "no strategy proposed a candidate" if failure.repo_path else "the report names no repository"
        return [*events, HealAbandoned(repair_id=rid, reason=reason), _unrepairable(failure, reason)]
    for rank, (p, patch) in enumerate(patches, start=1):
        events.append(HealProposed(
            repair_id=rid, candidate_id=candidate_id(rid, round_, rank), strategy=p.strategy, rank=rank,
            confidence=round(p.confidence, 4), patch=patch, files=tuple(sorted({e.path for e in p.edits})),
            explanation=p.explanation[:8000], needs_approval=p.needs_approval, quarantine=p.quarantine,
        ))
    return events


def record_verdict(
    state: RepairState, cid: uuid.UUID, *, ok: bool, reason: str, evidence: ValidationEvidence,
    environment_id: uuid.UUID | None, stale: bool = False,
) -> list[Any]:
    """The validator's verdict on one candidate, and what follows from it. A `stale` rejection (the patch
    no longer applies to the current files) that leaves the round without candidates does not abandon
    the repair while rounds are left: the healer proposes again (`RepairState.out_of_date`)."""
    candidate = state.candidate(cid)
    if candidate is None or candidate.verdict is not None or state.status is not RepairStatus.VALIDATING:
        return []  # a stale or repeated verdict
    request = state.request
    assert request is not None  # candidates only exist after a request
    p = candidate.proposal
    if ok:
        validated = HealValidated(repair_id=p.repair_id, candidate_id=cid, environment_id=environment_id,
                                  evidence=evidence)
        if p.quarantine:
            return [validated, TestQuarantined(
                project=request.project, test_id=request.test_id, quarantine_file=p.files[0] if p.files else "?",
                reason=p.explanation or "flaky", repair_id=p.repair_id,
            )]
        return [validated, RepairCompleted(
            repair_id=p.repair_id, candidate_id=cid, project=request.project, test_id=request.test_id,
            category=request.category, strategy=p.strategy, confidence=p.confidence, patch=p.patch,
            evidence=evidence, needs_approval=p.needs_approval,
        )]
    events: list[Any] = [HealRejected(
        repair_id=p.repair_id, candidate_id=cid, environment_id=environment_id, reason=reason[:8000] or "rejected",
        evidence=evidence, stale=stale,
    )]
    after = fold([Envelope(data=e) for e in events], start=state)
    if after.next_candidate() is None and not after.out_of_date():
        why = f"every candidate was rejected ({len(state.candidates)} tried)"
        events += [HealAbandoned(repair_id=p.repair_id, reason=why), FailureUnrepairable(
            project=request.project, test_id=request.test_id, fingerprint=request.fingerprint,
            category=request.category, reason=why,
        )]
    return events


def wants_apply(state: RepairState, auto_classes: frozenset[FailureClass]) -> bool:
    """Whether the completed repair is applied without a human: the run's explicit wish first
    (`auto_apply`), else the project's policy for its class (and never when it needs approval)."""
    if state.status is RepairStatus.APPROVED:
        return True
    if state.status is RepairStatus.QUARANTINED and state.request is not None:
        # A quarantine skips a test in the project's runs: written when asked, or by policy for `flaky`.
        if state.request.auto_apply is not None:
            return state.request.auto_apply
        return FailureClass.FLAKY in auto_classes
    if state.status is not RepairStatus.COMPLETED or state.completed is None or state.request is None:
        return False
    if state.request.auto_apply is not None:
        return state.request.auto_apply
    return not state.completed.needs_approval and state.request.category in auto_classes


def approve(state: RepairState, rid: uuid.UUID, by: str) -> list[Any]:
    if state.status in (RepairStatus.APPROVED, RepairStatus.APPLIED):
        return []
    if state.status is not RepairStatus.COMPLETED:
        raise RepairNotReady(f"repair {rid} has no validated patch waiting (it is {state.status.value})")
    return [RepairApproved(repair_id=rid, by=by)]


def reject(state: RepairState, rid: uuid.UUID, reason: str, by: str) -> list[Any]:
    if state.status is RepairStatus.REJECTED:
        return []
    if state.status not in (RepairStatus.COMPLETED, RepairStatus.APPROVED):
        raise RepairNotReady(f"repair {rid} has no validated patch waiting (it is {state.status.value})")
    return [RepairRejected(repair_id=rid, reason=reason, by=by)]


def applied(state: RepairState, rid: uuid.UUID, files: Sequence[str], branch: str | None,
            commit: str | None) -> list[Any]:
    if state.status is RepairStatus.APPLIED:
        return []
    if state.status not in (RepairStatus.COMPLETED, RepairStatus.APPROVED, RepairStatus.QUARANTINED):
        raise RepairNotReady(f"repair {rid} cannot be applied (it is {state.status.value})")
    return [RepairApplied(repair_id=rid, files=tuple(files), branch=branch, commit=commit)]


def failure_of(request: HealRequested, *, run_id: str) -> FailureDetected:
    """The failure a repair was requested for, as recorded in its request (to propose for it again).
    `run_id` stands in when the request names no run."""
    r = request
    return FailureDetected(
        project=r.project, test_id=r.test_id, run_id=r.run_id or run_id, fingerprint=r.fingerprint,
        category=r.category, reason=r.reason, evidence=r.evidence, commit=r.commit, repo_path=r.repo_path,
        test_cmd=r.test_cmd, auto_apply=r.auto_apply,
    )


def _unrepairable(failure: FailureDetected, reason: str) -> FailureUnrepairable:
    return FailureUnrepairable(project=failure.project, test_id=failure.test_id, fingerprint=failure.fingerprint,
                               category=failure.category, reason=reason)


__all__ = [
    "MAX_ROUNDS", "OPEN", "UNREPAIRABLE", "Candidate", "RepairNotReady", "RepairState", "RepairStatus", "applied",
    "approve", "candidate_id", "failure_of", "fold", "open_repair", "record_verdict", "reject", "repair_id",
    "wants_apply",
]
