"""The dashboard in a real headless Chromium (Debian's `chromium`, driven by Playwright) against a real `cars up`.

A CI-like producer runs a small real project's tests with the CARS pytest plugin and publishes the report
with `cars report`; the page, opened before that, must show the repairs live (no reload), and approving or
rejecting one from the page (with the API token the page asks for) must reach CARS and be recorded.
Screenshots go to the test's tmp_path and are copied to tests/e2e/artifacts/<test>/ (git-ignored); their
paths are printed.

Chromium is never downloaded (`playwright install` is not used): without /usr/bin/chromium the tests skip
locally and FAIL under CI=true (`.ci/run` installs it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import unavailable
from tests.e2e.conftest import Cars, Platform, RedisCli, running_platform

CHROMIUM = Path(os.environ.get("CARS_TEST_CHROMIUM", "/usr/bin/chromium"))  # Debian's package
PLUGIN_DIR = Path(__file__).resolve().parents[2] / "actors" / "monitor" / "plugin"
ARTIFACTS = Path(__file__).parent / "artifacts"
REPAIR_TIMEOUT_MS = 240_000  # classify, propose, validate (reruns, regressions, mutation check) on a busy machine
STEP_TIMEOUT_MS = 60_000

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

GREET = "def greet(name):\n    return 'Hello, ' + name\n\n\ndef bye(name):\n    return 'Bye, ' + name\n"
TEST_GREET = "from app.greet import greet\n\n\ndef test_greet():\n    assert greet('Ada') == 'Hello, Ada'\n"
TEST_BYE = "from app.greet import bye\n\n\ndef test_bye():\n    assert bye('Ada') == 'Bye, Ada'\n"
GREET_ID = "tests/test_greet.py::test_greet"
BYE_ID = "tests/test_bye.py::test_bye"


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        unavailable(f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("Playwright is not installed (pip install -e '.[dev]')")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


API_TOKEN = "dashboard-e2e-token-0123456789"


@pytest.fixture
def up(cars_on_redis: Cars) -> Iterator[Platform]:
    """`cars up` on the test Redis, with an API token (commands from the page need it); the projects'
    pytest runs load no plugins but CARS's (seconds per run)."""
    env = cars_on_redis.with_env(PYTEST_DISABLE_PLUGIN_AUTOLOAD="1", CARS_API_TOKEN=API_TOKEN)
    with running_platform(env) as platform:
        yield platform


class Dashboard:
    """One browser page on the dashboard, with its screenshots and the errors the page ran into."""

    def __init__(self, page: Any, platform: Platform, shots: Path, name: str) -> None:
        self.page = page
        self.platform = platform
        self.shots = shots
        self.copies = ARTIFACTS / name
        self.taken = 0
        self.errors: list[str] = []
        self.navigations: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        page.on("console", lambda m: self.errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("framenavigated",
                lambda frame: self.navigations.append(frame.url) if frame == page.main_frame else None)

    def open(self) -> None:
        from playwright.sync_api import expect

        self.page.goto(f"http://127.0.0.1:{self.platform.http_port}/")
        expect(self.page.locator("#connection")).to_have_attribute("data-state", "live", timeout=STEP_TIMEOUT_MS)
        # A marker in this document: still there at the end means the page was never reloaded.
        self.page.evaluate("window.__carsSameDocument = true")

    def never_reloaded(self) -> bool:
        return self.page.evaluate("window.__carsSameDocument === true") and len(self.navigations) == 1

    def screenshot(self, label: str) -> Path:
        self.taken += 1
        path = self.shots / f"{self.taken:02d}-{label}.png"
        self.page.screenshot(path=str(path), full_page=True)
        self.copies.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, self.copies / path.name)
        print(f"screenshot: {path} (copy: {self.copies / path.name})")
        return path

    def feed_item(self, event_type: str, text: str) -> Any:
        return self.page.locator(f"#feed li[data-type='{event_type}']", has_text=text)


@pytest.fixture
def dashboard(browser: Any, up: Platform, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Dashboard]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    shots = tmp_path / "screenshots"
    shots.mkdir()
    board = Dashboard(context.new_page(), up, shots, request.node.name)
    try:
        board.open()
        yield board
    finally:
        context.close()


# ----------------------------------------------------------------------------- the project and its CI run


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=root, check=True,
                   capture_output=True)


def broken_project(root: Path) -> Path:
    """A git repo whose last commit changed two messages: two tests now fail on their expected values
    (assertion drift, which CARS repairs only with a human's approval)."""
    files = {
        "app/__init__.py": "", "app/greet.py": GREET, "tests/test_greet.py": TEST_GREET,
        "tests/test_bye.py": TEST_BYE,
        "cars.toml": f'test_cmd = "{sys.executable} -m pytest -q -p no:cacheprovider"\n',
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "initial")
    (root / "app/greet.py").write_text(GREET.replace("'Hello, ' + name", "'Welcome, ' + name + '!'")
                                       .replace("'Bye, '", "'Farewell, '"))
    git(root, "commit", "-qam", "friendlier messages")
    return root


def ci_report(repo: Path, out: Path) -> Path:
    """What a CI job does: run the tests with the CARS pytest plugin, keep its JSON report."""
    env = {**os.environ, "PYTHONPATH": str(PLUGIN_DIR), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "cars_pytest", f"--cars-report={out}"],
        cwd=repo, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 1 and "2 failed" in done.stdout, done.stdout + done.stderr
    return out


def recorded(platform: Platform, *types: str) -> list[dict[str, Any]]:
    """Events of these types in the store, through GET /events."""
    response = platform.http.get("/events", params={"type": list(types), "limit": 1000})
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["events"]
    return events


# ----------------------------------------------------------------------------- tests


def test_a_failing_run_shows_up_live_and_is_approved_and_rejected_from_the_page(
    dashboard: Dashboard, up: Platform, cars_on_redis: Cars, bus: RedisCli, tmp_path: Path,
) -> None:
    from playwright.sync_api import expect

    page = dashboard.page
    dashboard.screenshot("before-the-run")

    # Given the dashboard is open, when CI reports a run of a project whose two tests broke
    repo = broken_project(tmp_path / "greet")
    report = ci_report(repo, tmp_path / "report.json")
    cars_on_redis.ok("report", str(report), "--project", "greet", "--repo", str(repo))

    # Then both validated repairs appear in the live feed, without a reload
    for test_id in (GREET_ID, BYE_ID):
        expect(dashboard.feed_item("repair.completed", test_id)).to_be_visible(timeout=REPAIR_TIMEOUT_MS)
    assert dashboard.never_reloaded()
    expect(page.locator("#tile-open-repairs .value")).to_have_text("2")
    dashboard.screenshot("repairs-in-the-live-feed")

    # When the operator opens the greet repair: its diff shows the new expected value
    dashboard.feed_item("repair.completed", GREET_ID).click()
    detail = page.locator("#repair-detail")
    expect(detail).to_have_attribute("data-status", "completed", timeout=STEP_TIMEOUT_MS)
    expect(page.locator("#detail-title")).to_contain_text(GREET_ID)
    expect(page.locator("#detail-diff .line.add")).to_contain_text("'Welcome, Ada!'")
    expect(page.locator("#detail-diff .line.del")).to_contain_text("'Hello, Ada'")
    dashboard.screenshot("greet-repair-diff")

    # And approves it: this CARS wants its API token first; the page asks for it, and sends nothing without it
    page.click("#approve")
    expect(page.locator("#token-box")).to_be_visible(timeout=STEP_TIMEOUT_MS)
    expect(page.locator("#action-status")).to_contain_text("needs its API token")
    assert not [c for c in bus.xrange("cars.commands") if "repair.approve" in c[1]["message"]]
    page.fill("#api-token", API_TOKEN)
    page.click("#approve")
    # Then CARS applies the patch, and the page follows along by itself
    expect(detail).to_have_attribute("data-status", "applied", timeout=STEP_TIMEOUT_MS)
    expect(page.locator("#feed li[data-type='repair.applied']")).to_be_visible()
    expect(page.locator("#repairs tr[data-status='applied']", has_text=GREET_ID)).to_be_visible()
    dashboard.screenshot("greet-repair-applied")

    # When the operator rejects the other repair, with a reason
    dashboard.feed_item("repair.completed", BYE_ID).click()
    expect(page.locator("#detail-title")).to_contain_text(BYE_ID, timeout=STEP_TIMEOUT_MS)
    expect(detail).to_have_attribute("data-status", "completed")
    page.fill("#reject-reason", "the old farewell is the product's wording")
    page.click("#reject")
    expect(detail).to_have_attribute("data-status", "rejected", timeout=STEP_TIMEOUT_MS)
    dashboard.screenshot("bye-repair-rejected")

    # Then the approved patch is in the project and the rejected one is not
    assert "assert greet('Ada') == 'Welcome, Ada!'" in (repo / "tests/test_greet.py").read_text()
    assert (repo / "tests/test_bye.py").read_text() == TEST_BYE
    # And the commands went over the bus, from the dashboard
    commands = [json.loads(fields["message"]) for _, fields in bus.xrange("cars.commands")]
    sent = {c["type"]: c["data"] for c in commands if c["type"] in ("repair.approve", "repair.reject")}
    assert sent["repair.approve"]["by"] == "dashboard"
    assert (sent["repair.reject"]["by"], sent["repair.reject"]["reason"]) == (
        "dashboard", "the old farewell is the product's wording")
    # And the store recorded the approval, the applied patch and the rejection of the right repairs
    completed = {e["data"]["test_id"]: e["data"]["repair_id"] for e in recorded(up, "repair.completed")}
    outcomes = [(e["type"], e["data"]["repair_id"]) for e in
                recorded(up, "repair.approved", "repair.applied", "repair.rejected")]
    assert outcomes == [("repair.approved", completed[GREET_ID]), ("repair.applied", completed[GREET_ID]),
                        ("repair.rejected", completed[BYE_ID])]
    assert sent["repair.approve"]["repair_id"] == completed[GREET_ID]
    # And the page never reloaded, and ran into nothing but the one 401 of the approval without a token
    assert dashboard.never_reloaded()
    assert dashboard.errors == ["console error: Failed to load resource: the server responded with a status of 401 "
                                "(Unauthorized)"]


def test_hostile_test_ids_are_shown_as_text_never_run(dashboard: Dashboard, up: Platform) -> None:
    from playwright.sync_api import expect

    page = dashboard.page
    # Given a run whose project, test id and failure message are markup
    test_id = 'tests/test_x.py::test_x[<script>window.__carsXss = "script"</script>]'
    message = '<img src=x onerror="window.__carsXss = \'img\'">'
    run = {"type": "run.reported", "data": {"project": "<b>shop</b>", "run_id": "r-<i>1</i>", "results": [
        {"test_id": test_id, "outcome": "failed",
         "evidence": {"exception_type": "AssertionError", "message": message}}]}}
    # When it is ingested
    response = up.http.post("/ingest", json=run, headers={"Authorization": f"Bearer {API_TOKEN}"})
    assert response.status_code == 202, response.text
    # Then the feed and the repairs table show it verbatim, as text
    expect(dashboard.feed_item("failure.detected", test_id)).to_be_visible(timeout=STEP_TIMEOUT_MS)
    expect(dashboard.feed_item("failure.detected", message)).to_be_visible()
    row = page.locator("#repairs tbody tr", has_text=test_id)
    expect(row).to_be_visible(timeout=STEP_TIMEOUT_MS)
    expect(row.locator("td").nth(0)).to_have_text("<b>shop</b>")
    expect(row.locator("td").nth(1)).to_have_text(test_id)
    dashboard.screenshot("hostile-input-as-text")
    # And nothing of it became markup or ran
    assert page.locator("main script, main img, main b, main i").count() == 0
    assert page.evaluate("window.__carsXss === undefined")
    assert dashboard.errors == []
