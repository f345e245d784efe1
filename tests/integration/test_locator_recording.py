"""The pytest plugin records last-good locators in a real headless Chromium, and locator_drift uses them.

A small web project whose tests drive Debian's chromium through Playwright (`executable_path`), run with
CARS's plugin as CARS runs any project (a real pytest subprocess). Needs the `chromium` package: under
CI it must be there (the test fails), elsewhere the test is skipped when it is missing.
"""

from __future__ import annotations

import json
import shutil
import sys
import textwrap
from pathlib import Path

import pytest

from actors.healer.locator.snapshot import element_snapshot, load_snapshots, store_name
from actors.monitor.plugin import cars_locators
from actors.testrun import run_tests
from contracts.values import Outcome
from tests.conftest import unavailable

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PYTEST = f"{sys.executable} -m pytest -q -p no:cacheprovider"
ISOLATED = {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}

PAGE = """<!doctype html>
<html><head><title>Shop</title><style>.gone { display: none }</style></head>
<body>
  <nav class="top"><a href="#">Home</a></nav>
  <main id="shop" class="page">
    <p class="hint gone">hidden twin</p>
    <button id="buy" class="btn primary" data-sku="42" type="button"
            onclick="document.querySelector('.total').textContent = '1 item'">Buy <b>now</b></button>
    <span class="total" aria-live="polite">empty</span>
  </main>
</body></html>
"""

CONFTEST = f"""
import pathlib

import pytest
from playwright.sync_api import sync_playwright


@pytest.fixture(scope="session")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path={CHROMIUM!r}, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser):
    page = browser.new_page()
    page.goto((pathlib.Path(__file__).parent.parent / "site" / "index.html").as_uri())
    yield page
    page.close()
"""

TESTS = """
def test_buy(page):
    page.click("#buy")
    assert page.locator(".total").inner_text() == "1 item"


def test_not_recorded_when_failing(page):
    page.click("#buy")
    assert page.locator(".total").inner_text() == "2 items"
"""


@pytest.fixture
def web_project(tmp_path: Path) -> Path:
    if not Path(CHROMIUM).exists():
        unavailable("Debian's chromium is not installed (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api")
    root = tmp_path / "web"
    (root / "site").mkdir(parents=True)
    (root / "tests").mkdir()
    (root / "site" / "index.html").write_text(PAGE)
    (root / "tests" / "conftest.py").write_text(textwrap.dedent(CONFTEST))
    (root / "tests" / "test_shop.py").write_text(textwrap.dedent(TESTS))
    return root


def test_a_passing_web_test_records_what_its_selectors_matched_as_cars_reads_pages(web_project: Path) -> None:
    # When the project's tests run as CARS runs them
    run = run_tests(web_project, PYTEST, env=ISOLATED, timeout_s=120)
    outcomes = {r.test_id: r.outcome for r in run.results}
    assert outcomes == {"tests/test_shop.py::test_buy": Outcome.PASSED,
                        "tests/test_shop.py::test_not_recorded_when_failing": Outcome.FAILED}, run.log_tail
    # Then the passing test's selectors are stored, described as CARS describes the same page
    record = load_snapshots(web_project, "tests/test_shop.py::test_buy")
    assert record is not None and set(record.elements) == {"#buy", ".total"}
    html = PAGE.replace(">empty<", ">1 item<")  # the page after the click, as the browser had it
    assert record.elements["#buy"] == element_snapshot(html, "#buy")
    assert record.elements[".total"] == element_snapshot(html, ".total")
    assert record.elements["#buy"].text == "Buy now" and record.elements["#buy"].attributes["data-sku"] == "42"
    # And the failing test recorded nothing
    assert load_snapshots(web_project, "tests/test_shop.py::test_not_recorded_when_failing") is None


def test_recording_merges_runs_and_can_be_turned_off(web_project: Path) -> None:
    store = web_project / ".cars/locators" / store_name("tests/test_shop.py::test_buy")
    run_tests(web_project, PYTEST, env={**ISOLATED, "CARS_LOCATORS": "0"}, timeout_s=120)
    assert not store.exists()
    # Given an earlier recording of a selector the test no longer uses
    store.parent.mkdir(parents=True)
    earlier = {"version": 1, "test_id": "tests/test_shop.py::test_buy",
               "elements": {"#old": {"tag": "a", "id": "old", "classes": [], "text": "Old", "attributes": {},
                                     "path": [{"tag": "html", "id": "", "classes": [], "index": 1}]}}}
    store.write_text(json.dumps(earlier))
    run_tests(web_project, PYTEST, env=ISOLATED, timeout_s=120)
    record = load_snapshots(web_project, "tests/test_shop.py::test_buy")
    assert record is not None and set(record.elements) == {"#old", "#buy", ".total"}


def test_the_plugin_keeps_the_stores_format_and_limits() -> None:
    # The plugin is standalone, so it mirrors these instead of importing them: they must not drift
    from actors.healer.locator import snapshot

    for name in ("STORE_DIR", "STORE_VERSION", "MAX_TEXT_CHARS", "MAX_CLASSES", "MAX_ATTRIBUTES",
                 "MAX_ATTRIBUTE_CHARS", "MAX_PATH", "MAX_SELECTORS", "MAX_SELECTOR_CHARS", "MAX_STORE_BYTES"):
        assert getattr(cars_locators, name) == getattr(snapshot, name), name


def test_the_plugin_names_store_files_as_cars_does() -> None:
    for test_id in ["tests/test_shop.py::test_buy", "t.py::test[a/b c]", "ünïcode::tëst", "", "../../etc"]:
        assert cars_locators.store_name(test_id) == store_name(test_id)
