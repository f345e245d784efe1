"""The mutation check: would the healed test notice if the code it tests were broken?

A repair can make a test green by making it test nothing. To catch that, we find (statically, with
`ast`) the functions of the code under test that the healed test calls, seed a small bug into one of
them in the sandbox (flip a comparison, `return None`, swap an arithmetic or boolean operator, negate a
condition, add one to a constant) and rerun the test. If it now fails, the mutant is "killed" and the
test earns its keep (`MutationVerdict.PASSED`). If up to `max_mutants` mutants all survive, the test
would stay green on a bug (`FAILED`). If there is nothing to mutate, the check is `NOT_APPLICABLE`.

The source file is always restored, byte for byte. Each mutation is a precise text edit at the mutated
node's position, so the rest of the file (comments, formatting) is untouched.
"""

from __future__ import annotations

import ast
import contextlib
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from attrs import frozen

from actors.errors import Rejected
from actors.testrun import TestRun, run_tests
from actors.workspace import Workspace, split_test_id
from contracts.values import MutationVerdict, Outcome

MAX_MUTANTS = 3
# How deep to follow helpers and fixtures defined in the test module, and re-exports in packages.
FOLLOW_DEPTH = 2

Runner = Callable[..., TestRun]

_FLIP_COMPARE: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.Lt: ast.GtE, ast.GtE: ast.Lt, ast.Gt: ast.LtE, ast.LtE: ast.Gt,
    ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is,
}
_SWAP_BINOP: dict[type[ast.operator], type[ast.operator]] = {
    ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.FloorDiv, ast.Div: ast.Mult, ast.FloorDiv: ast.Mult,
    ast.Mod: ast.FloorDiv, ast.Pow: ast.Mult, ast.BitAnd: ast.BitOr, ast.BitOr: ast.BitAnd,
    ast.LShift: ast.RShift, ast.RShift: ast.LShift,
}
_NEWLINE = re.compile(rb"\r\n|\r|\n")
# Mutant kinds, likeliest to be noticed by a test that checks results first: a guard clause's
# condition is often on a path the test does not take.
_KIND_ORDER = ("return", "arithmetic", "compare", "boolean", "condition", "constant")
_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


@frozen(kw_only=True)
class Target:
    """A function of the code under test: its file (relative) and qualified name (`f` or `Class.m`)."""

    path: str
    qualname: str


@frozen(kw_only=True)
class Mutant:
    target: Target
    description: str  # e.g. "app/calc.py:3 in add: `a + b` -> `a - b`"
    text: str  # the whole mutated file


@frozen(kw_only=True)
class MutationResult:
    verdict: MutationVerdict
    detail: str


def check_mutation(
    workspace: str | Path,
    *,
    test_id: str,
    test_cmd: str,
    timeout_s: float,
    env: Mapping[str, str] | None = None,
    max_mutants: int = MAX_MUTANTS,
    runner: Runner = run_tests,
) -> MutationResult:
    """Seed up to `max_mutants` mutants into code the test exercises; PASSED as soon as one is killed.

    The test must pass on the unmutated code (the validator has just checked that).
    """
    ws = Workspace(workspace)
    targets = exercised_functions(ws, test_id)
    if not targets:
        return MutationResult(
            verdict=MutationVerdict.NOT_APPLICABLE,
            detail="the test calls no function of the code under test that could be found statically",
        )
    mutants = pick_mutants(ws, targets, max_mutants)
    if not mutants:
        names = ", ".join(f"{t.path}::{t.qualname}" for t in targets[:5])
        return MutationResult(verdict=MutationVerdict.NOT_APPLICABLE, detail=f"nothing to mutate in {names}")
    survived: list[str] = []
    for mutant in mutants:
        with _applied(ws, mutant):
            run = runner(ws.root, test_cmd, tests=[test_id], env=env, timeout_s=timeout_s)
        if _killed(run, test_id):
            how = "timed out" if run.timed_out else "failed"
            return MutationResult(
                verdict=MutationVerdict.PASSED, detail=f"the test {how} on mutant {mutant.description}"
            )
        survived.append(mutant.description)
    return MutationResult(
        verdict=MutationVerdict.FAILED,
        detail=f"the test still passed on {len(survived)} mutant(s): " + "; ".join(survived),
    )


@contextlib.contextmanager
def _applied(ws: Workspace, mutant: Mutant) -> Iterator[None]:
    """The mutant written over its file for the duration of the block; the original restored after."""
    path = ws.resolve(mutant.target.path)
    original = path.read_bytes()
    try:
        path.write_text(mutant.text, encoding="utf-8")
        _drop_bytecode(path)  # a same-size edit within the same second could reuse a stale .pyc
        yield
    finally:
        path.write_bytes(original)
        _drop_bytecode(path)


def _drop_bytecode(path: Path) -> None:
    for pyc in (path.parent / "__pycache__").glob(f"{path.stem}.*.pyc"):
        pyc.unlink(missing_ok=True)


def _killed(run: TestRun, test_id: str) -> bool:
    if run.timed_out or run.exit_code != 0 or run.failed():
        return True
    mine = [r for r in run.results if r.test_id == test_id or r.test_id.startswith(test_id + "[")]
    return not mine or any(r.outcome is not Outcome.PASSED for r in mine)


# -- which functions does the test exercise? ----------------------------------------------------------


def exercised_functions(ws: Workspace, test_id: str) -> list[Target]:
    """Functions of non-test modules the test calls, directly or through helpers and fixtures of its own
    module: the closest first. Static and best-effort: dynamic dispatch is not followed."""
    file, rest = split_test_id(test_id)
    try:
        tree = ast.parse(ws.read(file))
    except (OSError, SyntaxError, Rejected, ValueError):
        return []
    func = _find_test(tree, rest)
    if func is None:
        return []
    resolver = _Resolver(ws, file, tree)
    targets: list[Target] = []
    for dotted in _references(func, tree):
        for target in resolver.resolve(dotted):
            if target not in targets:
                targets.append(target)
    return targets


def _find_test(tree: ast.Module, rest: str) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    """The test function a test id names (`TestX::test_y[param]` -> method `test_y` of class `TestX`)."""
    return _find_function(tree, [p.split("[", 1)[0] for p in rest.split("::") if p])


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        if base is not None:
            return f"{base}.{node.attr}"
        if isinstance(node.value, ast.Call):  # Calc().add(...) -> "Calc.add"
            called = _dotted(node.value.func)
            return f"{called}.{node.attr}" if called else None
    return None


def _references(func: ast.FunctionDef | ast.AsyncFunctionDef, tree: ast.Module) -> list[str]:
    """Dotted names the test calls, in order, plus those its module-local helpers and fixtures call.

    A method called on a local variable (`calc.add()` where `calc = Calc()`) is reported as `Calc.add`.
    """
    local_defs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    seen: set[str] = set()
    out: list[str] = []

    def scan(fn: ast.FunctionDef | ast.AsyncFunctionDef, depth: int) -> None:
        if fn.name in seen:
            return
        seen.add(fn.name)
        types: dict[str, str] = {}  # local variable -> the dotted name of the class it was built from
        calls: list[str] = []
        for node in ast.walk(fn):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
                ctor = _dotted(node.value.func)
                for tgt in node.targets:
                    if ctor and isinstance(tgt, ast.Name):
                        types[tgt.id] = ctor
            if isinstance(node, ast.Call):
                name = _dotted(node.func)
                if name:
                    calls.append(name)
        helpers: list[ast.FunctionDef | ast.AsyncFunctionDef] = []
        for name in calls:
            head, _, tail = name.partition(".")
            resolved = f"{types[head]}.{tail}" if tail and head in types else name
            if resolved not in out:
                out.append(resolved)
            if not tail and head in local_defs:
                helpers.append(local_defs[head])
        # fixtures defined in the same module, requested as parameters
        helpers.extend(local_defs[a.arg] for a in fn.args.args if a.arg in local_defs)
        if depth < FOLLOW_DEPTH:
            for helper in helpers:
                scan(helper, depth + 1)

    scan(func, 0)
    return out


class _Resolver:
    """Resolves dotted names used in a test module to functions in the workspace's source files."""

    def __init__(self, ws: Workspace, test_file: str, tree: ast.Module) -> None:
        self.ws = ws
        self.test_dir = Path(test_file).parent
        self.bindings = _import_bindings(tree, self._package_of(test_file))
        # Where the import system may find top-level modules: the root, src/, and the folders pytest
        # puts on sys.path for a test file (its folder and those above it, up to the root).
        roots = [Path("."), Path("src")]
        folder = self.test_dir
        while folder != Path("."):
            roots.append(folder)
            folder = folder.parent
        self.roots = roots
        self._trees: dict[str, ast.Module | None] = {}

    def _package_of(self, rel: str) -> str:
        return ".".join(Path(rel).parent.parts)

    def resolve(self, dotted: str) -> list[Target]:
        head, *rest = dotted.split(".")
        binding = self.bindings.get(head)
        if binding is None:
            return []
        module, attr = binding
        chain = [attr, *rest] if attr else rest
        return self._in_module(module, chain, FOLLOW_DEPTH)

    def _module_file(self, module: str) -> str | None:
        parts = [p for p in module.split(".") if p]
        if not parts:
            return None
        for root in self.roots:
            for candidate in (root.joinpath(*parts).with_suffix(".py"), root.joinpath(*parts, "__init__.py")):
                rel = candidate.as_posix()
                if self.ws.exists(rel):
                    return self.ws.relative(rel)
        return None

    def _tree(self, rel: str) -> ast.Module | None:
        if rel not in self._trees:
            try:
                self._trees[rel] = ast.parse(self.ws.read(rel))
            except (OSError, SyntaxError, Rejected, ValueError):
                self._trees[rel] = None
        return self._trees[rel]

    def _in_module(self, module: str, chain: list[str], depth: int) -> list[Target]:
        if not chain:
            return []
        first, rest = chain[0], chain[1:]
        if self._module_file(f"{module}.{first}"):  # a submodule: `from pkg import calc; calc.add()`
            return self._in_module(f"{module}.{first}", rest, depth)
        rel = self._module_file(module)
        if rel is None or self.ws.is_test_file(rel):
            return []
        tree = self._tree(rel)
        if tree is None:
            return []
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == first:
                return [Target(path=rel, qualname=first)]
            if isinstance(node, ast.ClassDef) and node.name == first:
                return self._in_class(rel, node, rest)
        if depth > 0:  # a re-export: `from .calc import add` in a package's __init__.py
            package = module if rel.endswith("__init__.py") else module.rpartition(".")[0]
            binding = _import_bindings(tree, package).get(first)
            if binding is not None:
                target_module, attr = binding
                return self._in_module(target_module, [attr, *rest] if attr else rest, depth - 1)
        return []

    def _in_class(self, rel: str, cls: ast.ClassDef, rest: list[str]) -> list[Target]:
        methods = {n.name for n in cls.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
        wanted = [rest[0]] if rest else ["__init__"]
        return [Target(path=rel, qualname=f"{cls.name}.{m}") for m in wanted if m in methods]


def _import_bindings(tree: ast.Module, package: str) -> dict[str, tuple[str, str | None]]:
    """Names a module binds by import: name -> (module, attribute or None for the module itself)."""
    bindings: dict[str, tuple[str, str | None]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    bindings[alias.asname] = (alias.name, None)
                else:  # `import a.b` binds `a`; `a.b.f()` then resolves through submodules
                    top = alias.name.split(".")[0]
                    bindings[top] = (top, None)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".") if package else []
                parts = parts[: len(parts) - (node.level - 1)] if node.level > 1 else parts
                base = ".".join([*parts, *([base] if base else [])])
            for alias in node.names:
                if alias.name != "*":
                    bindings[alias.asname or alias.name] = (base, alias.name)
    return bindings


# -- mutants -----------------------------------------------------------------------------------------


def pick_mutants(ws: Workspace, targets: Sequence[Target], limit: int) -> list[Mutant]:
    """Up to `limit` mutants, from the first target that has any, then the next ones."""
    picked: list[Mutant] = []
    for target in targets:
        try:
            source = ws.read(target.path)
        except (OSError, Rejected, ValueError):
            continue
        picked.extend(mutants_of(source, target, limit - len(picked)))
        if len(picked) >= limit:
            break
    return picked


def mutants_of(source: str, target: Target, limit: int = MAX_MUTANTS) -> list[Mutant]:
    """Up to `limit` mutants of one function, one of each kind first (return, comparison, operator, ...)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    func = _find_function(tree, target.qualname.split("."))
    if func is None:
        return []
    data = source.encode("utf-8")
    starts = _line_starts(data)
    original = ast.dump(tree)
    by_kind: dict[str, list[tuple[ast.expr | ast.stmt, str]]] = {}
    for kind, node, replacement in _sites(func):
        by_kind.setdefault(kind, []).append((node, replacement))
    ordered: list[tuple[ast.expr | ast.stmt, str]] = []
    queues = [by_kind[k] for k in _KIND_ORDER if k in by_kind]
    while any(queues):  # round robin over the kinds: varied mutants are likelier to be killed
        for queue in queues:
            if queue:
                ordered.append(queue.pop(0))
    out: list[Mutant] = []
    for node, replacement in ordered:
        if len(out) >= limit:
            break
        if node.end_lineno is None or node.end_col_offset is None:
            continue
        start = starts[node.lineno - 1] + node.col_offset
        end = starts[node.end_lineno - 1] + node.end_col_offset
        before = data[start:end].decode("utf-8", "replace")
        text = (data[:start] + replacement.encode("utf-8") + data[end:]).decode("utf-8", "replace")
        try:
            if ast.dump(ast.parse(text)) == original:
                continue
        except SyntaxError:
            continue
        where = f"{target.path}:{node.lineno} in {target.qualname}"
        description = f"{where}: `{_short(before)}` -> `{_short(replacement)}`"
        out.append(Mutant(target=target, description=description, text=text))
    return out


def _short(text: str, limit: int = 60) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _find_function(tree: ast.Module, path: Sequence[str]) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    """The function at `path` (["Class", "method"]) among top-level definitions and class bodies."""
    body: Sequence[ast.stmt] = tree.body
    node: ast.stmt | None = None
    for part in path:
        node = next((n for n in body if isinstance(n, _DEFS) and n.name == part), None)
        if node is None:
            return None
        body = node.body if isinstance(node, ast.ClassDef) else []
    return node if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) else None


def _line_starts(data: bytes) -> list[int]:
    """Byte offset of each line's start (ast positions are line numbers plus UTF-8 byte columns)."""
    return [0, *(m.end() for m in _NEWLINE.finditer(data))]


def _sites(func: ast.FunctionDef | ast.AsyncFunctionDef) -> Iterator[tuple[str, ast.expr | ast.stmt, str]]:
    """(kind, node, replacement source) for every mutation the function's body allows."""
    skip: set[int] = set()
    for node in ast.walk(func):
        if isinstance(node, ast.JoinedStr):  # positions inside f-strings are unreliable before 3.12
            skip.update(id(n) for n in ast.walk(node))
    docstring = ast.get_docstring(func, clean=False) is not None
    body = func.body[1:] if docstring else func.body
    for stmt in body:
        for node in ast.walk(stmt):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Return) and node.value is not None:
                if not (isinstance(node.value, ast.Constant) and node.value.value is None):
                    yield "return", node, "return None"
            elif isinstance(node, ast.Compare) and type(node.ops[0]) in _FLIP_COMPARE:
                flipped = ast.Compare(
                    left=node.left, ops=[_FLIP_COMPARE[type(node.ops[0])](), *node.ops[1:]],
                    comparators=node.comparators,
                )
                yield "compare", node, f"({ast.unparse(flipped)})"
            elif isinstance(node, ast.BinOp) and type(node.op) in _SWAP_BINOP:
                swapped = ast.BinOp(left=node.left, op=_SWAP_BINOP[type(node.op)](), right=node.right)
                yield "arithmetic", node, f"({ast.unparse(swapped)})"
            elif isinstance(node, ast.BoolOp):
                other = ast.Or() if isinstance(node.op, ast.And) else ast.And()
                yield "boolean", node, f"({ast.unparse(ast.BoolOp(op=other, values=node.values))})"
            elif isinstance(node, ast.If | ast.While | ast.IfExp):
                yield "condition", node.test, f"(not ({ast.unparse(node.test)}))"
            elif (
                isinstance(node, ast.Constant) and type(node.value) is int
                and not isinstance(node.value, bool)
            ):
                yield "constant", node, repr(node.value + 1)


__all__ = [
    "MAX_MUTANTS",
    "Mutant",
    "MutationResult",
    "Target",
    "check_mutation",
    "exercised_functions",
    "mutants_of",
    "pick_mutants",
]
