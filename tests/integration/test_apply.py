"""Writing a validated patch into a real git repository (actors/healer/apply.py), and the project's
CARS configuration (actors/projectconfig.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from actors.healer.apply import apply_to_repo
from actors.healer.ranking import Record, calibrated, rank
from actors.healer.strategy import Proposal
from actors.patching import FileEdit, PatchError, make_patch
from actors.projectconfig import ProjectConfigError, load_project_config
from contracts.values import FailureClass

OLD = "def test_total():\n    assert total_price([1]) == 1\n"
NEW = OLD.replace("total_price", "cart_total")


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_cart.py").write_text(OLD)
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "-A")
    git(tmp_path, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init")
    return tmp_path


PATCH = make_patch([FileEdit(path="tests/test_cart.py", before=OLD, after=NEW)])


def test_a_patch_goes_into_the_working_tree_and_a_redelivery_is_recognised(repo: Path) -> None:
    # When the patch is applied to the working tree
    done = apply_to_repo(repo, PATCH)
    # Then the file changed, and nothing was committed
    assert done.files == ("tests/test_cart.py",) and done.branch is None
    assert (repo / "tests" / "test_cart.py").read_text() == NEW
    assert git(repo, "status", "--short") == "M tests/test_cart.py"
    # And applying it again (a redelivered message) is recognised as done, not an error
    assert apply_to_repo(repo, PATCH).files == ("tests/test_cart.py",)
    assert (repo / "tests" / "test_cart.py").read_text() == NEW


def test_a_patch_that_does_not_fit_is_refused_and_nothing_is_written(repo: Path) -> None:
    (repo / "tests" / "test_cart.py").write_text("something else entirely\n")
    with pytest.raises(PatchError):
        apply_to_repo(repo, PATCH)
    assert (repo / "tests" / "test_cart.py").read_text() == "something else entirely\n"


def test_a_patch_on_a_branch_leaves_the_working_tree_and_current_branch_alone(repo: Path) -> None:
    head = git(repo, "rev-parse", "HEAD")
    branch_before = git(repo, "rev-parse", "--abbrev-ref", "HEAD")
    # When applied on a new branch with an evidence-carrying message
    done = apply_to_repo(repo, PATCH, branch="cars/repair-1234", message="CARS: repair test_total\n\nEvidence: 3/3\n")
    # Then the branch holds one commit on top of HEAD with the change and the message
    assert done.branch == "cars/repair-1234" and done.commit
    assert git(repo, "rev-parse", "cars/repair-1234") == done.commit
    assert git(repo, "rev-parse", f"{done.commit}^") == head
    assert git(repo, "show", f"{done.commit}:tests/test_cart.py") + "\n" == NEW
    assert "Evidence: 3/3" in git(repo, "log", "-1", "--format=%B", done.commit)
    # And the user's working tree, index and branch are untouched
    assert (repo / "tests" / "test_cart.py").read_text() == OLD
    assert git(repo, "status", "--short") == ""
    assert git(repo, "rev-parse", "--abbrev-ref", "HEAD") == branch_before


def test_calibration_moves_a_strategys_confidence_towards_its_record() -> None:
    assert calibrated(0.5, None) == 0.5
    assert calibrated(0.5, Record(validated=12, rejected=0)) > 0.85
    assert calibrated(0.9, Record(validated=0, rejected=12)) < 0.25
    good = Proposal(strategy="good", confidence=0.6, edits=(), explanation="")
    bad = Proposal(strategy="bad", confidence=0.7, edits=(), explanation="")
    stats = {(FailureClass.RENAMED_SYMBOL, "good"): Record(validated=10), (FailureClass.RENAMED_SYMBOL, "bad"):
             Record(rejected=10)}
    ranked = rank([bad, good], FailureClass.RENAMED_SYMBOL, stats)
    assert [p.strategy for p in ranked] == ["good", "bad"]
    # Another class's record changes nothing
    assert [p.strategy for p in rank([bad, good], FailureClass.TIMEOUT, stats)] == ["bad", "good"]


def test_project_config_is_read_from_pyproject_and_cars_toml_wins(tmp_path: Path) -> None:
    assert load_project_config(tmp_path).test_cmd == "python -m pytest -q"
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n[tool.cars]\ntest_cmd = "pytest -x"\nauto_apply = ["timeout"]\ngit_branch = true\n')
    config = load_project_config(tmp_path)
    assert (config.test_cmd, config.auto_apply, config.git_branch) == (
        "pytest -x", frozenset({FailureClass.TIMEOUT}), True)
    (tmp_path / "cars.toml").write_text('test_cmd = "make test"\n')
    assert load_project_config(tmp_path).test_cmd == "make test"


@pytest.mark.parametrize(("text", "expected"), [
    ('[tool.cars]\ntest_cmdd = "x"\n', "extra fields found (test_cmdd) @ [tool.cars]"),
    ('[tool.cars]\nauto_apply = ["bogus"]\n', "'bogus' is not a valid FailureClass @ [tool.cars].auto_apply[0]"),
    ('[tool.cars]\nreruns = 0\n', "'reruns' must be >= 1"),
    ("[tool.cars\n", "not valid TOML"),
])
def test_a_bad_project_config_names_the_file_and_the_key(tmp_path: Path, text: str, expected: str) -> None:
    (tmp_path / "pyproject.toml").write_text(text)
    with pytest.raises(ProjectConfigError) as err:
        load_project_config(tmp_path)
    assert expected in str(err.value) and "pyproject.toml" in str(err.value)


def test_repairs_of_one_file_apply_one_after_another_sharing_an_identical_change(tmp_path: Path) -> None:
    # Given two repairs validated against the same file: both rewrite the import, each fixes its own test
    lines = [f"line{i}\n" for i in range(40)]
    original = "".join(lines)
    (tmp_path / "test_x.py").write_text(original)

    def repair(at: int, text: str) -> str:
        changed = lines.copy()
        changed[1], changed[at] = "from shop.v2 import cart\n", text
        return make_patch([FileEdit(path="test_x.py", before=original, after="".join(changed))])

    first, second = repair(10, "fix A\n"), repair(30, "fix B\n")
    # When both are applied in turn
    apply_to_repo(tmp_path, first)
    apply_to_repo(tmp_path, second)
    # Then the shared change is made once and both fixes are in
    result = (tmp_path / "test_x.py").read_text().splitlines()
    assert (result[1], result[10], result[30]) == ("from shop.v2 import cart", "fix A", "fix B")
    assert result.count("from shop.v2 import cart") == 1
    # And a third repair that changes one of the same lines differently is refused, writing nothing
    with pytest.raises(PatchError, match="changed since it was validated"):
        apply_to_repo(tmp_path, repair(10, "fix C\n"))
    assert (tmp_path / "test_x.py").read_text().splitlines()[10] == "fix A"
