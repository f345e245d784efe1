"""A test timed out against a limit it sets itself; give it a larger, still bounded, limit.

Only explicit limits written in the failing test are raised: `timeout=2` (or `timeout_s=2`,
`read_timeout=2`, `timeout_ms=500`) in a call, `asyncio.wait_for(coro, 2)`, and
`@pytest.mark.timeout(3)`. Each is doubled, up to a cap (60 s). A test without an explicit limit gets
nothing: adding sleeps or limits is not a repair, and a limit already at the cap is left alone.
When the evidence points at a line holding a limit, only that limit changes.
"""

from __future__ import annotations

import ast
import re

from attrs import frozen

from actors.healer.editing import edit_test_file, evidence_location, failure_text, locate_test, replace_node_text
from actors.healer.strategy import Proposal
from actors.workspace import Workspace
from contracts.failures import FailureDetected
from contracts.values import FailureClass

FACTOR = 2
CAP_S = 60.0
CONFIDENCE = 0.45
_KEYWORD = re.compile(r"^(?:\w+_)?timeout(?:_(s|sec|secs|seconds|ms))?$")
_MARK_TIMEOUT = re.compile(r"Timeout \(?>")


@frozen(kw_only=True)
class _Limit:
    node: ast.Constant
    value: int | float
    cap: float
    is_mark: bool

    @property
    def raised(self) -> int | float | None:
        """The new limit, or None when it is already at the cap."""
        if self.value >= self.cap:
            return None
        new = min(self.value * FACTOR, self.cap)
        return int(new) if isinstance(self.value, int) and float(new).is_integer() else float(new)


class RaiseTimeout:
    """Double an explicit timeout the failing test sets (bounded by a cap)."""

    name = "timeout"

    def applies(self, failure: FailureDetected) -> bool:
        return failure.category is FailureClass.TIMEOUT

    def propose(self, failure: FailureDetected, workspace: Workspace) -> list[Proposal]:
        site = locate_test(failure, workspace)
        if site is None or site.function is None:
            return []
        limits = _limits(site.source, site.span)
        loc = evidence_location(failure, workspace)
        if loc is not None and loc[0] == site.path:
            on_line = [lim for lim in limits if lim.node.lineno == loc[1]]
            limits = on_line or limits
        if _MARK_TIMEOUT.search(failure_text(failure)):
            marks = [lim for lim in limits if lim.is_mark]
            limits = marks or limits  # pytest-timeout fired: its own mark is the limit that was hit
        changes = [(lim, new) for lim in limits if (new := lim.raised) is not None]
        if not changes:
            return []
        after = site.source
        for lim, new in sorted(changes, key=lambda c: (c[0].node.lineno, c[0].node.col_offset), reverse=True):
            after = replace_node_text(after, lim.node, repr(new))
        edit = edit_test_file(workspace, site.path, site.source, after)
        if edit is None:
            return []
        described = ", ".join(f"{lim.value} -> {new} (line {lim.node.lineno})" for lim, new in changes)
        return [Proposal(
            strategy=self.name, confidence=CONFIDENCE, edits=(edit,),
            explanation=f"the test timed out against its own limit; raising it within the {CAP_S:g}s cap: {described}",
        )]


def _limits(source: str, span: tuple[int, int]) -> list[_Limit]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    found: list[_Limit] = []
    for call in ast.walk(tree):
        if not isinstance(call, ast.Call) or not span[0] <= call.lineno <= span[1]:
            continue
        callee = ast.unparse(call.func)
        is_mark = callee.endswith("mark.timeout")
        for kw in call.keywords:
            m = _KEYWORD.match(kw.arg or "")
            if m and (num := _number(kw.value)) is not None:
                cap = CAP_S * 1000 if m.group(1) == "ms" else CAP_S
                found.append(_Limit(node=num[0], value=num[1], cap=cap, is_mark=is_mark))
        position = 0 if is_mark else 1 if callee.rpartition(".")[2] == "wait_for" else None
        if position is not None and len(call.args) > position:
            arg = call.args[position]
            if (num := _number(arg)) is not None:
                found.append(_Limit(node=num[0], value=num[1], cap=CAP_S, is_mark=is_mark))
    return found


def _number(node: ast.expr) -> tuple[ast.Constant, int | float] | None:
    """A positive int or float literal (bools are ints to Python, not timeouts)."""
    if not isinstance(node, ast.Constant):
        return None
    value = node.value
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return node, value
    return None


__all__ = ["RaiseTimeout"]
