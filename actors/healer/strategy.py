"""The one protocol every healing strategy implements (STYLE rule 11), and what it proposes.

A strategy looks at one classified failure and the project's source tree and proposes zero or more
candidate edits to TEST files. It never runs anything: the validator proves or refutes each candidate.

    class RenamedSymbol:
        name = "renamed_symbol"
        def applies(self, failure: FailureDetected) -> bool: ...
        def propose(self, failure: FailureDetected, workspace: Workspace) -> list[Proposal]: ...

`confidence` is the strategy's own estimate in [0, 1]; the healer calibrates and ranks it with the
success rates folded from the event history.
"""

from __future__ import annotations

from typing import Protocol

from attrs import field, frozen, validators

from actors.patching import FileEdit
from actors.workspace import Workspace
from contracts.failures import FailureDetected


@frozen(kw_only=True)
class Proposal:
    """One candidate repair: edits to test files, and why the strategy believes in it."""

    strategy: str
    confidence: float = field(validator=[validators.ge(0.0), validators.le(1.0)])
    edits: tuple[FileEdit, ...]
    explanation: str
    #: True when a human must approve it even if validation passes (e.g. a changed expected value).
    needs_approval: bool = False
    #: A labelled non-heal outcome (quarantine): validated like any candidate, never reported as a heal.
    quarantine: bool = False


class Strategy(Protocol):
    name: str

    def applies(self, failure: FailureDetected) -> bool:
        """Cheap check on the failure alone: is it worth looking at the source tree?"""
        ...

    def propose(self, failure: FailureDetected, workspace: Workspace) -> list[Proposal]:
        """Candidate repairs, best first. Only test files may be edited. Empty when nothing fits."""
        ...


__all__ = ["Proposal", "Strategy"]
