"""Run a project's tests in a subprocess and read back what happened, with failure evidence.

The CARS pytest plugin (`actors/monitor/plugin/cars_pytest.py`) is injected into the run through
PYTHONPATH and PYTEST_PLUGINS, and writes a JSON report that is structured into `TestResult`s with the
contracts converter. A command that is not pytest still runs; its results are then read from a JUnit XML
file when the command writes one (`--junitxml`), and are otherwise unknown.

Blocking: call it through `anyio.to_thread.run_sync` from async code.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from attrs import frozen

from actors.errors import ActorError
from actors.monitor.ingest import plugin_results
from actors.monitor.junit import ReportError, junit_results
from contracts.values import Outcome, TestResult

PLUGIN_DIR = Path(__file__).resolve().parent / "monitor" / "plugin"
PLUGIN_MODULE = "cars_pytest"
LOG_TAIL_BYTES = 8 * 1024
MAX_REPORT_BYTES = 256 * 1024 * 1024  # a plugin report of a very large suite, with evidence


@frozen(kw_only=True)
class TestRun:
    """The outcome of one run of a project's tests."""

    __test__ = False  # not a pytest test class

    results: tuple[TestResult, ...]
    collected: int  # tests collected, from the plugin; -1 when unknown
    exit_code: int
    duration_s: float
    log_tail: str  # the last ~8 KiB of combined stdout and stderr
    timed_out: bool = False

    def failed(self) -> list[TestResult]:
        """The results that failed or errored."""
        return [r for r in self.results if r.outcome in (Outcome.FAILED, Outcome.ERROR)]


class TestRunError(ActorError):
    """The tests could not be run at all: no such command or folder, or an unreadable report."""

    __test__ = False


def run_tests(
    workspace: str | Path,
    test_cmd: str,
    *,
    tests: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    timeout_s: float = 600.0,
    memory_mb: int | None = None,
    extra_args: Sequence[str] = (),
    inherit_env: bool = True,
) -> TestRun:
    """Run `test_cmd` in `workspace` and return its results.

    `test_cmd` is split like a shell would (no shell runs); `extra_args`, then the selected `tests` ids,
    are appended. `env` is laid over the current environment. The run gets its own process group, and
    the whole group is killed when it exceeds `timeout_s` (and when it ends, so nothing it started
    outlives it). `memory_mb` caps each process's address space (RLIMIT_AS). With `inherit_env=False`
    the run gets this process's environment without its secrets and its own service settings
    (`scrubbed_environ`): what CARS runs for itself must not hand its credentials to project code.
    """
    root = Path(workspace)
    if not root.is_dir():
        raise TestRunError(f"workspace {str(root)!r} is not a folder")
    argv = command_argv(test_cmd, tests=tests, extra_args=extra_args)
    with tempfile.TemporaryDirectory(prefix="cars-run-") as tmp:
        report_path = Path(tmp) / "report.json"
        log_path = Path(tmp) / "output.log"
        started = time.monotonic()
        started_wall = time.time()
        # Output goes to a file, not a pipe: a grandchild that escapes the process group cannot keep a
        # pipe open and hang us, and a chatty suite costs disk, not memory.
        with log_path.open("wb") as log:
            try:
                proc = subprocess.Popen(
                    argv, cwd=root, env=_environment(env, report_path, inherit_env), stdin=subprocess.DEVNULL,
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_memory_limit(memory_mb),
                )
            except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:
                raise TestRunError(f"cannot start {argv[0]!r}: {exc}") from None
            timed_out = False
            try:
                exit_code = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill_group(proc.pid)
                exit_code = proc.wait()
            _kill_group(proc.pid)  # whatever the tests left running (servers, browsers)
        duration = time.monotonic() - started
        log_tail = _tail(log_path)
        collected, results = _read_results(report_path, argv, root, since=started_wall)
    return TestRun(
        results=results, collected=collected, exit_code=exit_code, duration_s=duration, log_tail=log_tail,
        timed_out=timed_out,
    )


def command_argv(test_cmd: str, *, tests: Sequence[str] = (), extra_args: Sequence[str] = ()) -> list[str]:
    """`test_cmd` split like a shell would, then `extra_args`, then the selected `tests` ids."""
    try:
        argv = [*shlex.split(test_cmd), *extra_args, *tests]
    except ValueError as exc:
        raise TestRunError(f"cannot split test command {test_cmd!r}: {exc}") from None
    if not argv:
        raise TestRunError("the test command is empty")
    return argv


#: Variables a test run started by CARS never inherits: CARS's own settings and service credentials,
#: and anything named like a secret. The environment's own service URLs are passed in `env` instead.
_PRIVATE_PREFIXES = ("CARS_", "POSTGRES_", "PG", "REDIS_", "MYSQL_", "MONGO", "OTEL_EXPORTER_", "SQLITE_",
                     "AWS_", "GOOGLE_", "AZURE_", "KUBE")
_PRIVATE_NAMES = frozenset({"PERSISTENCE_MODULE", "DATABASE_URL", "SSH_AUTH_SOCK", "NETRC"})
_SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|CREDENTIAL|PRIVATE|API_?KEY|ACCESS_?KEY|AUTH", re.I)


def scrubbed_environ(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """`environ` (default: this process's) without secrets and CARS's own service settings."""
    source = os.environ if environ is None else environ
    return {k: v for k, v in source.items()
            if not k.upper().startswith(_PRIVATE_PREFIXES) and k.upper() not in _PRIVATE_NAMES
            and not _SECRET_NAME.search(k)}


def _environment(env: Mapping[str, str] | None, report_path: Path, inherit: bool = True) -> dict[str, str]:
    merged = {**(os.environ if inherit else scrubbed_environ()), **(env or {})}
    merged["PYTHONPATH"] = os.pathsep.join(p for p in (str(PLUGIN_DIR), merged.get("PYTHONPATH", "")) if p)
    plugins = [p for p in merged.get("PYTEST_PLUGINS", "").split(",") if p.strip()]
    merged["PYTEST_PLUGINS"] = ",".join([*plugins, PLUGIN_MODULE] if PLUGIN_MODULE not in plugins else plugins)
    merged["CARS_REPORT"] = str(report_path)
    merged["PYTHONDONTWRITEBYTECODE"] = "1"  # keep sandbox copies free of __pycache__
    return merged


def _memory_limit(memory_mb: int | None) -> Callable[[], None] | None:
    if memory_mb is None:
        return None
    if memory_mb <= 0:
        raise TestRunError(f"memory_mb must be positive, not {memory_mb}")
    limit = memory_mb * 1024 * 1024

    def apply() -> None:
        # Runs in the child between fork and exec: only an async-signal-safe-ish system call here.
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return apply


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the group is already gone


def _tail(path: Path) -> str:
    with path.open("rb") as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(max(size - LOG_TAIL_BYTES, 0))
        return f.read().decode("utf-8", "replace")


def _read_results(
    report_path: Path, argv: Sequence[str], root: Path, *, since: float,
) -> tuple[int, tuple[TestResult, ...]]:
    if report_path.is_file():
        if report_path.stat().st_size > MAX_REPORT_BYTES:
            raise TestRunError(f"the plugin's report is larger than {MAX_REPORT_BYTES} bytes")
        try:
            return plugin_results(report_path.read_bytes(), max_bytes=MAX_REPORT_BYTES)
        except ReportError as exc:
            raise TestRunError(f"the CARS plugin wrote an unreadable report: {exc}") from None
    junit = _junit_path(argv)
    if junit is not None:
        path = junit if junit.is_absolute() else root / junit
        # A file older than this run is a previous run's: reading it would report stale results.
        if path.is_file() and path.stat().st_mtime >= since - 1.0:
            try:
                _flavour, results = junit_results(path.read_bytes(), repo_path=str(root.resolve()))
            except ReportError as exc:
                raise TestRunError(f"the JUnit report {str(path)!r} is unreadable: {exc}") from None
            return len(results), results  # JUnit lists every collected test as a <testcase>
    return -1, ()


def _junit_path(argv: Sequence[str]) -> Path | None:
    """The file named by `--junitxml=PATH`, `--junitxml PATH` (or `--junit-xml`), if any."""
    for i, arg in enumerate(argv):
        for flag in ("--junitxml", "--junit-xml"):
            if arg.startswith(flag + "="):
                return Path(arg.partition("=")[2])
            if arg == flag and i + 1 < len(argv):
                return Path(argv[i + 1])
    return None


__all__ = ["PLUGIN_DIR", "TestRun", "TestRunError", "command_argv", "run_tests"]
