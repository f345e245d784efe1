"""`cars repair` as a user runs it: a subprocess, no REDIS_URL (it starts its own platform with an
embedded Redis), a real broken git repository, and the one JSON object it prints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import CARS, free_port

SOURCE = "def total_price(prices):\n    return sum(prices)\n"
TEST = "from shop.cart import total_price\n\n\ndef test_total():\n    assert total_price([1, 2, 3]) == 6\n"


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=root, check=True,
                   capture_output=True)


def broken_repo(root: Path) -> Path:
    (root / "shop").mkdir(parents=True)
    (root / "tests").mkdir()
    (root / "shop" / "__init__.py").write_text("")
    (root / "shop" / "cart.py").write_text(SOURCE)
    (root / "tests" / "test_cart.py").write_text(TEST)
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "initial")
    (root / "shop" / "cart.py").write_text(SOURCE.replace("total_price", "cart_total"))
    git(root, "commit", "-qam", "refactor: total_price is now cart_total")
    return root


def cars_repair(repo: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(CARS_HOME=str(home), CARS_EMBEDDED_REDIS_PORT=str(free_port()), PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    return subprocess.run(
        [str(CARS), "repair", str(repo), "--test-cmd", f"{sys.executable} -m pytest -q -p no:cacheprovider", *args],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )


def test_cars_repair_json_apply_heals_the_repo_and_prints_one_json_object(tmp_path: Path) -> None:
    # Given a repository whose test broke in a rename refactor
    repo = broken_repo(tmp_path / "shop")
    # When `cars repair --apply --json` runs with no Redis configured
    done = cars_repair(repo, tmp_path / "home", "--apply", "--json")
    # Then it exits 0 and prints exactly one JSON object with the failure and its applied repair
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    # (the import fails at collection: the module is what failed)
    assert report["failures"] == [{"test_id": "tests/test_cart.py", "category": "renamed_symbol"}]
    [repair] = report["repairs"]
    assert (repair["status"], repair["strategy"], report["applied"]) == ("validated", "renamed_symbol", True)
    assert 0 < repair["confidence"] <= 1 and "+from shop.cart import cart_total" in repair["patch"]
    # And the progress went to stderr, and the test file (only) was fixed
    assert "published run.reported" in done.stderr
    assert (repo / "tests" / "test_cart.py").read_text() == TEST.replace("total_price", "cart_total")
    rerun = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=repo,
                           capture_output=True, timeout=120, check=False)
    assert rerun.returncode == 0


def test_cars_repair_on_a_green_repo_reports_nothing_to_do(tmp_path: Path) -> None:
    repo = broken_repo(tmp_path / "shop")
    (repo / "tests" / "test_cart.py").write_text(TEST.replace("total_price", "cart_total"))
    done = cars_repair(repo, tmp_path / "home", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"failures": [], "repairs": [], "applied": False}


def test_cars_repair_refuses_a_missing_folder(tmp_path: Path) -> None:
    done = cars_repair(tmp_path / "nope", tmp_path / "home")
    assert done.returncode == 2 and "not a folder" in done.stderr
