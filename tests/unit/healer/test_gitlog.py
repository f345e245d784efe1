"""Renames read from a real git history (real git subprocesses)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from actors.healer.gitlog import Rename, parse_patch_log, recent_renames, renamed_from, renames_for
from tests.unit.healer.strategy_kit import commit_all, git, make_workspace

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _history(root: Path) -> None:
    git(root, "init", "-q")
    cart = root / "shop" / "cart.py"
    cart.parent.mkdir(parents=True)
    cart.write_text("def total(items, qty=1):\n    return 1\n\n\nclass Cart:\n    pass\n")
    commit_all(root, "first")
    cart.write_text("def grand_total(items, qty=1):\n    return 1\n\n\nclass Basket:\n    pass\n")
    commit_all(root, "rename function and class")
    cart.write_text("def grand_total(items, quantity=1):\n    return 1\n\n\nclass Basket:\n    pass\n")
    commit_all(root, "rename parameter")
    git(root, "mv", "shop/cart.py", "shop/basket.py")
    commit_all(root, "move file")


def test_renames_of_functions_classes_parameters_and_files_are_found(tmp_path: Path) -> None:
    # Given a repository whose history renames a function, a class, a parameter, and moves the file
    _history(tmp_path)
    # When recent renames are read
    found = {(r.kind, r.old, r.new, r.path, r.scope) for r in recent_renames(tmp_path)}
    # Then each rename is reported once, with the file it happened in
    assert found == {
        ("function", "total", "grand_total", "shop/cart.py", None),
        ("class", "Cart", "Basket", "shop/cart.py", None),
        ("parameter", "qty", "quantity", "shop/cart.py", "grand_total"),
        ("file", "shop/cart.py", "shop/basket.py", "shop/basket.py", None),
    }
    assert all(len(r.commit) == 40 for r in recent_renames(tmp_path))


def test_no_repository_means_no_renames(tmp_path: Path) -> None:
    # Given a folder that is not a git repository
    ws = make_workspace(tmp_path, {"shop/cart.py": "def total(): pass\n"})
    # Then no renames are reported (and no error is raised)
    assert renames_for(ws) == []


def test_added_or_removed_definitions_are_not_paired_as_renames() -> None:
    # Given a hunk that removes one def and adds two
    log = (
        "commit abc\n"
        "diff --git a/m.py b/m.py\n--- a/m.py\n+++ b/m.py\n@@ -1 +1,2 @@\n"
        "-def old():\n+def new_one():\n+def new_two():\n"
    )
    # Then nothing is paired
    assert parse_patch_log(log) == []


def test_renamed_from_filters_by_old_name_and_kind() -> None:
    renames = [
        Rename(old="a", new="b", path="m.py", commit="c1", kind="function"),
        Rename(old="a", new="z", path="m.py", commit="c2", kind="parameter", scope="f"),
    ]
    assert [r.new for r in renamed_from(renames, "a", kinds=("function",))] == ["b"]
    assert [r.new for r in renamed_from(renames, "a")] == ["b", "z"]
