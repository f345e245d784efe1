"""An AST index of a workspace's Python code: what is defined where, with which signature.

Strategies ask it "which modules define `Cart` now?", "what are the parameters of `Cart.add`?",
"which fixtures can `tests/api/test_x.py` see?". Nothing is imported or executed: every file is parsed
with `ast`, and a file that does not parse (or is too large) is skipped.

Module names follow how the code is imported: `src/shop/cart.py` is `shop.cart` (src layout),
`shop/__init__.py` is `shop`, and a file also answers to the name its package chain gives it
(`tests/unit/test_x.py` in a folder without `__init__.py` is `test_x`, as pytest's rootdir
insertion imports it).
"""

from __future__ import annotations

import ast
import weakref
from collections.abc import Iterable, Iterator
from pathlib import PurePosixPath
from typing import Literal

from attrs import field, frozen

from actors.errors import Rejected
from actors.workspace import Workspace

SymbolKind = Literal["function", "class", "variable", "import"]
ParamKind = Literal["positional_only", "positional_or_keyword", "var_positional", "keyword_only", "var_keyword"]


@frozen(kw_only=True)
class Param:
    """One parameter of a function; `default` is the default's source text, None when required."""

    name: str
    kind: ParamKind
    default: str | None = None

    @property
    def required(self) -> bool:
        return self.default is None and self.kind not in ("var_positional", "var_keyword")

    @property
    def keyword(self) -> bool:
        """Whether a caller can pass it as `name=value`."""
        return self.kind in ("positional_or_keyword", "keyword_only")


@frozen(kw_only=True)
class Signature:
    """The parameters of a function or method, in order (including `self`/`cls`)."""

    params: tuple[Param, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    def keyword_names(self) -> tuple[str, ...]:
        """Parameters a caller can pass by keyword."""
        return tuple(p.name for p in self.params if p.keyword)

    @property
    def accepts_any_keyword(self) -> bool:
        """`**kwargs`: any keyword is accepted, so an unknown one is not an error."""
        return any(p.kind == "var_keyword" for p in self.params)


@frozen(kw_only=True)
class Symbol:
    """A name bound at module or class level.

    `target` is the dotted name an `import` binding refers to (`from .core import Cart` in package
    `shop` gives `shop.core.Cart`); `signature` is set for functions (and for classes, from their
    `__init__` when the class defines one).
    """

    name: str
    kind: SymbolKind
    line: int
    signature: Signature | None = None
    target: str | None = None


@frozen(kw_only=True)
class ClassInfo:
    """A class: its members (methods, class attributes, `self.x = ...` in methods) and base names."""

    name: str
    line: int
    bases: tuple[str, ...] = ()
    members: dict[str, Symbol] = field(factory=dict)


@frozen(kw_only=True)
class Fixture:
    """A pytest fixture: the name tests request, the function that provides it, where it is visible.

    `scope_dir` is the folder whose tests see it (a conftest.py's folder); `only_file` is set for a
    fixture defined in a test module, which only that module sees.
    """

    name: str
    function: str
    path: str
    line: int
    scope_dir: str
    only_file: str | None = None

    def visible_from(self, test_path: str) -> bool:
        if self.only_file is not None:
            return self.only_file == test_path
        if self.scope_dir in ("", "."):
            return True
        return test_path.startswith(self.scope_dir + "/")


@frozen(kw_only=True)
class ModuleInfo:
    """One parsed file."""

    name: str
    path: str
    is_package: bool
    symbols: dict[str, Symbol] = field(factory=dict)
    classes: dict[str, ClassInfo] = field(factory=dict)
    all_names: tuple[str, ...] | None = None
    star_imports: tuple[str, ...] = ()

    def defines(self, name: str) -> bool:
        """Whether `name` is defined here (not merely imported)."""
        sym = self.symbols.get(name)
        return sym is not None and sym.kind != "import"

    def exports(self, name: str) -> bool:
        """Whether `from <this module> import name` works (defined or imported here)."""
        return name in self.symbols


class PyIndex:
    """The index of one workspace. Build it with `index_for(workspace)`, which caches it."""

    def __init__(self, modules: Iterable[ModuleInfo], aliases: dict[str, str], fixtures: Iterable[Fixture]) -> None:
        self._by_path = {m.path: m for m in modules}
        self._by_name: dict[str, ModuleInfo] = {}
        for name, path in aliases.items():
            self._by_name[name] = self._by_path[path]
        for m in self._by_path.values():
            self._by_name[m.name] = m  # the primary name wins over any alias
        self.fixtures: tuple[Fixture, ...] = tuple(fixtures)

    def modules(self) -> Iterator[ModuleInfo]:
        """Every parsed module, by path order."""
        for path in sorted(self._by_path):
            yield self._by_path[path]

    def module(self, name: str) -> ModuleInfo | None:
        """The module imported as `name`, if a file in the workspace provides it."""
        return self._by_name.get(name)

    def module_at(self, path: str) -> ModuleInfo | None:
        """The module of the file `path` (relative to the workspace root)."""
        return self._by_path.get(path)

    def module_names(self) -> list[str]:
        return sorted(self._by_name)

    def defining_modules(self, name: str) -> list[ModuleInfo]:
        """Modules that define `name` at top level (def, class or assignment), by module name."""
        return sorted((m for m in self._by_path.values() if m.defines(name)), key=lambda m: m.name)

    def exporting_modules(self, name: str) -> list[ModuleInfo]:
        """Modules that only re-export `name` (import it, and maybe list it in `__all__`)."""
        return sorted(
            (m for m in self._by_path.values() if m.exports(name) and not m.defines(name)), key=lambda m: m.name
        )

    def find_classes(self, name: str) -> list[tuple[ModuleInfo, ClassInfo]]:
        """Every class called `name`, with its module."""
        return [(m, m.classes[name]) for m in self.modules() if name in m.classes]

    def class_members(self, module: ModuleInfo, cls: ClassInfo) -> dict[str, Symbol]:
        """Members of `cls` including those inherited from bases the index can resolve by name."""
        members: dict[str, Symbol] = {}
        seen: set[str] = set()
        stack = [(module, cls)]
        while stack:
            mod, c = stack.pop()
            if f"{mod.name}.{c.name}" in seen:
                continue
            seen.add(f"{mod.name}.{c.name}")
            for k, v in c.members.items():
                members.setdefault(k, v)
            for base in c.bases:
                stack.extend(self._resolve_class(mod, base))
        return members

    def signature(self, qualname: str, modules: Iterable[str] | None = None) -> list[tuple[ModuleInfo, Signature]]:
        """Signatures of the function or method `qualname` (`total` or `Cart.add`), in `modules` or
        in every module. A class name gives its `__init__`."""
        wanted = list(self.modules()) if modules is None else [m for n in modules if (m := self.module(n))]
        head, _, tail = qualname.rpartition(".")
        found: list[tuple[ModuleInfo, Signature]] = []
        for mod in wanted:
            sym: Symbol | None
            if head:
                cls = mod.classes.get(head)
                sym = self.class_members(mod, cls).get(tail) if cls else None
            else:
                sym = mod.symbols.get(tail)
            if sym is not None and sym.signature is not None:
                found.append((mod, sym.signature))
        return found

    def fixtures_visible(self, test_path: str) -> dict[str, Fixture]:
        """Fixtures a test in `test_path` can request, the nearest definition winning."""
        visible = [f for f in self.fixtures if f.visible_from(test_path)]
        # Deeper conftests override shallower ones, and a test module's own fixtures override both.
        visible.sort(key=lambda f: (f.only_file is not None, len(PurePosixPath(f.scope_dir).parts)))
        return {f.name: f for f in visible}

    def _resolve_class(self, mod: ModuleInfo, name: str) -> list[tuple[ModuleInfo, ClassInfo]]:
        simple = name.rpartition(".")[2]
        if simple in mod.classes:
            return [(mod, mod.classes[simple])]
        sym = mod.symbols.get(simple)
        if sym is not None and sym.target:
            owner = self.module(sym.target.rpartition(".")[0])
            target_name = sym.target.rpartition(".")[2]
            if owner is not None and target_name in owner.classes:
                return [(owner, owner.classes[target_name])]
        return []


_CACHE: weakref.WeakKeyDictionary[Workspace, PyIndex] = weakref.WeakKeyDictionary()


def index_for(workspace: Workspace) -> PyIndex:
    """The index of `workspace`, built once per Workspace instance (a new instance sees new files)."""
    cached = _CACHE.get(workspace)
    if cached is None:
        cached = build_index(workspace)
        _CACHE[workspace] = cached
    return cached


def build_index(workspace: Workspace) -> PyIndex:
    """Parse every Python file of `workspace` (skipping those that do not parse)."""
    paths = list(workspace.python_files())
    package_dirs = {str(PurePosixPath(p).parent) for p in paths if PurePosixPath(p).name == "__init__.py"}
    modules: list[ModuleInfo] = []
    aliases: dict[str, str] = {}
    fixtures: list[Fixture] = []
    for path in paths:
        try:
            tree = ast.parse(workspace.read(path), filename=path)
        except (SyntaxError, ValueError, OSError, Rejected):
            continue
        names = module_names(path, package_dirs)
        if not names:
            continue
        is_package = PurePosixPath(path).name == "__init__.py"
        modules.append(_module_info(names[0], path, is_package, tree))
        for alias in names[1:]:
            aliases.setdefault(alias, path)
        if workspace.is_test_file(path):
            fixtures.extend(_fixtures(path, tree))
    return PyIndex(modules, aliases, fixtures)


def module_names(path: str, package_dirs: set[str]) -> list[str]:
    """The dotted names `path` can be imported as, the preferred one first.

    Preferred: the path from the root with a leading `src/` dropped. Also: the name given by the chain
    of folders holding `__init__.py` (what pytest's rootdir insertion and plain packages give).
    """
    pure = PurePosixPath(path)
    if pure.suffix != ".py":
        return []
    parts = list(pure.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()  # a package is named by its folder
    if not parts:
        return []
    names: list[str] = []
    rooted = parts[1:] if parts[0] == "src" and len(parts) > 1 else parts
    if all(p.isidentifier() for p in rooted):
        names.append(".".join(rooted))
    # Walk up while the folder is a package: the first folder that is not one is on sys.path.
    chain = [parts[-1]]
    folder = PurePosixPath(*parts[:-1]) if len(parts) > 1 else PurePosixPath(".")
    while str(folder) != "." and str(folder) in package_dirs:
        chain.insert(0, folder.name)
        folder = folder.parent
    chained = ".".join(chain)
    if chained not in names and all(p.isidentifier() for p in chain):
        names.append(chained)
    return names


def _module_info(name: str, path: str, is_package: bool, tree: ast.Module) -> ModuleInfo:
    package = name if is_package else name.rpartition(".")[0]
    symbols: dict[str, Symbol] = {}
    classes: dict[str, ClassInfo] = {}
    all_names: tuple[str, ...] | None = None
    stars: list[str] = []
    for node in _top_level(tree.body):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            symbols[node.name] = Symbol(name=node.name, kind="function", line=node.lineno, signature=_signature(node))
        elif isinstance(node, ast.ClassDef):
            info = _class_info(node)
            classes[node.name] = info
            init = info.members.get("__init__")
            symbols[node.name] = Symbol(
                name=node.name, kind="class", line=node.lineno, signature=init.signature if init else None
            )
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target_name in _assigned_names(targets):
                symbols.setdefault(target_name, Symbol(name=target_name, kind="variable", line=node.lineno))
                if target_name == "__all__" and isinstance(node, ast.Assign | ast.AnnAssign):
                    all_names = _string_list(node.value) or all_names
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(node.module, node.level, package)
            for alias in node.names:
                if alias.name == "*":
                    stars.append(source)
                    continue
                bound = alias.asname or alias.name
                symbols.setdefault(
                    bound, Symbol(name=bound, kind="import", line=node.lineno, target=f"{source}.{alias.name}")
                )
        elif isinstance(node, ast.Import):
            for alias in node.names:
                bound = alias.asname or alias.name.partition(".")[0]
                target = alias.name if alias.asname else bound
                symbols.setdefault(bound, Symbol(name=bound, kind="import", line=node.lineno, target=target))
    return ModuleInfo(
        name=name, path=path, is_package=is_package, symbols=symbols, classes=classes,
        all_names=all_names, star_imports=tuple(stars),
    )


def _top_level(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Statements of a module body, looking inside `if`/`try`/`with` (version and optional-import
    switches bind module-level names too)."""
    for node in body:
        if isinstance(node, ast.If):
            yield from _top_level(node.body)
            yield from _top_level(node.orelse)
        elif isinstance(node, ast.Try):
            yield from _top_level(node.body)
            for handler in node.handlers:
                yield from _top_level(handler.body)
            yield from _top_level(node.orelse)
            yield from _top_level(node.finalbody)
        elif isinstance(node, ast.With):
            yield from _top_level(node.body)
        else:
            yield node


def _class_info(node: ast.ClassDef) -> ClassInfo:
    members: dict[str, Symbol] = {}
    for item in _top_level(node.body):
        if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
            members[item.name] = Symbol(name=item.name, kind="function", line=item.lineno, signature=_signature(item))
        elif isinstance(item, ast.ClassDef):
            members[item.name] = Symbol(name=item.name, kind="class", line=item.lineno)
        elif isinstance(item, ast.Assign | ast.AnnAssign):
            targets = item.targets if isinstance(item, ast.Assign) else [item.target]
            for n in _assigned_names(targets):
                members.setdefault(n, Symbol(name=n, kind="variable", line=item.lineno))
    # Instance attributes: `self.x = ...` anywhere in a method.
    for item in node.body:
        if not isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) or not item.args.args:
            continue
        me = item.args.args[0].arg
        for sub in ast.walk(item):
            targets = []
            if isinstance(sub, ast.Assign):
                targets = sub.targets
            elif isinstance(sub, ast.AnnAssign | ast.AugAssign):
                targets = [sub.target]
            for t in targets:
                if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == me:
                    members.setdefault(t.attr, Symbol(name=t.attr, kind="variable", line=t.lineno))
    bases = tuple(ast.unparse(b) for b in node.bases)
    return ClassInfo(name=node.name, line=node.lineno, bases=bases, members=members)


def _signature(node: ast.FunctionDef | ast.AsyncFunctionDef) -> Signature:
    a = node.args
    params: list[Param] = []
    positional = [*a.posonlyargs, *a.args]
    # Defaults belong to the last positional parameters.
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(a.defaults)) + list(a.defaults)
    for i, (arg, default) in enumerate(zip(positional, defaults, strict=True)):
        kind: ParamKind = "positional_only" if i < len(a.posonlyargs) else "positional_or_keyword"
        params.append(Param(name=arg.arg, kind=kind, default=ast.unparse(default) if default else None))
    if a.vararg:
        params.append(Param(name=a.vararg.arg, kind="var_positional"))
    for arg, kw_default in zip(a.kwonlyargs, a.kw_defaults, strict=True):
        params.append(
            Param(name=arg.arg, kind="keyword_only", default=ast.unparse(kw_default) if kw_default else None)
        )
    if a.kwarg:
        params.append(Param(name=a.kwarg.arg, kind="var_keyword"))
    return Signature(params=tuple(params))


def _assigned_names(targets: Iterable[ast.expr]) -> Iterator[str]:
    for t in targets:
        if isinstance(t, ast.Name):
            yield t.id
        elif isinstance(t, ast.Tuple | ast.List):
            yield from _assigned_names(t.elts)


def _string_list(value: ast.expr | None) -> tuple[str, ...] | None:
    if isinstance(value, ast.List | ast.Tuple):
        items = [e.value for e in value.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
        return tuple(items)
    return None


def _absolute(module: str | None, level: int, package: str) -> str:
    """The absolute module of `from <level dots><module> import ...` written in `package`."""
    if level == 0:
        return module or ""
    parts = package.split(".") if package else []
    base = parts[: len(parts) - (level - 1)] if level - 1 <= len(parts) else []
    return ".".join([*base, *([module] if module else [])])


def _fixtures(path: str, tree: ast.Module) -> Iterator[Fixture]:
    pure = PurePosixPath(path)
    folder = str(pure.parent)
    only_file = None if pure.name == "conftest.py" else path
    nodes: list[ast.stmt] = list(_top_level(tree.body))
    for node in list(nodes):
        if isinstance(node, ast.ClassDef):
            nodes.extend(node.body)  # fixtures defined on a test class; approximated as module-wide
    for node in nodes:
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for deco in node.decorator_list:
            name = _fixture_name(deco)
            if name is not None:
                yield Fixture(
                    name=name or node.name, function=node.name, path=path, line=node.lineno,
                    scope_dir=folder, only_file=only_file,
                )
                break


def _fixture_name(deco: ast.expr) -> str | None:
    """For a `@pytest.fixture` style decorator: the `name=` override, or "" when there is none.
    None when the decorator is not a fixture decorator."""
    func = deco.func if isinstance(deco, ast.Call) else deco
    dotted = ast.unparse(func)
    if dotted not in ("pytest.fixture", "fixture", "pytest_asyncio.fixture", "yield_fixture", "pytest.yield_fixture"):
        return None
    if isinstance(deco, ast.Call):
        for kw in deco.keywords:
            if kw.arg == "name" and isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, str):
                return kw.value.value
    return ""


__all__ = [
    "ClassInfo",
    "Fixture",
    "ModuleInfo",
    "Param",
    "PyIndex",
    "Signature",
    "Symbol",
    "build_index",
    "index_for",
    "module_names",
]
