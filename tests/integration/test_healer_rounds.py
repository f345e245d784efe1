"""The healer proposes again when its patches went out of date under other repairs.

Real store (SQLite), real repository files, the real strategies and the healer's own handler; the
validator's verdicts are recorded through the same pure decision the validator uses.
"""

from __future__ import annotations

import datetime as dt
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from attrs import evolve

from actors.healer import repairs
from actors.healer import router as healer
from actors.healer.strategies import all_strategies
from actors.ports import Tick
from bus.aggregates import AggregateStore
from bus.store import EventStore
from contracts import Envelope, natural_id
from contracts.repairs import HealAbandoned, HealProposed, HealRejected, HealRequested
from contracts.values import FailureClass, ValidationEvidence
from tests.unit.healer.strategy_kit import make_failure

TEST_FILE = (
    "from shop import cart\n\n\ndef test_total():\n    assert cart.total_price([1, 2, 3]) == 6\n\n\n"
    "def test_count():\n    assert cart.count([1, 2]) == 2\n"
)


def clock() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@pytest.fixture
def store(sqlite_env: dict[str, str]) -> Iterator[EventStore]:
    s = EventStore(sqlite_env)
    yield s
    s.close()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "shop-repo"
    (root / "shop").mkdir(parents=True)
    (root / "tests").mkdir()
    (root / "shop/__init__.py").write_text("")
    (root / "shop/cart.py").write_text(
        "def total_prices(prices):\n    return sum(prices)\n\n\ndef count(prices):\n    return len(prices)\n")
    (root / "tests/test_cart.py").write_text(TEST_FILE)
    return root


def applies(repo: Path, patch: str) -> bool:
    done = subprocess.run(["git", "apply", "--check", "-"], cwd=repo, input=patch.encode(), capture_output=True,
                          check=False)
    return done.returncode == 0


async def test_an_out_of_date_round_gets_new_candidates_made_from_the_current_files(
    store: EventStore, repo: Path
) -> None:
    aggregates = AggregateStore(store, clock)

    async def no_stats() -> dict[Any, Any]:
        return {}

    deps = healer.HealerDeps(aggregates=aggregates, clock=clock, strategies=all_strategies(), stats=no_stats)
    failure = make_failure(
        FailureClass.RENAMED_SYMBOL, "tests/test_cart.py::test_total", exception_type="AttributeError",
        message="AttributeError: module 'shop.cart' has no attribute 'total_price'", file="tests/test_cart.py",
        line=5,
    )
    failure = evolve(failure, repo_path=str(repo))
    rid = repairs.repair_id(failure.project, failure.fingerprint)

    # Given a repair whose candidates were proposed against the files as they were
    await healer.handle(deps, Envelope(data=failure))
    first = [e.data for e in await aggregates.history(rid) if isinstance(e.data, HealProposed)]
    assert first and all(applies(repo, p.patch) for p in first)

    # When another repair changes the same lines before they are validated, and the validator finds
    # every candidate out of date
    test_file = repo / "tests/test_cart.py"
    test_file.write_text(TEST_FILE.replace("def test_total():", "def test_total():  # touched by another repair"))
    assert not any(applies(repo, p.patch) for p in first)
    for p in first:
        await aggregates.execute(rid, Tick(id=natural_id("verdict", p.candidate_id)), lambda h, c=p.candidate_id:
                                 repairs.record_verdict(repairs.fold(h), c, ok=False, reason="does not apply",
                                                        evidence=ValidationEvidence(), environment_id=None,
                                                        stale=True))
    history = await aggregates.history(rid)
    rejected = next(e for e in reversed(history) if isinstance(e.data, HealRejected))
    assert repairs.fold(history).out_of_date()
    await healer.handle(deps, rejected)

    # Then a second round is proposed, made from the current files, and the repair was never abandoned
    history = await aggregates.history(rid)
    state = repairs.fold(history)
    assert state.round == 2 and state.status is repairs.RepairStatus.VALIDATING
    second = [c.proposal for c in state.candidates]
    assert second and all(applies(repo, p.patch) for p in second)
    assert {p.candidate_id for p in second}.isdisjoint({p.candidate_id for p in first})
    assert not any(isinstance(e.data, HealAbandoned) for e in history)
    # And the same rejection delivered again starts nothing more
    await healer.handle(deps, rejected)
    assert sum(isinstance(e.data, HealRequested) for e in await aggregates.history(rid)) == 2
