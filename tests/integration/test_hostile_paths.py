"""Paths from messages and patches never reach outside a project: the workspace refuses absolute paths,
`..` and symlinks that escape; a patch naming such a path is refused and writes nothing (real files, real
`git apply`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.healer.apply import apply_to_repo
from actors.patching import PatchError
from actors.validator.validate import validate_candidate
from actors.workspace import UnsafePath, Workspace

ESCAPE = """diff --git a/../outside.py b/../outside.py
new file mode 100644
--- /dev/null
+++ b/../outside.py
@@ -0,0 +1 @@
+pwned = True
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "tests").mkdir(parents=True)
    (root / "tests" / "test_a.py").write_text("def test_a():\n    assert True\n")
    (tmp_path / "secret.txt").write_text("outside\n")
    (root / "tests" / "link").symlink_to(tmp_path)  # a symlink that leads out of the project
    return root


@pytest.mark.parametrize("rel", ["/etc/passwd", "../secret.txt", "tests/../../secret.txt", "tests/link/secret.txt",
                                 "", "tests/\x00a.py"])
def test_the_workspace_refuses_paths_that_leave_it(project: Path, rel: str) -> None:
    ws = Workspace(project)
    with pytest.raises(UnsafePath):
        ws.resolve(rel)
    assert not ws.exists(rel)
    assert ws.read("tests/test_a.py").startswith("def test_a")


def test_listing_does_not_follow_a_symlink_out_of_the_project(project: Path) -> None:
    assert list(Workspace(project).python_files()) == ["tests/test_a.py"]


def test_a_patch_that_escapes_is_refused_and_writes_nothing(project: Path) -> None:
    with pytest.raises(PatchError):
        apply_to_repo(project, ESCAPE)
    assert not (project.parent / "outside.py").exists()


def test_the_validator_rejects_a_patch_that_escapes(project: Path) -> None:
    verdict = validate_candidate(project, patch=ESCAPE, test_id="tests/test_a.py::test_a",
                                 test_cmd="python -m pytest -q", reruns=1)
    assert not verdict.ok and "does not apply" in verdict.reason
    assert not (project.parent / "outside.py").exists()
