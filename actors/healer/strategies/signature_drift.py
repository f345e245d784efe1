"""A test calls a function with a keyword it no longer takes; pass the keyword it takes now.

- `Cart.add() got an unexpected keyword argument 'qty'`: the parameter was renamed. The current
  signature of `Cart.add` (from the AST index; a class's `__init__`, or its annotated fields for a
  dataclass-style class) gives the candidates, ranked by similarity to `qty`; a parameter rename of
  exactly that name in recent git history ranks first.
- `total() missing 1 required positional argument: 'items'`: when the function also takes
  `**kwargs`, an old keyword is swallowed silently instead of failing as unexpected. A keyword the
  test passes that is no longer a named parameter is mapped to the missing one.
- `'create_dirs' is an invalid keyword argument for open()` (or an unexpected keyword named by a
  function the test does not call): the function the test calls took the old keyword into its
  `**kwargs` and handed it on. The test's calls that pass that keyword name the function; its current
  named parameters give the candidates.

Only the keyword at the call sites of that function inside the failing function is renamed.
"""

from __future__ import annotations

import ast
import re

from actors.healer.editing import (
    edit_test_file,
    evidence_location,
    failing_sources,
    failure_text,
    function_at,
    locate_test,
    rename_keyword,
)
from actors.healer.gitlog import renames_for
from actors.healer.pyindex import PyIndex, Signature, index_for
from actors.healer.similarity import ranked, similarity
from actors.healer.strategy import Proposal
from actors.workspace import Workspace
from contracts.failures import FailureDetected
from contracts.values import FailureClass

UNEXPECTED = re.compile(r"([\w.]+)\(\) got an unexpected keyword argument '([A-Za-z_]\w*)'")
INVALID = re.compile(r"'([A-Za-z_]\w*)' is an invalid keyword argument for")
MISSING = re.compile(r"([\w.]+)\(\) missing \d+ required (?:positional|keyword-only) arguments?: (.+)")
MAX_CANDIDATES = 3
_SELF = frozenset({"self", "cls"})


class SignatureDrift:
    """Rename a keyword argument in the test's calls to match the function's current parameters."""

    name = "signature_drift"

    def applies(self, failure: FailureDetected) -> bool:
        text = failure_text(failure)
        matched = UNEXPECTED.search(text) or MISSING.search(text) or INVALID.search(text)
        return failure.category is FailureClass.SIGNATURE_DRIFT and matched is not None

    def propose(self, failure: FailureDetected, workspace: Workspace) -> list[Proposal]:
        found = self._direct(failure, workspace)
        if found:
            return found
        text = failure_text(failure)
        m = UNEXPECTED.search(text)
        old = m.group(2) if m else (n.group(1) if (n := INVALID.search(text)) else None)
        return self._swallowed(failure, workspace, old) if old else []

    def _direct(self, failure: FailureDetected, workspace: Workspace) -> list[Proposal]:
        """The function the message names is the one the test calls."""
        text = failure_text(failure)
        index = index_for(workspace)
        if m := UNEXPECTED.search(text):
            qualname, old = m.group(1), m.group(2)
            callee, keywords = _callee_and_keywords(index, workspace, qualname)
            if not keywords:
                return []
            pairs = [(old, new, conf, why) for new, conf, why in _rank(workspace, callee, old, keywords)]
        elif m := MISSING.search(text):
            qualname = m.group(1)
            missing = re.findall(r"'([A-Za-z_]\w*)'", m.group(2))
            callee, keywords = _callee_and_keywords(index, workspace, qualname)
            if len(missing) != 1 or not keywords:
                return []  # several new parameters: no single keyword to map
            pairs = list(self._absorbed(failure, workspace, callee, set(keywords), missing[0]))
        else:
            return []
        proposals: list[Proposal] = []
        for path, source in failing_sources(failure, workspace):
            span = _span(failure, workspace, path, source)
            for old, new, confidence, why in pairs:
                edit = edit_test_file(workspace, path, source, rename_keyword(source, callee, old, new, span=span))
                if edit is not None:
                    proposals.append(Proposal(
                        strategy=self.name, confidence=confidence, edits=(edit,),
                        explanation=f"`{qualname}()` no longer takes `{old}=`; {why}",
                    ))
            if proposals:
                break
        return proposals[:MAX_CANDIDATES]

    def _swallowed(self, failure: FailureDetected, workspace: Workspace, old: str) -> list[Proposal]:
        """The test passes `old=` to a function that took it into `**kwargs` and handed it on."""
        index = index_for(workspace)
        proposals: list[Proposal] = []
        for path, source in failing_sources(failure, workspace):
            span = _span(failure, workspace, path, source)
            for callee in _callees_passing(source, old, span):
                qualname = f"{callee}.__init__" if index.find_classes(callee) else callee
                _, keywords = _callee_and_keywords(index, workspace, qualname)
                passed = _passed_keywords(source, callee, span)
                if old in keywords:
                    continue  # it still takes `old`: the keyword is not what changed
                for new, confidence, why in _rank(workspace, callee, old, [k for k in keywords if k not in passed]):
                    edit = edit_test_file(workspace, path, source, rename_keyword(source, callee, old, new, span=span))
                    if edit is not None:
                        proposals.append(Proposal(
                            strategy=self.name, confidence=round(confidence * 0.9, 3), edits=(edit,),
                            explanation=f"`{qualname}()` took `{old}=` into its **kwargs and passed it on, where "
                                        f"it is not a parameter any more; {why}",
                        ))
            if proposals:
                break
        return sorted(proposals, key=lambda p: -p.confidence)[:MAX_CANDIDATES]

    def _absorbed(
        self, failure: FailureDetected, workspace: Workspace, callee: str, named: set[str], missing: str
    ) -> list[tuple[str, str, float, str]]:
        """(old keyword, missing parameter, confidence, why) for keywords passed to `callee` in the
        failing function that are not named parameters any more."""
        found: list[tuple[str, str, float, str]] = []
        for path, source in failing_sources(failure, workspace):
            span = _span(failure, workspace, path, source)
            for old in sorted(_passed_keywords(source, callee, span) - named):
                ranks = _rank(workspace, callee, old, [missing])
                if ranks:
                    _, confidence, why = ranks[0]
                    found.append((old, missing, confidence, why))
            if found:
                break
        return found


def _callee_and_keywords(index: PyIndex, workspace: Workspace, qualname: str) -> tuple[str, list[str]]:
    """The name the test calls (`add`, or `Cart` for `Cart.__init__`) and the keywords it takes now."""
    parts = qualname.split(".")
    callee = parts[-2] if parts[-1] == "__init__" and len(parts) > 1 else parts[-1]
    keywords: list[str] = []
    sigs: list[Signature] = [s for mod, s in index.signature(qualname) if not workspace.is_test_file(mod.path)]
    if not sigs and parts[-1] == "__init__" and len(parts) > 1:
        # A dataclass/attrs-style class has no `__init__` in source: its annotated fields are the keywords.
        for mod, cls in index.find_classes(callee):
            if not workspace.is_test_file(mod.path):
                keywords.extend(n for n, s in index.class_members(mod, cls).items() if s.kind == "variable")
    for sig in sigs:
        keywords.extend(n for n in sig.keyword_names() if n not in _SELF)
    return callee, list(dict.fromkeys(keywords))


def _rank(workspace: Workspace, callee: str, old: str, keywords: list[str]) -> list[tuple[str, float, str]]:
    """(new keyword, confidence, why), best first."""
    scored: dict[str, tuple[float, str]] = {}
    for new, score in ranked(old, keywords, limit=MAX_CANDIDATES):
        scored[new] = (round(min(0.35 + 0.5 * score, 0.8), 3), f"`{new}` is the most similar parameter ({score:.2f})")
    for r in renames_for(workspace):
        if r.kind == "parameter" and r.old == old and r.new in keywords and r.scope in (callee, "__init__"):
            scored[r.new] = (0.9, f"commit {r.commit[:10]} renamed parameter `{old}` to `{r.new}` in {r.path}")
            break
    ordered = sorted(scored.items(), key=lambda kv: (-kv[1][0], -similarity(old, kv[0]), kv[0]))
    return [(new, conf, why) for new, (conf, why) in ordered]


def _span(failure: FailureDetected, workspace: Workspace, path: str, source: str) -> tuple[int, int] | None:
    """The failing function's lines in `path` (from the evidence, else the test id); None for the file."""
    loc = evidence_location(failure, workspace)
    if loc is not None and loc[0] == path and (found := function_at(source, loc[1])) is not None:
        return found[1]
    site = locate_test(failure, workspace)
    if site is not None and site.path == path and site.function is not None:
        return site.span
    return None


def _callees_passing(source: str, keyword: str, span: tuple[int, int] | None) -> list[str]:
    """Names of the functions called with `keyword=` within `span`, in source order."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    found: dict[str, None] = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or (span and not span[0] <= node.lineno <= span[1]):
            continue
        name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
        if name and any(k.arg == keyword for k in node.keywords):
            found[name] = None
    return list(found)


def _passed_keywords(source: str, callee: str, span: tuple[int, int] | None) -> set[str]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    found: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or (span and not span[0] <= node.lineno <= span[1]):
            continue
        name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
        if name == callee:
            found.update(k.arg for k in node.keywords if k.arg)
    return found


__all__ = ["SignatureDrift"]
