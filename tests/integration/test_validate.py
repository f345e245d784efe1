"""Validating repair candidates against a small real project, with real pytest runs."""

from __future__ import annotations

import itertools
import sys
import time
from pathlib import Path

import pytest

from actors.patching import FileEdit, make_patch
from actors.validator.guardrails import ASSERTION_WEAKENED, NON_TEST_FILE, SKIP_ADDED
from actors.validator.validate import Verdict, validate_candidate
from contracts.values import MutationVerdict

TEST_CMD = f"{sys.executable} -m pytest -q -p no:cacheprovider"
FAILING = "tests/test_calc.py::test_add"
# The project needs no third-party pytest plugins; not loading the ones installed here saves seconds a run.
ENV = {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}

SOURCE = '''\
def add(a, b):
    return a + b


def discount(price, percent):
    if percent > 100:
        raise ValueError("percent must be at most 100")
    return price - price * percent // 100


def log_call(message):
    print("called", message)
    return len(message)
'''

TESTS = '''\
from app.calc import add, discount, log_call

EXPECTED = 6


def test_add():
    assert add(2, 3) == EXPECTED  # drifted: add(2, 3) is 5


def test_add_more():
    assert add(3, 3) == EXPECTED


def test_discount():
    assert discount(200, 10) == 180


def test_total():
    assert sum([1, 2]) == 4  # drifted, and exercises no code of ours


def test_log():
    log_call("hello", level=1)  # signature drift; checks nothing
'''


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "app").mkdir(parents=True)
    (root / "tests").mkdir()
    (root / "pyproject.toml").write_text('[tool.pytest.ini_options]\npythonpath = ["."]\n')
    (root / "app" / "__init__.py").write_text("")
    (root / "app" / "calc.py").write_text(SOURCE)
    (root / "tests" / "test_calc.py").write_text(TESTS)
    return root


def patch_of(project: Path, path: str, old: str, new: str) -> str:
    before = (project / path).read_text()
    assert old in before, old
    return make_patch([FileEdit(path=path, before=before, after=before.replace(old, new, 1))])


def validate(project: Path, patch: str, test_id: str = FAILING, **kw: object) -> Verdict:
    return validate_candidate(
        project, patch=patch, test_id=test_id, test_cmd=TEST_CMD, timeout_s=60, env=ENV, **kw  # type: ignore[arg-type]
    )


def test_a_correct_heal_is_validated_and_its_test_kills_a_mutant(project: Path) -> None:
    # Given a failing test whose expectation drifted, and the patch that updates it
    patch = patch_of(project, "tests/test_calc.py", "assert add(2, 3) == EXPECTED", "assert add(2, 3) == 5")
    original = (project / "tests" / "test_calc.py").read_text()
    # When it is validated
    verdict = validate(project, patch)
    # Then it is accepted, with full evidence
    assert verdict.ok, verdict.reason
    ev = verdict.evidence
    assert (ev.reruns, ev.passes, ev.regressions, ev.guardrails) == (3, 3, (), ())
    assert ev.collected_before == ev.collected_after == 5
    assert ev.mutation is MutationVerdict.PASSED
    assert "app/calc.py" in ev.mutation_detail and "add" in ev.mutation_detail
    # And the sandbox is left as it was: the patch reverted, the mutated source restored
    assert (project / "tests" / "test_calc.py").read_text() == original
    assert (project / "app" / "calc.py").read_text() == SOURCE


def test_a_patch_that_skips_the_test_is_rejected(project: Path) -> None:
    patch = patch_of(
        project, "tests/test_calc.py", "def test_add():\n", "import pytest\n\n\n@pytest.mark.skip\ndef test_add():\n"
    )
    verdict = validate(project, patch)
    assert not verdict.ok
    assert [v.rule for v in verdict.evidence.guardrails] == [SKIP_ADDED]
    assert verdict.evidence.reruns == 0  # rejected before anything ran


def test_quarantine_may_add_xfail(project: Path) -> None:
    # Given a quarantine patch, which labels the flaky test rather than healing it
    patch = patch_of(
        project, "tests/test_calc.py", "def test_add():\n", "import pytest\n\n\n@pytest.mark.xfail\ndef test_add():\n"
    )
    # When it is validated as a quarantine
    verdict = validate(project, patch, quarantine=True, reruns=1)
    # Then the marker is allowed, and no mutation check runs
    assert verdict.ok, verdict.reason
    assert verdict.evidence.mutation is MutationVerdict.NOT_APPLICABLE


def test_a_patch_to_the_code_under_test_is_rejected(project: Path) -> None:
    patch = patch_of(project, "app/calc.py", "return a + b", "return a + b + 1")
    verdict = validate(project, patch)
    assert not verdict.ok
    assert [v.rule for v in verdict.evidence.guardrails] == [NON_TEST_FILE]
    assert (project / "app" / "calc.py").read_text() == SOURCE


def test_a_patch_that_weakens_the_assert_is_rejected_although_green(project: Path) -> None:
    patch = patch_of(project, "tests/test_calc.py", "assert add(2, 3) == EXPECTED", "assert add(2, 3)")
    verdict = validate(project, patch)
    assert not verdict.ok
    assert [v.rule for v in verdict.evidence.guardrails] == [ASSERTION_WEAKENED]
    assert "guardrails" in verdict.reason


def test_a_healed_test_that_exercises_no_code_is_not_applicable(project: Path) -> None:
    patch = patch_of(project, "tests/test_calc.py", "assert sum([1, 2]) == 4", "assert sum([1, 2]) == 3")
    verdict = validate(project, patch, test_id="tests/test_calc.py::test_total", reruns=1)
    assert verdict.ok, verdict.reason
    assert verdict.evidence.mutation is MutationVerdict.NOT_APPLICABLE


def test_a_healed_test_that_would_not_notice_a_bug_fails_the_mutation_check(project: Path) -> None:
    # Given a heal of a signature drift in a test that checks nothing about the result
    patch = patch_of(project, "tests/test_calc.py", 'log_call("hello", level=1)', 'log_call("hello")')
    # When it is validated
    verdict = validate(project, patch, test_id="tests/test_calc.py::test_log", reruns=1)
    # Then the mutant (`return None`) survives, and the candidate is rejected for it
    assert not verdict.ok
    assert verdict.evidence.mutation is MutationVerdict.FAILED
    assert "log_call" in verdict.evidence.mutation_detail
    assert (project / "app" / "calc.py").read_text() == SOURCE
    # And without require_mutation_kill the same candidate passes, its weakness on record
    lenient = validate(project, patch, test_id="tests/test_calc.py::test_log", reruns=1, require_mutation_kill=False)
    assert lenient.ok and lenient.evidence.mutation is MutationVerdict.FAILED


def test_a_patch_that_breaks_another_test_is_a_regression(project: Path) -> None:
    # Given a heal that changes a constant another, passing, test relies on
    patch = patch_of(project, "tests/test_calc.py", "EXPECTED = 6", "EXPECTED = 5")
    verdict = validate(project, patch, reruns=1)
    assert not verdict.ok
    assert verdict.evidence.passes == 1
    assert verdict.evidence.regressions == ("tests/test_calc.py::test_add_more",)


def test_a_patch_that_removes_a_test_reduces_the_collected_count(project: Path) -> None:
    # Given a patch that "heals" one test and deletes another that had no assertion of its own
    text = (project / "tests" / "test_calc.py").read_text()
    after = text.replace("assert add(2, 3) == EXPECTED", "assert add(2, 3) == 5").replace(
        'def test_log():\n    log_call("hello", level=1)  # signature drift; checks nothing\n', ""
    )
    patch = make_patch([FileEdit(path="tests/test_calc.py", before=text, after=after)])
    verdict = validate(project, patch, reruns=1)
    assert not verdict.ok
    assert [v.rule for v in verdict.evidence.guardrails] == ["collected_tests_reduced"]
    assert (verdict.evidence.collected_before, verdict.evidence.collected_after) == (5, 4)


def test_a_patch_that_does_not_apply_is_rejected(project: Path) -> None:
    patch = make_patch([FileEdit(path="tests/test_calc.py", before="something else\n", after="x\n")])
    verdict = validate(project, patch)
    assert not verdict.ok and "does not apply" in verdict.reason
    # Made from other content than the files have now: out of date (proposed again), not wrong
    assert verdict.stale


def test_a_patch_outside_the_project_is_rejected_and_not_out_of_date(project: Path) -> None:
    patch = make_patch([FileEdit(path="../outside.py", before="", after="x = 1\n", new_file=True)])
    verdict = validate(project, patch)
    assert not verdict.ok and not verdict.stale


def test_a_rerun_failure_rejects(project: Path) -> None:
    # Given a patch that changes the expectation to another wrong value
    patch = patch_of(project, "tests/test_calc.py", "assert add(2, 3) == EXPECTED", "assert add(2, 3) == 7")
    verdict = validate(project, patch)
    assert not verdict.ok
    assert (verdict.evidence.reruns, verdict.evidence.passes) == (1, 0)
    assert "rerun 1 of 3" in verdict.reason




def small_project(root: Path, test_body: str) -> Path:
    (root / "tests").mkdir(parents=True)
    (root / "pyproject.toml").write_text('[tool.pytest.ini_options]\npythonpath = ["."]\n')
    (root / "app.py").write_text("def two():\n    return 2\n")
    (root / "tests" / "test_two.py").write_text("import os\n\nfrom app import two\n\n\ndef test_two():\n" + test_body)
    return root


def test_validation_runs_see_none_of_the_secrets_of_cars(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given CARS runs with an API token, and a test that would notice it
    monkeypatch.setenv("CARS_API_TOKEN", "t0ken")
    root = small_project(tmp_path / "p", "    assert 'CARS_API_TOKEN' not in os.environ\n    assert two() == 3\n")
    patch = patch_of(root, "tests/test_two.py", "two() == 3", "two() == 2")
    # When the repair is validated, Then its runs did not get the token
    verdict = validate_candidate(root, patch=patch, test_id="tests/test_two.py::test_two", test_cmd=TEST_CMD,
                                 reruns=1, env=ENV)
    assert verdict.ok, verdict.reason


def test_validation_runs_are_memory_limited(tmp_path: Path) -> None:
    # Given a repaired test that allocates 1 GiB
    root = small_project(tmp_path / "p", "    block = bytearray(1024 ** 3)\n    assert block and two() == 3\n")
    patch = patch_of(root, "tests/test_two.py", "two() == 3", "two() == 2")
    # When it is validated with 256 MiB per process, Then its reruns fail: rejected
    verdict = validate_candidate(root, patch=patch, test_id="tests/test_two.py::test_two", test_cmd=TEST_CMD,
                                 reruns=1, env=ENV, memory_mb=256)
    assert not verdict.ok and "MemoryError" in verdict.evidence.log_tail, verdict.reason


def test_every_test_subprocess_of_a_validation_is_timed_in_its_evidence(tmp_path: Path) -> None:
    # Given a project whose every pytest session takes at least 0.3 s (a slow conftest), and a correct heal
    root = small_project(tmp_path / "p", "    assert two() == 3\n")
    (root / "tests" / "conftest.py").write_text("import time\n\n\ndef pytest_sessionstart(session):\n"
                                                "    time.sleep(0.3)\n")
    patch = patch_of(root, "tests/test_two.py", "two() == 3", "two() == 2")
    # When it is validated
    t0 = time.time()
    verdict = validate_candidate(root, patch=patch, test_id="tests/test_two.py::test_two", test_cmd=TEST_CMD,
                                 reruns=2, env=ENV)
    t1 = time.time()
    assert verdict.ok, verdict.reason
    runs = verdict.evidence.runs
    # Then each subprocess is listed, by purpose and in order: baseline, the reruns, regressions, the mutant(s)
    purposes = [r.purpose for r in runs]
    assert purposes[:4] == ["baseline", "rerun", "rerun", "regressions"]
    assert purposes[4:] and set(purposes[4:]) == {"mutation"}
    assert verdict.evidence.mutation is MutationVerdict.PASSED
    # And each lasted at least the conftest's sleep, inside the validation's time, one after the other
    for r in runs:
        assert r.duration_s >= 0.3
        assert t0 <= r.started_at and r.started_at + r.duration_s <= t1 + 0.01
    for a, b in itertools.pairwise(runs):
        assert b.started_at >= a.started_at + a.duration_s - 0.01
    assert sum(r.duration_s for r in runs) <= verdict.evidence.duration_s


def test_a_candidate_rejected_by_its_guardrails_lists_only_the_baseline_run(project: Path) -> None:
    patch = patch_of(project, "tests/test_calc.py", "assert add(2, 3) == EXPECTED", "assert add(2, 3)")
    verdict = validate(project, patch)
    assert not verdict.ok
    assert [r.purpose for r in verdict.evidence.runs] == ["baseline"]
