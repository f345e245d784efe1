"""Heal-bench cases, as data: for each project, realistic refactors of its SOURCE and a reference fix of
its TESTS alone.

A case is committed as the maintainers would have: the pristine sdist is the first commit, the source
change is a second commit titled ``refactor: ...``, and the tests are left as they were. `refactor` edits
the source tree in place; `fix` edits only test files (what a human would do to follow the refactor).
Every edit checks that the text it changes is there, so a case that no longer applies fails loudly.

Kinds: rename (a public function or class), move (to another module), kwarg (a keyword parameter is
renamed), fixture (a pytest fixture definition is renamed), message (an asserted error message changes).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

Edit = Callable[[Path], None]
KINDS = ("rename", "move", "kwarg", "fixture", "message")


@dataclass(frozen=True)
class Case:
    project: str
    name: str
    kind: str
    title: str  # the refactor commit's message
    refactor: Edit  # edits the source tree
    fix: Edit  # the reference fix: edits test files only

    @property
    def id(self) -> str:
        return f"{self.project}/{self.name}"


class CaseError(Exception):
    """An edit did not find what it expected: the case does not apply to this version."""


# ---------------------------------------------------------------- edit helpers

def sub(root: Path, rel: str, old: str, new: str, *, count: int | None = None) -> None:
    """Replace the literal `old` by `new` in `rel` (every occurrence; exactly `count` when given)."""
    path = root / rel
    text = path.read_text(encoding="utf-8")
    n = text.count(old)
    if n == 0 or (count is not None and n != count):
        raise CaseError(f"{rel}: expected {count or 'some'} of {old!r}, found {n}")
    path.write_text(text.replace(old, new), encoding="utf-8")


def resub(root: Path, rels: str | Iterable[str], pattern: str, repl: str, *, at_least: int = 1) -> None:
    """Regex-replace `pattern` in every file of `rels` (globs allowed); at least `at_least` in all."""
    total = 0
    for path in _files(root, rels):
        text = path.read_text(encoding="utf-8")
        new, n = re.subn(pattern, repl, text, flags=re.M)
        if n:
            path.write_text(new, encoding="utf-8")
        total += n
    if total < at_least:
        raise CaseError(f"{rels}: {pattern!r} matched {total} times, wanted at least {at_least}")


def rename_word(root: Path, rels: str | Iterable[str], old: str, new: str) -> None:
    """Rename the identifier `old` to `new` wherever it stands as a whole word."""
    resub(root, rels, rf"\b{re.escape(old)}\b", new)


def cut_defs(root: Path, rel: str, names: Iterable[str]) -> str:
    """Remove the top-level functions/classes `names` (with decorators) from `rel`; return their source."""
    path = root / rel
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    spans = []
    wanted = set(names)
    for node in ast.parse(text).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in wanted:
            start = min([node.lineno, *(d.lineno for d in node.decorator_list)]) - 1
            spans.append((start, node.end_lineno))
            wanted.discard(node.name)
    if wanted:
        raise CaseError(f"{rel}: no top-level {sorted(wanted)}")
    spans.sort()
    taken = "\n\n".join("".join(lines[a:b]).rstrip() for a, b in spans) + "\n"
    for a, b in reversed(spans):
        del lines[a:b]
    path.write_text(re.sub(r"\n{4,}", "\n\n\n", "".join(lines)), encoding="utf-8")
    return taken


def rename_fixture_uses(root: Path, rels: str | Iterable[str], old: str, new: str) -> None:
    """Follow a fixture rename in test modules: in every function that takes `old` as a parameter, rename
    the parameter and its uses; rename `usefixtures("old")` marks too."""
    total = 0
    for path in _files(root, rels):
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines(keepends=True)
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and old in {a.arg for a in node.args.args}:
                for i in range(node.lineno - 1, node.end_lineno):
                    lines[i], n = re.subn(rf"(?<![\w.'\"]){re.escape(old)}\b", new, lines[i])
                    total += n
        text = "".join(lines)
        text, n = re.subn(rf"usefixtures\((['\"]){re.escape(old)}\1\)", rf"usefixtures(\1{new}\1)", text)
        total += n
        path.write_text(text, encoding="utf-8")
    if not total:
        raise CaseError(f"{rels}: no use of the fixture {old!r}")


def _files(root: Path, rels: str | Iterable[str]) -> list[Path]:
    out: list[Path] = []
    for rel in [rels] if isinstance(rels, str) else rels:
        out.extend(sorted(root.glob(rel)) if any(c in rel for c in "*?[") else [root / rel])
    return out


def both(*edits: Edit) -> Edit:
    def run(root: Path) -> None:
        for edit in edits:
            edit(root)
    return run


# ---------------------------------------------------------------- inflection (one module + one test file)

INFL = "inflection/__init__.py"
INFL_T = "test_inflection.py"


def _infl_move_ordinal(root: Path) -> None:
    code = cut_defs(root, INFL, ["ordinal", "ordinalize"])
    (root / "inflection/numbers.py").write_text(
        '"""Ordinal numbers: 1st, 2nd, 3rd, ..."""\n\n\n' + code, encoding="utf-8")


INFLECTION = [
    Case("inflection", "rename-camelize", "rename", "refactor: rename camelize() to camelcase()",
         lambda r: rename_word(r, INFL, "camelize", "camelcase"),
         lambda r: resub(r, INFL_T, r"inflection\.camelize\(", "inflection.camelcase(")),
    Case("inflection", "rename-parameterize", "rename", "refactor: rename parameterize() to slugify()",
         lambda r: rename_word(r, INFL, "parameterize", "slugify"),
         lambda r: resub(r, INFL_T, r"inflection\.parameterize\(", "inflection.slugify(")),
    Case("inflection", "move-ordinal", "move", "refactor: move ordinal() and ordinalize() to inflection.numbers",
         _infl_move_ordinal,
         both(lambda r: sub(r, INFL_T, "import inflection\n", "import inflection\nimport inflection.numbers\n",
                            count=1),
              lambda r: resub(r, INFL_T, r"inflection\.(ordinal|ordinalize)\(", r"inflection.numbers.\1("))),
]


# ---------------------------------------------------------------- tinydb (conftest fixtures, several modules)

def _tinydb_move_freeze(root: Path) -> None:
    code = cut_defs(root, "tinydb/utils.py", ["FrozenDict", "freeze"])
    (root / "tinydb/frozen.py").write_text(
        '"""Immutable, hashable copies of documents (used to cache queries)."""\n\n'
        "__all__ = ('FrozenDict', 'freeze')\n\n\n" + code, encoding="utf-8")
    sub(root, "tinydb/utils.py", "__all__ = ('LRUCache', 'freeze', 'with_typehint')",
        "__all__ = ('LRUCache', 'with_typehint')", count=1)
    sub(root, "tinydb/queries.py", "from .utils import freeze\n", "from .frozen import freeze\n", count=1)


TINYDB = [
    Case("tinydb", "fixture-storage", "fixture", "refactor: rename the storage fixture to caching_storage",
         lambda r: sub(r, "tests/conftest.py", "def storage():", "def caching_storage():", count=1),
         lambda r: rename_fixture_uses(r, "tests/test_*.py", "storage", "caching_storage")),
    Case("tinydb", "kwarg-create-dirs", "kwarg", "refactor: rename JSONStorage(create_dirs=) to make_dirs=",
         lambda r: rename_word(r, "tinydb/storages.py", "create_dirs", "make_dirs"),
         lambda r: sub(r, "tests/test_storages.py", "create_dirs=True", "make_dirs=True")),
    Case("tinydb", "kwarg-lru-capacity", "kwarg", "refactor: rename LRUCache(capacity=) to maxsize=",
         both(lambda r: sub(r, "tinydb/utils.py",
                            "def __init__(self, capacity=None) -> None:\n        self.capacity = capacity",
                            "def __init__(self, maxsize=None) -> None:\n        self.capacity = maxsize", count=1),
              lambda r: sub(r, "tinydb/table.py", "self.query_cache_class(capacity=cache_size)",
                            "self.query_cache_class(maxsize=cache_size)", count=1)),
         lambda r: sub(r, "tests/test_utils.py", "LRUCache(capacity=", "LRUCache(maxsize=")),
    Case("tinydb", "move-freeze", "move", "refactor: move freeze() and FrozenDict to tinydb.frozen",
         _tinydb_move_freeze,
         lambda r: sub(r, "tests/test_utils.py", "from tinydb.utils import LRUCache, freeze, FrozenDict\n",
                       "from tinydb.frozen import FrozenDict, freeze\nfrom tinydb.utils import LRUCache\n", count=1)),
    Case("tinydb", "message-empty-query", "message", "refactor: clearer error for evaluating an empty query",
         lambda r: sub(r, "tinydb/queries.py", "'Empty query was evaluated'", "'An empty query cannot be evaluated'"),
         lambda r: sub(r, "tests/test_queries.py", "match='Empty query was evaluated'",
                       "match='An empty query cannot be evaluated'")),
    Case("tinydb", "message-not-mapping", "message", "refactor: say what a document must be",
         lambda r: sub(r, "tinydb/table.py", "'Document is not a Mapping'", "'Document must be a Mapping'", count=2),
         lambda r: sub(r, "tests/test_tinydb.py", "match='Document is not a Mapping'",
                       "match='Document must be a Mapping'")),
]


# ---------------------------------------------------------------- munch (conftest fixtures, one module)

MUNCH = [
    Case("munch", "fixture-munch-obj", "fixture", "refactor: rename the munch_obj fixture to munch_instance",
         lambda r: sub(r, "tests/conftest.py", "def munch_obj(request):", "def munch_instance(request):", count=1),
         lambda r: rename_fixture_uses(r, "tests/test_*.py", "munch_obj", "munch_instance")),
    Case("munch", "fixture-yaml", "fixture", "refactor: name the PyYAML fixture yaml_module",
         lambda r: sub(r, "tests/conftest.py", "@pytest.fixture(name='yaml')", "@pytest.fixture(name='yaml_module')",
                       count=1),
         lambda r: rename_fixture_uses(r, "tests/test_*.py", "yaml", "yaml_module")),
    Case("munch", "rename-munchify", "rename", "refactor: rename munchify() to to_munch()",
         lambda r: rename_word(r, "munch/__init__.py", "munchify", "to_munch"),
         lambda r: resub(r, "tests/test_*.py", r"(?<![\w.])munchify\b(?!_)", "to_munch")),
]


# ---------------------------------------------------------------- parse (one module, tests/)

PARSE = [
    Case("parse", "kwarg-case-sensitive", "kwarg", "refactor: rename case_sensitive= to match_case=",
         lambda r: rename_word(r, "parse.py", "case_sensitive", "match_case"),
         lambda r: resub(r, "tests/test_*.py", r"\bcase_sensitive=", "match_case=")),
    Case("parse", "kwarg-regex-group-count", "kwarg",
         "refactor: rename with_pattern(regex_group_count=) to group_count=",
         both(lambda r: sub(r, "parse.py", "def with_pattern(pattern, regex_group_count=None):",
                            "def with_pattern(pattern, group_count=None):", count=1),
              lambda r: sub(r, "parse.py", "func.regex_group_count = regex_group_count",
                            "func.regex_group_count = group_count", count=1),
              lambda r: sub(r, "parse.py", ":param regex_group_count:", ":param group_count:", count=1)),
         lambda r: resub(r, "tests/test_*.py", r"(with_pattern\(.*?), regex_group_count=", r"\1, group_count=")),
    Case("parse", "rename-with-pattern", "rename", "refactor: rename with_pattern() to typed_pattern()",
         lambda r: rename_word(r, "parse.py", "with_pattern", "typed_pattern"),
         lambda r: resub(r, "tests/test_*.py", r"parse\.with_pattern\(", "parse.typed_pattern(")),
]


# ---------------------------------------------------------------- semver (src layout, messages)

SEMVER = [
    Case("semver", "message-readonly", "message", "refactor: say read-only in immutability errors",
         lambda r: resub(r, "src/semver/version.py", r"raise AttributeError\(\"attribute '(\w+)' is readonly\"\)",
                         r"""raise AttributeError("attribute '\1' is read-only")""", at_least=5),
         lambda r: resub(r, "tests/test_immutable.py", r"match=\"attribute '(\w+)' is readonly\"",
                         "match=\"attribute '\\1' is read-only\"", at_least=5)),
    Case("semver", "message-negative-index", "message", "refactor: reword the negative version index error",
         lambda r: sub(r, "src/semver/version.py", '"Version index cannot be negative"',
                       '"Version index must not be negative"', count=1),
         lambda r: sub(r, "tests/test_index.py", 'match=r"Version index cannot be negative"',
                       'match=r"Version index must not be negative"', count=1)),
]


# ---------------------------------------------------------------- cachetools (src layout, unittest-style)

def _ct_move_typedkey(root: Path) -> None:
    code = cut_defs(root, "src/cachetools/keys.py", ["typedkey"])
    (root / "src/cachetools/typedkeys.py").write_text(
        '"""Keys that tell arguments of different types apart."""\n\n'
        '__all__ = ("typedkey",)\n\nfrom .keys import hashkey\n\n\n' + code, encoding="utf-8")
    sub(root, "src/cachetools/keys.py", '__all__ = ("hashkey", "methodkey", "typedkey", "typedmethodkey")',
        '__all__ = ("hashkey", "methodkey", "typedmethodkey")', count=1)
    sub(root, "src/cachetools/keys.py", "    return typedkey(*args, **kwargs)",
        "    from .typedkeys import typedkey\n\n    return typedkey(*args, **kwargs)", count=1)
    sub(root, "src/cachetools/func.py", "key = keys.typedkey if typed else keys.hashkey",
        "key = typedkeys.typedkey if typed else keys.hashkey", count=1)
    sub(root, "src/cachetools/func.py", "from . import keys\n", "from . import keys, typedkeys\n", count=1)


CACHETOOLS = [
    Case("cachetools", "rename-typedkey", "rename", "refactor: rename keys.typedkey() to keys.typed_hashkey()",
         lambda r: rename_word(r, ["src/cachetools/keys.py", "src/cachetools/func.py"], "typedkey", "typed_hashkey"),
         lambda r: resub(r, "tests/test_*.py", r"keys\.typedkey\b", "keys.typed_hashkey")),
    Case("cachetools", "move-typedkey", "move", "refactor: move typedkey() to cachetools.typedkeys",
         _ct_move_typedkey,
         both(lambda r: resub(r, "tests/test_*.py", r"cachetools\.keys\.typedkey\b", "cachetools.typedkeys.typedkey"),
              lambda r: resub(r, "tests/test_*.py", r"^import cachetools\.keys$",
                              "import cachetools.keys\nimport cachetools.typedkeys")),
    ),
]


CASES: list[Case] = [*INFLECTION, *TINYDB, *MUNCH, *PARSE, *SEMVER, *CACHETOOLS]
