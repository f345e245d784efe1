"""Writing a validated patch into the user's repository.

Two ways, by the project's `git_branch` setting:

- into the working tree (`git apply`, checked first so that nothing is half-written);
- onto a new branch `cars/repair-<id>` with a commit whose message carries the evidence, built with a
  temporary index so the user's working tree, index and current branch are left untouched.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

from attrs import frozen

from actors.patching import PatchError, apply_patch, patch_files

GIT_TIMEOUT_S = 60


@frozen(kw_only=True)
class Applied:
    files: tuple[str, ...]
    branch: str | None = None
    commit: str | None = None


def apply_to_repo(repo: str | Path, patch: str, *, branch: str | None = None, message: str = "") -> Applied:
    """Apply `patch` to the repository at `repo`: to its working tree, or as a commit on `branch`."""
    root = Path(repo)
    if branch is None or not _is_git(root):
        try:
            apply_patch(root, patch, check_only=True)
        except PatchError:
            if _already_applied(root, patch):  # a redelivery after the write, before it was recorded
                return Applied(files=tuple(patch_files(patch)))
            return Applied(files=tuple(_apply_hunks(root, patch)))
        return Applied(files=tuple(apply_patch(root, patch)))
    with tempfile.TemporaryDirectory(prefix="cars-index-") as tmp:
        env = {**os.environ, "GIT_INDEX_FILE": str(Path(tmp) / "index")}
        _git(root, ["read-tree", "HEAD"], env)
        _git(root, ["apply", "--cached", "--whitespace=nowarn", "--recount", "-"], env, stdin=patch)
        tree = _git(root, ["write-tree"], env)
        author = {"GIT_AUTHOR_NAME": "CARS", "GIT_AUTHOR_EMAIL": "cars@localhost",
                  "GIT_COMMITTER_NAME": "CARS", "GIT_COMMITTER_EMAIL": "cars@localhost"}
        commit = _git(root, ["commit-tree", tree, "-p", "HEAD", "-F", "-"], {**env, **author},
                      stdin=message or "CARS repair")
        _git(root, ["branch", "--force", branch, commit], env)

    return Applied(files=tuple(patch_files(patch)), branch=branch, commit=commit)


def split_hunks(patch: str) -> list[str]:
    """One single-hunk patch (with its file header) per hunk of `patch`."""
    pieces: list[str] = []
    header: list[str] = []
    hunk: list[str] = []
    for line in patch.splitlines(keepends=True):
        if line.startswith("diff --git "):
            if hunk:
                pieces.append("".join(header + hunk))
            header, hunk = [line], []
        elif line.startswith("@@"):
            if hunk:
                pieces.append("".join(header + hunk))
            hunk = [line]
        elif hunk:
            hunk.append(line)
        else:
            header.append(line)
    if hunk:
        pieces.append("".join(header + hunk))
    return pieces


def _apply_hunks(root: Path, patch: str) -> list[str]:
    """Apply a patch whose file moved on since it was validated, hunk by hunk: a hunk another repair
    already made (several repairs of one test file often make the same import change) is skipped;
    any other hunk must apply cleanly, or nothing is written."""
    hunks = split_hunks(patch)
    todo = []
    for piece in hunks:
        try:
            apply_patch(root, piece, check_only=True)
            todo.append(piece)
        except PatchError:
            if not _already_applied(root, piece):
                raise PatchError(
                    "the patch no longer applies: the file changed since it was validated, in the same lines"
                ) from None
    # Checked one by one against the same tree, so apply them together, as one patch, atomically.
    if todo:
        apply_patch(root, "".join(todo))
    return patch_files(patch)


def _already_applied(root: Path, patch: str) -> bool:
    """Whether the files already hold what `patch` makes (it would undo cleanly)."""
    try:
        apply_patch(root, patch, check_only=True, reverse=True)
    except PatchError:
        return False
    return True


def _is_git(root: Path) -> bool:
    done = subprocess.run(["git", "rev-parse", "--verify", "HEAD"], cwd=root, capture_output=True,
                          timeout=GIT_TIMEOUT_S, check=False)
    return done.returncode == 0


def _git(root: Path, args: list[str], env: Mapping[str, str], stdin: str | None = None) -> str:
    done = subprocess.run(["git", *args], cwd=root, env=dict(env), input=(stdin or "").encode(),
                          capture_output=True, timeout=GIT_TIMEOUT_S, check=False)
    if done.returncode != 0:
        raise PatchError(f"git {args[0]}: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout.decode().strip()


__all__ = ["Applied", "apply_to_repo"]
