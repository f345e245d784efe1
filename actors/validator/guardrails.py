"""Guardrails: the ways a candidate repair can turn a test green without fixing it (DESIGN.md).

A candidate is rejected, however green it runs, when it edits non-test files, removes or weakens
assertions, adds sleeps, adds skip/xfail, or reduces the number of collected tests. Everything here is
pure: it compares file texts before and after the patch (and two collected-test counts), using `ast`.
"""

from __future__ import annotations

import ast
import itertools
import operator
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from attrs import frozen

from contracts.values import GuardrailViolation

NON_TEST_FILE = "non_test_file_edited"
ASSERTION_REMOVED = "assertion_removed"
ASSERTION_WEAKENED = "assertion_weakened"
SLEEP_ADDED = "sleep_added"
SKIP_ADDED = "skip_added"
COLLECTED_REDUCED = "collected_tests_reduced"
UNPARSABLE = "unparsable_test_file"

MODULE_SCOPE = "<module>"
# Assertion methods that only check truthiness: swapping `assertEqual` for one of these weakens a test.
WEAK_ASSERT_METHODS = frozenset({"assertTrue", "assertFalse", "assertIsNotNone", "assert_called"})
RAISES_HELPERS = frozenset({"raises", "warns", "deprecated_call"})
BROAD_EXCEPTIONS = frozenset({"Exception", "BaseException"})
SLEEP_CALLS = frozenset({"sleep", "wait_for_timeout"})  # time/asyncio/anyio/trio sleep, Playwright waits
SKIP_MARKS = frozenset({"skip", "skipif", "xfail"})  # pytest.mark.<name>
SKIP_CALLS = frozenset({
    "skip", "skipif", "xfail", "importorskip", "skipTest", "skipIf", "skipUnless", "expectedFailure", "SkipTest",
})
SKIP_OWNERS = frozenset({"pytest", "unittest", "self", "cls", "TestCase"})
_SLEEP_RE = re.compile(r"\b(?:sleep|wait_for_timeout)\s*\(")
_SKIP_RE = re.compile(
    r"\bmark\.(?:skip|skipif|xfail)\b|\b(?:pytest|unittest|self)\.(?:skip|xfail|importorskip|skipTest|skipIf|"
    r"skipUnless|expectedFailure|SkipTest)\b|@(?:skip|skipIf|skipUnless|expectedFailure)\b"
)


@frozen(kw_only=True)
class FileChange:
    """One file a patch touches. None: the file does not exist on that side (added or deleted)."""

    path: str
    before: str | None
    after: str | None


@frozen(kw_only=True)
class AssertionCounts:
    """The assertions in one function. `strong` compare values or name an exception; `trivial` can never
    fail (`assert True`, `assert x == x`); the rest only check truthiness."""

    total: int = 0
    strong: int = 0
    trivial: int = 0


def check_guardrails(
    changes: Sequence[FileChange],
    *,
    is_test_file: Callable[[str], bool],
    collected_before: int | None = None,
    collected_after: int | None = None,
) -> tuple[GuardrailViolation, ...]:
    """Every guardrail the change breaks (empty when it breaks none)."""
    found: list[GuardrailViolation] = []
    for change in changes:
        if change.before == change.after:
            continue
        if not is_test_file(change.path):
            found.append(GuardrailViolation(rule=NON_TEST_FILE, detail=f"{change.path} is not a test file"))
            continue
        if change.path.endswith(".py"):
            found.extend(_check_test_file(change))
    found.extend(check_collected(collected_before, collected_after))
    return tuple(found)


def check_collected(before: int | None, after: int | None) -> list[GuardrailViolation]:
    """A violation when fewer tests are collected after the patch (unknown counts, None or -1, pass)."""
    if before is None or after is None or before < 0 or after < 0 or after >= before:
        return []
    return [GuardrailViolation(rule=COLLECTED_REDUCED, detail=f"{before} tests collected before, {after} after")]


def _check_test_file(change: FileChange) -> list[GuardrailViolation]:
    before_tree = _parse(change.before or "")
    after_tree = _parse(change.after or "")
    if after_tree is None:
        return [GuardrailViolation(rule=UNPARSABLE, detail=f"{change.path} is not valid Python after the patch")]
    found: list[GuardrailViolation] = []
    if before_tree is not None:
        found.extend(_compare_assertions(change.path, assertion_profile(before_tree), assertion_profile(after_tree)))
    sleeps_before = count_sleeps(before_tree) if before_tree else len(_SLEEP_RE.findall(change.before or ""))
    sleeps_after = count_sleeps(after_tree)
    if sleeps_after > sleeps_before:
        found.append(GuardrailViolation(
            rule=SLEEP_ADDED, detail=f"{change.path}: {sleeps_before} sleep calls before, {sleeps_after} after"
        ))
    skips_before = count_skips(before_tree) if before_tree else len(_SKIP_RE.findall(change.before or ""))
    skips_after = count_skips(after_tree)
    if skips_after > skips_before:
        found.append(GuardrailViolation(
            rule=SKIP_ADDED, detail=f"{change.path}: {skips_before} skip/xfail uses before, {skips_after} after"
        ))
    return found


def _compare_assertions(
    path: str, before: Mapping[str, AssertionCounts], after: Mapping[str, AssertionCounts]
) -> Iterator[GuardrailViolation]:
    for scope, was in before.items():
        now = after.get(scope, AssertionCounts())
        where = f"{path}::{scope}"
        if now.total < was.total:
            yield GuardrailViolation(
                rule=ASSERTION_REMOVED, detail=f"{where}: {was.total} assertions before, {now.total} after"
            )
        elif now.strong < was.strong or now.trivial > was.trivial:
            yield GuardrailViolation(
                rule=ASSERTION_WEAKENED,
                detail=f"{where}: value-checking assertions {was.strong} -> {now.strong}, "
                f"always-true assertions {was.trivial} -> {now.trivial}",
            )


def _parse(text: str) -> ast.Module | None:
    try:
        return ast.parse(text)
    except (SyntaxError, ValueError):
        return None


# -- assertions --------------------------------------------------------------------------------------


def assertion_profile(tree: ast.Module) -> dict[str, AssertionCounts]:
    """Assertion counts per function (`Class.method`, `outer.inner`), plus `<module>` for top-level code."""
    kinds: dict[str, Counter[str]] = {}

    def visit(node: ast.AST, scope: str) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            inner = node.name if scope == MODULE_SCOPE else f"{scope}.{node.name}"
            if not isinstance(node, ast.ClassDef):
                kinds.setdefault(inner, Counter())  # a test with no assertion still counts (as zero)
            for deco in node.decorator_list:
                visit(deco, scope)  # decorators run in the enclosing scope
            for stmt in node.body:
                visit(stmt, inner)
            return
        kind = _assertion_kind(node)
        if kind is not None:
            kinds.setdefault(scope, Counter())[kind] += 1
        for child in ast.iter_child_nodes(node):
            visit(child, scope)

    for stmt in tree.body:
        visit(stmt, MODULE_SCOPE)
    return {
        scope: AssertionCounts(total=sum(c.values()), strong=c["strong"], trivial=c["trivial"])
        for scope, c in kinds.items()
    }


def _assertion_kind(node: ast.AST) -> str | None:
    """"strong", "weak" or "trivial" if `node` is an assertion; None otherwise."""
    if isinstance(node, ast.Assert):
        return _assert_strength(node.test)
    if not isinstance(node, ast.Call):
        return None
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    if name in RAISES_HELPERS and _owner_is(func, "pytest"):
        first = node.args[0] if node.args else None
        broad = isinstance(first, ast.Name) and first.id in BROAD_EXCEPTIONS
        return "weak" if broad else "strong"
    if isinstance(func, ast.Attribute) and (name.startswith("assert") or name.startswith("fail")):
        if node.args and _always_true(node.args[0]) and name in ("assertTrue", "assertIsNotNone"):
            return "trivial"
        return "weak" if name in WEAK_ASSERT_METHODS else "strong"
    if isinstance(func, ast.Attribute) and name.startswith("to_") and _is_expect_call(func.value):
        return "strong"  # Playwright: expect(locator).to_have_text(...)
    return None


def _assert_strength(test: ast.expr) -> str:
    if _always_true(test):
        return "trivial"
    if isinstance(test, ast.Compare):
        return "strong"
    return "weak"


def _always_true(expr: ast.expr) -> bool:
    """Whether an assertion on `expr` can never fail: a truthy constant, `x == x`, `... or True`."""
    if isinstance(expr, ast.Constant):
        return bool(expr.value)
    if isinstance(expr, ast.Tuple | ast.List | ast.Set):
        return bool(expr.elts)  # `assert (x, "msg")` is the classic always-true mistake
    if isinstance(expr, ast.Dict):
        return bool(expr.keys)
    if isinstance(expr, ast.BoolOp) and isinstance(expr.op, ast.Or):
        return any(_always_true(v) for v in expr.values)
    if isinstance(expr, ast.Compare):
        sides = [expr.left, *expr.comparators]
        if all(isinstance(s, ast.Constant) for s in sides):
            return _constant_compare_true(expr)
        same = len({ast.dump(s) for s in sides}) == 1
        return same and all(isinstance(op, ast.Eq | ast.Is | ast.GtE | ast.LtE) for op in expr.ops)
    return False


_COMPARE_OPS: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge, ast.Is: operator.is_, ast.IsNot: operator.is_not,
    ast.In: lambda a, b: operator.contains(b, a), ast.NotIn: lambda a, b: not operator.contains(b, a),
}


def _constant_compare_true(expr: ast.Compare) -> bool:
    """Evaluate a comparison of literals (`1 == 1`) without `eval`."""
    values = [expr.left, *expr.comparators]
    try:
        for op, (a, b) in zip(expr.ops, itertools.pairwise(values), strict=True):
            assert isinstance(a, ast.Constant) and isinstance(b, ast.Constant)
            if not _COMPARE_OPS[type(op)](a.value, b.value):
                return False
    except (TypeError, KeyError):  # `1 < "a"` raises: not always true
        return False
    return True


def _owner_is(func: ast.expr, owner: str) -> bool:
    """`pytest.raises` or a bare `raises` (imported from pytest)."""
    if isinstance(func, ast.Name):
        return True
    return isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == owner


def _is_expect_call(node: ast.expr) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "expect"


# -- sleeps and skips --------------------------------------------------------------------------------


def count_sleeps(tree: ast.Module) -> int:
    """Calls of `sleep(...)`, `time.sleep`, `asyncio.sleep`, `page.wait_for_timeout` and the like."""
    count = 0
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            count += name in SLEEP_CALLS
    return count


def count_skips(tree: ast.Module) -> int:
    """Uses of skip/xfail: `pytest.mark.skip*`/`xfail` markers, `pytest.skip(`/`xfail(`/`importorskip(`,
    `unittest.skip*`/`expectedFailure`, `self.skipTest(`, `SkipTest`, and bare `@skip`-style names."""
    count = 0
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            owner = node.value
            if node.attr in SKIP_MARKS and (
                (isinstance(owner, ast.Attribute) and owner.attr == "mark")
                or (isinstance(owner, ast.Name) and owner.id == "mark")
            ):
                count += 1
            elif node.attr in SKIP_CALLS and isinstance(owner, ast.Name) and owner.id in SKIP_OWNERS:
                count += 1
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id in SKIP_CALLS:
            count += 1
    return count


__all__ = [
    "ASSERTION_REMOVED", "ASSERTION_WEAKENED", "COLLECTED_REDUCED", "NON_TEST_FILE", "SKIP_ADDED", "SLEEP_ADDED",
    "UNPARSABLE", "AssertionCounts", "FileChange", "assertion_profile", "check_collected", "check_guardrails",
    "count_skips", "count_sleeps",
]
