"""Renames seen in recent commits: strong evidence of what an old name in a test became.

`git log -p --unified=0` shows each changed line; a hunk that removes `def total(` and adds
`def grand_total(` in the same file is a rename of `total`. A changed `def f(a, qty=1)` line whose
function keeps its name but whose parameter list swaps `qty` for `quantity` is a parameter rename.
`git log --name-status -M` shows moved files (`shop/cart.py` -> `shop/basket.py`).

Only git's own output is read, with external diff drivers and text conversion switched off. No git
repository (or no git) means no facts, never an error.
"""

from __future__ import annotations

import re
import subprocess
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from attrs import frozen

from actors.workspace import Workspace

RenameKind = Literal["function", "class", "parameter", "file"]

DEFAULT_COMMITS = 50
DEFAULT_TIMEOUT_S = 10.0

_COMMIT = "commit "
_DEF = re.compile(r"^[ \t]*(?:async[ \t]+)?(def|class)[ \t]+([A-Za-z_]\w*)[ \t]*(\([^)]*\)?)?")


@frozen(kw_only=True)
class Rename:
    """`old` became `new` in `commit`. For a file, `old`/`new` are paths and `path` is the new path;
    for a parameter, `scope` is the function whose parameter it is."""

    old: str
    new: str
    path: str
    commit: str
    kind: RenameKind
    scope: str | None = None


def recent_renames(
    root: str | Path, *, commits: int = DEFAULT_COMMITS, timeout: float = DEFAULT_TIMEOUT_S
) -> list[Rename]:
    """Symbol, parameter and file renames in the last `commits` commits touching Python files,
    newest first. Empty when `root` is not in a git repository or git is unavailable."""
    patch = _git(root, ["log", "-p", f"-n{commits}", "--unified=0", "--relative", "--format=commit %H",
                        "--", "*.py"], timeout)
    moves = _git(root, ["log", "--name-status", "-M", f"-n{commits}", "--relative", "--format=commit %H",
                        "--", "*.py"], timeout)
    return [*parse_patch_log(patch), *parse_name_status(moves)]


_CACHE: weakref.WeakKeyDictionary[Workspace, list[Rename]] = weakref.WeakKeyDictionary()


def renames_for(workspace: Workspace) -> list[Rename]:
    """`recent_renames` of the workspace root, computed once per Workspace instance."""
    cached = _CACHE.get(workspace)
    if cached is None:
        cached = recent_renames(workspace.root)
        _CACHE[workspace] = cached
    return cached


def renamed_from(renames: list[Rename], old: str, *, kinds: tuple[RenameKind, ...] | None = None) -> list[Rename]:
    """The renames whose old name is `old` (optionally of some kinds), newest first."""
    return [r for r in renames if r.old == old and (kinds is None or r.kind in kinds)]


def parse_patch_log(text: str) -> list[Rename]:
    """Renames in the output of `git log -p --unified=0 --format='commit %H'`."""
    found: list[Rename] = []
    for commit, path, removed, added in _hunks(text):
        found.extend(_pair(commit, path, removed, added))
    return found


def parse_name_status(text: str) -> list[Rename]:
    """File moves in the output of `git log --name-status -M --format='commit %H'`."""
    found: list[Rename] = []
    commit = ""
    for line in text.splitlines():
        if line.startswith(_COMMIT):
            commit = line[len(_COMMIT):].strip()
            continue
        cols = line.split("\t")
        if len(cols) == 3 and cols[0].startswith("R"):
            found.append(Rename(old=cols[1], new=cols[2], path=cols[2], commit=commit, kind="file"))
    return found


def _hunks(text: str) -> Iterator[tuple[str, str, list[str], list[str]]]:
    """(commit, path, removed lines, added lines) for each hunk."""
    commit, path = "", ""
    removed: list[str] = []
    added: list[str] = []
    for line in text.splitlines():
        if line.startswith((_COMMIT, "diff --git ", "@@")):
            if removed or added:
                yield commit, path, removed, added
            removed, added = [], []
            if line.startswith(_COMMIT):
                commit = line[len(_COMMIT):].strip()
        elif line.startswith("+++ "):
            target = line[4:].strip()
            path = target[2:] if target.startswith("b/") else target
        elif line.startswith("--- "):
            continue
        elif line.startswith("-"):
            removed.append(line[1:])
        elif line.startswith("+"):
            added.append(line[1:])
    if removed or added:
        yield commit, path, removed, added


def _pair(commit: str, path: str, removed: list[str], added: list[str]) -> Iterator[Rename]:
    """Pair removed definitions with added ones of the same kind, in order, within one hunk."""
    gone = [m for line in removed if (m := _DEF.match(line))]
    new = [m for line in added if (m := _DEF.match(line))]
    for kind in ("def", "class"):
        olds = [m for m in gone if m.group(1) == kind]
        news = [m for m in new if m.group(1) == kind]
        if len(olds) != len(news):
            continue  # definitions added or dropped, not renamed: pairing would be a guess
        for o, n in zip(olds, news, strict=True):
            old_name, new_name = o.group(2), n.group(2)
            if old_name != new_name:
                yield Rename(
                    old=old_name, new=new_name, path=path, commit=commit,
                    kind="function" if kind == "def" else "class",
                )
            elif kind == "def":
                yield from _param_renames(commit, path, new_name, o.group(3) or "", n.group(3) or "")


def _param_renames(commit: str, path: str, func: str, before: str, after: str) -> Iterator[Rename]:
    """A parameter that changed name in place (same position, same count) in a one-line signature."""
    olds, news = _param_names(before), _param_names(after)
    if len(olds) != len(news):
        return
    changed = [(o, n) for o, n in zip(olds, news, strict=True) if o != n]
    if len(changed) == 1:  # several changes at once look like a rewrite, not a rename
        o, n = changed[0]
        yield Rename(old=o, new=n, path=path, commit=commit, kind="parameter", scope=func)


def _param_names(params: str) -> list[str]:
    inner = params.strip().removeprefix("(").removesuffix(")")
    names = []
    for part in inner.split(","):
        m = re.match(r"\s*\**([A-Za-z_]\w*)", part)
        if m:
            names.append(m.group(1))
    return names


def _git(root: str | Path, args: list[str], timeout: float) -> str:
    command = [
        "git", "-c", "core.fsmonitor=false", "-c", "core.quotepath=off", "-c", "log.showSignature=false",
        "--no-pager", *args[:1], "--no-color", "--no-ext-diff", "--no-textconv", *args[1:],
    ]
    try:
        done = subprocess.run(command, cwd=root, capture_output=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    if done.returncode != 0:
        return ""
    return done.stdout.decode("utf-8", errors="replace")


__all__ = [
    "DEFAULT_COMMITS",
    "Rename",
    "parse_name_status",
    "parse_patch_log",
    "recent_renames",
    "renamed_from",
    "renames_for",
]
