"""An expected value written in the test no longer matches what the code returns.

This is the one strategy that changes what a test checks, so it only acts when the evidence leaves
no doubt, and its proposals always need a human's approval:

- the failing line of the test is `assert <expression> == <literal>` (either side may be the literal,
  the other must not be one),
- the literal in the source equals the expected value pytest printed,
- the observed value pytest printed is itself a Python literal (`ast.literal_eval`; a truncated or
  object repr is refused) of exactly the same type as the expected one.

Then the literal, and only it, is replaced by the observed value's repr.

A `pytest.raises(..., match=<string literal>)` whose pattern no longer matches the exception's message
(compared operator "match") is the same drift for messages: the `match=` literal of the failing test's
`with pytest.raises` that contains the failing line, equal to the pattern pytest printed, becomes a
pattern that matches the new message (the message itself, or with its regex syntax escaped when it
holds some).
"""

from __future__ import annotations

import ast
import re
from typing import Any

from actors.healer.editing import edit_test_file, evidence_location, read_test, replace_node_text
from actors.healer.strategy import Proposal
from actors.workspace import Workspace
from contracts.failures import FailureDetected
from contracts.values import FailureClass

CONFIDENCE = 0.3
_NO_VALUE = object()
_REGEX_SYNTAX = re.compile(r"([.^$*+?{}\[\]\\|()])")


class AssertionDrift:
    """Replace a drifted expected literal with the observed value (approval required)."""

    name = "assertion_drift"

    def applies(self, failure: FailureDetected) -> bool:
        ev = failure.evidence
        return (
            failure.category is FailureClass.ASSERTION_DRIFT
            and ev.compared is not None
            and ev.compared.operator in ("==", "match")
            and ev.file is not None
            and ev.line is not None
        )

    def propose(self, failure: FailureDetected, workspace: Workspace) -> list[Proposal]:
        compared = failure.evidence.compared
        loc = evidence_location(failure, workspace)
        if compared is None or loc is None:
            return []
        path, line = loc
        source = read_test(workspace, path)
        if source is None:
            return []
        if compared.operator == "match":
            return self._message(workspace, path, line, source, compared.right, compared.left)
        node = _assert_at(source, line)
        if node is None:
            return []
        left, right = node.left, node.comparators[0]
        left_lit, right_lit = _literal(left), _literal(right)
        # Exactly one side is written as a literal: that one is the expectation.
        if right_lit is not _NO_VALUE and left_lit is _NO_VALUE:
            literal, expected_node, expected_repr, observed_repr = right_lit, right, compared.right, compared.left
        elif left_lit is not _NO_VALUE and right_lit is _NO_VALUE:
            literal, expected_node, expected_repr, observed_repr = left_lit, left, compared.left, compared.right
        else:
            return []
        expected, observed = _parse_value(expected_repr), _parse_value(observed_repr)
        if not _same(literal, expected) or observed is _NO_VALUE or type(observed) is not type(literal):
            return []  # the evidence does not describe this line, or the new value is not a plain literal
        if _same(observed, literal):
            return []
        new_text = repr(observed)
        after = replace_node_text(source, expected_node, new_text)
        try:
            ast.parse(after)
        except SyntaxError:
            return []
        edit = edit_test_file(workspace, path, source, after)
        if edit is None:
            return []
        return [Proposal(
            strategy=self.name, confidence=CONFIDENCE, edits=(edit,), needs_approval=True,
            explanation=f"the code now returns {new_text} where the test at {path}:{line} expects "
            f"{ast.get_source_segment(source, expected_node)}; the expectation changes, so a human approves it",
        )]


    def _message(self, workspace: Workspace, path: str, line: int, source: str, expected_repr: str,
                 observed_repr: str) -> list[Proposal]:
        expected, observed = _parse_value(expected_repr), _parse_value(observed_repr)
        if not isinstance(expected, str) or not isinstance(observed, str) or expected == observed:
            return []
        try:
            if re.search(expected, observed):
                return []  # the pattern matches: the evidence is not about this message
        except re.error:
            return []
        node = _match_literal_at(source, line, expected)
        if node is None:
            return []
        pattern = observed if _matches_itself(observed) else _escape(observed)
        after = replace_node_text(source, node, _string_literal(ast.get_source_segment(source, node) or "", pattern))
        try:
            ast.parse(after)
        except SyntaxError:
            return []
        edit = edit_test_file(workspace, path, source, after)
        if edit is None:
            return []
        return [Proposal(
            strategy=self.name, confidence=CONFIDENCE, edits=(edit,), needs_approval=True,
            explanation=f"the exception's message is now {observed!r}, which the pattern {expected!r} of "
            f"`pytest.raises(match=...)` at {path}:{line} no longer matches; the expectation changes, so a "
            "human approves it",
        )]


def _match_literal_at(source: str, line: int, expected: str) -> ast.Constant | None:
    """The `match=` string literal equal to `expected` of the `with ...raises(...)` block holding `line`
    (the innermost such block), if there is exactly one."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    found: list[tuple[int, ast.Constant]] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.With | ast.AsyncWith):
            continue
        if not node.lineno <= line <= (node.end_lineno or node.lineno):
            continue
        for item in node.items:
            call = item.context_expr
            if not isinstance(call, ast.Call) or _called_name(call.func) != "raises":
                continue
            for kw in call.keywords:
                if kw.arg == "match" and isinstance(kw.value, ast.Constant) and kw.value.value == expected:
                    found.append((node.lineno, kw.value))
    if not found:
        return None
    innermost = max(at for at, _ in found)
    nodes = [n for at, n in found if at == innermost]
    return nodes[0] if len(nodes) == 1 else None


def _called_name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else None


def _matches_itself(text: str) -> bool:
    """Whether `text`, read as a pattern, matches all of itself (then it can stand as its own pattern)."""
    try:
        return re.fullmatch(text, text) is not None
    except re.error:
        return False


def _escape(text: str) -> str:
    """`text` as a pattern that matches it: its regex syntax escaped, and nothing else (unlike
    `re.escape`, which escapes spaces too)."""
    return _REGEX_SYNTAX.sub(r"\\\1", text)


def _string_literal(original: str, value: str) -> str:
    """`value` written as a string literal in the style of `original` (prefix and quotes) when it can be,
    else as its repr."""
    m = re.match(r"([rRuU]?)('|\")", original)
    if m is not None:
        prefix, quote = m.groups()
        raw = prefix in ("r", "R")
        if quote not in value and "\n" not in value and (raw or "\\" not in value) and not value.endswith("\\"):
            return f"{prefix}{quote}{value}{quote}"
    return repr(value)


def _assert_at(source: str, line: int) -> ast.Compare | None:
    """The `a == b` comparison of the assert statement on `line`, if that is what the line holds."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.Assert) and node.lineno <= line <= (node.end_lineno or node.lineno):
            test = node.test
            if isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq):
                return test
            return None
    return None


def _literal(node: ast.expr) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return _NO_VALUE


def _parse_value(text: str) -> Any:
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return _NO_VALUE


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


__all__ = ["AssertionDrift"]
