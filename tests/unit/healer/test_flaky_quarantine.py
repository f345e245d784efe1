"""flaky_quarantine: a flaky test is listed in the quarantine file, labelled as quarantine."""

from __future__ import annotations

from pathlib import Path

from actors.healer.strategies.flaky_quarantine import QUARANTINE_FILE, FlakyQuarantine, listed_ids
from contracts.values import FailureClass
from tests.unit.healer.strategy_kit import apply, make_failure, make_workspace

TEST_ID = "tests/test_cart.py::TestCart::test_total[eur]"


def test_a_flaky_test_is_appended_with_its_reason(tmp_path: Path) -> None:
    # Given a quarantine file with one entry and no trailing newline
    ws = make_workspace(tmp_path, {QUARANTINE_FILE: "tests/test_a.py::test_x  # flaky", "tests/test_cart.py": ""})
    failure = make_failure(FailureClass.FLAKY, TEST_ID, reason="flip rate 0.40\nover 20 runs")
    strategy = FlakyQuarantine()
    # When the strategy proposes
    assert strategy.applies(failure)
    [proposal] = strategy.propose(failure, ws)
    # Then the id is appended on its own line with a one-line reason, labelled as quarantine
    assert apply(ws, proposal) == {
        QUARANTINE_FILE: "tests/test_a.py::test_x  # flaky\n"
        f"{TEST_ID}  # flip rate 0.40 over 20 runs (fingerprint fp-1234)\n"
    }
    assert proposal.quarantine and proposal.strategy == "flaky_quarantine"
    assert listed_ids(proposal.edits[0].after) == {"tests/test_a.py::test_x", TEST_ID}


def test_the_file_is_created_when_absent(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path, {})
    [proposal] = FlakyQuarantine().propose(make_failure(FailureClass.FLAKY, TEST_ID), ws)
    assert proposal.edits[0].before == ""
    assert proposal.edits[0].after == f"{TEST_ID}  # flaky (fingerprint fp-1234)\n"


def test_an_already_quarantined_test_is_not_proposed_again(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path, {QUARANTINE_FILE: f"# quarantined tests\n{TEST_ID}  # old reason\n"})
    assert FlakyQuarantine().propose(make_failure(FailureClass.FLAKY, TEST_ID), ws) == []


def test_only_flaky_failures_apply() -> None:
    assert not FlakyQuarantine().applies(make_failure(FailureClass.TIMEOUT, TEST_ID))
