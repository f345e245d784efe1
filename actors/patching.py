"""Patches to test code: made from whole-file edits, carried as unified diffs, applied with `git apply`.

A candidate repair is a set of `FileEdit`s (the file before and after). On the wire and in the store it
is one unified diff (`HealProposed.patch`), which any reviewer, `git apply` or `patch -p1` can use.
`apply_patch` uses `git apply`, which refuses paths outside the target folder and works in folders that
are not git repositories.
"""

from __future__ import annotations

import difflib
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path

from attrs import frozen

from actors.errors import ActorError

_DIFF_PATH = re.compile(r"^\+\+\+ b/(.+)$", re.MULTILINE)


class PatchError(ActorError):
    """A patch does not apply to the workspace (it was made against other content, or is malformed)."""


@frozen(kw_only=True)
class FileEdit:
    """One file's content before and after a repair. `path` is relative to the workspace root."""

    path: str
    before: str
    after: str
    #: The file does not exist yet (before == ""): the diff creates it.
    new_file: bool = False


def make_patch(edits: Sequence[FileEdit]) -> str:
    """A unified diff (git style, `a/` and `b/` prefixes) of every edit that changes something."""
    chunks: list[str] = []
    for edit in sorted(edits, key=lambda e: e.path):
        if edit.before == edit.after:
            continue
        before = edit.before.splitlines(keepends=True)
        after = edit.after.splitlines(keepends=True)
        old = "/dev/null" if edit.new_file else f"a/{edit.path}"
        diff = list(difflib.unified_diff(before, after, old, f"b/{edit.path}", n=3))
        # difflib leaves a last line without its newline as is; git wants the marker line.
        chunks.append(f"diff --git a/{edit.path} b/{edit.path}\n")
        if edit.new_file:
            chunks.append("new file mode 100644\n")
        for line in diff:
            chunks.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    return "".join(chunks)


def patch_files(patch: str) -> list[str]:
    """The files a unified diff changes (relative paths, in order)."""
    return list(dict.fromkeys(_DIFF_PATH.findall(patch)))


def apply_patch(root: str | Path, patch: str, *, check_only: bool = False, reverse: bool = False) -> list[str]:
    """Apply `patch` to the folder `root` (undo it with `reverse`); returns the files it changed.
    Raises PatchError."""
    if not patch.strip():
        raise PatchError("empty patch")
    args = ["git", "apply", "--whitespace=nowarn", "--recount"]
    if check_only:
        args.append("--check")
    if reverse:
        args.append("--reverse")
    done = subprocess.run(
        [*args, "-"], cwd=root, input=patch.encode(), capture_output=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise PatchError(done.stderr.decode(errors="replace").strip() or f"git apply exited {done.returncode}")
    return patch_files(patch)


__all__ = ["FileEdit", "PatchError", "apply_patch", "make_patch", "patch_files"]
