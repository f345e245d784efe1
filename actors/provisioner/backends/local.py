"""The local environment backend: a sandbox copy of the repo plus service processes on this machine.

An environment lives in `home/environments/<id>/` with a `state.json` that records everything needed to
tear it down: the sandbox (a git worktree or a plain copy) and the service processes. State is written
before each step that creates something, so a crash mid-create, or a restart, leaves nothing that a later
`reap` cannot find. Every operation is idempotent and serialised per environment by a file lock.

The sandbox reproduces the user's *current* working tree: for a git repo it is a detached worktree of
HEAD with every changed, deleted and untracked-but-not-ignored file overlaid; otherwise a plain copy
that skips virtualenvs, caches and VCS folders (`actors.workspace.SKIP_DIRS`).
"""

from __future__ import annotations

import builtins
import contextlib
import datetime as dt
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio.to_thread
import attrs
from attrs import field, frozen

from actors.provisioner.backends import LiveEnvironment, Provisioned
from actors.provisioner.errors import ProvisionError
from actors.provisioner.services import (
    ServiceProcess,
    parse_kind,
    process_alive,
    process_start_time,
    start_service,
    stop_service,
)
from actors.workspace import SKIP_DIRS
from contracts.values import ServiceKind, TemplateSpec

GIT_TIMEOUT_S = 120.0
STATE_VERSION = 1


@frozen(kw_only=True)
class LocalEnvironment:
    """A ready environment: where the sandbox is, and the variables a test run in it needs."""

    env_id: uuid.UUID
    workspace: Path
    service_urls: dict[str, str] = field(factory=dict)  # REDIS_URL, DATABASE_URL, POSTGRES_URL
    env: dict[str, str] = field(factory=dict)  # the URLs plus PGHOST, PGPORT, PGUSER, PGDATABASE
    expires_at: dt.datetime


@frozen(kw_only=True)
class _State:
    """What `state.json` holds. `status` is `creating` until everything is up, then `ready`."""

    env_id: uuid.UUID
    status: str
    owner_pid: int
    owner_started: int | None
    repo_path: str | None
    sandbox_kind: str  # "worktree" | "copy" | "empty"
    sandbox_root: str  # the worktree or copy folder
    workspace: str  # sandbox_root, or a subfolder of it when repo_path is inside a larger git repo
    git_root: str | None
    service_dirs: tuple[str, ...] = ()  # folders that may hold service data, removed on release
    services: tuple[ServiceProcess, ...] = ()
    created_at: dt.datetime
    expires_at: dt.datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION, "env_id": str(self.env_id), "status": self.status,
            "owner_pid": self.owner_pid, "owner_started": self.owner_started, "repo_path": self.repo_path,
            "sandbox_kind": self.sandbox_kind, "sandbox_root": self.sandbox_root, "workspace": self.workspace,
            "git_root": self.git_root, "service_dirs": list(self.service_dirs),
            "services": [s.to_json() for s in self.services],
            "created_at": self.created_at.isoformat(), "expires_at": self.expires_at.isoformat(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> _State:
        owner_started = data.get("owner_started")
        return cls(
            env_id=uuid.UUID(str(data["env_id"])), status=str(data["status"]), owner_pid=int(data["owner_pid"]),
            owner_started=None if owner_started is None else int(owner_started),
            repo_path=None if data.get("repo_path") is None else str(data["repo_path"]),
            sandbox_kind=str(data["sandbox_kind"]), sandbox_root=str(data["sandbox_root"]),
            workspace=str(data["workspace"]),
            git_root=None if data.get("git_root") is None else str(data["git_root"]),
            service_dirs=tuple(str(d) for d in data.get("service_dirs", ())),
            services=tuple(ServiceProcess.from_json(s) for s in data.get("services", ())),
            created_at=dt.datetime.fromisoformat(str(data["created_at"])),
            expires_at=dt.datetime.fromisoformat(str(data["expires_at"])),
        )

    def environment(self) -> LocalEnvironment:
        env: dict[str, str] = {}
        for service in self.services:
            env.update(service.env)
        urls = {k: v for k, v in env.items() if k.endswith("_URL")}
        return LocalEnvironment(
            env_id=self.env_id, workspace=Path(self.workspace), service_urls=urls, env=env,
            expires_at=self.expires_at,
        )


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class LocalBackend:
    """Environments on this machine, kept under `home` (usually `$CARS_HOME`)."""

    name = "local"

    def __init__(self, home: str | Path, *, service_timeout_s: float = 60.0) -> None:
        self.home = Path(home).resolve()
        self.root = self.home / "environments"
        self.service_timeout_s = service_timeout_s

    # -- public API ----------------------------------------------------------------------------------

    def create(
        self,
        env_id: uuid.UUID,
        repo_path: str | Path | None,
        services: Sequence[ServiceKind | str] = (),
        ttl_s: float = 1800,
        *,
        now: dt.datetime | None = None,
    ) -> LocalEnvironment:
        """Create the environment, or return it as it is if it already exists and is healthy.

        A failure part-way releases whatever was made and raises ProvisionError (or a subclass).
        """
        kinds = [parse_kind(k) for k in services]  # reject unknown kinds before making anything
        now = now or _utcnow()
        with self._locked(env_id):
            existing = self._load(env_id)
            if existing is not None:
                if existing.status == "ready" and existing.expires_at > now and self._healthy(existing):
                    return existing.environment()
                self._teardown(existing)  # half-made, dead or expired: start over
            self._clear_leftovers(env_id)
            return self._create(env_id, repo_path, kinds, ttl_s, now)

    def release(self, env_id: uuid.UUID) -> bool:
        """Stop and remove the environment. True if there was something to release."""
        with self._locked(env_id):
            state = self._load(env_id)
            if state is not None:
                self._teardown(state)
                return True
            return self._clear_leftovers(env_id)

    def get(self, env_id: uuid.UUID) -> LocalEnvironment | None:
        state = self._load(env_id)
        return state.environment() if state is not None and state.status == "ready" else None

    def list(self) -> builtins.list[LocalEnvironment]:
        """Every ready environment under `home`, whichever process created it."""
        found = []
        for env_id in self._ids():
            state = self._load(env_id)
            if state is not None and state.status == "ready":
                found.append(state.environment())
        return sorted(found, key=lambda e: e.expires_at)

    def reap(self, now: dt.datetime | None = None) -> builtins.list[uuid.UUID]:
        """Release every environment past its TTL, and any whose creator died mid-create.

        Returns the ids released. Environments of other (earlier) processes are included: that is how
        a restarted CARS cleans up after the one before it.
        """
        now = now or _utcnow()
        reaped = []
        for env_id in self._ids():
            with self._locked(env_id):
                state = self._load(env_id)
                if state is None:
                    if self._clear_leftovers(env_id):
                        reaped.append(env_id)
                    continue
                orphaned = state.status != "ready" and not process_alive(state.owner_pid, state.owner_started)
                if state.expires_at <= now or orphaned:
                    self._teardown(state)
                    reaped.append(env_id)
        return reaped

    # -- creation ------------------------------------------------------------------------------------

    def _create(
        self, env_id: uuid.UUID, repo_path: str | Path | None, kinds: Sequence[ServiceKind], ttl_s: float,
        now: dt.datetime,
    ) -> LocalEnvironment:
        env_dir = self._dir(env_id)
        env_dir.mkdir(parents=True)
        repo = Path(repo_path).resolve() if repo_path else None
        if repo is not None and not repo.is_dir():
            shutil.rmtree(env_dir, ignore_errors=True)
            raise ProvisionError(f"repo_path {repo} is not a folder")
        git_root, prefix = _git_checkout(repo) if repo is not None else (None, "")
        sandbox_kind = "worktree" if git_root else ("copy" if repo else "empty")
        sandbox_root = env_dir / sandbox_kind
        me = os.getpid()
        state = _State(
            env_id=env_id, status="creating", owner_pid=me, owner_started=process_start_time(me),
            repo_path=None if repo is None else str(repo), sandbox_kind=sandbox_kind,
            sandbox_root=str(sandbox_root), workspace=str(sandbox_root / prefix) if prefix else str(sandbox_root),
            git_root=None if git_root is None else str(git_root),
            service_dirs=tuple(str(self._service_dir(env_id, k)) for k in kinds),
            created_at=now, expires_at=now + dt.timedelta(seconds=ttl_s),
        )
        self._save(state)  # before anything is made, so a crash from here on leaves a record to reap
        try:
            if git_root is not None and repo is not None:
                _make_worktree(git_root, sandbox_root)
            elif repo is not None:
                _copy_tree(repo, sandbox_root)
            else:
                sandbox_root.mkdir()
            for kind in kinds:
                def record(service: ServiceProcess) -> None:
                    nonlocal state
                    state = attrs.evolve(state, services=(*state.services, service))
                    self._save(state)

                start_service(kind, self._service_dir(env_id, kind), timeout_s=self.service_timeout_s,
                              on_started=record)
            state = attrs.evolve(state, status="ready")
            self._save(state)
        except BaseException as exc:
            self._teardown(state)
            if isinstance(exc, ProvisionError) or not isinstance(exc, Exception):
                raise
            raise ProvisionError(f"creating environment {env_id} failed: {exc}") from exc
        return state.environment()

    def _service_dir(self, env_id: uuid.UUID, kind: ServiceKind) -> Path:
        if kind is ServiceKind.POSTGRES:
            # Unix socket paths are short (108 bytes), and an unprivileged server user must be able to
            # reach its folder, which a root-only CARS home may not allow: so postgres lives under the
            # system temp folder, at a name derived from the environment id (found again on restart).
            return Path(tempfile.gettempdir()) / f"cars-pg-{env_id.hex}"
        return self._dir(env_id) / str(kind.value)

    # -- teardown ------------------------------------------------------------------------------------

    def _teardown(self, state: _State) -> None:
        """Stop the services and remove the sandbox and every folder. Idempotent; raises if something stays."""
        for service in state.services:
            stop_service(service)
        for folder in state.service_dirs:
            shutil.rmtree(folder, ignore_errors=True)
        if state.sandbox_kind == "worktree" and state.git_root and Path(state.git_root).is_dir():
            _git(Path(state.git_root), "worktree", "remove", "--force", state.sandbox_root, check=False)
        shutil.rmtree(state.sandbox_root, ignore_errors=True)
        if state.sandbox_kind == "worktree" and state.git_root and Path(state.git_root).is_dir():
            _git(Path(state.git_root), "worktree", "prune", check=False)  # forget a worktree removed by hand
        env_dir = self._dir(state.env_id)
        shutil.rmtree(env_dir, ignore_errors=True)
        if env_dir.exists() or Path(state.sandbox_root).exists():
            raise ProvisionError(f"could not remove {env_dir}")

    def _clear_leftovers(self, env_id: uuid.UUID) -> bool:
        """Remove an environment folder without a state file (a crash before the first save)."""
        removed = False
        for folder in (self._dir(env_id), self._service_dir(env_id, ServiceKind.POSTGRES)):
            if folder.exists():
                shutil.rmtree(folder, ignore_errors=True)
                removed = True
        return removed

    def _healthy(self, state: _State) -> bool:
        return Path(state.workspace).is_dir() and all(process_alive(s.pid, s.started) for s in state.services)

    # -- state files and locks -----------------------------------------------------------------------

    def _dir(self, env_id: uuid.UUID) -> Path:
        return self.root / str(env_id)

    def _ids(self) -> builtins.list[uuid.UUID]:
        ids = []
        with contextlib.suppress(FileNotFoundError):
            for entry in self.root.iterdir():
                with contextlib.suppress(ValueError):
                    if entry.is_dir():
                        ids.append(uuid.UUID(entry.name))
        return sorted(ids)

    def _load(self, env_id: uuid.UUID) -> _State | None:
        try:
            data = json.loads((self._dir(env_id) / "state.json").read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ProvisionError(f"unreadable state of environment {env_id}: {exc}") from exc
        try:
            return _State.from_json(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise ProvisionError(f"malformed state of environment {env_id}: {exc}") from exc

    def _save(self, state: _State) -> None:
        path = self._dir(state.env_id) / "state.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state.to_json(), indent=1))
        os.replace(tmp, path)  # atomic: a reader sees the old state or the new, never half of one

    @contextlib.contextmanager
    def _locked(self, env_id: uuid.UUID) -> Iterator[None]:
        """An exclusive lock on one environment, across threads and processes.

        The lock file is deleted after a release; a waiter that then gets the lock on the deleted file
        notices (the path no longer names its inode) and tries again.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / f"{env_id}.lock"
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    same = os.stat(path).st_ino == os.fstat(fd).st_ino
                except FileNotFoundError:
                    same = False
                if not same:
                    continue
                try:
                    yield
                finally:
                    if not self._dir(env_id).exists():
                        with contextlib.suppress(FileNotFoundError):
                            path.unlink()
                return
            finally:
                os.close(fd)


class AsyncLocalBackend:
    """`LocalBackend` as an `actors.provisioner.backends.Backend`: each blocking call runs in a worker thread.

    The template's services are started by kind (PostgreSQL, Redis); images, resources, quotas and
    service variables are for container backends and do not apply to processes on this machine.
    Labels are not stored: the environment's folder name is its id.
    """

    name = "local"

    def __init__(self, backend: LocalBackend) -> None:
        self.backend = backend

    async def create(
        self, env_id: uuid.UUID, *, template: TemplateSpec, repo_path: str | None, ttl_s: int,
        labels: Mapping[str, str],
    ) -> Provisioned:
        kinds = [s.kind for s in template.services]
        made = await anyio.to_thread.run_sync(lambda: self.backend.create(env_id, repo_path, kinds, ttl_s))
        return Provisioned(workspace=str(made.workspace), service_urls=dict(made.service_urls), env=dict(made.env),
                           expires_at=made.expires_at)

    async def release(self, env_id: uuid.UUID) -> bool:
        return await anyio.to_thread.run_sync(self.backend.release, env_id)

    async def reap(self, now: dt.datetime) -> builtins.list[uuid.UUID]:
        return await anyio.to_thread.run_sync(self.backend.reap, now)

    async def list(self) -> builtins.list[LiveEnvironment]:
        found = await anyio.to_thread.run_sync(self.backend.list)
        return [LiveEnvironment(env_id=e.env_id, workspace=str(e.workspace), expires_at=e.expires_at) for e in found]


# -- sandboxes ---------------------------------------------------------------------------------------


def _git(cwd: Path, *args: str, check: bool = True) -> str:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, env=env, capture_output=True, timeout=GIT_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ProvisionError(f"git {' '.join(args)} failed: {exc}") from exc
    if check and done.returncode != 0:
        raise ProvisionError(f"git {' '.join(args)} failed: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout.decode(errors="surrogateescape")


def _git_checkout(repo: Path) -> tuple[Path | None, str]:
    """(the git top-level folder, repo's path inside it), or (None, "") when a worktree is not possible
    (not a git repo, git missing, or no commit yet)."""
    if shutil.which("git") is None:
        return None, ""
    try:
        top = Path(_git(repo, "rev-parse", "--show-toplevel").strip()).resolve()
        _git(repo, "rev-parse", "--verify", "--quiet", "HEAD^{commit}")
    except ProvisionError:
        return None, ""
    prefix = repo.relative_to(top).as_posix()
    return top, "" if prefix == "." else prefix


def _make_worktree(git_root: Path, dest: Path) -> None:
    """A detached worktree of HEAD at `dest`, with the working tree's uncommitted state laid over it."""
    _git(git_root, "worktree", "add", "--detach", str(dest), "HEAD")
    # Paths relative to the top level. --no-renames: a rename must show both the old (deleted) and the
    # new path; `git diff HEAD` covers staged and unstaged changes alike.
    changed = _git(git_root, "diff", "--name-only", "--no-renames", "-z", "HEAD").split("\0")
    untracked = _git(git_root, "ls-files", "--others", "--exclude-standard", "-z").split("\0")
    for rel in dict.fromkeys(p for p in (*changed, *untracked) if p):
        src, dst = git_root / rel, dest / rel
        if src.is_dir() and not src.is_symlink():
            continue  # a submodule: left as checked out
        if dst.is_symlink() or dst.is_file():
            dst.unlink()
        if src.is_symlink() or src.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst, follow_symlinks=False)


def _skip(folder: str, names: list[str]) -> set[str]:
    return {
        n for n in names
        if (n in SKIP_DIRS or n.endswith(".egg-info")) and os.path.isdir(os.path.join(folder, n))
    }


def _copy_tree(src: Path, dest: Path) -> None:
    try:
        shutil.copytree(src, dest, symlinks=True, ignore=_skip)
    except (OSError, shutil.Error) as exc:
        raise ProvisionError(f"copying {src} failed: {exc}") from exc


__all__ = ["AsyncLocalBackend", "LocalBackend", "LocalEnvironment"]
