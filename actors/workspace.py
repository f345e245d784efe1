"""A project's source tree as actors see it: safe relative paths, Python files, test files.

Every path that comes from a message (a test id, a file named in evidence, a file in a patch) is
relative to the workspace root and is resolved through `Workspace.resolve`, which refuses absolute
paths, `..` escapes and symlinks that lead outside the root.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath

from actors.errors import Rejected

# Folders never indexed: version control, virtualenvs, caches, build output, dependencies.
SKIP_DIRS = frozenset({
    ".git", ".hg", ".svn", ".venv", "venv", "env", ".env", ".tox", ".nox", "node_modules", "__pycache__",
    ".mypy_cache", ".pytest_cache", ".ruff_cache", "build", "dist", "site-packages", ".eggs", ".cars",
})
# Largest source file read; bigger files are skipped, not truncated.
MAX_SOURCE_BYTES = 2 * 1024 * 1024
DEFAULT_TEST_GLOBS = ("test_*.py", "*_test.py", "conftest.py", "tests/**/*.py", "test/**/*.py")


class UnsafePath(Rejected):
    """A path from input points outside the workspace."""


class Workspace:
    """The root folder of one copy of a project (the user's repo, or a sandbox copy of it)."""

    def __init__(self, root: str | Path, test_globs: Sequence[str] = DEFAULT_TEST_GLOBS) -> None:
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise FileNotFoundError(f"workspace {self.root} is not a folder")
        self.test_globs = tuple(test_globs)

    def resolve(self, rel: str) -> Path:
        """The absolute path of `rel`, which must stay inside the root."""
        if not rel or "\x00" in rel:
            raise UnsafePath(f"empty or NUL-containing path {rel!r}")
        pure = PurePosixPath(rel.replace("\\", "/"))
        if pure.is_absolute() or ".." in pure.parts:
            raise UnsafePath(f"path {rel!r} must be relative to the workspace and must not contain '..'")
        path = (self.root / pure).resolve()
        if path != self.root and self.root not in path.parents:
            raise UnsafePath(f"path {rel!r} leads outside the workspace (through a symlink)")
        return path

    def relative(self, path: str | Path) -> str:
        """`path` (absolute or relative to the root) as a POSIX path relative to the root."""
        p = Path(path)
        if not p.is_absolute():
            return self.resolve(str(p)).relative_to(self.root).as_posix()
        resolved = p.resolve()
        if resolved != self.root and self.root not in resolved.parents:
            raise UnsafePath(f"path {str(path)!r} is outside the workspace")
        return resolved.relative_to(self.root).as_posix()

    def exists(self, rel: str) -> bool:
        try:
            return self.resolve(rel).is_file()
        except UnsafePath:
            return False

    def read(self, rel: str) -> str:
        """The text of a file (UTF-8; undecodable bytes replaced)."""
        path = self.resolve(rel)
        if path.stat().st_size > MAX_SOURCE_BYTES:
            raise Rejected(f"{rel} is larger than {MAX_SOURCE_BYTES} bytes")
        return path.read_text(encoding="utf-8", errors="replace")

    def write(self, rel: str, text: str) -> None:
        path = self.resolve(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")

    def python_files(self) -> Iterator[str]:
        """Every `.py` file under the root (relative POSIX paths, sorted), skipping SKIP_DIRS."""
        for path in sorted(self._walk(self.root)):
            if path.suffix == ".py":
                yield path.relative_to(self.root).as_posix()

    def is_test_file(self, rel: str) -> bool:
        """Whether `rel` counts as test code (the project's test globs; conftest.py always does)."""
        name = PurePosixPath(rel).name
        return name == "conftest.py" or any(
            fnmatch.fnmatch(rel, g) or fnmatch.fnmatch(name, g) or fnmatch.fnmatch(rel, f"*/{g}")
            for g in self.test_globs
        )

    def test_files(self) -> list[str]:
        return [f for f in self.python_files() if self.is_test_file(f)]

    def source_files(self) -> list[str]:
        """Python files that are not tests: the code under test."""
        return [f for f in self.python_files() if not self.is_test_file(f)]

    def _walk(self, folder: Path) -> Iterator[Path]:
        try:
            entries = list(folder.iterdir())
        except OSError:
            return
        for entry in entries:
            if entry.is_symlink():
                continue  # never follow links out of (or around) the tree
            if entry.is_dir():
                if entry.name not in SKIP_DIRS and not entry.name.endswith(".egg-info"):
                    yield from self._walk(entry)
            elif entry.is_file():
                yield entry


def split_test_id(test_id: str) -> tuple[str, str]:
    """`tests/test_a.py::TestX::test_y[p]` -> (`tests/test_a.py`, `TestX::test_y[p]`)."""
    file, _, rest = test_id.partition("::")
    return file, rest


__all__ = ["DEFAULT_TEST_GLOBS", "SKIP_DIRS", "UnsafePath", "Workspace", "split_test_id"]
