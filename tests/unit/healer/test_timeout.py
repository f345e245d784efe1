"""timeout: an explicit limit in the failing test is doubled, within a cap; nothing else is changed."""

from __future__ import annotations

from pathlib import Path

from actors.healer.strategies.timeout import RaiseTimeout
from contracts.values import FailureClass
from tests.unit.healer.strategy_kit import apply, make_failure, make_workspace

TEST = (
    "import asyncio\n"
    "import pytest\n\n\n"
    "@pytest.mark.timeout(3)\n"
    "async def test_fetch(client):\n"
    "    await asyncio.wait_for(client.get('/'), 2)\n"
    "    client.poll(timeout=1.5, retries=3)\n\n\n"
    "def test_other(client):\n"
    "    client.poll(timeout=1)\n"
)


def test_the_limit_on_the_failing_line_is_doubled(tmp_path: Path) -> None:
    # Given the wait_for on line 7 timed out
    ws = make_workspace(tmp_path, {"tests/test_api.py": TEST})
    failure = make_failure(
        FailureClass.TIMEOUT, "tests/test_api.py::test_fetch", exception_type="TimeoutError",
        message="TimeoutError", file="tests/test_api.py", line=7,
    )
    strategy = RaiseTimeout()
    # When the strategy proposes
    assert strategy.applies(failure)
    [proposal] = strategy.propose(failure, ws)
    # Then only that limit changes
    assert apply(ws, proposal) == {"tests/test_api.py": TEST.replace("client.get('/'), 2)", "client.get('/'), 4)")}


def test_a_pytest_timeout_failure_raises_the_mark(tmp_path: Path) -> None:
    # Given pytest-timeout stopped the test
    ws = make_workspace(tmp_path, {"tests/test_api.py": TEST})
    failure = make_failure(FailureClass.TIMEOUT, "tests/test_api.py::test_fetch", message="Failed: Timeout >3.0s")
    # When the strategy proposes
    [proposal] = RaiseTimeout().propose(failure, ws)
    # Then the mark's limit is doubled
    assert apply(ws, proposal) == {"tests/test_api.py": TEST.replace("timeout(3)", "timeout(6)")}


def test_without_a_line_every_limit_of_the_test_is_raised_and_floats_stay_floats(tmp_path: Path) -> None:
    # Given a timeout without a location
    ws = make_workspace(tmp_path, {"tests/test_api.py": TEST})
    failure = make_failure(FailureClass.TIMEOUT, "tests/test_api.py::test_fetch", message="TimeoutError")
    # When the strategy proposes
    [proposal] = RaiseTimeout().propose(failure, ws)
    # Then every limit of test_fetch is doubled, and test_other's is not touched
    expected = TEST.replace("timeout(3)", "timeout(6)").replace("'/'), 2)", "'/'), 4)").replace(
        "timeout=1.5", "timeout=3.0"
    )
    assert apply(ws, proposal) == {"tests/test_api.py": expected}


def test_limits_are_capped_and_never_invented(tmp_path: Path) -> None:
    # Given a limit already near the cap, one at the cap, and a test with no explicit limit
    test = (
        "def test_near(c):\n    c.run(timeout=45)\n\n\n"
        "def test_at_cap(c):\n    c.run(timeout=60)\n\n\n"
        "def test_none(c):\n    c.run()\n"
    )
    ws = make_workspace(tmp_path, {"tests/test_api.py": test})
    near, at_cap, none = (
        make_failure(FailureClass.TIMEOUT, f"tests/test_api.py::{name}", message="TimeoutError")
        for name in ("test_near", "test_at_cap", "test_none")
    )
    # When the strategy proposes for each
    [proposal] = RaiseTimeout().propose(near, ws)
    # Then the near one is raised to the cap, and the others get nothing
    assert apply(ws, proposal) == {"tests/test_api.py": test.replace("timeout=45", "timeout=60")}
    assert RaiseTimeout().propose(at_cap, ws) == []
    assert RaiseTimeout().propose(none, ws) == []
    assert "sleep" not in proposal.edits[0].after


def test_millisecond_limits_use_a_millisecond_cap(tmp_path: Path) -> None:
    test = "def test_ms(c):\n    c.run(timeout_ms=500)\n"
    ws = make_workspace(tmp_path, {"tests/test_api.py": test})
    failure = make_failure(FailureClass.TIMEOUT, "tests/test_api.py::test_ms", message="TimeoutError")
    [proposal] = RaiseTimeout().propose(failure, ws)
    assert apply(ws, proposal) == {"tests/test_api.py": test.replace("500", "1000")}
