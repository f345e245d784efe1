"""Builders shared by the healing-strategy tests: a workspace from a dict of files, a failure with
realistic evidence, applying a proposal, and a real git repository for history-based evidence."""

from __future__ import annotations

import subprocess
from pathlib import Path

from actors.healer.strategy import Proposal
from actors.workspace import Workspace
from contracts.failures import FailureDetected
from contracts.values import ComparedValues, FailureClass, FailureEvidence


def make_workspace(root: Path, files: dict[str, str]) -> Workspace:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return Workspace(root)


def make_failure(
    category: FailureClass,
    test_id: str,
    *,
    exception_type: str | None = None,
    message: str | None = None,
    traceback: str | None = None,
    file: str | None = None,
    line: int | None = None,
    compared: ComparedValues | None = None,
    fixtures_available: tuple[str, ...] = (),
    reason: str = "",
) -> FailureDetected:
    return FailureDetected(
        project="shop",
        test_id=test_id,
        run_id="run-1",
        fingerprint="fp-1234",
        category=category,
        reason=reason,
        evidence=FailureEvidence(
            exception_type=exception_type, message=message, traceback=traceback, file=file, line=line,
            compared=compared, fixtures_available=fixtures_available,
        ),
    )


def apply(workspace: Workspace, proposal: Proposal) -> dict[str, str]:
    """The edited files' new text; each edit must have been made against the current text."""
    out: dict[str, str] = {}
    for edit in proposal.edits:
        current = workspace.read(edit.path) if workspace.exists(edit.path) else ""
        assert edit.before == current, f"{edit.path} edit was made against other content"
        out[edit.path] = edit.after
    return out


def git(root: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", "-c", "commit.gpgsign=false", *args],
        cwd=root, capture_output=True, text=True, check=True, timeout=30,
    )
    return done.stdout


def commit_all(root: Path, message: str) -> None:
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", message)
