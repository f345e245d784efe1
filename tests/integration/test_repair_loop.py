"""The whole repair loop on small real repositories, one per failure class: a refactor of the SOURCE
breaks a test; `repair_session.repair` runs the real tests, publishes `run.reported` on real Redis,
and the real monitor, healer, validator and provisioner (local backend) work through the bus and a
real SQLite store until the repair is validated, applied, or refused for a reason.

Each repository is a git repo whose last commit is the refactor, as in real life.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bus.repair_session import SessionResult, repair
from bus.settings import Settings

TIMEOUT_S = 240.0


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=root, check=True,
                   capture_output=True)


def make_repo(root: Path, files: dict[str, str], refactor: dict[str, str | None]) -> Path:
    """A git repo with `files` committed, then a second commit applying `refactor` (None deletes)."""
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "initial")
    for rel, text in refactor.items():
        if text is None:
            (root / rel).unlink()
        else:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(text)
    git(root, "add", "-A")
    git(root, "commit", "-qm", "refactor")
    return root


def pytest_passes(root: Path) -> bool:
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=root,
                          capture_output=True, timeout=120, check=False)
    return done.returncode == 0


@pytest.fixture
def settings(redis_url: str, tmp_path: Path) -> Iterator[Settings]:
    # Only the CARS plugin in the projects' pytest runs: the venv's other plugins cost seconds per run.
    old = os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD")
    os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    yield Settings.from_env({"REDIS_URL": redis_url, "CARS_HOME": str(tmp_path / "cars-home"),
                             "CARS_CONSUMER": f"loop-{tmp_path.name}"})
    if old is None:
        os.environ.pop("PYTEST_DISABLE_PLUGIN_AUTOLOAD", None)
    else:
        os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = old


async def run_loop(settings: Settings, repo: Path, apply: bool = True) -> SessionResult:
    lines: list[str] = []
    result = await repair(settings, repo, test_cmd=f"{sys.executable} -m pytest -q -p no:cacheprovider",
                          project=repo.name, apply=apply, timeout_s=TIMEOUT_S, progress=lines.append)
    print("\n".join(lines))  # shown when a test fails
    assert not result.timed_out, lines
    return result


SHOP = {
    "shop/__init__.py": "",
    "shop/cart.py": (
        "def total_price(prices):\n    return sum(prices)\n\n\ndef count(prices):\n    return len(prices)\n"
    ),
    "tests/test_cart.py": (
        "from shop import cart\n\n\ndef test_total():\n    assert cart.total_price([1, 2, 3]) == 6\n\n\n"
        "def test_count():\n    assert cart.count([1, 2]) == 2\n"
    ),
}


def one(result: SessionResult) -> tuple[str, str, str | None, bool]:
    assert len(result.repairs) == 1, result.to_json()
    r = result.repairs[0]
    return r.category, r.status, r.strategy, r.applied


async def test_a_renamed_function_is_healed_and_applied(settings: Settings, tmp_path: Path) -> None:
    # Given a refactor that renamed total_price to cart_total
    repo = make_repo(tmp_path / "renamed", SHOP, {
        "shop/cart.py": SHOP["shop/cart.py"].replace("total_price", "cart_total")})
    assert not pytest_passes(repo)
    # When the loop runs with --apply
    result = await run_loop(settings, repo)
    # Then the failure is classified, a validated repair applied, and the suite passes again
    assert result.failures == [("tests/test_cart.py::test_total", "renamed_symbol")]
    assert one(result) == ("renamed_symbol", "validated", "renamed_symbol", True)
    assert "cart.cart_total([1, 2, 3])" in (repo / "tests/test_cart.py").read_text()
    assert (repo / "shop/cart.py").read_text() == SHOP["shop/cart.py"].replace("total_price", "cart_total")
    assert pytest_passes(repo)
    assert result.to_json()["applied"] is True


async def test_without_apply_the_validated_patch_is_reported_and_the_repo_left_alone(
    settings: Settings, tmp_path: Path
) -> None:
    repo = make_repo(tmp_path / "dry", SHOP, {"shop/cart.py": SHOP["shop/cart.py"].replace("total_price", "sum_of")})
    result = await run_loop(settings, repo, apply=False)
    _, status, _, applied = one(result)
    assert (status, applied) == ("validated", False)
    patch = result.repairs[0].patch
    assert patch is not None and "+    assert cart.sum_of([1, 2, 3]) == 6" in patch
    assert not pytest_passes(repo)  # nothing written


async def test_a_function_moved_to_another_module_is_healed(settings: Settings, tmp_path: Path) -> None:
    files = {**SHOP, "tests/test_cart.py": "from shop.cart import total_price\n\n\ndef test_total():\n"
                                          "    assert total_price([1, 2, 3]) == 6\n"}
    repo = make_repo(tmp_path / "moved", files, {
        "shop/cart.py": "def count(prices):\n    return len(prices)\n",
        "shop/pricing.py": "def total_price(prices):\n    return sum(prices)\n",
    })
    result = await run_loop(settings, repo)
    category, status, strategy, applied = one(result)
    assert category in ("import_error", "renamed_symbol")
    assert (status, strategy, applied) == ("validated", "import_path", True)
    assert "from shop.pricing import total_price" in (repo / "tests/test_cart.py").read_text()
    assert pytest_passes(repo)


async def test_a_renamed_keyword_parameter_is_healed(settings: Settings, tmp_path: Path) -> None:
    files = {
        "shop/__init__.py": "",
        "shop/cart.py": "def total(prices, discount=0):\n    return sum(prices) - discount\n",
        "tests/test_cart.py": "from shop.cart import total\n\n\ndef test_total():\n"
                              "    assert total([5, 5], discount=2) == 8\n",
    }
    repo = make_repo(tmp_path / "kwarg", files, {"shop/cart.py": files["shop/cart.py"].replace("discount", "rebate")})
    result = await run_loop(settings, repo)
    assert one(result) == ("signature_drift", "validated", "signature_drift", True)
    assert "total([5, 5], rebate=2)" in (repo / "tests/test_cart.py").read_text()
    assert pytest_passes(repo)


async def test_a_renamed_fixture_is_healed(settings: Settings, tmp_path: Path) -> None:
    files = {
        "shop/__init__.py": "",
        "shop/cart.py": "class Cart:\n    def __init__(self):\n        self.items = []\n\n"
                        "    def add(self, price):\n        self.items.append(price)\n        return sum(self.items)\n",
        "tests/conftest.py": "import pytest\n\nfrom shop.cart import Cart\n\n\n@pytest.fixture\ndef cart():\n"
                             "    return Cart()\n",
        "tests/test_cart.py": "def test_add(cart):\n    assert cart.add(3) == 3\n    assert cart.add(4) == 7\n",
    }
    repo = make_repo(tmp_path / "fixture", files, {
        "tests/conftest.py": files["tests/conftest.py"].replace("def cart()", "def empty_cart()")})
    result = await run_loop(settings, repo)
    assert one(result) == ("fixture_missing", "validated", "fixture_rename", True)
    assert "def test_add(empty_cart):" in (repo / "tests/test_cart.py").read_text()
    assert pytest_passes(repo)


async def test_a_changed_message_is_healed_only_with_approval(settings: Settings, tmp_path: Path) -> None:
    files = {
        "app/__init__.py": "",
        "app/greet.py": "def greet(name):\n    return 'Hello, ' + name\n",
        "tests/test_greet.py": "from app.greet import greet\n\n\ndef test_greet():\n"
                               "    assert greet('Ada') == 'Hello, Ada'\n",
    }
    repo = make_repo(tmp_path / "message", files, {
        "app/greet.py": "def greet(name):\n    return 'Welcome, ' + name + '!'\n"})
    result = await run_loop(settings, repo)  # --apply approves it
    assert one(result) == ("assertion_drift", "validated", "assertion_drift", True)
    assert "== 'Welcome, Ada!'" in (repo / "tests/test_greet.py").read_text()
    assert pytest_passes(repo)


async def test_a_reworded_exception_message_is_healed_with_approval(settings: Settings, tmp_path: Path) -> None:
    # Given an error message reworded in the code, which a `pytest.raises(match=...)` still expects
    files = {
        "app/__init__.py": "",
        "app/version.py": "def index(i):\n    if i < 0:\n        raise ValueError('index cannot be negative')\n"
                          "    return i\n",
        "tests/test_version.py": "import pytest\n\nfrom app.version import index\n\n\ndef test_negative():\n"
                                 "    with pytest.raises(ValueError, match=r'index cannot be negative'):\n"
                                 "        index(-1)\n\n\ndef test_positive():\n    assert index(2) == 2\n",
    }
    repo = make_repo(tmp_path / "raises", files, {
        "app/version.py": files["app/version.py"].replace("cannot be negative", "must not be negative (got it)")})
    # When the loop runs with --apply (which approves it)
    result = await run_loop(settings, repo)
    # Then the expected message is the one the code gives now, written as a pattern that matches it
    assert one(result) == ("assertion_drift", "validated", "assertion_drift", True)
    text = (repo / "tests/test_version.py").read_text()
    assert "match=r'index must not be negative \\(got it\\)'" in text, text
    assert pytest_passes(repo)


async def test_a_product_regression_is_never_healed(settings: Settings, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "regression", SHOP, {
        "shop/cart.py": "def total_price(prices):\n    return sum(prices) / 0\n\n\ndef count(prices):\n"
                        "    return len(prices)\n"})
    result = await run_loop(settings, repo)
    category, status, strategy, applied = one(result)
    assert (category, status, strategy, applied) == ("product_regression", "abandoned", None, False)
    assert (repo / "tests/test_cart.py").read_text() == SHOP["tests/test_cart.py"]


async def test_an_infrastructure_failure_starts_no_heal(settings: Settings, tmp_path: Path) -> None:
    files = {
        "tests/test_db.py": "import socket\n\n\ndef test_db():\n"
                            "    socket.create_connection(('127.0.0.1', 9), timeout=2).close()\n\n\n"
                            "def test_math():\n    assert 1 + 1 == 2\n",
    }
    repo = make_repo(tmp_path / "infra", files, {"README": "refactor\n"})
    result = await run_loop(settings, repo)
    assert result.failures == [] or one(result)[:2] == ("environment", "abandoned")
    assert (repo / "tests/test_db.py").read_text() == files["tests/test_db.py"]


async def test_a_timeout_is_healed_by_raising_the_explicit_limit(settings: Settings, tmp_path: Path) -> None:
    files = {
        "jobs/__init__.py": "",
        "jobs/fetch.py": (
            "import time\n\n\ndef fetch(timeout):\n    started = time.monotonic()\n    time.sleep(0.05)\n"
            "    if time.monotonic() - started > timeout:\n"
            "        raise TimeoutError(f'fetch took longer than {timeout}s')\n"
            "    return 'data'\n"
        ),
        "tests/test_fetch.py": "from jobs.fetch import fetch\n\n\ndef test_fetch():\n"
                               "    assert fetch(timeout=0.2) == 'data'\n",
    }
    # Given a refactor that made the fetch slower than the test's explicit limit
    repo = make_repo(tmp_path / "timeout", files, {
        "jobs/fetch.py": files["jobs/fetch.py"].replace("time.sleep(0.05)", "time.sleep(0.3)")})
    result = await run_loop(settings, repo)
    category, status, strategy, applied = one(result)
    assert (category, status, strategy) == ("timeout", "validated", "timeout")
    assert applied  # --apply approves it
    assert "fetch(timeout=0.2)" not in (repo / "tests/test_fetch.py").read_text()
    assert "sleep" not in (repo / "tests/test_fetch.py").read_text()
    assert pytest_passes(repo)


async def test_a_module_renamed_in_a_refactor_is_healed(settings: Settings, tmp_path: Path) -> None:
    files = {**SHOP, "tests/test_cart.py": "from shop.cart import total_price\n\n\ndef test_total():\n"
                                          "    assert total_price([1, 2, 3]) == 6\n"}
    repo = make_repo(tmp_path / "module", files, {"shop/cart.py": None, "shop/basket.py": SHOP["shop/cart.py"]})
    result = await run_loop(settings, repo)
    category, status, strategy, applied = one(result)
    assert (category, status, strategy, applied) == ("import_error", "validated", "import_path", True)
    assert "from shop.basket import total_price" in (repo / "tests/test_cart.py").read_text()
    assert pytest_passes(repo)


async def test_a_flaky_test_is_quarantined_never_healed(settings: Settings, tmp_path: Path) -> None:
    from bus.repair_session import git_commit, submit
    from contracts.runs import RunReported
    from contracts.values import FailureEvidence, Outcome, TestResult

    # Given a test that CI saw fail and pass on the same commit
    repo = make_repo(tmp_path / "flaky", {
        "tests/test_net.py": "def test_sometimes():\n    assert True\n\n\ndef test_always():\n    assert 1\n",
    }, {"README": "x\n"})
    commit = git_commit(repo)
    evidence = FailureEvidence(exception_type="AssertionError", message="assert 'pending' == 'done'",
                               file="tests/test_net.py", line=2, failing_frame="tests/test_net.py:2 in test_sometimes")

    def report(run_id: str, failed: bool) -> RunReported:
        outcome = Outcome.FAILED if failed else Outcome.PASSED
        return RunReported(
            project="flaky", run_id=run_id, commit=commit, repo_path=str(repo), source="ci", auto_apply=True,
            test_cmd=f"{sys.executable} -m pytest -q -p no:cacheprovider",
            results=(TestResult(test_id="tests/test_net.py::test_sometimes", outcome=outcome,
                                evidence=evidence if failed else None),
                     TestResult(test_id="tests/test_net.py::test_always", outcome=Outcome.PASSED)),
        )

    lines: list[str] = []
    progress = lambda line: print(line, flush=True)  # noqa: E731
    for run_id, failed in (("ci-1", True), ("ci-2", False)):
        await submit(settings, report(run_id, failed), apply=True, timeout_s=60, progress=progress)
    # When it fails again on that commit
    result = await submit(settings, report("ci-3", True), apply=True, timeout_s=60, progress=progress)
    print("\n".join(lines))
    # Then it is classified flaky and quarantined (a labelled outcome), and the quarantine file is written
    assert result.failures == [("tests/test_net.py::test_sometimes", "flaky")], lines
    assert one(result)[:3] == ("flaky", "validated", "flaky_quarantine")
    assert result.repairs[0].detail.startswith("quarantined")
    assert "tests/test_net.py::test_sometimes" in (repo / ".cars-quarantine").read_text()
    assert (repo / "tests/test_net.py").read_text().startswith("def test_sometimes():\n    assert True")


async def test_failures_hidden_by_a_collection_error_are_repaired_in_a_second_round(
    settings: Settings, tmp_path: Path
) -> None:
    # Given a rename that breaks one module at import (pytest stops at the collection error, hiding
    # the rest) and another module's test at run time
    files = {**SHOP,
             "tests/test_a.py": "from shop.cart import total_price\n\n\ndef test_a():\n"
                                "    assert total_price([2]) == 2\n",
             "tests/test_b.py": "from shop import cart\n\n\ndef test_b():\n    assert cart.total_price([3]) == 3\n"}
    repo = make_repo(tmp_path / "hidden", files, {
        "shop/cart.py": SHOP["shop/cart.py"].replace("total_price", "cart_total")})
    # When the loop runs with --apply
    result = await run_loop(settings, repo)
    # Then both are found and repaired, in two rounds, and the whole suite passes
    ids = {test_id for test_id, _ in result.failures}
    assert "tests/test_a.py" in ids and "tests/test_b.py::test_b" in ids, result.to_json()
    assert all(r.status == "validated" and r.applied for r in result.repairs), result.to_json()
    assert pytest_passes(repo)


async def test_repairs_whose_patches_overlap_are_proposed_again_and_all_applied(
    settings: Settings, tmp_path: Path
) -> None:
    # Given a fixture rename that breaks three adjacent tests of one file: their validated patches
    # overlap, so once the first is applied the others no longer apply as validated
    files = {
        "tests/conftest.py": "import pytest\n\n\n@pytest.fixture\ndef storage():\n    return {}\n",
        "tests/test_store.py": "".join(
            f"def test_{n}(storage):\n    storage['{n}'] = 1\n    assert storage == {{'{n}': 1}}\n\n\n"
            for n in ("a", "b", "c")),
    }
    repo = make_repo(tmp_path / "overlap", files, {
        "tests/conftest.py": files["tests/conftest.py"].replace("def storage()", "def memory_storage()")})
    # When the loop runs with --apply
    result = await run_loop(settings, repo)
    # Then every test is repaired (some in a second proposal), nothing is claimed that is not true,
    # and the suite passes
    assert {r.status for r in result.repairs} == {"validated"}, result.to_json()
    assert all(r.applied for r in result.repairs)
    assert pytest_passes(repo)
