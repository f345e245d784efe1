"""A test imports something from where it used to live; point the import at where it lives now.

- `cannot import name 'Cart' from 'shop.cart'`: `Cart` moved. Every non-test module that defines
  `Cart` now is a candidate (`from shop.cart import Cart` -> `from shop.models import Cart`); a
  package that merely re-exports it ranks lower.
- `module 'shop' has no attribute 'total'`, where the test uses `shop.total` and `total` is now defined
  in `shop.pricing`: every `shop.total` of the test file becomes `shop.pricing.total`, and
  `import shop.pricing` is added after `import shop`.
- `No module named 'shop.cart'`: the module moved or was renamed. Candidates come from a file move in
  git history, from a module with the same last name elsewhere, and from a module that defines every
  name the test imports from the old one.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator

from actors.healer.editing import edit_test_file, failing_sources, failure_text, rewrite_import_from, rewrite_module
from actors.healer.gitlog import renames_for
from actors.healer.pyindex import ModuleInfo, PyIndex, index_for, module_names
from actors.healer.similarity import similarity
from actors.healer.strategy import Proposal
from actors.workspace import Workspace
from contracts.failures import FailureDetected
from contracts.values import FailureClass

CANNOT_IMPORT = re.compile(r"cannot import name '([A-Za-z_]\w*)' from '([\w.]+)'")
NO_MODULE = re.compile(r"No module named '([\w.]+)'")
MODULE_ATTR = re.compile(r"module '([\w.]+)' has no attribute '([A-Za-z_]\w*)'")
MAX_CANDIDATES = 3


class ImportPath:
    """Rewrite a test's import of a moved symbol or module."""

    name = "import_path"

    def applies(self, failure: FailureDetected) -> bool:
        text = failure_text(failure)
        if failure.category is FailureClass.IMPORT_ERROR:
            return bool(CANNOT_IMPORT.search(text) or NO_MODULE.search(text))
        # A renamed-symbol failure may really be a move: worth a look when it is an import failure.
        return failure.category is FailureClass.RENAMED_SYMBOL and bool(
            CANNOT_IMPORT.search(text) or MODULE_ATTR.search(text))

    def propose(self, failure: FailureDetected, workspace: Workspace) -> list[Proposal]:
        text = failure_text(failure)
        index = index_for(workspace)
        proposals: list[Proposal] = []
        if m := CANNOT_IMPORT.search(text):
            proposals = list(self._moved_symbol(failure, workspace, index, m.group(1), m.group(2)))
        elif m := NO_MODULE.search(text):
            proposals = list(self._moved_module(failure, workspace, index, m.group(1)))
        elif m := MODULE_ATTR.search(text):
            proposals = list(self._moved_attribute(failure, workspace, index, m.group(1), m.group(2)))
        best: dict[tuple[str, ...], Proposal] = {}
        for p in sorted(proposals, key=lambda p: -p.confidence):
            best.setdefault(tuple(e.after for e in p.edits), p)  # same edit found two ways: keep the best
        return list(best.values())[:MAX_CANDIDATES]

    def _moved_symbol(
        self, failure: FailureDetected, workspace: Workspace, index: PyIndex, name: str, old: str
    ) -> Iterator[Proposal]:
        moved_to = _moved_paths(workspace, index, old)
        targets = [(m, 0.75) for m in index.defining_modules(name)] + [
            (m, 0.55) for m in index.exporting_modules(name)
        ]
        for path, source in failing_sources(failure, workspace):
            for mod, base in targets:
                if mod.name == old or workspace.is_test_file(mod.path):
                    continue
                # Names that left `old` together (Python reports only the first it misses) move together.
                moving = {name} | _also_moved(source, index, old, mod)
                edit = edit_test_file(workspace, path, source, rewrite_import_from(source, old, mod.name, moving))
                if edit is None:
                    continue
                confidence = 0.9 if mod.name in moved_to else base + 0.1 * similarity(old, mod.name)
                yield Proposal(
                    strategy=self.name, confidence=round(min(confidence, 0.95), 3), edits=(edit,),
                    explanation=f"`{name}` is no longer in `{old}`; `{mod.name}` "
                    f"{'defines' if mod.defines(name) else 're-exports'} it now",
                )

    def _moved_attribute(
        self, failure: FailureDetected, workspace: Workspace, index: PyIndex, old: str, name: str
    ) -> Iterator[Proposal]:
        targets = [m for m in index.defining_modules(name) if m.name != old and not workspace.is_test_file(m.path)]
        for path, source in failing_sources(failure, workspace):
            for mod in targets:
                rewritten = rewrite_module_attribute(source, old, name, mod.name)
                edit = edit_test_file(workspace, path, source, rewritten) if rewritten else None
                if edit is None:
                    continue
                nested = mod.name.startswith(old + ".")
                yield Proposal(
                    strategy=self.name, confidence=round(0.7 + (0.1 if nested else 0.0), 3), edits=(edit,),
                    explanation=f"`{old}` no longer has `{name}`; `{mod.name}` defines it now",
                )

    def _moved_module(
        self, failure: FailureDetected, workspace: Workspace, index: PyIndex, missing: str
    ) -> Iterator[Proposal]:
        for path, source in failing_sources(failure, workspace):
            for old, names in _imports_under(source, missing).items():
                for new, confidence, why in _module_candidates(workspace, index, old, names):
                    edit = edit_test_file(workspace, path, source, rewrite_module(source, old, new))
                    if edit is not None:
                        yield Proposal(
                            strategy=self.name, confidence=confidence, edits=(edit,),
                            explanation=f"module `{old}` no longer exists; {why}",
                        )


def _also_moved(source: str, index: PyIndex, old: str, new: ModuleInfo) -> set[str]:
    """Other names the source imports from `old` that `old` no longer provides and `new` does."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    previous = index.module(old)
    names = {a.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 0
             and node.module == old for a in node.names if a.name != "*"}
    return {n for n in names if new.exports(n) and (previous is None or not previous.exports(n))}


def rewrite_module_attribute(source: str, old: str, name: str, new: str) -> str | None:
    """`old.name` -> `new.name` in code, with `import new` added after `import old`; None when the source
    does not `import old` (then `old.name` is not how it reaches the name) or uses it nowhere."""
    lines = source.splitlines(keepends=True)
    import_old = re.compile(rf"^import {re.escape(old)}\s*(#.*)?$")
    at = next((i for i, line in enumerate(lines) if import_old.match(line.rstrip("\n"))), None)
    if at is None:
        return None
    use = re.compile(rf"(?<![\w.]){re.escape(old)}\.{re.escape(name)}\b")
    body = [use.sub(f"{new}.{name}", line) if not line.lstrip().startswith("#") else line for line in lines]
    if body == lines:
        return None
    if not any(re.match(rf"^import {re.escape(new)}\s*(#.*)?$", line.rstrip("\n")) for line in body):
        body.insert(at + 1, f"import {new}\n")
    result = "".join(body)
    try:
        ast.parse(result)
    except SyntaxError:
        return None
    return result


def _module_candidates(
    workspace: Workspace, index: PyIndex, old: str, names: set[str]
) -> Iterator[tuple[str, float, str]]:
    for new in _moved_paths(workspace, index, old):
        yield new, 0.9, f"git history moved it to `{new}`"
    leaf = old.rpartition(".")[2]
    sources = [m for m in index.modules() if not workspace.is_test_file(m.path) and m.name != old]
    for mod in sources:
        if mod.name.rpartition(".")[2] == leaf:
            yield mod.name, round(0.6 + 0.2 * similarity(old, mod.name), 3), f"`{mod.name}` has the same name"
    if names:
        for mod in sources:
            if all(mod.exports(n) for n in names):
                score = 0.65 if all(mod.defines(n) for n in names) else 0.5
                listed = ", ".join(f"`{n}`" for n in sorted(names))
                yield mod.name, round(score + 0.1 * similarity(old, mod.name), 3), f"`{mod.name}` provides {listed}"


def _moved_paths(workspace: Workspace, index: PyIndex, old_module: str) -> list[str]:
    """Modules that git history says the file of `old_module` was moved to."""
    found: list[str] = []
    for r in renames_for(workspace):
        if r.kind != "file":
            continue
        before = _path_module(r.old)
        after: ModuleInfo | None = index.module_at(r.new)
        if after is not None and old_module in before:
            found.append(after.name)
    return found


def _path_module(path: str) -> set[str]:
    # The old file is gone, so its package folders are unknown: both naming rules are tried.
    return set(module_names(path, set()))


def _imports_under(source: str, missing: str) -> dict[str, set[str]]:
    """Modules the source imports that are `missing` or inside it, with the names taken from each."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return {}
    found: dict[str, set[str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == missing or node.module.startswith(missing + "."):
                found.setdefault(node.module, set()).update(a.name for a in node.names if a.name != "*")
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name == missing or a.name.startswith(missing + "."):
                    found.setdefault(a.name, set())
    return found


__all__ = ["ImportPath"]
