"""A test requests a fixture that no longer exists under that name; request the one that does.

pytest reports `fixture 'db_sesion' not found` with the list of fixtures available to the test
(`evidence.fixtures_available`). The candidates are those, plus the fixtures the AST index sees in
the test's conftests and module. A rename of the fixture function in recent git history ranks first;
otherwise similarity ranks.

The edit renames the parameter of the function that requests the fixture (the test, or a fixture
defined in a conftest, as pytest's `file ..., line N` says) and every use of it in that function's
body, plus a `usefixtures("...")` string on it, and nothing else.
"""

from __future__ import annotations

import re

from actors.healer.editing import (
    edit_test_file,
    evidence_location,
    failure_text,
    function_at,
    locate_test,
    read_test,
    rename_name,
    replace_string,
)
from actors.healer.gitlog import renames_for
from actors.healer.pyindex import index_for
from actors.healer.similarity import ranked
from actors.healer.strategy import Proposal
from actors.workspace import Workspace, split_test_id
from contracts.failures import FailureDetected
from contracts.values import FailureClass

NOT_FOUND = re.compile(r"fixture '([A-Za-z_]\w*)' not found")
MAX_CANDIDATES = 3


class FixtureRename:
    """Rename a test's (or fixture's) parameter to the visible fixture it most likely became."""

    name = "fixture_rename"

    def applies(self, failure: FailureDetected) -> bool:
        return failure.category is FailureClass.FIXTURE_MISSING and bool(NOT_FOUND.search(failure_text(failure)))

    def propose(self, failure: FailureDetected, workspace: Workspace) -> list[Proposal]:
        m = NOT_FOUND.search(failure_text(failure))
        if m is None:
            return []
        old = m.group(1)
        requester = _requester(failure, workspace)
        if requester is None:
            return []
        path, source, span = requester
        test_file = split_test_id(failure.test_id)[0]
        visible = set(failure.evidence.fixtures_available) | set(index_for(workspace).fixtures_visible(test_file))
        visible.discard(old)
        proposals: list[Proposal] = []
        for new, confidence, why in _candidates(workspace, old, visible):
            after = replace_string(rename_name(source, old, new, span=span), old, new, span=span)
            edit = edit_test_file(workspace, path, source, after)
            if edit is not None:
                proposals.append(Proposal(
                    strategy=self.name, confidence=confidence, edits=(edit,),
                    explanation=f"fixture `{old}` is not defined any more; {why}",
                ))
        return proposals[:MAX_CANDIDATES]


def _requester(failure: FailureDetected, workspace: Workspace) -> tuple[str, str, tuple[int, int]] | None:
    """(path, source, lines) of the function that requests the missing fixture."""
    loc = evidence_location(failure, workspace)
    if loc is not None:
        source = read_test(workspace, loc[0])
        found = function_at(source, loc[1]) if source is not None else None
        if source is not None and found is not None:
            return loc[0], source, found[1]
    site = locate_test(failure, workspace)
    if site is None or site.function is None:
        return None  # renaming throughout a whole file would touch other tests' parameters
    return site.path, site.source, site.span


def _candidates(workspace: Workspace, old: str, visible: set[str]) -> list[tuple[str, float, str]]:
    scored: dict[str, tuple[float, str]] = {}
    for new, score in ranked(old, visible, limit=MAX_CANDIDATES):
        why = f"`{new}` is the most similar visible fixture ({score:.2f})"
        scored[new] = (round(min(0.35 + 0.5 * score, 0.8), 3), why)
    for r in renames_for(workspace):
        if r.kind == "function" and r.old == old and r.new in visible:
            scored[r.new] = (0.9, f"commit {r.commit[:10]} renamed fixture `{old}` to `{r.new}` in {r.path}")
            break
    ordered = sorted(scored.items(), key=lambda kv: (-kv[1][0], kv[0]))
    return [(new, conf, why) for new, (conf, why) in ordered]


__all__ = ["FixtureRename"]
