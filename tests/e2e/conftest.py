"""End-to-end fixtures: the real `cars` executable and the real `redis-cli`, driven as a user drives them.

Nothing here imports CARS: every process is a subprocess, every bus access goes through the
`redis-cli` binary on PATH, and HTTP goes through httpx. Waits are bounded; every process a test
starts is stopped in teardown (Ctrl-C first, so that an embedded redis-server is shut down too; then
SIGKILL of the whole process group, so that nothing outlives the test).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from tests.conftest import unavailable

CARS = Path(sys.executable).with_name("cars")
STARTUP_TIMEOUT_S = 60.0  # first start of a platform: imports, SQLite/PostgreSQL schema, embedded Redis
TIMEOUT_S = 20.0  # any other wait
STOP_TIMEOUT_S = 20.0  # graceful shutdown (FastStream's own graceful timeout is 10 s)
COMMAND_TIMEOUT_S = 60.0  # one short-lived `cars ...` or `redis-cli ...` command

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_answers(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else (a recycled pid)
        return True
    # A zombie still answers kill(0); it is dead for our purpose.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


def eventually(
    check: Callable[[], T | None], what: str, timeout_s: float = TIMEOUT_S, *,
    details: Callable[[], str] | None = None, interval_s: float = 0.1,
) -> T:
    """Poll `check` until it returns something truthy (and return that), or fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            extra = f"\n{details()}" if details else ""
            pytest.fail(f"timed out after {timeout_s}s waiting until {what}{extra}", pytrace=False)
        time.sleep(interval_s)


# ----------------------------------------------------------------------------- cars processes


class CarsProcess:
    """A long-running `cars ...` subprocess (its stdout and stderr go to one log file)."""

    def __init__(self, args: Sequence[str], env: Mapping[str, str], log_path: Path) -> None:
        self.args = list(args)
        self.log_path = log_path
        self._log = log_path.open("wb")
        # A session of its own: teardown can SIGKILL the group, embedded redis-server included.
        self.proc = subprocess.Popen(
            [str(CARS), *args], env=dict(env), stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def describe(self) -> str:
        state = "running" if self.proc.poll() is None else f"exited with {self.proc.returncode}"
        return f"--- `cars {' '.join(self.args)}` ({state}) output:\n{self.output()[-6000:]}"

    def assert_running(self) -> None:
        if self.proc.poll() is not None:
            pytest.fail(f"`cars {' '.join(self.args)}` died\n{self.describe()}", pytrace=False)

    def interrupt(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """Ctrl-C, as a user presses it; returns the exit code (fails the test if it hangs)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"`cars {' '.join(self.args)}` ignored Ctrl-C for {timeout_s}s\n{self.describe()}",
                        pytrace=False)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGINT)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=STOP_TIMEOUT_S)
        finally:
            self.kill()  # the group: also a redis-server left behind by a crashed `cars up`
            self._log.close()


class Cars:
    """Runs the `cars` executable with one environment; tracks what it starts."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.started: list[CarsProcess] = []

    @property
    def home(self) -> Path:
        return Path(self.env["CARS_HOME"])

    def with_env(self, **overrides: str | None) -> Cars:
        """The same runner with environment changes (None removes a variable); shares the tracking."""
        env = {**self.env, **{k: v for k, v in overrides.items() if v is not None}}
        for k, v in overrides.items():
            if v is None:
                env.pop(k, None)
        other = Cars(env, self.logs)
        other.started = self.started
        return other

    def run(
        self, *args: str, input: str | None = None, timeout_s: float = COMMAND_TIMEOUT_S,
    ) -> subprocess.CompletedProcess[str]:
        """Run one short-lived command to its end."""
        return subprocess.run(
            [str(CARS), *args], env=self.env, input=input, capture_output=True, text=True, timeout=timeout_s,
            stdin=None if input is not None else subprocess.DEVNULL,
        )

    def ok(self, *args: str, input: str | None = None) -> str:
        """Run a command that must succeed; its stdout."""
        done = self.run(*args, input=input)
        assert done.returncode == 0, (
            f"`cars {' '.join(args)}` exited {done.returncode}\nstdout: {done.stdout}\nstderr: {done.stderr}"
        )
        return done.stdout

    def start(self, *args: str) -> CarsProcess:
        """Start a long-running command (`up`, `worker`); stopped in teardown if still running."""
        self.logs.mkdir(parents=True, exist_ok=True)
        log_path = self.logs / f"cars-{len(self.started)}-{args[0]}.log"
        process = CarsProcess(args, self.env, log_path)
        self.started.append(process)
        return process

    def close(self) -> None:
        for process in reversed(self.started):
            process.close()


def base_env(home: Path) -> dict[str, str]:
    """The test runner's environment without anything that configures CARS, plus CARS_HOME."""
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith(("CARS_", "POSTGRES_", "OTEL_")) and k not in ("REDIS_URL", "PERSISTENCE_MODULE")
    }
    env.update({
        "CARS_HOME": str(home), "CARS_LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1",
        "COLUMNS": "200", "TERM": "dumb", "NO_COLOR": "1",
    })
    return env


@pytest.fixture
def cars(tmp_path: Path) -> Iterator[Cars]:
    """`cars` with CARS_HOME in tmp_path and no REDIS_URL (so it embeds Redis)."""
    runner = Cars(base_env(tmp_path / "home"), tmp_path / "logs")
    try:
        yield runner
    finally:
        runner.close()


@pytest.fixture
def cars_on_redis(cars: Cars, redis_url: str) -> Cars:
    """`cars` pointed at the test Redis (REDIS_URL = a flushed database)."""
    return cars.with_env(REDIS_URL=redis_url)


# ----------------------------------------------------------------------------- redis-cli


class RedisCli:
    """The real `redis-cli` binary against one server/database."""

    def __init__(self, binary: str, connection: Sequence[str]) -> None:
        self.binary = binary
        self.connection = list(connection)

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [self.binary, *self.connection, *args], capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
        # redis-cli prints server errors (ERR ...) on stdout with exit code 0 when not on a tty.
        failed = done.returncode != 0 or done.stdout.startswith(("ERR", "(error)", "WRONGTYPE", "Error:"))
        if check and failed:
            raise AssertionError(f"redis-cli {' '.join(args)}: rc={done.returncode} {done.stdout} {done.stderr}")
        return done

    def __call__(self, *args: str) -> str:
        return self.run(*args).stdout.strip()

    def json(self, *args: str) -> Any:
        out = self.run("--json", *args).stdout
        try:
            return json.loads(out)
        except json.JSONDecodeError as exc:
            raise AssertionError(f"redis-cli --json {' '.join(args)} printed no JSON ({exc}): {out!r}") from None

    def xadd(self, stream: str, *fields: str) -> str:
        """XADD stream * field value ...; the new entry id."""
        return self("XADD", stream, "*", *fields)

    def xrange(self, stream: str) -> list[tuple[str, dict[str, str]]]:
        return [(entry_id, _pairs(flat)) for entry_id, flat in self.json("XRANGE", stream, "-", "+")]

    def xread(self, stream: str, after: str = "0", count: int = 100) -> list[tuple[str, dict[str, str]]]:
        reply = self.json("XREAD", "COUNT", str(count), "STREAMS", stream, after)
        if not reply:  # nil: nothing there
            return []
        # RESP3 (the default of --json) answers a map; RESP2 a list of [stream, entries].
        entries = reply[stream] if isinstance(reply, dict) else dict(reply)[stream]
        return [(entry_id, _pairs(flat)) for entry_id, flat in entries]

    def xlen(self, stream: str) -> int:
        return int(self("XLEN", stream))

    def answers(self) -> bool:
        return self.run("PING", check=False).stdout.strip() == "PONG"


def _pairs(flat: Sequence[str]) -> dict[str, str]:
    return dict(zip(flat[0::2], flat[1::2], strict=True))


@pytest.fixture(scope="session")
def redis_cli_binary() -> str:
    path = shutil.which("redis-cli") or shutil.which("redis-cli", path=str(CARS.parent))
    if not path:
        unavailable("no redis-cli binary on PATH")
    assert path is not None
    return path


@pytest.fixture
def bus(redis_cli_binary: str, redis_url: str) -> RedisCli:
    """redis-cli on the test Redis database."""
    return RedisCli(redis_cli_binary, ["-u", redis_url])


# ----------------------------------------------------------------------------- a running platform


class Platform:
    """A running `cars up`: its process, its HTTP API and, when embedded, its Redis port."""

    def __init__(self, process: CarsProcess, http_port: int, redis_port: int | None) -> None:
        self.process = process
        self.http_port = http_port
        self.redis_port = redis_port
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=5.0)

    def get(self, path: str, **params: str) -> httpx.Response:
        return self.http.get(path, params=params)

    def services(self) -> dict[str, dict[str, Any]]:
        """The services view, by instance."""
        response = self.get("/services")
        assert response.status_code == 200, response.text
        return {row["instance"]: row for row in response.json()["services"]}

    def wait_ready(self, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        def ready() -> bool:
            self.process.assert_running()
            try:
                return self.get("/ready").status_code == 200
            except httpx.HTTPError:
                return False

        eventually(ready, "GET /ready answers 200", timeout_s, details=self.process.describe, interval_s=0.1)

    def wait_for_service(self, instance: str, status: str = "alive") -> dict[str, Any]:
        def row() -> dict[str, Any] | None:
            self.process.assert_running()
            found = self.services().get(instance)
            return found if found and found["status"] == status else None

        return eventually(row, f"{instance} is {status} in GET /services", details=self.process.describe)

    def close(self) -> None:
        self.http.close()


@contextlib.contextmanager
def running_platform(cars: Cars, *, embedded_port: int | None = None) -> Iterator[Platform]:
    """`cars up --port <free port>` until it is ready; Ctrl-C (then SIGKILL) when the block ends.

    `embedded_port`: set CARS_EMBEDDED_REDIS_PORT (for a `cars` without REDIS_URL).
    """
    if embedded_port is not None:
        cars = cars.with_env(CARS_EMBEDDED_REDIS_PORT=str(embedded_port))
    http_port = free_port()
    platform = Platform(cars.start("up", "--port", str(http_port)), http_port, embedded_port)
    try:
        platform.wait_ready()
        yield platform
    finally:
        platform.close()
        platform.process.close()


@pytest.fixture
def platform(cars_on_redis: Cars) -> Iterator[Platform]:
    """A ready `cars up` on the test Redis, with a SQLite store in CARS_HOME."""
    with running_platform(cars_on_redis) as running:
        yield running
