"""Minimal edits to test source: change one identifier, one keyword, one import, nothing else.

Edits are made on tokens (`tokenize`) or at the exact positions `ast` reports, never with a textual
search-and-replace, so strings, comments and unrelated names that merely contain the old name stay as
they were. Every function takes source text and returns source text (unchanged when nothing
matched); `span` limits an edit to a range of lines, 1-based and inclusive.

`locate_test` finds the failing test's file and function from a `FailureDetected`, and `edit_test_file`
builds a `FileEdit` only for test files: strategies never touch the code under test.
"""

from __future__ import annotations

import ast
import io
import tokenize
from collections.abc import Collection, Iterator
from pathlib import PurePosixPath

from attrs import frozen

from actors.errors import Rejected
from actors.patching import FileEdit
from actors.workspace import Workspace, split_test_id
from contracts.failures import FailureDetected

Span = tuple[int, int]
# (row, start column, end column, replacement): columns are character offsets in the row.
_Replacement = tuple[int, int, int, str]


@frozen(kw_only=True)
class TestSite:
    """Where a failing test lives: its file and source, and the lines of its function (with
    decorators). `span` is the whole file when the function cannot be found."""

    __test__ = False  # not a pytest test class

    path: str
    source: str
    function: str | None
    span: Span


# --- finding the test ---------------------------------------------------------------------------


def locate_test(failure: FailureDetected, workspace: Workspace) -> TestSite | None:
    """The test file and function a failure names (`tests/t.py::TestC::test_x[p]`), or None when the
    file is not a test file of the workspace or cannot be read."""
    path, rest = split_test_id(failure.test_id)
    source = read_test(workspace, path)
    if source is None:
        return None
    parts = [p for p in rest.split("::") if p]
    function = parts[-1].split("[", 1)[0] if parts else None
    classes = parts[:-1]
    span = function_span(source, function, classes) if function else None
    if span is None:
        return TestSite(path=path, source=source, function=None, span=(1, max(1, source.count("\n") + 1)))
    return TestSite(path=path, source=source, function=function, span=span)


def evidence_location(failure: FailureDetected, workspace: Workspace) -> tuple[str, int] | None:
    """The test-file path and line the evidence points at, relative to the workspace, when known.

    The evidence may carry a path from another machine (the CI checkout), so an absolute path is
    matched by its tail against the test id's file as well as against the workspace root.
    """
    ev = failure.evidence
    if not ev.file or not ev.line:
        return None
    candidates = [ev.file]
    pure = PurePosixPath(ev.file.replace("\\", "/"))
    if pure.is_absolute():
        candidates = []
        for root in (str(workspace.root), failure.repo_path):
            if root and str(pure).startswith(root.rstrip("/") + "/"):
                candidates.append(str(pure)[len(root.rstrip("/")) + 1:])
        test_file = split_test_id(failure.test_id)[0]
        if test_file and str(pure).endswith("/" + test_file):
            candidates.append(test_file)
    for rel in candidates:
        if read_test(workspace, rel) is not None:
            return rel, ev.line
    return None


def failure_text(failure: FailureDetected) -> str:
    """Everything the runner said about a failure (message, then traceback), for pattern matching."""
    ev = failure.evidence
    return "\n".join(part for part in (ev.message, ev.traceback, failure.reason) if part)


def failing_sources(failure: FailureDetected, workspace: Workspace) -> list[tuple[str, str]]:
    """(path, text) of the test files a failure points at: the evidence's file first (a conftest or
    helper module may be where the failing import is), then the test id's file."""
    paths: list[str] = []
    if (loc := evidence_location(failure, workspace)) is not None:
        paths.append(loc[0])
    paths.append(split_test_id(failure.test_id)[0])
    found: list[tuple[str, str]] = []
    for path in dict.fromkeys(paths):
        source = read_test(workspace, path)
        if source is not None:
            found.append((path, source))
    return found


def read_test(workspace: Workspace, path: str) -> str | None:
    """The text of `path` if it is an existing test file of the workspace, else None."""
    try:
        if not path or not workspace.is_test_file(path) or not workspace.exists(path):
            return None
        return workspace.read(path)
    except (Rejected, OSError):
        return None


def edit_test_file(workspace: Workspace, path: str, before: str, after: str) -> FileEdit | None:
    """A FileEdit of a test file, or None when nothing changed or `path` is not test code."""
    if before == after or not workspace.is_test_file(path):
        return None
    return FileEdit(path=path, before=before, after=after)


def function_span(source: str, name: str, classes: Collection[str] = ()) -> Span | None:
    """Lines (decorators included) of function `name`, inside the nested `classes` if given."""
    tree = _parse(source)
    if tree is None:
        return None
    body: list[ast.stmt] = tree.body
    for cls in classes:
        found = next((n for n in body if isinstance(n, ast.ClassDef) and n.name == cls), None)
        if found is None:
            return None
        body = found.body
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name:
            return _node_span(node)
    return None


def function_at(source: str, line: int) -> tuple[str, Span] | None:
    """The innermost function whose lines (decorators included) contain `line`."""
    tree = _parse(source)
    if tree is None:
        return None
    best: tuple[str, Span] | None = None
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            span = _node_span(node)
            if span[0] <= line <= span[1] and (best is None or span[0] >= best[1][0]):
                best = (node.name, span)
    return best


# --- token edits ----------------------------------------------------------------------------------


def rename_name(source: str, old: str, new: str, *, span: Span | None = None) -> str:
    """Rename the bare name `old` (a variable, parameter, or imported name) to `new`.

    Untouched: attributes (`x.old`), keyword names in calls (`f(old=1)`), module paths in import
    statements, strings and comments.
    """
    reps: list[_Replacement] = []
    for tok, prev, nxt, ctx in _tokens_with_context(source):
        if tok.type != tokenize.NAME or tok.string != old or not _in_span(tok.start[0], span):
            continue
        if prev is not None and prev.string == ".":
            continue
        if ctx.in_call_parens and nxt is not None and nxt.string == "=":
            continue
        if ctx.import_module_part:
            continue
        reps.append((tok.start[0], tok.start[1], tok.end[1], new))
    return _apply(source, reps)


def rename_attribute(
    source: str, old: str, new: str, *, span: Span | None = None, owners: Collection[str] | None = None
) -> str:
    """Rename attribute accesses `.old` to `.new`; with `owners`, only `owner.old` for those names."""
    reps: list[_Replacement] = []
    toks = [t for t, _, _, _ in _tokens_with_context(source)]
    for i, tok in enumerate(toks):
        if tok.type != tokenize.NAME or tok.string != old or not _in_span(tok.start[0], span):
            continue
        if i == 0 or toks[i - 1].string != ".":
            continue
        if owners is not None and (i < 2 or toks[i - 2].string not in owners):
            continue
        reps.append((tok.start[0], tok.start[1], tok.end[1], new))
    return _apply(source, reps)


def replace_string(source: str, old: str, new: str, *, span: Span | None = None) -> str:
    """Replace string literals whose value is exactly `old` by `new`, keeping their quotes and prefix
    (used for names held in strings, such as `@pytest.mark.usefixtures("db")`)."""
    reps: list[_Replacement] = []
    for tok, _, _, _ in _tokens_with_context(source):
        if tok.type != tokenize.STRING or not _in_span(tok.start[0], span) or tok.start[0] != tok.end[0]:
            continue
        try:
            value = ast.literal_eval(tok.string)
        except (ValueError, SyntaxError):
            continue
        if value != old:
            continue
        body_start = len(tok.string) - len(tok.string.lstrip("rRbBuUfF"))
        quote = tok.string[body_start:body_start + 3] if tok.string[body_start:].startswith(('"""', "'''")) else (
            tok.string[body_start]
        )
        if quote in new or "\\" in new:
            continue  # would need escaping; not a minimal edit any more
        reps.append((tok.start[0], tok.start[1], tok.end[1], f"{tok.string[:body_start]}{quote}{new}{quote}"))
    return _apply(source, reps)


def rename_keyword(source: str, function: str, old: str, new: str, *, span: Span | None = None) -> str:
    """In calls to `function` (`function(...)` or `x.function(...)`), rename keyword `old=` to `new=`."""
    tree = _parse(source)
    if tree is None:
        return source
    lines = source.splitlines(keepends=True)
    reps: list[_Replacement] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or _callee(node) != function or not _in_span(node.lineno, span):
            continue
        for kw in node.keywords:
            if kw.arg != old:
                continue
            col = _char_col(lines[kw.lineno - 1], kw.col_offset)
            if lines[kw.lineno - 1][col:col + len(old)] == old:
                reps.append((kw.lineno, col, col + len(old), new))
    return _apply(source, reps)


def replace_node_text(source: str, node: ast.expr, text: str) -> str:
    """Replace the source of one expression `node` (from `ast.parse(source)`) by `text`."""
    if node.end_lineno is None or node.end_col_offset is None:
        return source
    lines = source.splitlines(keepends=True)
    start = _char_col(lines[node.lineno - 1], node.col_offset)
    end = _char_col(lines[node.end_lineno - 1], node.end_col_offset)
    head = "".join(lines[: node.lineno - 1]) + lines[node.lineno - 1][:start]
    tail = lines[node.end_lineno - 1][end:] + "".join(lines[node.end_lineno:])
    return head + text + tail


# --- imports --------------------------------------------------------------------------------------


def rewrite_import_from(source: str, old_module: str, new_module: str, names: Collection[str] | None = None) -> str:
    """Make `from old_module import ...` import from `new_module` instead.

    With `names`, only those names move: a statement that imports others too is split in two, the
    moved names on a new line below it (`from a.b import x, y` -> `from a.b import y` and
    `from a.c import x`).
    """
    tree = _parse(source)
    if tree is None:
        return source
    lines = source.splitlines(keepends=True)
    reps: list[tuple[int, int, str]] = []  # (first line, last line, replacement text)
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom) or node.level != 0 or node.module != old_module:
            continue
        moving = [a for a in node.names if names is None or a.name in names]
        if not moving:
            continue
        end = node.end_lineno or node.lineno
        first = lines[node.lineno - 1]
        indent = first[: len(first) - len(first.lstrip())]
        newline = "\n" if lines[end - 1].endswith("\n") else ""
        if len(moving) == len(node.names):
            text = "".join(lines[node.lineno - 1:end])
            col = _char_col(first, node.col_offset)
            # `from` then the module's tokens: replace that first occurrence after the keyword only.
            at = text.index(old_module, col + 4)
            reps.append((node.lineno, end, text[:at] + new_module + text[at + len(old_module):]))
        else:
            staying = [a for a in node.names if a not in moving]
            text = (
                f"{indent}from {old_module} import {_aliases(staying)}\n"
                f"{indent}from {new_module} import {_aliases(moving)}{newline}"
            )
            reps.append((node.lineno, end, text))
    for start, end, text in sorted(reps, reverse=True):
        lines[start - 1:end] = [text]
    return "".join(lines)


def rewrite_module(source: str, old: str, new: str) -> str:
    """Point every import of module `old` (and its submodules) at `new`, and the dotted uses
    (`old.f()`) that a plain `import old` makes, e.g. after `shop/cart.py` moved to `shop/basket.py`."""
    old_parts, new_text = old.split("."), new
    tree = _parse(source)
    if tree is None:
        return source
    plain_import = any(
        isinstance(n, ast.Import) and any(a.asname is None and _under(a.name, old) for a in n.names)
        for n in ast.walk(tree)
    )
    toks = [(t, ctx) for t, _, _, ctx in _tokens_with_context(source)]
    reps: list[_Replacement] = []
    i = 0
    while i < len(toks):
        tok, ctx = toks[i]
        run = _dotted_run(toks, i, len(old_parts))
        prev_dot = i > 0 and toks[i - 1][0].string == "."
        if run is not None and [t.string for t in run[::2]] == old_parts and not prev_dot:
            in_import = ctx.import_module_part or ctx.plain_import
            if in_import or plain_import:
                last = run[-1]
                if last.start[0] == tok.start[0]:
                    reps.append((tok.start[0], tok.start[1], last.end[1], new_text))
            i += len(run)
            continue
        i += 1
    return _apply(source, reps)


def imported_names(source: str) -> dict[str, str]:
    """Local name -> what it refers to, for the module-level imports of a test file
    (`import a.b` gives `a` -> `a`; `import a.b as m` gives `m` -> `a.b`; `from a import x` gives
    `x` -> `a.x`)."""
    tree = _parse(source)
    out: dict[str, str] = {}
    if tree is None:
        return out
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.asname:
                    out[a.asname] = a.name
                else:
                    out.setdefault(a.name.partition(".")[0], a.name.partition(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for a in node.names:
                if a.name != "*":
                    out[a.asname or a.name] = f"{node.module}.{a.name}"
    return out


def imports_of_module(source: str, module: str) -> list[str]:
    """The local names under which a test file reaches `module`: `import a.b` gives `a.b` (the
    dotted chain), `import a.b as m` gives `m`, `from a import b` gives `b`."""
    tree = _parse(source)
    found: list[str] = []
    if tree is None:
        return found
    parent, _, leaf = module.rpartition(".")
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == module:
                    found.append(a.asname or module)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == parent:
            found.extend(a.asname or a.name for a in node.names if a.name == leaf)
    return found


# --- internals ------------------------------------------------------------------------------------


@frozen(kw_only=True)
class _Ctx:
    in_call_parens: bool  # inside (...) that are not a def's parameter list
    import_module_part: bool  # between `from` and `import` of a from-import
    plain_import: bool  # in an `import a.b` statement


def _tokens_with_context(
    source: str,
) -> Iterator[tuple[tokenize.TokenInfo, tokenize.TokenInfo | None, tokenize.TokenInfo | None, _Ctx]]:
    """Significant tokens with their neighbours and a little syntactic context."""
    try:
        raw = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return
    skip = {tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}
    toks = [t for t in raw if t.type not in skip or t.type == tokenize.NEWLINE]
    parens: list[bool] = []  # True for a call/grouping paren, False for a def's parameters
    statement_start = True
    stmt_kind = ""  # "from" / "import" / ""
    seen_import_kw = False
    prev: tokenize.TokenInfo | None = None
    for i, tok in enumerate(toks):
        if tok.type == tokenize.NEWLINE:
            statement_start, stmt_kind, seen_import_kw = True, "", False
            continue
        if statement_start:
            stmt_kind = tok.string if tok.string in ("from", "import") else ""
            statement_start = False
        if tok.string == "import" and stmt_kind == "from":
            seen_import_kw = True
        nxt = toks[i + 1] if i + 1 < len(toks) else None
        ctx = _Ctx(
            in_call_parens=bool(parens) and parens[-1],
            import_module_part=stmt_kind == "from" and not seen_import_kw and tok.string != "from",
            plain_import=stmt_kind == "import",
        )
        if tok.type == tokenize.OP and tok.string in "([{":
            is_def_params = tok.string == "(" and i >= 2 and toks[i - 2].string == "def"
            parens.append(tok.string == "(" and not is_def_params)
        elif tok.type == tokenize.OP and tok.string in ")]}" and parens:
            parens.pop()
        yield tok, prev, nxt, ctx
        prev = tok


def _dotted_run(toks: list[tuple[tokenize.TokenInfo, _Ctx]], i: int, n_names: int) -> list[tokenize.TokenInfo] | None:
    """Tokens NAME (. NAME)* of exactly `n_names` names starting at i, or None."""
    run: list[tokenize.TokenInfo] = []
    j = i
    for k in range(n_names):
        if j >= len(toks) or toks[j][0].type != tokenize.NAME:
            return None
        run.append(toks[j][0])
        j += 1
        if k < n_names - 1:
            if j >= len(toks) or toks[j][0].string != ".":
                return None
            run.append(toks[j][0])
            j += 1
    return run


def _under(name: str, module: str) -> bool:
    return name == module or name.startswith(module + ".")


def _aliases(names: list[ast.alias]) -> str:
    return ", ".join(f"{a.name} as {a.asname}" if a.asname else a.name for a in names)


def _callee(node: ast.Call) -> str | None:
    if isinstance(node.func, ast.Name):
        return node.func.id
    if isinstance(node.func, ast.Attribute):
        return node.func.attr
    return None


def _node_span(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> Span:
    start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
    return start, node.end_lineno or node.lineno


def _parse(source: str) -> ast.Module | None:
    try:
        return ast.parse(source)
    except (SyntaxError, ValueError):
        return None


def _char_col(line: str, byte_col: int) -> int:
    """`ast` columns count UTF-8 bytes; string slicing counts characters."""
    return len(line.encode("utf-8")[:byte_col].decode("utf-8", errors="replace"))


def _in_span(row: int, span: Span | None) -> bool:
    return span is None or span[0] <= row <= span[1]


def _apply(source: str, reps: list[_Replacement]) -> str:
    if not reps:
        return source
    lines = source.splitlines(keepends=True)
    for row, start, end, text in sorted(set(reps), reverse=True):
        line = lines[row - 1]
        lines[row - 1] = line[:start] + text + line[end:]
    return "".join(lines)


__all__ = [
    "Span",
    "TestSite",
    "edit_test_file",
    "evidence_location",
    "failing_sources",
    "failure_text",
    "function_at",
    "function_span",
    "imported_names",
    "imports_of_module",
    "locate_test",
    "read_test",
    "rename_attribute",
    "rename_keyword",
    "rename_name",
    "replace_node_text",
    "replace_string",
    "rewrite_import_from",
    "rewrite_module",
]
