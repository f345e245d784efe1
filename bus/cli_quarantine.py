"""`cars quarantine export`: the tests CARS quarantined, in a form the project can commit (no lock-in).

`--format pytest` writes exactly what the CARS pytest plugin (actors/monitor/plugin/cars_pytest.py)
reads from `.cars-quarantine`: one test id per line, `#` starting a comment. `--format conftest`
writes a self-contained conftest.py hook with the ids in it, for projects that want neither CARS nor
its plugin. The list comes from the flaky-tests view, caught up with the store first.
"""

from __future__ import annotations

import enum
import os
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(help="Export the tests CARS quarantined, for the project's repository.", no_args_is_help=True)


class QuarantineFormat(enum.StrEnum):
    pytest = "pytest"
    conftest = "conftest"


def _line_safe(test_id: str) -> bool:
    return bool(test_id.strip()) and not any(c in test_id for c in "\r\n#")


def render_pytest(project: str, tests: list[dict[str, Any]], quarantine_file: str) -> str:
    """The quarantine file: a header, then `test_id  # why` per test."""
    lines = [
        f"# CARS quarantine of project {project}: flaky tests CARS quarantined, exported from its history.",
        "# One test id per line; `#` starts a comment. The CARS pytest plugin (-p cars_pytest) skips them when",
        f"# this file is the project's {quarantine_file} (or CARS_QUARANTINE_FILE names it).",
    ]
    for t in tests:
        q = t["quarantine"]
        note = f"flaky since {t['flaky_since']}" if t["flaky_since"] else "flaky"
        if t["flip_rate"] is not None:
            note += f", flip rate {t['flip_rate']:.2f}"
        note += f"; quarantine {q['state']} since {q['since']}"
        lines.append(f"{t['test_id']}  # {' '.join(note.split())}")
    return "\n".join(lines) + "\n"


def render_conftest(project: str, tests: list[dict[str, Any]]) -> str:
    """A conftest.py hook that skips the quarantined tests by itself (no CARS needed)."""
    ids = "".join(f"    {t['test_id']!r},\n" for t in tests)
    return (
        f"# Quarantine of project {project}, exported by `cars quarantine export --format conftest`.\n"
        "# Paste into the project's conftest.py: it skips these flaky tests without CARS or its plugin.\n"
        "import pytest\n\n"
        f"CARS_QUARANTINED = {{\n{ids}}}\n\n\n"
        "def pytest_collection_modifyitems(config, items):\n"
        "    for item in items:\n"
        "        if item.nodeid in CARS_QUARANTINED or item.nodeid.split(\"[\", 1)[0] in CARS_QUARANTINED:\n"
        "            item.add_marker(pytest.mark.skip(reason=\"quarantined (flaky) by CARS\"))\n"
    )


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@app.command("export")
def export(
    format_: Annotated[QuarantineFormat, typer.Option("--format", help="pytest: the quarantine file the CARS "
                                                      "plugin reads; conftest: a standalone conftest.py hook")]
    = QuarantineFormat.pytest,
    project: Annotated[str | None, typer.Option(help="The project (default: the only one with "
                                                "quarantined tests)")] = None,
    out: Annotated[Path | None, typer.Option(help="Write to this file, e.g. .cars-quarantine (default: stdout)")]
    = None,
) -> None:
    """Write the list of tests CARS quarantined (validated or applied) for the project to commit."""
    from actors.projectconfig import QUARANTINE_FILE
    from bus.cli import _fail, _open_store, _settings
    from projections.db import ViewDB
    from projections.flaky import FlakyTestsView, quarantined_tests
    from projections.runner import ProjectionRunner

    settings = _settings()
    store = _open_store(settings)
    db = ViewDB.from_store_env(settings.store_env(), settings.home)
    try:
        ProjectionRunner(store, db, [FlakyTestsView()]).catch_up()
        tests = quarantined_tests(db, project)
    finally:
        db.close()
        store.close()
    projects = sorted({t["project"] for t in tests})
    if project is None:
        if len(projects) > 1:
            _fail(f"tests are quarantined in several projects ({', '.join(projects)}); choose one with --project")
        project = projects[0] if projects else "(none)"
    skipped = [t["test_id"] for t in tests if not _line_safe(t["test_id"])]
    for test_id in skipped:
        typer.echo(f"cars: left out {test_id!r}: a test id with a newline or # cannot be listed", err=True)
    tests = [t for t in tests if _line_safe(t["test_id"])]
    if format_ is QuarantineFormat.conftest:
        text = render_conftest(project, tests)
    else:
        text = render_pytest(project, tests, QUARANTINE_FILE)
    if out is None:
        typer.echo(text, nl=False)
    else:
        _write_atomically(out, text)
    typer.echo(f"{len(tests)} quarantined test(s) of {project}" + (f" written to {out}" if out else ""), err=True)


__all__ = ["QuarantineFormat", "app", "export", "render_conftest", "render_pytest"]
