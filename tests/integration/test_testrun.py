"""`run_tests`: real pytest in real small projects, with selection, timeouts, memory limits and fallbacks."""

from __future__ import annotations

import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

from actors.monitor.junit import parse_junit
from actors.testrun import TestRunError, run_tests
from contracts.values import Outcome

PYTEST = f"{sys.executable} -m pytest -q -p no:cacheprovider"
ISOLATED = {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}  # only the plugin CARS injects


def write_project(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return root


CALC = {
    "calc.py": """
        def add(a, b):
            return a + b
    """,
    "tests/test_calc.py": """
        from calc import add

        def test_one():
            assert add(1, 1) == 2

        def test_two():
            assert add(1, 2) == 4

        class TestMore:
            def test_three(self):
                assert add(0, 0) == 0
    """,
}


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting for a parent that never reaps it counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_selected_test_ids_run_alone(tmp_path: Path) -> None:
    # Given a project with three tests
    root = write_project(tmp_path, CALC)

    # When two of them are selected by id
    run = run_tests(root, PYTEST, tests=["tests/test_calc.py::test_two", "tests/test_calc.py::TestMore::test_three"],
                    env=ISOLATED, timeout_s=60)

    # Then only those ran, with their outcomes, and the count is of the selected tests
    assert {r.test_id: r.outcome for r in run.results} == {
        "tests/test_calc.py::test_two": Outcome.FAILED,
        "tests/test_calc.py::TestMore::test_three": Outcome.PASSED,
    }
    assert run.collected == 2
    assert run.exit_code == 1 and not run.timed_out
    assert [r.test_id for r in run.failed()] == ["tests/test_calc.py::test_two"]
    assert "1 failed, 1 passed" in run.log_tail
    # and the run left no bytecode behind in the project
    assert not list(root.rglob("__pycache__"))


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    # Given a test that starts a child process and then hangs
    pid_file = tmp_path / "child.pid"
    root = write_project(tmp_path / "p", {
        "tests/test_hang.py": f"""
            import subprocess, time

            def test_hangs():
                child = subprocess.Popen(["sleep", "300"])
                open({str(pid_file)!r}, "w").write(str(child.pid))
                time.sleep(300)
        """,
    })

    # When it runs with a 2-second timeout
    started = time.monotonic()
    run = run_tests(root, PYTEST, env=ISOLATED, timeout_s=2.0)

    # Then the run stops soon, is marked timed out, and the test's child died with it
    assert run.timed_out
    assert time.monotonic() - started < 30
    assert run.exit_code < 0  # killed by a signal
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(child)
    assert run.results == () and run.collected == -1  # pytest never got to write its report


def test_memory_limit_stops_a_greedy_test(tmp_path: Path) -> None:
    # Given a test that allocates 2 GiB
    root = write_project(tmp_path, {
        "tests/test_greedy.py": """
            def test_greedy():
                block = bytearray(2 * 1024 ** 3)
                assert block
        """,
    })

    # When it runs with a 512 MB address-space limit
    run = run_tests(root, PYTEST, env=ISOLATED, timeout_s=60, memory_mb=512)

    # Then the allocation fails inside the test, which is reported as such
    [result] = run.results
    assert result.outcome is Outcome.FAILED
    assert result.evidence is not None and result.evidence.exception_type == "MemoryError"


def test_a_run_without_inheritance_gets_no_secrets_but_what_it_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given CARS's own process holds credentials and service settings
    for name, value in {"CARS_API_TOKEN": "t0ken", "POSTGRES_PASSWORD": "pw", "REDIS_URL": "redis://:pw@h/0",
                        "MY_SERVICE_SECRET": "s", "GITHUB_TOKEN": "g", "HARMLESS_SETTING": "kept"}.items():
        monkeypatch.setenv(name, value)
    root = write_project(tmp_path, {
        "tests/test_env.py": """
            import os

            def test_env():
                leaked = [k for k in ("CARS_API_TOKEN", "POSTGRES_PASSWORD", "MY_SERVICE_SECRET", "GITHUB_TOKEN")
                          if k in os.environ]
                assert leaked == []
                assert os.environ["REDIS_URL"] == "redis://127.0.0.1:1/0"  # the environment's own service
                assert os.environ["HARMLESS_SETTING"] == "kept" and os.environ["PATH"]
        """,
    })
    # When a run is started without inheriting, with the environment's service URL
    run = run_tests(root, PYTEST, env={**ISOLATED, "REDIS_URL": "redis://127.0.0.1:1/0"}, timeout_s=60,
                    inherit_env=False)
    # Then the test saw none of the secrets
    [result] = run.results
    assert result.outcome is Outcome.PASSED, run.log_tail
    # And the default (a user's own run, as `cars repair` starts it) inherits everything
    inherited = run_tests(root, PYTEST, env=ISOLATED, timeout_s=60)
    assert inherited.results[0].outcome is Outcome.FAILED


def test_junit_fallback_when_the_plugin_did_not_report(tmp_path: Path) -> None:
    # Given a pytest run where the CARS plugin is blocked, but a JUnit file is written
    root = write_project(tmp_path, CALC)

    # When it runs
    run = run_tests(root, f"{PYTEST} -p no:cars_pytest --junitxml=out/junit.xml", env=ISOLATED, timeout_s=60)

    # Then the results come from the JUnit file, with pytest node ids and the failure's evidence
    outcomes = {r.test_id: r.outcome for r in run.results}
    assert outcomes == {
        "tests/test_calc.py::test_one": Outcome.PASSED,
        "tests/test_calc.py::test_two": Outcome.FAILED,
        "tests/test_calc.py::TestMore::test_three": Outcome.PASSED,
    }
    [failed] = run.failed()
    assert failed.evidence is not None
    assert failed.evidence.exception_type == "AssertionError"
    assert (failed.evidence.file, failed.evidence.line) == ("tests/test_calc.py", 7)
    # pytest's JUnit text does not name the frame's function; the plugin's evidence would
    assert failed.evidence.failing_frame == "tests/test_calc.py:7"
    assert run.collected == 3


def test_real_junitxml_agrees_with_the_plugin(tmp_path: Path) -> None:
    # Given a run with the plugin that also writes JUnit XML
    root = write_project(tmp_path, CALC)
    run = run_tests(root, f"{PYTEST} --junitxml=junit.xml", env=ISOLATED, timeout_s=60)

    # When pytest's own JUnit file is parsed
    report = parse_junit((root / "junit.xml").read_bytes(), project="calc", run_id="r1", repo_path=str(root))

    # Then both name the same tests with the same outcomes
    from_plugin = {r.test_id: r.outcome for r in run.results}
    from_junit = {r.test_id: r.outcome for r in report.results}
    assert from_junit == from_plugin
    assert len(from_plugin) == 3


def test_a_stale_junit_file_is_not_read(tmp_path: Path) -> None:
    # Given a JUnit file left by an earlier run, and a command that writes neither report
    stale = "<testsuite name='pytest'><testcase classname='t' name='x'/></testsuite>"
    root = write_project(tmp_path, {"old.xml": stale})
    old = time.time() - 3600
    os.utime(root / "old.xml", (old, old))

    # When it runs
    run = run_tests(root, f"{sys.executable} -c \"print('not a test runner')\" --junitxml old.xml", timeout_s=60)

    # Then the results are unknown rather than stale, and the output is kept
    assert run.results == () and run.collected == -1
    assert "not a test runner" in run.log_tail


def test_a_command_that_does_not_exist_is_a_test_run_error(tmp_path: Path) -> None:
    # Given a command that is not installed
    # When it is run
    with pytest.raises(TestRunError) as raised:
        run_tests(tmp_path, "no-such-test-runner-cars --all", timeout_s=10)

    # Then the error names it
    assert "no-such-test-runner-cars" in str(raised.value)


def test_log_tail_is_bounded(tmp_path: Path) -> None:
    # Given a command that prints 100 KB
    script = "import sys; sys.stdout.write('x' * 100_000 + 'END')"

    # When it runs
    run = run_tests(tmp_path, f"{sys.executable} -c \"{script}\"", timeout_s=60)

    # Then only the tail is kept
    assert run.exit_code == 0
    assert run.log_tail.endswith("END") and len(run.log_tail) <= 8 * 1024


def test_tests_listed_in_the_quarantine_file_are_skipped_with_a_label(tmp_path: Path) -> None:
    # Given a project whose flaky test CARS quarantined
    (tmp_path / "test_q.py").write_text("def test_flaky():\n    assert False\n\n\ndef test_fine():\n    assert True\n")
    (tmp_path / ".cars-quarantine").write_text("test_q.py::test_flaky  # flaky (fingerprint abc)\n")
    # When its tests run with the CARS plugin
    run = run_tests(tmp_path, f"{sys.executable} -m pytest -q -p no:cacheprovider", timeout_s=120,
                    env={"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"})
    # Then the quarantined test is skipped and the others run
    outcomes = {r.test_id: r.outcome.value for r in run.results}
    assert outcomes == {"test_q.py::test_flaky": "skipped", "test_q.py::test_fine": "passed"}
    assert run.exit_code == 0
