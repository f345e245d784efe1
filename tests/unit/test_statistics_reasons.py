"""How the statistics view groups rejection and abandon reasons, and finds a validation environment's repair
(pure functions of projections/statistics.py)."""

from __future__ import annotations

import uuid

import pytest

from actors.validator.router import purpose
from contracts.repairs import HealRejected
from contracts.values import GuardrailViolation, MutationVerdict, ValidationEvidence
from projections.statistics import abandon_reason, rejection_reason, validation_repair

RID, CID = uuid.uuid4(), uuid.uuid4()


def rejected(reason: str, stale: bool = False, **evidence: object) -> HealRejected:
    return HealRejected(repair_id=RID, candidate_id=CID, reason=reason, stale=stale,
                        evidence=ValidationEvidence(**evidence))  # type: ignore[arg-type]


@pytest.mark.parametrize(("event", "group"), [
    (rejected("the patch no longer applies", stale=True), "out of date"),
    (rejected("guardrails: sleep_added: 0 before, 1 after",
              guardrails=(GuardrailViolation(rule="sleep_added"), GuardrailViolation(rule="skip_added"))),
     "guardrail: sleep_added"),
    (rejected("guardrails: assertion_weakened: x"), "guardrail: assertion_weakened"),
    (rejected("2 regression(s): a, b", regressions=("a", "b")), "regressions"),
    (rejected("mutation check failed: survived", mutation=MutationVerdict.FAILED), "mutation check failed"),
    (rejected("the patch does not apply: hunk 1 failed"), "patch does not apply"),
    (rejected("rerun 2 of 3 did not pass: AssertionError"), "rerun failed"),
    (rejected("the environment could not be provisioned: disk full"), "environment not provisioned"),
    (rejected("something new"), "other"),
])
def test_a_rejection_is_grouped_by_its_evidence_first_then_its_words(event: HealRejected, group: str) -> None:
    assert rejection_reason(event) == group


def test_abandon_reasons_group_whatever_their_numbers() -> None:
    assert abandon_reason("every candidate was rejected (3 tried)") == abandon_reason(
        "every candidate was rejected (12 tried)") == "every candidate was rejected (N tried)"
    assert abandon_reason("no strategy proposed\n a candidate") == "no strategy proposed a candidate"


def test_only_a_validation_environment_names_its_repair() -> None:
    assert validation_repair(purpose(RID, CID)) == str(RID)
    assert validation_repair("manual") is None
    assert validation_repair("validate:not-a-uuid:x") is None
