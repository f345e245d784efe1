"""Guardrails: given a test file before and after a candidate patch, which rules does it break?"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from actors.validator.guardrails import (
    ASSERTION_REMOVED,
    ASSERTION_WEAKENED,
    COLLECTED_REDUCED,
    NON_TEST_FILE,
    SKIP_ADDED,
    SLEEP_ADDED,
    UNPARSABLE,
    FileChange,
    check_guardrails,
)
from actors.workspace import Workspace

BEFORE = """
import time
import pytest
from app.calc import add, div

def test_add():
    result = add(1, 2)
    assert result == 3
    assert isinstance(result, int)

def test_div():
    with pytest.raises(ZeroDivisionError):
        div(1, 0)

class TestCase:
    def test_method(self):
        self.assertEqual(add(1, 1), 2)
"""


# Only the project's test globs matter here; any existing folder serves as the root.
is_test_file = Workspace(Path(__file__).parent).is_test_file


def rules(after: str, before: str = BEFORE, path: str = "tests/test_calc.py") -> list[str]:
    change = FileChange(path=path, before=textwrap.dedent(before), after=textwrap.dedent(after))
    return [v.rule for v in check_guardrails([change], is_test_file=is_test_file)]


def edit(old: str, new: str) -> str:
    assert old in BEFORE, old
    return BEFORE.replace(old, new)


def test_a_legitimate_heal_breaks_no_rule() -> None:
    # Given a heal that updates an expected value and a renamed import
    after = edit("assert result == 3", "assert result == 4")
    after = after.replace("from app.calc import add", "from app.calc import plus as add")
    # Then no guardrail fires
    assert rules(after) == []


def test_editing_a_source_file_is_a_violation() -> None:
    change = FileChange(
        path="app/calc.py", before="def add(a, b):\n    return a - b\n", after="def add(a, b):\n    return a + b\n"
    )
    violations = check_guardrails([change], is_test_file=is_test_file)
    assert [v.rule for v in violations] == [NON_TEST_FILE]
    assert "app/calc.py" in violations[0].detail


def test_adding_a_new_source_file_is_a_violation() -> None:
    change = FileChange(path="app/helpers.py", before=None, after="X = 1\n")
    assert [v.rule for v in check_guardrails([change], is_test_file=is_test_file)] == [NON_TEST_FILE]


def test_conftest_and_test_folders_count_as_tests() -> None:
    changes = [
        FileChange(path="conftest.py", before="", after="import pytest\n"),
        FileChange(path="tests/helpers/factory.py", before="", after="X = 1\n"),
    ]
    assert check_guardrails(changes, is_test_file=is_test_file) == ()


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("    assert isinstance(result, int)\n", ""),  # an assert deleted
        ("        self.assertEqual(add(1, 1), 2)", "        add(1, 1)"),  # a unittest assertion deleted
        ("    with pytest.raises(ZeroDivisionError):\n        div(1, 0)", "    div(1, 1)"),  # pytest.raises removed
    ],
)
def test_removing_an_assertion_is_a_violation(old: str, new: str) -> None:
    assert rules(edit(old, new)) == [ASSERTION_REMOVED]


def test_removing_a_whole_test_function_removes_its_assertions() -> None:
    after = edit("def test_div():\n    with pytest.raises(ZeroDivisionError):\n        div(1, 0)\n", "")
    assert rules(after) == [ASSERTION_REMOVED]


@pytest.mark.parametrize(
    "new",
    [
        "assert result",  # a comparison turned into a truthiness check
        "assert True",  # an assertion that can never fail
        "assert result == result",  # a tautology
        "assert result == 3 or True",
        "assert (result == 3, 'must be 3')",  # a tuple is always truthy
        "assert 1 == 1",
    ],
)
def test_weakening_an_assert_is_a_violation(new: str) -> None:
    assert rules(edit("assert result == 3", new)) == [ASSERTION_WEAKENED]


def test_broadening_an_expected_exception_is_weakening() -> None:
    assert rules(edit("pytest.raises(ZeroDivisionError)", "pytest.raises(Exception)")) == [ASSERTION_WEAKENED]


def test_assert_equal_to_assert_true_is_weakening() -> None:
    assert rules(edit("self.assertEqual(add(1, 1), 2)", "self.assertTrue(add(1, 1))")) == [ASSERTION_WEAKENED]


def test_changing_the_exception_type_is_not_weakening() -> None:
    assert rules(edit("pytest.raises(ZeroDivisionError)", "pytest.raises(ValueError)")) == []


@pytest.mark.parametrize(
    "added",
    ["time.sleep(1)", "sleep(0.5)", "await asyncio.sleep(1)", "page.wait_for_timeout(500)"],
)
def test_adding_a_sleep_is_a_violation(added: str) -> None:
    after = edit("    result = add(1, 2)\n", f"    {added}\n    result = add(1, 2)\n")
    if "await" in added:
        after = after.replace("def test_add", "async def test_add")
    assert rules(after) == [SLEEP_ADDED]


def test_a_sleep_that_was_already_there_is_not_a_violation() -> None:
    before = edit("    result = add(1, 2)\n", "    time.sleep(0.1)\n    result = add(1, 2)\n")
    after = before.replace("assert result == 3", "assert result == 4")
    assert rules(after, before=before) == []


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("def test_add():", "@pytest.mark.skip(reason='later')\ndef test_add():"),
        ("def test_add():", "@pytest.mark.skipif(True, reason='x')\ndef test_add():"),
        ("def test_add():", "@pytest.mark.xfail\ndef test_add():"),
        ("    result = add(1, 2)\n", "    pytest.skip('flaky')\n    result = add(1, 2)\n"),
        ("    result = add(1, 2)\n", "    pytest.xfail('known')\n    result = add(1, 2)\n"),
        ("    def test_method(self):", "    @unittest.skip('x')\n    def test_method(self):"),
        ("    def test_method(self):", "    @skip\n    def test_method(self):"),
        ("        self.assertEqual", "        self.skipTest('x')\n        self.assertEqual"),
        ("import time", "import time\npytestmark = pytest.mark.xfail"),
    ],
)
def test_adding_skip_or_xfail_is_a_violation(old: str, new: str) -> None:
    assert rules(edit(old, new)) == [SKIP_ADDED]


def test_a_patch_that_breaks_the_syntax_is_a_violation() -> None:
    assert rules("def test_add(:\n    assert 1 == 1\n") == [UNPARSABLE]


def test_fewer_collected_tests_is_a_violation() -> None:
    violations = check_guardrails([], is_test_file=is_test_file, collected_before=5, collected_after=4)
    assert [v.rule for v in violations] == [COLLECTED_REDUCED]
    assert "5" in violations[0].detail and "4" in violations[0].detail


@pytest.mark.parametrize(("before", "after"), [(5, 5), (5, 6), (None, 3), (-1, 0), (4, -1)])
def test_same_more_or_unknown_collected_counts_are_fine(before: int | None, after: int | None) -> None:
    assert check_guardrails([], is_test_file=is_test_file, collected_before=before, collected_after=after) == ()


def test_several_rules_are_all_reported() -> None:
    after = edit("    assert isinstance(result, int)\n", "    time.sleep(1)\n").replace(
        "def test_div", "@pytest.mark.skip\ndef test_div"
    )
    assert sorted(rules(after)) == sorted([ASSERTION_REMOVED, SLEEP_ADDED, SKIP_ADDED])
