"""The CARS pytest plugin, run by real pytest in a small real project: the evidence it reports.

One project with one test per kind of failure is run once (module fixture); each test checks one kind.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import attrs
import pytest

from actors.testrun import PLUGIN_DIR, TestRun, run_tests
from contracts.values import FailureEvidence, Outcome

PYTEST = f"{sys.executable} -m pytest -q -p no:cacheprovider"
# The project's own environment: no plugins from CARS's venv, only the one CARS injects.
ISOLATED = {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}

PROJECT = {
    "shop/__init__.py": "",
    "shop/cart.py": """
        class Cart:
            def __init__(self):
                self.total = 3

        def add(a, b):
            return a + b
    """,
    "conftest.py": """
        import pytest

        class Page:  # the project's own stand-in for a browser page
            selector = None

            def content(self):
                return "<html><body><button id='buy-now'>Buy</button></body></html>"

        @pytest.fixture
        def page():
            return Page()

        @pytest.fixture
        def db():
            return {}
    """,
    "tests/__init__.py": "",
    "tests/test_cart.py": """
        import pytest

        from shop.cart import Cart, add


        def test_total_attribute():
            cart = Cart()
            assert cart.totl == 3


        def test_add():
            assert add(1, 2) == 4


        def test_uses_missing_fixture(database):
            assert database


        def test_passes():
            assert add(1, 1) == 2


        @pytest.mark.skip(reason="later")
        def test_skipped():
            pass
    """,
    "tests/test_web.py": """
        class TimeoutError(Exception):
            pass


        def test_buy(page):
            raise TimeoutError('Locator.click: Timeout 30000ms exceeded.\\nCall log:\\n  - waiting for locator("#buy")')
    """,
    "tests/test_broken.py": """
        from shop.checkout import pay


        def test_pay():
            assert pay()
    """,
}


def write_project(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")


def line_of(root: Path, rel: str, needle: str) -> int:
    lines = (root / rel).read_text().splitlines()
    return next(i for i, line in enumerate(lines, start=1) if needle in line)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shop")
    write_project(root, PROJECT)
    return root


@pytest.fixture(scope="module")
def run(project: Path) -> TestRun:
    return run_tests(project, f"{PYTEST} --continue-on-collection-errors", env=ISOLATED, timeout_s=60)


def evidence_of(run: TestRun, test_id: str) -> FailureEvidence:
    result = next(r for r in run.results if r.test_id == test_id)
    assert result.evidence is not None, result
    return result.evidence


def test_outcomes_and_collected_count(run: TestRun) -> None:
    # Given the project ran under the plugin
    # Then every test has its outcome, passing and skipped tests carry no evidence, and the count is right
    outcomes = {r.test_id: r.outcome for r in run.results}
    assert outcomes == {
        "tests/test_broken.py": Outcome.ERROR,
        "tests/test_cart.py::test_total_attribute": Outcome.FAILED,
        "tests/test_cart.py::test_add": Outcome.FAILED,
        "tests/test_cart.py::test_uses_missing_fixture": Outcome.ERROR,
        "tests/test_cart.py::test_passes": Outcome.PASSED,
        "tests/test_cart.py::test_skipped": Outcome.SKIPPED,
        "tests/test_web.py::test_buy": Outcome.FAILED,
    }
    assert all(r.evidence is None for r in run.results if r.outcome in (Outcome.PASSED, Outcome.SKIPPED))
    assert run.collected == 6
    assert run.exit_code == 1


def test_attribute_error_evidence(run: TestRun, project: Path) -> None:
    # Given a test that reads an attribute the class does not have
    ev = evidence_of(run, "tests/test_cart.py::test_total_attribute")

    # Then the type, message, failing frame and the test's own file and line are reported
    line = line_of(project, "tests/test_cart.py", "assert cart.totl == 3")
    assert ev.exception_type == "AttributeError"
    assert ev.message == "'Cart' object has no attribute 'totl'"
    assert ev.failing_frame == f"tests/test_cart.py:{line} in test_total_attribute"
    assert (ev.file, ev.line) == ("tests/test_cart.py", line)
    assert ev.traceback is not None and "cart.totl" in ev.traceback


def test_compared_values_of_a_failed_equality(run: TestRun, project: Path) -> None:
    # Given `assert add(1, 2) == 4`
    ev = evidence_of(run, "tests/test_cart.py::test_add")

    # Then both sides and the operator are captured
    assert ev.exception_type == "AssertionError"
    assert ev.compared is not None
    assert (ev.compared.left, ev.compared.right, ev.compared.operator) == ("3", "4", "==")
    assert ev.line == line_of(project, "tests/test_cart.py", "assert add(1, 2) == 4")


def test_missing_fixture_lists_available_fixtures(run: TestRun, project: Path) -> None:
    # Given a test asking for a fixture nobody defines
    ev = evidence_of(run, "tests/test_cart.py::test_uses_missing_fixture")

    # Then it is a setup error that names the fixture and lists what the test could have used
    assert ev.message == "fixture 'database' not found"
    assert ev.exception_type is not None and ev.exception_type.endswith("FixtureLookupError")
    assert {"db", "page", "tmp_path", "monkeypatch"} <= set(ev.fixtures_available)
    assert "database" not in ev.fixtures_available
    assert (ev.file, ev.line) == ("tests/test_cart.py", line_of(project, "tests/test_cart.py", "def test_uses_missing"))


def test_collection_import_error_is_reported_for_the_module(run: TestRun) -> None:
    # Given a test module importing a name that no longer exists
    ev = evidence_of(run, "tests/test_broken.py")

    # Then the module is an error result with the ImportError's own type and message, at the import line
    assert ev.exception_type == "ModuleNotFoundError"
    assert ev.message == "No module named 'shop.checkout'"
    assert (ev.file, ev.line) == ("tests/test_broken.py", 1)
    assert ev.failing_frame == "tests/test_broken.py:1 in <module>"


def test_web_failure_carries_page_html_and_selector(run: TestRun) -> None:
    # Given a web test with a `page` fixture failing on a locator
    ev = evidence_of(run, "tests/test_web.py::test_buy")

    # Then the page's HTML at the failure and the selector the call waited for are reported
    assert ev.selector == "#buy"
    assert ev.page_html is not None and "id='buy-now'" in ev.page_html
    assert ev.exception_type == "tests.test_web.TimeoutError"  # module-qualified, as Python prints it


def test_plugin_is_inert_without_a_report_path(project: Path, tmp_path: Path) -> None:
    # Given the plugin loaded but neither --cars-report nor CARS_REPORT set
    env = {**os.environ, **ISOLATED, "PYTHONPATH": str(PLUGIN_DIR), "PYTEST_PLUGINS": "cars_pytest",
           "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("CARS_REPORT", None)
    before = set(project.rglob("*"))

    # When pytest runs one passing test
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_cart.py::test_passes"],
        cwd=project, env=env, capture_output=True, text=True, timeout=60,
    )

    # Then the run is unaffected and nothing is written
    assert proc.returncode == 0, proc.stdout
    assert set(project.rglob("*")) == before


def test_cars_report_option_writes_the_document(project: Path, tmp_path: Path) -> None:
    # Given the plugin loaded with -p and the command-line option instead of the environment variable
    report = tmp_path / "out" / "report.json"
    env = {**os.environ, **ISOLATED, "PYTHONPATH": str(PLUGIN_DIR), "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("CARS_REPORT", None)

    # When pytest runs
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "cars_pytest",
         f"--cars-report={report}", "tests/test_cart.py::test_add"],
        cwd=project, env=env, capture_output=True, text=True, timeout=60,
    )

    # Then the document has the documented shape, with every evidence field of the contract
    doc = json.loads(report.read_text())
    assert (doc["format"], doc["version"], doc["collected"]) == ("cars-pytest", 1, 1)
    [result] = doc["results"]
    assert set(result) == {"test_id", "outcome", "duration_s", "evidence"}
    assert set(result["evidence"]) == {a.name for a in attrs.fields(FailureEvidence)}


@pytest.mark.parametrize("module", ["cars_pytest", "cars_locators"])
def test_plugin_imports_only_the_stdlib_and_pytest(module: str) -> None:
    # Given the source of one of the plugin's files
    tree = ast.parse((PLUGIN_DIR / f"{module}.py").read_text())

    # When its imports are listed
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])

    # Then it can be loaded into any project's environment: the standard library, pytest, and the
    # plugin's own files (its folder is what goes on the path)
    siblings = {f.stem for f in PLUGIN_DIR.glob("*.py")} - {"__init__"}
    assert imported - set(sys.stdlib_module_names) - siblings <= {"pytest", "_pytest"}
