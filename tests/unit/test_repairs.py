"""The repair lifecycle of one failure fingerprint (actors/healer/repairs.py): Given a history, When a
failure, a verdict or an approval arrives, Then these events."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import pytest

from actors.healer import repairs
from actors.healer.strategy import Proposal
from actors.patching import FileEdit
from contracts import Envelope
from contracts.failures import FailureDetected, FailureUnrepairable, TestQuarantined
from contracts.repairs import (
    HealAbandoned,
    HealProposed,
    HealRejected,
    HealRequested,
    HealValidated,
    RepairApplied,
    RepairApproved,
    RepairCompleted,
)
from contracts.values import FailureClass, GuardrailViolation, MutationVerdict, ValidationEvidence

TEST = "tests/test_cart.py"
BEFORE = "from shop import cart\n\n\ndef test_total():\n    assert cart.total_price([1]) == 1\n"


def failure(category: FailureClass = FailureClass.RENAMED_SYMBOL, auto_apply: bool | None = None,
            run_id: str = "r1") -> FailureDetected:
    return FailureDetected(project="shop", test_id=f"{TEST}::test_total", run_id=run_id, fingerprint="f1",
                           category=category, repo_path="/repo", auto_apply=auto_apply)


def proposal(name: str, after: str, confidence: float = 0.8, **kw: Any) -> Proposal:
    return Proposal(strategy=name, confidence=confidence, edits=(FileEdit(path=TEST, before=BEFORE, after=after),),
                    explanation=f"{name} says so", **kw)


RID = repairs.repair_id("shop", "f1")
GOOD = ValidationEvidence(reruns=3, passes=3, mutation=MutationVerdict.PASSED)


def history(*events: Any) -> list[Envelope[Any]]:
    return [Envelope(data=e) for e in events]


def after(state_events: Sequence[Any]) -> repairs.RepairState:
    return repairs.fold(history(*state_events))


def opened(*proposals: Proposal, f: FailureDetected | None = None) -> list[Any]:
    return repairs.open_repair(repairs.RepairState(), f or failure(), list(proposals), RID)


def test_a_failure_with_candidates_opens_a_repair_with_ranked_proposals() -> None:
    # Given no repair yet, When a failure arrives with two candidates
    events = opened(proposal("renamed_symbol", BEFORE.replace("total_price", "cart_total")),
                    proposal("import_path", BEFORE.replace("shop import", "shop.v2 import"), 0.4))
    # Then the repair is requested and both candidates are proposed in order, as unified diffs
    assert [type(e) for e in events] == [HealRequested, HealProposed, HealProposed]
    first, second = events[1], events[2]
    assert (first.rank, first.strategy, second.rank, second.strategy) == (1, "renamed_symbol", 2, "import_path")
    assert "-    assert cart.total_price([1]) == 1\n+    assert cart.cart_total([1]) == 1" in first.patch
    assert first.files == (TEST,)
    assert first.candidate_id != second.candidate_id
    assert events[0].repo_path == "/repo"


def test_no_candidate_abandons_and_records_the_failure_as_unrepairable() -> None:
    events = opened()
    assert [type(e) for e in events] == [HealRequested, HealAbandoned, FailureUnrepairable]
    assert events[1].reason == "no strategy proposed a candidate"


@pytest.mark.parametrize("category", [FailureClass.PRODUCT_REGRESSION, FailureClass.ENVIRONMENT])
def test_product_regressions_and_infrastructure_are_never_healed(category: FailureClass) -> None:
    # When such a failure arrives (even with a candidate)
    events = opened(proposal("renamed_symbol", BEFORE + "\n"), f=failure(category))
    # Then only failure.unrepairable is recorded, once
    assert [type(e) for e in events] == [FailureUnrepairable]
    state = after(events)
    assert repairs.open_repair(state, failure(category), [], RID) == []


def test_one_open_repair_per_fingerprint() -> None:
    # Given a repair whose candidate is being validated
    state = after(opened(proposal("renamed_symbol", BEFORE.replace("total_price", "cart_total"))))
    # When the same failure is reported again by another run, Then nothing new starts
    assert repairs.open_repair(state, failure(run_id="r2"), [proposal("x", BEFORE + "#\n")], RID) == []


def test_a_validated_candidate_completes_the_repair_and_the_rest_are_not_tried() -> None:
    events = opened(proposal("renamed_symbol", BEFORE.replace("total_price", "cart_total")),
                    proposal("import_path", BEFORE + "\n", 0.3))
    state = after(events)
    first = state.next_candidate()
    assert first is not None and first.rank == 1
    verdict = repairs.record_verdict(state, first.candidate_id, ok=True, reason="", evidence=GOOD, environment_id=None)
    assert [type(e) for e in verdict] == [HealValidated, RepairCompleted]
    done = after([*events, *verdict])
    assert done.status is repairs.RepairStatus.COMPLETED
    assert done.next_candidate() is None
    assert verdict[1].patch == first.patch and verdict[1].evidence == GOOD


def test_a_rejected_candidate_moves_to_the_next_and_the_last_rejection_abandons() -> None:
    events = opened(proposal("a", BEFORE + "#1\n"), proposal("b", BEFORE + "#2\n", 0.5))
    state = after(events)
    bad = ValidationEvidence(guardrails=(GuardrailViolation(rule="skip_added"),))
    first = state.next_candidate()
    assert first is not None
    events += repairs.record_verdict(state, first.candidate_id, ok=False, reason="guardrail", evidence=bad,
                                     environment_id=None)
    state = after(events)
    second = state.next_candidate()
    assert second is not None and second.rank == 2 and state.status is repairs.RepairStatus.VALIDATING
    last = repairs.record_verdict(state, second.candidate_id, ok=False, reason="still red", evidence=bad,
                                  environment_id=None)
    assert [type(e) for e in last] == [HealRejected, HealAbandoned, FailureUnrepairable]
    assert after([*events, *last]).status is repairs.RepairStatus.ABANDONED


def test_an_out_of_date_round_is_proposed_again_not_abandoned() -> None:
    # Given a round of two candidates, one rejected on its merits and one whose patch no longer applies
    # because another repair changed the test file since
    events = opened(proposal("a", BEFORE + "#1\n"), proposal("b", BEFORE + "#2\n", 0.5))
    state = after(events)
    first = state.next_candidate()
    assert first is not None
    events += repairs.record_verdict(state, first.candidate_id, ok=False, reason="still red", evidence=GOOD,
                                     environment_id=None)
    second = after(events).next_candidate()
    assert second is not None
    last = repairs.record_verdict(after(events), second.candidate_id, ok=False, reason="does not apply",
                                  evidence=GOOD, environment_id=None, stale=True)
    # Then the repair is not abandoned: it waits for a new round
    assert [type(e) for e in last] == [HealRejected] and last[0].stale
    state = after([*events, *last])
    assert state.status is repairs.RepairStatus.VALIDATING and state.out_of_date()
    # And a new round opens with new candidates, although the repair is still open
    again = repairs.open_repair(state, failure(), [proposal("a", BEFORE + "#3\n")], RID)
    assert [type(e) for e in again] == [HealRequested, HealProposed]
    assert after([*events, *last, *again]).round == 2


def test_out_of_date_rounds_are_bounded() -> None:
    # Given a repair whose every round goes out of date
    events: list[Any] = []
    for round_ in range(1, repairs.MAX_ROUNDS + 1):
        events += repairs.open_repair(after(events), failure(), [proposal("a", BEFORE + f"#{round_}\n")], RID)
        cid = after(events).next_candidate()
        assert cid is not None, f"round {round_} proposed nothing"
        events += repairs.record_verdict(after(events), cid.candidate_id, ok=False, reason="does not apply",
                                         evidence=GOOD, environment_id=None, stale=True)
    # Then the last round abandons it, and no new round is opened
    assert [type(e) for e in events[-3:]] == [HealRejected, HealAbandoned, FailureUnrepairable]
    state = after(events)
    assert state.status is repairs.RepairStatus.ABANDONED and not state.out_of_date()
    assert state.round == repairs.MAX_ROUNDS


def test_a_repeated_verdict_is_ignored() -> None:
    events = opened(proposal("a", BEFORE + "#1\n"))
    state = after(events)
    cid = events[1].candidate_id
    events += repairs.record_verdict(state, cid, ok=True, reason="", evidence=GOOD, environment_id=None)
    assert repairs.record_verdict(after(events), cid, ok=False, reason="x", evidence=GOOD, environment_id=None) == []


def test_a_validated_quarantine_is_recorded_as_quarantine_never_as_a_repair() -> None:
    q = Proposal(strategy="flaky_quarantine", confidence=0.9, quarantine=True, explanation="flaky",
                 edits=(FileEdit(path=".cars-quarantine", before="", after=f"{TEST}::test_total\n", new_file=True),))
    events = opened(q, f=failure(FailureClass.FLAKY))
    assert "new file mode 100644" in events[1].patch and "--- /dev/null" in events[1].patch
    verdict = repairs.record_verdict(after(events), events[1].candidate_id, ok=True, reason="", evidence=GOOD,
                                     environment_id=None)
    assert [type(e) for e in verdict] == [HealValidated, TestQuarantined]
    assert after([*events, *verdict]).status is repairs.RepairStatus.QUARANTINED


def completed(category: FailureClass = FailureClass.RENAMED_SYMBOL, needs_approval: bool = False,
              auto_apply: bool | None = None) -> list[Any]:
    events = opened(proposal("s", BEFORE + "#\n", needs_approval=needs_approval),
                    f=failure(category, auto_apply=auto_apply))
    return events + repairs.record_verdict(after(events), events[1].candidate_id, ok=True, reason="",
                                           evidence=GOOD, environment_id=None)


AUTO = frozenset({FailureClass.RENAMED_SYMBOL})


def test_apply_policy_by_class_approval_and_the_runs_explicit_wish() -> None:
    assert repairs.wants_apply(after(completed()), AUTO)
    assert not repairs.wants_apply(after(completed(FailureClass.ASSERTION_DRIFT)), AUTO)
    assert not repairs.wants_apply(after(completed(needs_approval=True)), AUTO)
    assert not repairs.wants_apply(after(completed(auto_apply=False)), AUTO)
    assert repairs.wants_apply(after(completed(FailureClass.ASSERTION_DRIFT, auto_apply=True)), AUTO)
    approved = completed(FailureClass.ASSERTION_DRIFT, needs_approval=True)
    approved += repairs.approve(after(approved), RID, "alice")
    assert isinstance(approved[-1], RepairApproved) and repairs.wants_apply(after(approved), AUTO)


def test_approving_what_is_not_validated_is_rejected_and_applying_twice_records_once() -> None:
    with pytest.raises(repairs.RepairNotReady):
        repairs.approve(after(opened(proposal("a", BEFORE + "#\n"))), RID, "bob")
    events = completed()
    events += repairs.applied(after(events), RID, [TEST], None, None)
    assert isinstance(events[-1], RepairApplied)
    assert repairs.applied(after(events), RID, [TEST], None, None) == []


def test_a_finished_repair_reopens_as_a_new_round_with_new_candidate_ids() -> None:
    events = completed()
    events += repairs.applied(after(events), RID, [TEST], None, None)
    again = repairs.open_repair(after(events), failure(run_id="r9"), [proposal("s", BEFORE + "#\n")], RID)
    assert isinstance(again[0], HealRequested)
    assert again[1].candidate_id != events[1].candidate_id
    assert after([*events, *again]).round == 2


def test_candidate_ids_are_stable_per_round_and_rank() -> None:
    assert repairs.candidate_id(RID, 1, 1) == repairs.candidate_id(RID, 1, 1)
    assert len({repairs.candidate_id(RID, r, k) for r in (1, 2) for k in (1, 2)}) == 4
    assert repairs.repair_id("shop", "f1") != repairs.repair_id("shop", "f2")
    assert isinstance(RID, uuid.UUID)
