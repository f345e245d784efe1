"""A mixed history for the operator views (statistics, timeline, flaky tests, run trends), written
through the actors' own decision functions at chosen event times, and the figures it must give.

Two projects. `shop`: f1 is healed on the second candidate (the first broke a guardrail), applied,
then fails again the same way (re-broken); f2's only candidate fails its reruns (abandoned); f3 is a
product regression (unrepairable); test_c flips and is quarantined (validated, applied). `web`: f4 is
healed and applied and stays healed; one run is an infrastructure storm.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from actors.healer import repairs
from actors.healer.strategy import Proposal
from actors.monitor.history import watch_id
from actors.patching import FileEdit
from actors.validator.router import purpose
from bus.store import EventStore
from contracts import Envelope, natural_id
from contracts.environments import EnvironmentReleased, EnvironmentRequested
from contracts.failures import FailureDetected, FlakinessChanged
from contracts.monitoring import OutcomesRecorded, TestOutcome
from contracts.runs import RunRecorded, StormDetected
from contracts.values import FailureClass, GuardrailViolation, MutationVerdict, Outcome, ValidationEvidence

T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
OLD = "def test_a():\n    assert f() == 1\n"
GOOD = ValidationEvidence(reruns=3, passes=3, mutation=MutationVerdict.PASSED)
GUARDRAIL = ValidationEvidence(guardrails=(GuardrailViolation(rule="assertion_removed", detail="1 before, 0 after"),))


def at(t: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=t)


def failure(project: str, fp: str, test: str, category: FailureClass, run_id: str) -> FailureDetected:
    return FailureDetected(project=project, test_id=test, run_id=run_id, fingerprint=fp, category=category,
                           repo_path="/repo", reason=f"{category.value} in {test}")


def proposal(name: str, n: int, quarantine: bool = False) -> Proposal:
    return Proposal(strategy=name, confidence=round(0.9 - n / 10, 2), explanation=f"{name} #{n}", quarantine=quarantine,
                    edits=(FileEdit(path="tests/test_a.py", before=OLD, after=OLD + "#" * n + "\n"),))


class Writer:
    """Appends events at chosen times, keeping every stream's version."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.positions: list[int] = []

    def append(self, stream: uuid.UUID, events: list[Any], t: float) -> None:
        version = len(self.store.load(stream))
        self.positions += self.store.append(stream, version, [Envelope(data=e, occurred_at=at(t)) for e in events])

    def repair(self, rid: uuid.UUID, decide: Any, t: float) -> list[Any]:
        events = decide(repairs.fold(self.store.load(rid)))
        self.append(rid, events, t)
        return events

    def run(self, project: str, run_id: str, events: list[Any], t: float, failed: int = 0, total: int = 10) -> None:
        recorded = RunRecorded(project=project, run_id=run_id, total=total, passed=total - failed, failed=failed)
        self.append(natural_id("run", project, run_id), [recorded, *events], t)

    def environment(self, rid: uuid.UUID, cid: uuid.UUID, start: float, end: float) -> uuid.UUID:
        env_id = natural_id("validation-environment", cid)
        self.append(env_id, [EnvironmentRequested(environment_id=env_id, template="python", backend="local",
                                                  ttl_s=3600, purpose=purpose(rid, cid))], start)
        self.append(env_id, [EnvironmentReleased(environment_id=env_id)], end)
        return env_id

    def verdict(self, rid: uuid.UUID, t: float, ok: bool, reason: str, evidence: ValidationEvidence,
                env_id: uuid.UUID | None) -> None:
        self.repair(rid, lambda s: repairs.record_verdict(
            s, s.next_candidate().candidate_id, ok=ok, reason=reason, evidence=evidence, environment_id=env_id), t)


def next_candidate(store: EventStore, rid: uuid.UUID) -> uuid.UUID:
    candidate = repairs.fold(store.load(rid)).next_candidate()
    assert candidate is not None
    return candidate.candidate_id


R1, R2, R3 = (repairs.repair_id("shop", fp) for fp in ("f1", "f2", "f3"))
R4 = repairs.repair_id("web", "f4")
RC = repairs.repair_id("shop", "fc")
TEST_A, TEST_B, TEST_C = "tests/test_a.py::test_a", "tests/test_b.py::test_b", "tests/test_c.py::test_c"


def write_operator_history(store: EventStore) -> Writer:
    w = Writer(store)
    f1 = failure("shop", "f1", TEST_A, FailureClass.RENAMED_SYMBOL, "r1")
    f2 = failure("shop", "f2", TEST_B, FailureClass.RENAMED_SYMBOL, "r1")
    f3 = failure("shop", "f3", "tests/test_d.py::test_d", FailureClass.PRODUCT_REGRESSION, "r1")
    w.run("shop", "r1", [f1, f2, f3], 0, failed=3)
    w.append(watch_id("shop"), [OutcomesRecorded(project="shop", run_id="r1", outcomes=(
        TestOutcome(test_id=TEST_C, outcome=Outcome.FAILED),))], 0)
    # f1: candidate 1 breaks a guardrail (60 s of environment), candidate 2 is validated (120 s)
    w.repair(R1, lambda s: repairs.open_repair(s, f1, [proposal("renamed_symbol", 1), proposal("import_path", 2)],
                                               R1), 10)
    env = w.environment(R1, next_candidate(store, R1), 20, 80)
    w.verdict(R1, 80, False, "guardrails: assertion_removed: 1 before, 0 after", GUARDRAIL, env)
    env = w.environment(R1, next_candidate(store, R1), 90, 210)
    w.verdict(R1, 210, True, "3/3 reruns passed", GOOD, env)
    # f2: its only candidate fails a rerun: abandoned and unrepairable
    w.repair(R2, lambda s: repairs.open_repair(s, f2, [proposal("renamed_symbol", 3)], R2), 10)
    w.verdict(R2, 50, False, "rerun 1 of 3 did not pass: AssertionError", ValidationEvidence(reruns=1), None)
    # f3: a product regression
    w.repair(R3, lambda s: repairs.open_repair(s, f3, [], R3), 10)
    w.repair(R1, lambda s: repairs.applied(s, R1, ["tests/test_a.py"], None, None), 300)
    # run r2: f1 fails again the same way (re-broken); test_c passes
    w.run("shop", "r2", [failure("shop", "f1", TEST_A, FailureClass.RENAMED_SYMBOL, "r2")], 400, failed=1)
    w.append(watch_id("shop"), [OutcomesRecorded(project="shop", run_id="r2", outcomes=(
        TestOutcome(test_id=TEST_C, outcome=Outcome.PASSED),))], 400)
    # run r3: test_c fails again, and the monitor calls it flaky; it is quarantined and applied
    w.run("shop", "r3", [], 450, failed=1)
    w.append(watch_id("shop"), [
        OutcomesRecorded(project="shop", run_id="r3", outcomes=(TestOutcome(test_id=TEST_C, outcome=Outcome.FAILED),)),
        FlakinessChanged(project="shop", test_id=TEST_C, flaky=True, flip_rate=1.0, window=3, reason="flips"),
    ], 450)
    fc = failure("shop", "fc", TEST_C, FailureClass.FLAKY, "r3")
    w.repair(RC, lambda s: repairs.open_repair(s, fc, [proposal("flaky_quarantine", 1, quarantine=True)], RC), 460)
    w.verdict(RC, 470, True, "quarantined", GOOD, None)
    w.repair(RC, lambda s: repairs.applied(s, RC, [".cars-quarantine"], None, None), 480)
    # web: a storm, then f4 healed in 100 s and applied
    w.run("web", "w1", [StormDetected(project="web", run_id="w1", failed_share=0.9, reason="9 of 10 tests failed")],
          500, failed=9)
    f4 = failure("web", "f4", "tests/test_e.py::test_e", FailureClass.IMPORT_ERROR, "w2")
    w.run("web", "w2", [f4], 86400 + 1000, failed=1)
    w.repair(R4, lambda s: repairs.open_repair(s, f4, [proposal("import_path", 1)], R4), 86400 + 1010)
    w.verdict(R4, 86400 + 1100, True, "3/3 reruns passed", GOOD, None)
    w.repair(R4, lambda s: repairs.applied(s, R4, ["tests/test_e.py"], None, None), 86400 + 1200)
    return w


__all__ = ["R1", "R2", "R3", "R4", "RC", "T0", "TEST_A", "TEST_C", "Writer", "write_operator_history"]
