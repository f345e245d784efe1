"""Shipping a large workspace to a test Job as a git clone plus a patch.

A workspace whose tar.gz does not fit in one Secret is rebuilt in the pod instead: its init container
clones the repository's `origin` at the commit the sandbox was copied from, then applies the patch that
turns that commit into the sandbox (local changes, untracked files, and the candidate repair). Only the
patch travels in the Secret, so its size is the size of the changes, not of the repository.

The patch is computed without touching the user's repository: a temporary index and a temporary object
folder (with the repository's objects as an alternate) hold what `git add` writes.

Requirements, checked here or reported by the init container's log: the repository has an `origin` the
cluster can clone (credentials in the URL or the image are the operator's business), and the commit is
pushed there.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

from attrs import frozen

GIT_TIMEOUT_S = 120.0
SOURCE_FILE = "git-source.json"  # beside the sandbox's workspace folder
PATCH_KEY = "changes.patch"

#: The init container's script: $1 the workspace mount, $2 the folder with the patch.
CLONE_SCRIPT = """set -e
git clone --quiet --no-checkout "$CARS_GIT_URL" "$1"
git -C "$1" -c advice.detachedHead=false checkout --quiet "$CARS_GIT_COMMIT"
if [ -s "$2/changes.patch" ]; then git -C "$1" apply --binary --whitespace=nowarn "$2/changes.patch"; fi
"""


@frozen(kw_only=True)
class GitSource:
    """Where a sandbox's files came from: a repository's `origin` and the commit checked out there."""

    url: str
    commit: str
    repo: str  # the local repository (its objects make the patch)


def _git(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=GIT_TIMEOUT_S, check=False,
                          env=env)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.decode(errors="replace").strip() or f"git {args[0]} failed")
    return done.stdout.decode(errors="replace").strip()


def source_of(repo: Path) -> GitSource | None:
    """The repository's origin URL and HEAD commit; None when it is not a git repository with an origin."""
    try:
        top = Path(_git(repo, "rev-parse", "--show-toplevel")).resolve()
        url = _git(top, "remote", "get-url", "origin")
        commit = _git(top, "rev-parse", "HEAD")
    except (RuntimeError, OSError, subprocess.TimeoutExpired):
        return None
    return GitSource(url=url, commit=commit, repo=str(top)) if url and commit else None


def save_source(sandbox: Path, source: GitSource | None) -> None:
    if source is not None:
        (sandbox / SOURCE_FILE).write_text(json.dumps({"url": source.url, "commit": source.commit,
                                                       "repo": source.repo}))


def load_source(sandbox: Path) -> GitSource | None:
    try:
        data = json.loads((sandbox / SOURCE_FILE).read_text())
        return GitSource(url=str(data["url"]), commit=str(data["commit"]), repo=str(data["repo"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def patch_from(source: GitSource, workspace: Path) -> bytes:
    """A binary patch that turns `source.commit` into the files of `workspace` (the repository's
    .gitignore rules apply, as they do to its own working tree)."""
    git_dir = _git(Path(source.repo), "rev-parse", "--absolute-git-dir")
    with tempfile.TemporaryDirectory(prefix="cars-git-") as tmp:
        objects = Path(tmp) / "objects"
        objects.mkdir()
        env = {
            **os.environ, "GIT_DIR": git_dir, "GIT_WORK_TREE": str(workspace),
            "GIT_INDEX_FILE": str(Path(tmp) / "index"), "GIT_OBJECT_DIRECTORY": str(objects),
            "GIT_ALTERNATE_OBJECT_DIRECTORIES": str(Path(git_dir) / "objects"),
        }
        _git(workspace, "read-tree", source.commit, env=env)
        _git(workspace, "add", "--all", ".", env=env)
        done = subprocess.run(["git", "diff", "--cached", "--binary", source.commit], cwd=workspace, env=env,
                              capture_output=True, timeout=GIT_TIMEOUT_S, check=False)
        if done.returncode != 0:
            raise RuntimeError(done.stderr.decode(errors="replace").strip() or "git diff failed")
        return done.stdout


__all__ = ["CLONE_SCRIPT", "PATCH_KEY", "SOURCE_FILE", "GitSource", "load_source", "patch_from", "save_source",
           "source_of"]
