"""fixture_rename: a test requests the fixture its missing one became."""

from __future__ import annotations

from pathlib import Path

from actors.healer.strategies.fixture_rename import FixtureRename
from contracts.values import FailureClass
from tests.unit.healer.strategy_kit import apply, commit_all, git, make_failure, make_workspace

CONFTEST = "import pytest\n\n\n@pytest.fixture\ndef db_session():\n    return 1\n"
TEST = (
    "import pytest\n\n\n"
    "@pytest.mark.usefixtures('db_sesion')\n"
    "def test_query(db_sesion, tmp_path):\n"
    "    \"\"\"db_sesion stays in this docstring\"\"\"\n"
    "    assert db_sesion.query(db_sesion=1)\n\n\n"
    "def test_other(db_sesion):\n    assert db_sesion\n"
)
AVAILABLE = ("cache", "capsys", "db_session", "monkeypatch", "tmp_path")


def _not_found(name: str, line: int) -> str:
    return (
        f"file /ci/shop/tests/test_db.py, line {line}\n  def test_query({name}, tmp_path):\n"
        f"E       fixture '{name}' not found\n>       available fixtures: {', '.join(AVAILABLE)}\n"
        ">       use 'pytest --fixtures [testpath]' for help on them."
    )


def test_the_parameter_and_its_uses_are_renamed_in_the_requesting_test_only(tmp_path: Path) -> None:
    # Given the fixture db_sesion is now db_session
    ws = make_workspace(tmp_path, {"tests/conftest.py": CONFTEST, "tests/test_db.py": TEST})
    failure = make_failure(
        FailureClass.FIXTURE_MISSING, "tests/test_db.py::test_query", message=_not_found("db_sesion", 5),
        file="/ci/shop/tests/test_db.py", line=5, fixtures_available=AVAILABLE,
    )
    strategy = FixtureRename()
    # When the strategy proposes
    assert strategy.applies(failure)
    proposals = strategy.propose(failure, ws)
    # Then test_query's parameter, uses and usefixtures string change; the keyword, docstring and test_other do not
    expected = TEST.replace("usefixtures('db_sesion')", "usefixtures('db_session')").replace(
        "def test_query(db_sesion,", "def test_query(db_session,"
    ).replace("assert db_sesion.query", "assert db_session.query")
    assert apply(ws, proposals[0]) == {"tests/test_db.py": expected}


def test_a_fixture_renamed_in_git_history_is_preferred(tmp_path: Path) -> None:
    # Given history renamed fixture `conn` to `database` (dissimilar), while `connection_pool` also exists
    make_workspace(tmp_path, {"tests/conftest.py": "import pytest\n\n\n@pytest.fixture\ndef conn():\n    return 1\n"})
    git(tmp_path, "init", "-q")
    commit_all(tmp_path, "first")
    test = "def test_q(conn):\n    assert conn\n"
    ws = make_workspace(tmp_path, {
        "tests/conftest.py": (
            "import pytest\n\n\n@pytest.fixture\ndef database():\n    return 1\n\n\n"
            "@pytest.fixture\ndef connection_pool():\n    return 2\n"
        ),
        "tests/test_q.py": test,
    })
    commit_all(tmp_path, "rename fixture")
    failure = make_failure(
        FailureClass.FIXTURE_MISSING, "tests/test_q.py::test_q", message="E       fixture 'conn' not found",
        fixtures_available=("database", "connection_pool", "tmp_path"),
    )
    # When the strategy proposes
    proposals = FixtureRename().propose(failure, ws)
    # Then the history-backed fixture comes first
    assert apply(ws, proposals[0]) == {"tests/test_q.py": test.replace("conn", "database")}
    assert proposals[0].confidence == 0.9


def test_fixtures_the_index_sees_are_candidates_even_without_the_available_list(tmp_path: Path) -> None:
    # Given evidence without pytest's available-fixtures list
    test = "def test_q(db_sesion):\n    pass\n"
    ws = make_workspace(tmp_path, {"tests/conftest.py": CONFTEST, "tests/test_db.py": test})
    failure = make_failure(
        FailureClass.FIXTURE_MISSING, "tests/test_db.py::test_q", message="fixture 'db_sesion' not found"
    )
    # When the strategy proposes
    proposals = FixtureRename().propose(failure, ws)
    # Then the conftest fixture is found by the index
    assert apply(ws, proposals[0]) == {"tests/test_db.py": "def test_q(db_session):\n    pass\n"}


def test_nothing_is_proposed_without_a_similar_fixture_or_a_known_test_function(tmp_path: Path) -> None:
    # Given no similar fixture, and a test id whose function cannot be found
    ws = make_workspace(tmp_path, {"tests/test_db.py": "def test_q(zebra):\n    pass\n"})
    unrelated = make_failure(
        FailureClass.FIXTURE_MISSING, "tests/test_db.py::test_q", message="fixture 'zebra' not found",
        fixtures_available=("tmp_path", "capsys"),
    )
    unknown_test = make_failure(
        FailureClass.FIXTURE_MISSING, "tests/test_db.py::test_gone", message="fixture 'zebr' not found",
        fixtures_available=("zebra",),
    )
    # Then nothing is proposed
    assert FixtureRename().propose(unrelated, ws) == []
    assert FixtureRename().propose(unknown_test, ws) == []
