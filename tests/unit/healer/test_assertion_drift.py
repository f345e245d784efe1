"""assertion_drift: a drifted expected literal is replaced only when the evidence is unambiguous."""

from __future__ import annotations

from pathlib import Path

from actors.healer.strategies.assertion_drift import AssertionDrift
from actors.workspace import Workspace
from contracts.failures import FailureDetected
from contracts.values import ComparedValues, FailureClass
from tests.unit.healer.strategy_kit import apply, make_failure, make_workspace

TEST = (
    "from shop.cart import total, label\n\n\n"
    "def test_total():\n"
    "    assert total([1, 2]) == 42  # expected from the price list\n\n\n"
    "def test_label():\n"
    "    assert 'Cart' == label()\n"
)


def _setup(tmp_path: Path, left: str, right: str, line: int = 5, test: str = TEST) -> tuple[Workspace, FailureDetected]:
    ws = make_workspace(tmp_path, {"shop/cart.py": "def total(x):\n    return 41\n", "tests/test_cart.py": test})
    failure = make_failure(
        FailureClass.ASSERTION_DRIFT, "tests/test_cart.py::test_total", exception_type="AssertionError",
        message=f"AssertionError: assert {left} == {right}", file="tests/test_cart.py", line=line,
        compared=ComparedValues(left=left, right=right),
    )
    return ws, failure


def test_the_expected_literal_becomes_the_observed_value(tmp_path: Path) -> None:
    # Given `assert total(...) == 42` failed with 41 observed
    ws, failure = _setup(tmp_path, "41", "42")
    strategy = AssertionDrift()
    # When the strategy proposes
    assert strategy.applies(failure)
    [proposal] = strategy.propose(failure, ws)
    # Then only the literal changes, and a human must approve it
    assert apply(ws, proposal) == {"tests/test_cart.py": TEST.replace("== 42  #", "== 41  #")}
    assert proposal.needs_approval and proposal.confidence <= 0.5


def test_a_literal_on_the_left_is_the_expectation(tmp_path: Path) -> None:
    # Given `assert 'Cart' == label()` failed with 'Basket' observed
    ws, failure = _setup(tmp_path, "'Cart'", "'Basket'", line=9)
    # When the strategy proposes
    [proposal] = AssertionDrift().propose(failure, ws)
    # Then the left literal takes the observed value
    assert apply(ws, proposal) == {"tests/test_cart.py": TEST.replace("'Cart' == label()", "'Basket' == label()")}


def test_containers_are_replaced_when_they_are_literals(tmp_path: Path) -> None:
    test = "def test_total():\n    assert items() == [1, 2]\n"
    ws, failure = _setup(tmp_path, "[1, 2, 3]", "[1, 2]", line=2, test=test)
    [proposal] = AssertionDrift().propose(failure, ws)
    assert apply(ws, proposal) == {"tests/test_cart.py": "def test_total():\n    assert items() == [1, 2, 3]\n"}


def test_refuses_when_the_observed_value_is_not_a_literal(tmp_path: Path) -> None:
    # Given the observed repr is an object, or truncated by pytest
    for observed in ("<shop.cart.Money object at 0x7f>", "[1, 2, ...]", "Decimal('41')"):
        ws, failure = _setup(tmp_path, observed, "42")
        # Then nothing is proposed
        assert AssertionDrift().propose(failure, ws) == [], observed


def test_refuses_when_the_type_changes(tmp_path: Path) -> None:
    # Given 42 expected but '41' (a str) or 41.0 (a float) observed
    for observed in ("'41'", "41.0", "True"):
        ws, failure = _setup(tmp_path, observed, "42")
        # Then nothing is proposed
        assert AssertionDrift().propose(failure, ws) == [], observed


def test_refuses_when_the_evidence_does_not_match_the_source_line(tmp_path: Path) -> None:
    # Given evidence whose expected value is not the literal written on that line, or a line without an assert
    ws, failure = _setup(tmp_path, "41", "43")
    ws2, failure2 = _setup(tmp_path / "b", "41", "42", line=4)
    # Then nothing is proposed
    assert AssertionDrift().propose(failure, ws) == []
    assert AssertionDrift().propose(failure2, ws2) == []


def test_refuses_when_both_sides_or_neither_side_are_literals(tmp_path: Path) -> None:
    both = "def test_total():\n    assert 41 == 42\n"
    neither = "def test_total():\n    assert total() == EXPECTED\n"
    for test in (both, neither):
        ws, failure = _setup(tmp_path, "41", "42", line=2, test=test)
        assert AssertionDrift().propose(failure, ws) == [], test


def test_does_not_apply_without_compared_values() -> None:
    failure = make_failure(FailureClass.ASSERTION_DRIFT, "tests/t.py::test_x", file="tests/t.py", line=2)
    assert not AssertionDrift().applies(failure)


RAISES = (
    "import pytest\n\nfrom shop.cart import check\n\n\n"
    "def test_check():\n"
    "    with pytest.raises(ValueError, match='Document is not a Mapping'):\n"
    "        check(1)\n"
    "    with pytest.raises(TypeError, match='Document is not a Mapping'):\n"
    "        check(None)\n"
)


def _raises_failure(line: int, expected: str = "'Document is not a Mapping'",
                    observed: str = "'Document must be a Mapping'") -> FailureDetected:
    return make_failure(
        FailureClass.ASSERTION_DRIFT, "tests/test_cart.py::test_check", exception_type="AssertionError",
        message=f"AssertionError: Regex pattern did not match.\n  Expected regex: {expected}\n"
                f"  Actual message: {observed}",
        file="tests/test_cart.py", line=line, compared=ComparedValues(left=observed, right=expected, operator="match"),
    )


def test_the_match_pattern_of_the_failing_raises_block_becomes_the_new_message(tmp_path: Path) -> None:
    # Given two raises blocks expecting the same old message, and the second one failed
    ws = make_workspace(tmp_path, {"shop/cart.py": "def check(x):\n    pass\n", "tests/test_cart.py": RAISES})
    strategy = AssertionDrift()
    failure = _raises_failure(line=9)
    assert strategy.applies(failure)
    [proposal] = strategy.propose(failure, ws)
    # Then only that block's pattern changes, in the same quotes, and a human must approve it
    second = RAISES.index("match=", RAISES.index("TypeError"))
    want = RAISES[:second] + RAISES[second:].replace("'Document is not a Mapping'", "'Document must be a Mapping'", 1)
    assert apply(ws, proposal) == {"tests/test_cart.py": want}
    assert proposal.needs_approval and proposal.confidence < 0.5


def test_a_new_message_with_regex_syntax_is_escaped_so_that_the_pattern_matches_it(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path, {"shop/cart.py": "def check(x):\n    pass\n", "tests/test_cart.py": RAISES})
    [proposal] = AssertionDrift().propose(_raises_failure(line=7, observed="'Document (1) must be a Mapping.'"), ws)
    after = apply(ws, proposal)["tests/test_cart.py"]
    assert "match='Document \\\\(1\\\\) must be a Mapping\\\\.'" in after


def test_no_proposal_when_the_evidence_does_not_describe_the_test(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path, {"shop/cart.py": "def check(x):\n    pass\n", "tests/test_cart.py": RAISES})
    strategy = AssertionDrift()
    # a pattern the test does not hold, a line outside every raises block, and a pattern that matches
    assert strategy.propose(_raises_failure(line=7, expected="'Something else'"), ws) == []
    assert strategy.propose(_raises_failure(line=4), ws) == []
    assert strategy.propose(_raises_failure(line=7, observed="'Document is not a Mapping at all'"), ws) == []
