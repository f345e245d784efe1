"""A flaky test goes into quarantine: a labelled outcome, never a heal.

The quarantine is a plain file at the root of the project, `.cars-quarantine`, one test id per line
with a comment carrying the reason:

    tests/test_cart.py::test_total[eur]  # flaky: flip rate 0.40 over 20 runs (fingerprint ab12cd)

The file changes nothing by itself: a project opts in with a conftest hook that skips the listed ids,
or CI reads it. That keeps the test's own code untouched (no skip added to a failing test), and the
quarantine visible and reversible in review. A test already listed is not proposed again.
"""

from __future__ import annotations

from actors.errors import Rejected
from actors.healer.strategy import Proposal
from actors.patching import FileEdit
from actors.projectconfig import QUARANTINE_FILE
from actors.workspace import Workspace
from contracts.failures import FailureDetected
from contracts.values import FailureClass

CONFIDENCE = 0.5


class FlakyQuarantine:
    """Add a flaky test's id, with the reason, to the quarantine file."""

    name = "flaky_quarantine"

    def __init__(self, quarantine_file: str = QUARANTINE_FILE) -> None:
        self.quarantine_file = quarantine_file

    def applies(self, failure: FailureDetected) -> bool:
        return failure.category is FailureClass.FLAKY

    def propose(self, failure: FailureDetected, workspace: Workspace) -> list[Proposal]:
        test_id = failure.test_id.strip()
        if not test_id or any(c in test_id for c in "\r\n#"):
            return []  # would corrupt the one-id-per-line format
        exists = workspace.exists(self.quarantine_file)
        try:
            before = workspace.read(self.quarantine_file) if exists else ""
        except (Rejected, OSError):
            return []
        if test_id in listed_ids(before):
            return []
        reason = " ".join((failure.reason or "flaky").split())  # one line, whatever the reason held
        line = f"{test_id}  # {reason} (fingerprint {failure.fingerprint})\n"
        after = before + ("\n" if before and not before.endswith("\n") else "") + line
        return [Proposal(
            strategy=self.name, confidence=CONFIDENCE, quarantine=True,
            edits=(FileEdit(path=self.quarantine_file, before=before, after=after, new_file=not exists),),
            explanation=f"{test_id} is flaky ({reason}); quarantined in {self.quarantine_file}, not healed",
        )]


def listed_ids(text: str) -> set[str]:
    """The test ids a quarantine file lists (comments and blank lines ignored)."""
    ids = set()
    for raw in text.splitlines():
        entry = raw.partition("#")[0].strip()
        if entry:
            ids.add(entry)
    return ids


__all__ = ["QUARANTINE_FILE", "FlakyQuarantine", "listed_ids"]
