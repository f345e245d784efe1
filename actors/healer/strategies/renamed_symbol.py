"""A test uses a name the code under test no longer has; rename it to the name it has now.

The failure says which name is gone and where it was looked up:

- `module 'shop.cart' has no attribute 'total'` -> the names module `shop.cart` has now,
- `'Cart' object has no attribute 'total'` (or `type object 'Cart' ...`) -> the members of class
  `Cart`, inherited ones included,
- `name 'total' is not defined` -> the names the test module itself binds (star imports included),
- `cannot import name 'total' from 'shop.cart'` -> the names module `shop.cart` has now.

Candidates are ranked by name similarity. A rename of exactly that name in recent git history, or
Python's own `Did you mean: 'x'?` hint, raises a candidate's confidence above any similarity guess.
"""

from __future__ import annotations

import re

from attrs import frozen

from actors.healer.editing import (
    edit_test_file,
    evidence_location,
    failing_sources,
    failure_text,
    function_at,
    imports_of_module,
    locate_test,
    rename_attribute,
    rename_name,
)
from actors.healer.gitlog import renamed_from, renames_for
from actors.healer.pyindex import PyIndex, index_for
from actors.healer.similarity import ranked
from actors.healer.strategy import Proposal
from actors.workspace import Workspace
from contracts.failures import FailureDetected
from contracts.values import FailureClass

MODULE_ATTR = re.compile(r"module '([\w.]+)' has no attribute '([A-Za-z_]\w*)'")
OBJECT_ATTR = re.compile(r"'([A-Za-z_]\w*)'(?: object)? has no attribute '([A-Za-z_]\w*)'")
NAME_ERROR = re.compile(r"name '([A-Za-z_]\w*)' is not defined")
CANNOT_IMPORT = re.compile(r"cannot import name '([A-Za-z_]\w*)' from '([\w.]+)'")
DID_YOU_MEAN = re.compile(r"Did you mean:? '([A-Za-z_]\w*)'\??")
MAX_CANDIDATES = 3


@frozen(kw_only=True)
class _Lookup:
    """What the failure says: the missing name, where it was looked up, and how to edit its uses."""

    old: str
    where: str  # human wording for the explanation
    names: frozenset[str]
    how: str  # "module_attr" / "object_attr" / "bare"
    owners: frozenset[str] = frozenset()  # for module_attr: the module's local names


class RenamedSymbol:
    """Rename a vanished function, class, attribute or variable to its most likely new name."""

    name = "renamed_symbol"

    def applies(self, failure: FailureDetected) -> bool:
        text = failure_text(failure)
        patterns = (MODULE_ATTR, OBJECT_ATTR, NAME_ERROR, CANNOT_IMPORT)
        if failure.category is FailureClass.RENAMED_SYMBOL:
            return any(p.search(text) for p in patterns)
        return failure.category is FailureClass.IMPORT_ERROR and bool(CANNOT_IMPORT.search(text))

    def propose(self, failure: FailureDetected, workspace: Workspace) -> list[Proposal]:
        text = failure_text(failure)
        index = index_for(workspace)
        hint = m.group(1) if (m := DID_YOU_MEAN.search(text)) else None
        proposals: list[Proposal] = []
        for path, source in failing_sources(failure, workspace):
            lookup = _lookup(text, index, workspace, path, source)
            if lookup is None:
                continue
            span = _edit_span(failure, workspace, path, source) if lookup.how == "object_attr" else None
            if lookup.how == "object_attr" and span is None:
                continue  # without the failing function, renaming every `.x` in the file is a guess
            for new, confidence, why in _candidates(lookup, hint, workspace):
                if lookup.how == "bare":
                    after = rename_name(source, lookup.old, new, span=span)
                else:
                    owners = lookup.owners if lookup.how == "module_attr" and lookup.owners else None
                    after = rename_attribute(source, lookup.old, new, span=span, owners=owners)
                edit = edit_test_file(workspace, path, source, after)
                if edit is not None:
                    proposals.append(Proposal(
                        strategy=self.name, confidence=confidence, edits=(edit,),
                        explanation=f"`{lookup.old}` no longer exists in {lookup.where}; {why}",
                    ))
            if proposals:
                break  # the first file that has the failing use is the one to edit
        return proposals[:MAX_CANDIDATES]


def _lookup(text: str, index: PyIndex, workspace: Workspace, path: str, source: str) -> _Lookup | None:
    if m := CANNOT_IMPORT.search(text):
        mod = index.module(m.group(2))
        exported = frozenset(mod.symbols) if mod else frozenset()
        return _Lookup(old=m.group(1), where=f"`{m.group(2)}`", names=exported, how="bare")
    if m := MODULE_ATTR.search(text):
        mod = index.module(m.group(1))
        attrs_now = frozenset(mod.symbols) if mod else frozenset()
        owners = frozenset(local.rpartition(".")[2] for local in imports_of_module(source, m.group(1)))
        return _Lookup(
            old=m.group(2), where=f"module `{m.group(1)}`", names=attrs_now, how="module_attr", owners=owners
        )
    if m := OBJECT_ATTR.search(text):
        members: set[str] = set()
        for mod, cls in index.find_classes(m.group(1)):
            if not workspace.is_test_file(mod.path):
                members.update(index.class_members(mod, cls))
        return _Lookup(old=m.group(2), where=f"class `{m.group(1)}`", names=frozenset(members), how="object_attr")
    if m := NAME_ERROR.search(text):
        visible: set[str] = set()
        own = index.module_at(path)
        if own is not None:
            visible.update(own.symbols)
            for star in own.star_imports:
                if (starred := index.module(star)) is not None:
                    visible.update(n for n in starred.symbols if not n.startswith("_"))
        return _Lookup(old=m.group(1), where=f"`{path}`", names=frozenset(visible), how="bare")
    return None


def _candidates(lookup: _Lookup, hint: str | None, workspace: Workspace) -> list[tuple[str, float, str]]:
    """(new name, confidence, why), best first."""
    private = lookup.old.startswith("_")
    names = {n for n in lookup.names if private or not n.startswith("_")}
    scored: dict[str, tuple[float, str]] = {}
    for new, score in ranked(lookup.old, names, limit=MAX_CANDIDATES + 2):
        scored[new] = (round(min(0.35 + 0.5 * score, 0.8), 3), f"`{new}` is the most similar name there ({score:.2f})")
    for r in renamed_from(renames_for(workspace), lookup.old, kinds=("function", "class")):
        if r.new in names or not names:
            scored[r.new] = (0.9, f"commit {r.commit[:10]} renamed `{r.old}` to `{r.new}` in {r.path}")
            break
    # Python computed the hint from the live object, so it is trusted even if the index missed the name.
    if hint and hint != lookup.old and scored.get(hint, (0.0, ""))[0] < 0.85:
        scored[hint] = (0.85, f"Python suggested `{hint}`")
    ordered = sorted(scored.items(), key=lambda kv: (-kv[1][0], kv[0]))
    return [(new, conf, why) for new, (conf, why) in ordered][:MAX_CANDIDATES]


def _edit_span(failure: FailureDetected, workspace: Workspace, path: str, source: str) -> tuple[int, int] | None:
    """Lines an attribute rename on an object may touch: the function that failed, not the file
    (another object may well have an attribute of the same name)."""
    loc = evidence_location(failure, workspace)
    if loc is not None and loc[0] == path and (found := function_at(source, loc[1])) is not None:
        return found[1]
    site = locate_test(failure, workspace)
    if site is not None and site.path == path and site.function is not None:
        return site.span
    return None


__all__ = ["RenamedSymbol"]
