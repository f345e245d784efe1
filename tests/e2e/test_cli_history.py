"""`cars audit`, `cars export`, `cars quarantine export` and `cars replay --check` over a recorded mixed
history, run as a user runs them (the `cars` executable in a subprocess), and the append-only promise:
none of them changes a stored event, and no command deletes or edits one."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bus.cli_history import ExportFormat, parse_moment, write_export
from bus.store import EventStore
from tests.e2e.conftest import Cars
from tests.e2e.test_cli import _commands
from tests.integration.operator_history import R2, TEST_C, write_operator_history

PLUGIN_DIR = Path(__file__).parents[2] / "actors" / "monitor" / "plugin"
pytestmark = pytest.mark.slow  # each test runs the `cars` executable several times


@pytest.fixture
def recorded(cars: Cars) -> Cars:
    """A CARS_HOME whose SQLite event store holds the operator history (two projects, five repairs)."""
    cars.home.mkdir(parents=True)
    env = {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(cars.home / "events.sqlite")}
    store = EventStore(env)
    try:
        write_operator_history(store)
    finally:
        store.close()
    return cars


def events_digest(home: Path) -> str:
    """A digest of every stored event row (eventsourcing's tables), to prove nothing changed them."""
    with sqlite3.connect(home / "events.sqlite") as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        digest = hashlib.sha256()
        for table in tables:
            for row in conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2"):  # table names from the schema itself
                digest.update(repr(row).encode())
    return digest.hexdigest()


def test_audit_prints_an_aggregate_as_table_json_and_csv_now_and_at_a_version(recorded: Cars) -> None:
    # As JSON: every event and the state folded by the repair's own fold
    doc = json.loads(recorded.ok("audit", str(R2), "--format", "json"))
    assert doc["aggregate_id"] == str(R2) and doc["version"] == doc["latest_version"] == len(doc["events"])
    assert doc["state"]["kind"] == "repair" and doc["state"]["state"]["status"] == "abandoned"
    # At version 2 the repair was still validating its one candidate
    then = json.loads(recorded.ok("audit", str(R2), "--format", "json", "--at-version", "2"))
    assert [e["type"] for e in then["events"]] == ["heal.requested", "heal.proposed"]
    assert then["state"]["state"]["status"] == "validating"
    # As a table: a header, one line per event, the state
    lines = recorded.ok("audit", str(R2)).splitlines()
    assert lines[0] == f"aggregate {R2}: repair, version {doc['version']} of {doc['version']}"
    assert [line.split()[3] for line in lines[1:-1]] == [e["type"] for e in doc["events"]]
    assert lines[-1].startswith("state: {") and '"status":"abandoned"' in lines[-1]
    # As CSV: a header and one row per event, data as JSON
    rows = list(csv.DictReader(io.StringIO(recorded.ok("audit", str(R2), "--format", "csv", "--at-version", "3"))))
    assert [r["type"] for r in rows] == ["heal.requested", "heal.proposed", "heal.rejected"]
    assert json.loads(rows[2]["data"])["reason"].startswith("rerun 1 of 3")
    # Errors are clear
    for args, code, words in ((["audit", "nope"], 2, "not an aggregate id"),
                              (["audit", str(R2), "--at-version", "99"], 1, "no version 99")):
        done = recorded.run(*args)
        assert done.returncode == code and words in done.stderr, (args, done.stderr)


def test_export_streams_a_time_range_of_the_history_as_jsonl_or_csv(recorded: Cars, tmp_path: Path) -> None:
    # The whole history as JSON lines, positions in order
    everything = [json.loads(line) for line in recorded.ok("export").splitlines()]
    positions = [e["position"] for e in everything]
    assert positions == sorted(positions) and len(positions) > 40
    # A range: day one only (the web project's second day is left out)
    day_one = [json.loads(line) for line in recorded.ok("export", "--since", "2026-03-02", "--until",
                                                        "2026-03-03").splitlines()]
    assert day_one and all(e["occurred_at"].startswith("2026-03-02") for e in day_one)
    assert len(day_one) == sum(1 for e in everything if e["occurred_at"].startswith("2026-03-02"))
    # Times with an offset, and one type
    done = recorded.run("export", "--since", "2026-03-02T09:05:00+00:00", "--type", "failure.detected",
                        "--format", "csv", "--out", str(tmp_path / "failures.csv"))
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader((tmp_path / "failures.csv").open()))
    assert [r["type"] for r in rows] == ["failure.detected"] * 2
    assert re.search(r"exported 2 events to .*failures\.csv", done.stderr)
    assert list(rows[0]) == ["position", "occurred_at", "type", "version", "id", "stream_id", "stream_version",
                             "correlation_id", "causation_id", "data"]
    # Bad dates and ranges are clear errors
    for args, words in ((["--since", "yesterday"], "--since 'yesterday' is not a date or time"),
                        (["--since", "2026-03-03", "--until", "2026-03-02"], "is not before --until")):
        done = recorded.run("export", *args)
        assert done.returncode == 2 and words in done.stderr, (args, done.stderr)


def _pytest(project: Path, *args: str, plugin: bool) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    if plugin:
        env["PYTHONPATH"] = str(PLUGIN_DIR)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", *args],
                          cwd=project, env=env, capture_output=True, text=True, timeout=120)


def _flaky_project(root: Path) -> Path:
    (root / "tests").mkdir(parents=True)
    (root / "tests" / "test_c.py").write_text(
        "def test_c():\n    assert False, 'flaky'\n\n\ndef test_ok():\n    pass\n")
    return root


def test_quarantine_export_is_what_the_pytest_plugin_reads(recorded: Cars, tmp_path: Path) -> None:
    # When the quarantine is exported in the plugin's format into a project
    project = _flaky_project(tmp_path / "shop")
    done = recorded.run("quarantine", "export", "--format", "pytest", "--project", "shop",
                        "--out", str(project / ".cars-quarantine"))
    assert done.returncode == 0, done.stderr
    text = (project / ".cars-quarantine").read_text()
    listed = [line.split("#", 1)[0].strip() for line in text.splitlines() if line.split("#", 1)[0].strip()]
    assert listed == [TEST_C]
    assert "flip rate 1.00" in text and "quarantine applied since" in text
    # Then the CARS plugin skips the quarantined test, and the rest still runs
    run = _pytest(project, "-p", "cars_pytest", plugin=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 passed, 1 skipped" in run.stdout and "quarantined by CARS" in run.stdout
    # And without the export the test fails (the export is what made the difference)
    (project / ".cars-quarantine").unlink()
    assert _pytest(project, "-p", "cars_pytest", plugin=True).returncode == 1
    # And a project outside CARS gets a project with nothing quarantined: only the header
    empty = recorded.ok("quarantine", "export", "--project", "web")
    assert all(line.startswith("#") for line in empty.splitlines())


def test_quarantine_export_as_a_conftest_needs_no_cars(recorded: Cars, tmp_path: Path) -> None:
    project = _flaky_project(tmp_path / "standalone")
    snippet = recorded.ok("quarantine", "export", "--format", "conftest")
    (project / "conftest.py").write_text(snippet)
    run = _pytest(project, plugin=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 passed, 1 skipped" in run.stdout
    assert TEST_C in textwrap.dedent(snippet)


def test_replay_check_covers_every_view_and_no_command_changes_an_event(recorded: Cars) -> None:
    before = events_digest(recorded.home)
    # When every view is built live and then checked against a rebuild from position 0
    done = recorded.run("replay", "--check")
    # Then every view, the operator views included, is identical
    assert done.returncode == 0, done.stdout + done.stderr
    for view in ("services", "heals", "statistics", "repair_timeline", "flaky_tests", "run_trends"):
        assert re.search(rf"^{view} @ \d+: identical$", done.stdout, re.M), done.stdout
    # And rebuilding, auditing, exporting and exporting the quarantine leave every stored event as it was
    recorded.ok("replay")
    recorded.ok("audit", str(R2), "--format", "json")
    recorded.ok("export", "--format", "csv")
    recorded.ok("quarantine", "export")
    assert events_digest(recorded.home) == before


def test_a_long_export_reports_its_progress_page_by_page(tmp_path: Path) -> None:
    # Given the operator history in a store, When it is exported reporting after every page
    store = EventStore({"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(tmp_path / "e.sqlite")})
    try:
        write_operator_history(store)
        head = store.max_position()
        seen: list[tuple[int, int, int]] = []
        out = io.StringIO()
        written = write_export(store, out, since=None, until=None, types=[], fmt=ExportFormat.jsonl,
                               progress=lambda *report: seen.append(report), every_s=0.0)
    finally:
        store.close()
    # Then every event is written, and the progress reached the end of the log
    assert written == head == len(out.getvalue().splitlines())
    assert seen == [(head, head, head)]


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-03-02", "2026-03-02T00:00:00+00:00"),
    ("2026-03-02T09:05:00Z", "2026-03-02T09:05:00+00:00"),
    ("2026-03-02T10:05:00+01:00", "2026-03-02T10:05:00+01:00"),
    ("2026-03-02T09:05", "2026-03-02T09:05:00+00:00"),
])
def test_export_reads_dates_and_times_as_utc_unless_they_say(text: str, expected: str) -> None:
    assert parse_moment("--since", text).isoformat() == expected


@pytest.mark.parametrize("text", ["yesterday", "2026-13-01", "03/02/2026", ""])
def test_a_bad_date_names_the_option_and_the_forms_it_takes(text: str) -> None:
    with pytest.raises(ValueError, match=r"--until .* is not a date or time: use YYYY-MM-DD or an ISO 8601"):
        parse_moment("--until", text)


def test_no_command_deletes_or_edits_events() -> None:
    # The store's own surface: it appends and reads, nothing else (`on_append` registers a listener
    # that is told after each append)
    from bus.store import EventStore as Store

    public = {name for name in vars(Store) if not name.startswith("_")}
    assert public == {"append", "append_many", "on_append", "load", "load_many", "read", "max_position", "close"}
    # And no command of the CLI is named for deleting or editing anything
    verbs = ("delete", "remove", "edit", "update", "purge", "truncate", "rewrite", "drop", "prune", "amend")
    names = [" ".join(path) for path, _ in _commands() if path]
    assert names and not [n for n in names if any(v in n for v in verbs)], names
