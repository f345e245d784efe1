"""`locator_drift`: a web test's CSS selector no longer matches the page; propose the selector of the
element most like the one it used to match.

Self-healing in the manner of Healenium, except that the heal is a patch to the test source that the
validator proves by rerunning the test, not a silent substitution at run time:

1. The old selector must match no visible element of the page at failure (else the failure is not
   locator drift and nothing is proposed).
2. The element it matched on the last passing run comes from the workspace's `.cars/locators/` store.
   Without a recording, the words of the selector itself stand in (`#buy-button` -> buy, button), and
   confidence is lower.
3. Every visible element of the new page is scored; those above the threshold are ranked, and each gets
   a generated selector that must match exactly that one element.
4. The test source is edited with `tokenize`: only string tokens whose value equals the old selector
   change, in the failing function (or, for a shared constant, at module level).
"""

from __future__ import annotations

import ast
import io
import tokenize
from collections.abc import Callable, Sequence

from attrs import frozen

from actors.healer.locator.dom import (
    Document,
    Element,
    css_path,
    is_unique,
    is_visible,
    parse_html,
    visible_elements,
)
from actors.healer.locator.errors import SelectorError, SnapshotStoreError
from actors.healer.locator.score import Score, describe_selector, score, score_description
from actors.healer.locator.snapshot import ElementSnapshot, read_record, snapshot_of, store_relpath
from actors.healer.strategy import Proposal
from actors.patching import FileEdit
from actors.workspace import UnsafePath, Workspace, split_test_id
from contracts.failures import FailureDetected
from contracts.values import FailureClass

# Without a recording the selector's words are weak evidence: cap what they can claim.
FALLBACK_FACTOR = 0.6
# A lead over the runner-up this large earns full confidence; a tie earns 60% of the score.
DECISIVE_MARGIN = 0.2
_MAX_EXPLANATION = 2000


@frozen(kw_only=True)
class _Site:
    """One string token in a source file whose value is the old selector."""

    start: tuple[int, int]
    end: tuple[int, int]
    token: str


@frozen(kw_only=True)
class _Target:
    """Where to edit: a test file, its text, and the literals to replace."""

    path: str
    source: str
    sites: tuple[_Site, ...]
    scope: str


@frozen(kw_only=True)
class _Candidate:
    element: Element
    selector: str
    score: Score


class LocatorDrift:
    """Heals a CSS selector that drifted away from the element it meant."""

    name = "locator_drift"

    def __init__(self, *, threshold: float = 0.5, fallback_threshold: float = 0.6, max_proposals: int = 3) -> None:
        self.threshold = threshold
        self.fallback_threshold = fallback_threshold
        self.max_proposals = max_proposals

    def applies(self, failure: FailureDetected) -> bool:
        evidence = failure.evidence
        return failure.category is FailureClass.LOCATOR_DRIFT and bool(evidence.selector) and bool(evidence.page_html)

    def propose(self, failure: FailureDetected, workspace: Workspace) -> list[Proposal]:
        selector, html = failure.evidence.selector, failure.evidence.page_html
        if not self.applies(failure) or selector is None or html is None:
            return []
        document = parse_html(html)
        if _still_matches(document, selector):
            return []  # the selector finds a visible element: whatever failed, it was not the locator
        target = _find_target(failure, workspace, selector)
        if target is None:
            return []
        scorer, basis, factor, threshold = self._scorer(workspace, failure.test_id, selector)
        if scorer is None:
            return []
        ranked = sorted(
            ((scorer(snapshot_of(e)), e) for e in visible_elements(document)),
            key=lambda pair: -pair[0].total,  # sorted() is stable: ties keep document order
        )
        candidates = _candidates(document, ranked, selector, threshold, self.max_proposals)
        best_other = {id(c.element): _best_other(ranked, c.element) for c in candidates}
        proposals = []
        for candidate in candidates:
            margin = candidate.score.total - best_other[id(candidate.element)]
            confidence = candidate.score.total * factor * (0.6 + 0.4 * min(1.0, max(0.0, margin) / DECISIVE_MARGIN))
            after = _replace(target, candidate.selector)
            if after is None:
                continue
            proposals.append(
                Proposal(
                    strategy=self.name,
                    confidence=round(min(1.0, confidence), 3),
                    edits=(FileEdit(path=target.path, before=target.source, after=after),),
                    explanation=_explain(selector, candidate, basis, best_other[id(candidate.element)], target),
                )
            )
        return proposals

    def _scorer(
        self, workspace: Workspace, test_id: str, selector: str
    ) -> tuple[Callable[[ElementSnapshot], Score] | None, str, float, float]:
        """How to score candidates: against the recorded element, or else the selector's own words."""
        last_good, problem = _last_good(workspace, test_id, selector)
        if last_good is not None:
            basis = "the last-good element recorded on a passing run"
            return (lambda c: score(last_good, c)), basis, 1.0, self.threshold
        description = describe_selector(selector)
        if description is None:
            return None, "", 0.0, 1.0
        why = f"; {problem}" if problem else ""
        basis = f"the words of the old selector (no last-good element recorded{why})"
        return (lambda c: score_description(description, c)), basis, FALLBACK_FACTOR, self.fallback_threshold


def _still_matches(document: Document, selector: str) -> bool:
    try:
        return any(is_visible(e) for e in document.select(selector))
    except SelectorError:
        return False  # not CSS we understand (Playwright's text=...): only a recording can help


def _last_good(workspace: Workspace, test_id: str, selector: str) -> tuple[ElementSnapshot | None, str]:
    """The recorded element for (test, selector). A parametrized test falls back to the recording of
    its base id, since every variant drives the same page."""
    ids = [test_id]
    if test_id.endswith("]") and "[" in test_id:
        ids.append(test_id[: test_id.index("[")])
    for tid in ids:
        try:
            record = read_record(workspace.resolve(store_relpath(tid)))
        except (SnapshotStoreError, UnsafePath) as exc:
            # A damaged store only costs the recording; the fallback still proposes, and says why.
            return None, str(exc)
        if record is not None and selector in record.elements:
            return record.elements[selector], ""
    return None, ""


def _best_other(ranked: Sequence[tuple[Score, Element]], element: Element) -> float:
    return next((s.total for s, e in ranked if e is not element), 0.0)


def _candidates(
    document: Document, ranked: Sequence[tuple[Score, Element]], old: str, threshold: float, limit: int
) -> list[_Candidate]:
    found: list[_Candidate] = []
    for result, element in ranked:
        if result.total < threshold or len(found) >= limit:
            break
        selector = css_path(element, document)
        # css_path checks uniqueness already; checking again keeps the guarantee local to this rule.
        if selector is None or selector == old or not is_unique(document, selector, element):
            continue
        if any(c.selector == selector for c in found):
            continue
        found.append(_Candidate(element=element, selector=selector, score=result))
    return found


# --- editing the test source ------------------------------------------------------------------------


def _literal_sites(source: str, value: str) -> list[_Site]:
    """String tokens (not f-strings or bytes) whose value is exactly `value`."""
    sites: list[_Site] = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type != tokenize.STRING:
                continue
            try:
                literal = ast.literal_eval(tok.string)
            except (ValueError, SyntaxError):
                continue  # f-strings: their value is not known before run time
            if isinstance(literal, str) and literal == value:
                sites.append(_Site(start=tok.start, end=tok.end, token=tok.string))
    except (tokenize.TokenError, SyntaxError):
        return []
    return sites


def _function_defs(tree: ast.Module) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]


def _span(node: ast.FunctionDef | ast.AsyncFunctionDef) -> tuple[int, int]:
    # Decorators belong to the test: `parametrize` often carries the selector.
    start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
    return start, node.end_lineno or node.lineno


def _test_function(tree: ast.Module, qualname: str) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    """`TestCart::test_buy[chromium]` -> the `test_buy` def inside `class TestCart`."""
    names = [part.split("[", 1)[0] for part in qualname.split("::") if part]
    body: list[ast.stmt] = tree.body
    found: ast.AST | None = None
    for name in names:
        kinds = ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef
        found = next((n for n in body if isinstance(n, kinds) and n.name == name), None)
        if found is None:
            return None
        body = found.body
    return found if isinstance(found, ast.FunctionDef | ast.AsyncFunctionDef) else None


def _relative(workspace: Workspace, path: str | None) -> str | None:
    if not path:
        return None
    try:
        rel = workspace.relative(path)
    except (UnsafePath, OSError):
        return None
    return rel if workspace.exists(rel) and workspace.is_test_file(rel) else None


def _find_target(failure: FailureDetected, workspace: Workspace, selector: str) -> _Target | None:
    """The narrowest scope holding the old selector literal: the function around the failing line,
    then the test function, then module level (a shared constant). Literals in other functions are
    left alone: they belong to other tests, which report their own failures."""
    evidence_file = _relative(workspace, failure.evidence.file)
    test_file = _relative(workspace, split_test_id(failure.test_id)[0])
    qualname = split_test_id(failure.test_id)[1]
    for path in dict.fromkeys(p for p in (evidence_file, test_file) if p is not None):
        source = workspace.read(path)
        sites = _literal_sites(source, selector)
        if not sites:
            continue
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        spans = [_span(f) for f in _function_defs(tree)]
        # Each scope is a label and a line range; None stands for "outside every function".
        scopes: list[tuple[str, tuple[int, int] | None]] = []
        line = failure.evidence.line
        if path == evidence_file and line is not None:
            around = [sp for sp in spans if sp[0] <= line <= sp[1]]
            if around:
                scopes.append((f"the function around line {line}", max(around)))  # the innermost starts last
            scopes.append((f"line {line}", (line, line)))
        test_def = _test_function(tree, qualname) if path == test_file else None
        if test_def is not None:
            scopes.append((f"{test_def.name}()", _span(test_def)))
        scopes.append(("module level", None))
        for scope, lines in scopes:
            chosen = tuple(
                s
                for s in sites
                if (lines[0] <= s.start[0] <= lines[1] if lines else not any(a <= s.start[0] <= b for a, b in spans))
            )
            if chosen:
                return _Target(path=path, source=source, sites=chosen, scope=scope)
    return None


def _new_literal(template: str, value: str) -> str:
    """`value` as a Python string literal in the style of `template` (its prefix and quotes) when that
    needs no escaping, else as `repr` would write it."""
    prefix_len = len(template) - len(template.lstrip("rRuU"))
    prefix, body = template[:prefix_len], template[prefix_len:]
    quote = body[:3] if body[:3] in ('"""', "'''") else body[:1]
    if "\\" not in value and "\n" not in value and quote[0] not in value:
        return f"{prefix}{quote}{value}{quote}"
    return repr(value)


def _replace(target: _Target, new_selector: str) -> str | None:
    lines = target.source.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    text = target.source
    for site in sorted(target.sites, key=lambda s: s.start, reverse=True):
        start = offsets[site.start[0] - 1] + site.start[1]
        end = offsets[site.end[0] - 1] + site.end[1]
        text = text[:start] + _new_literal(site.token, new_selector) + text[end:]
    try:
        ast.parse(text)
    except SyntaxError:
        return None  # never propose a patch that breaks the file
    return text


# --- explaining -------------------------------------------------------------------------------------


def _describe(element: Element) -> str:
    attrs = "".join(f' {k}="{v}"' for k, v in element.attrs.items())
    text = element.text()
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"<{element.tag}{attrs}>{text}</{element.tag}>"


def _explain(old: str, candidate: _Candidate, basis: str, runner_up: float, target: _Target) -> str:
    count = len(target.sites)
    text = (
        f"Selector {old!r} matches no visible element on the page at failure. {candidate.selector!r} matches "
        f"exactly one visible element, {_describe(candidate.element)}, which scores "
        f"{candidate.score.total:.2f} against {basis} ({candidate.score.explain()}); the best other element "
        f"scores {runner_up:.2f}. Replaced {count} literal{'s' if count != 1 else ''} in {target.path} "
        f"({target.scope})."
    )
    return text if len(text) <= _MAX_EXPLANATION else text[: _MAX_EXPLANATION - 3] + "..."


__all__ = ["DECISIVE_MARGIN", "FALLBACK_FACTOR", "LocatorDrift"]
