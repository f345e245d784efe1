"""The heals view (projections/heals.py) over a real event store and view database, on SQLite and
PostgreSQL: repairs and candidates folded from a mixed history, strategy statistics, and replay --check."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from actors.healer import repairs
from actors.healer.strategy import Proposal
from actors.patching import FileEdit
from bus.store import EventStore
from contracts import Envelope
from contracts.failures import FailureDetected
from contracts.values import FailureClass, MutationVerdict, ValidationEvidence
from projections.db import ViewDB
from projections.heals import list_repairs, repair_candidates, strategy_stats
from projections.replay import check
from projections.runner import ProjectionRunner
from projections.views import default_views
from tests.integration.store_views import StoreAndViews

OLD = "def test_a():\n    assert f() == 1\n"
GOOD = ValidationEvidence(reruns=3, passes=3, mutation=MutationVerdict.PASSED)


def failure(fp: str, category: FailureClass = FailureClass.RENAMED_SYMBOL) -> FailureDetected:
    return FailureDetected(project="shop", test_id=f"tests/test_{fp}.py::test_a", run_id="r1", fingerprint=fp,
                           category=category, repo_path="/repo")


def proposal(name: str, n: int) -> Proposal:
    return Proposal(strategy=name, confidence=0.5, explanation="",
                    edits=(FileEdit(path="tests/test_a.py", before=OLD, after=OLD + "#" * n + "\n"),))


class Writer:
    def __init__(self, store: EventStore) -> None:
        self.store = store

    def step(self, rid: uuid.UUID, decide: Any) -> list[Any]:
        history = self.store.load(rid)
        events = decide(repairs.fold(history))
        self.store.append(rid, len(history), [Envelope(data=e) for e in events])
        return events


def write_history(store: EventStore) -> None:
    w = Writer(store)
    # f1: two candidates, the first rejected, the second validated, approved and applied
    r1 = repairs.repair_id("shop", "f1")
    w.step(r1, lambda s: repairs.open_repair(s, failure("f1"), [proposal("renamed_symbol", 1),
                                                                 proposal("import_path", 2)], r1))
    for ok in (False, True):
        w.step(r1, lambda s, ok=ok: repairs.record_verdict(
            s, s.next_candidate().candidate_id, ok=ok, reason="" if ok else "still red", evidence=GOOD,
            environment_id=None))
    w.step(r1, lambda s: repairs.approve(s, r1, "alice"))
    w.step(r1, lambda s: repairs.applied(s, r1, ["tests/test_a.py"], "cars/repair-1", "abc123"))
    # f2: one candidate, rejected: abandoned
    r2 = repairs.repair_id("shop", "f2")
    w.step(r2, lambda s: repairs.open_repair(s, failure("f2"), [proposal("renamed_symbol", 3)], r2))
    w.step(r2, lambda s: repairs.record_verdict(s, s.next_candidate().candidate_id, ok=False, reason="guardrail",
                                                evidence=GOOD, environment_id=None))
    # f3: a product regression, never healed
    r3 = repairs.repair_id("shop", "f3")
    w.step(r3, lambda s: repairs.open_repair(s, failure("f3", FailureClass.PRODUCT_REGRESSION), [], r3))


class HealsContract(StoreAndViews):
    def test_repairs_candidates_and_statistics_follow_the_history(self, store: EventStore, db: ViewDB) -> None:
        # Given a history of three repairs, When the views catch up
        write_history(store)
        ProjectionRunner(store, db, default_views()).catch_up()
        # Then each repair shows its final state
        rows = {r["fingerprint"]: r for r in list_repairs(db)}
        assert {fp: r["status"] for fp, r in rows.items()} == {
            "f1": "applied", "f2": "abandoned", "f3": "unrepairable"}
        assert (rows["f1"]["strategy"], rows["f1"]["branch"], rows["f1"]["commit_sha"]) == (
            "import_path", "cars/repair-1", "abc123")
        assert rows["f3"]["category"] == "product_regression"
        assert [r["fingerprint"] for r in list_repairs(db, status="abandoned")] == ["f2"]
        # And each candidate its verdict, in rank order
        cands = repair_candidates(db, rows["f1"]["repair_id"])
        assert [(c["rank"], c["verdict"]) for c in cands] == [(1, "rejected"), (2, "validated")]
        # And the statistics count verdicts per (class, strategy)
        assert strategy_stats(db) == {("renamed_symbol", "renamed_symbol"): (0, 2),
                                      ("renamed_symbol", "import_path"): (1, 0)}

    def test_replay_check_finds_no_difference(self, store: EventStore, db: ViewDB) -> None:
        write_history(store)
        ProjectionRunner(store, db, default_views()).catch_up()
        report = check(store, db, default_views())
        assert report.ok, report.render()


class TestSQLite(HealsContract):
    @pytest.fixture
    def store_env(self, sqlite_env: dict[str, str]) -> dict[str, str]:
        return sqlite_env


@pytest.mark.postgres
class TestPostgres(HealsContract):
    @pytest.fixture
    def store_env(self, postgres_env: dict[str, str]) -> dict[str, str]:
        return postgres_env
