"""Run a project's tests as a Job in a Kubernetes environment: the validator's `Runner` when the
environment's backend is kubernetes (the local path keeps `actors.testrun.run_tests`).

The pod has none of CARS installed, so two files travel with the workspace (added to the shipped archive,
not to the workspace): the CARS pytest plugin, and a small wrapper that runs the test command with the
plugin enabled (what `run_tests` does locally through PYTHONPATH and PYTEST_PLUGINS) and then prints the
plugin's report, compressed, between markers at the end of the output. The logs are the only channel
back from a Job that the provisioner's RBAC allows (pods/log), so the report rides on them.

Blocking, like `run_tests`: call it from a worker thread started by anyio (`anyio.to_thread.run_sync`);
it hands the Job to the event loop with `anyio.from_thread.run`.
"""

from __future__ import annotations

import base64
import functools
import time
import uuid
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import anyio.from_thread

from actors.monitor.ingest import plugin_results
from actors.monitor.junit import ReportError
from actors.testrun import (
    LOG_TAIL_BYTES,
    MAX_REPORT_BYTES,
    PLUGIN_DIR,
    PLUGIN_MODULE,
    TestRun,
    TestRunError,
    command_argv,
)
from actors.validator.mutation import Runner
from contracts.values import TestResult

RUN_DIR = ".cars-run"  # in the shipped copy; pytest does not collect dot-folders
WORKSPACE_MOUNT = "/workspace"
BEGIN = "=====CARS-REPORT-BEGIN====="
END = "=====CARS-REPORT-END====="

WRAPPER = f'''"""Written by CARS: run the tests with the CARS pytest plugin, then print its report."""
import base64, os, subprocess, sys, zlib
here = os.path.dirname(os.path.abspath(__file__))
report = os.path.join(here, "report.json")
env = dict(os.environ)
env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH", "")) if p)
plugins = [p for p in env.get("PYTEST_PLUGINS", "").split(",") if p.strip()]
env["PYTEST_PLUGINS"] = ",".join(plugins if "{PLUGIN_MODULE}" in plugins else [*plugins, "{PLUGIN_MODULE}"])
env["CARS_REPORT"] = report
env["PYTHONDONTWRITEBYTECODE"] = "1"
try:
    code = subprocess.call(sys.argv[1:], env=env)
except OSError as exc:
    print("cannot start %r: %s" % (sys.argv[1], exc), flush=True)
    code = 127
sys.stdout.flush()
if os.path.isfile(report):
    with open(report, "rb") as f:
        data = base64.b64encode(zlib.compress(f.read(), 9)).decode("ascii")
    sys.stdout.write("\\n{BEGIN}\\n" + data + "\\n{END}\\n")
    sys.stdout.flush()
sys.exit(code)
'''


class JobBackend(Protocol):
    """The part of the Kubernetes backend this needs."""

    async def run_job(
        self, env_id: uuid.UUID, *, workspace: Path, command: Sequence[str], env: Mapping[str, str],
        timeout_s: float, runner_image: str | None = None, extra_files: Mapping[str, bytes] | None = None,
    ) -> Any: ...


def split_report(logs: str) -> tuple[str, bytes | None]:
    """(the test output, the plugin's report) from a run's logs; the report is None when there is none."""
    start = logs.rfind(BEGIN)
    if start < 0:
        return logs, None
    stop = logs.find(END, start)
    if stop < 0:
        return logs, None  # cut off
    encoded = logs[start + len(BEGIN):stop].strip()
    try:
        report = zlib.decompress(base64.b64decode(encoded, validate=True), bufsize=1 << 20)
    except (ValueError, zlib.error):
        return logs, None
    return logs[:start].rstrip("\n") + "\n", report


def job_runner(backend: JobBackend, env_id: uuid.UUID, *, python: str = "python") -> Runner:
    """A `Runner` (see actors.validator.mutation) that runs each test command as a Job in `env_id`.
    `python` is the interpreter that runs the wrapper in the runner image."""
    extra = {
        f"{RUN_DIR}/{PLUGIN_MODULE}.py": (PLUGIN_DIR / f"{PLUGIN_MODULE}.py").read_bytes(),
        f"{RUN_DIR}/cars_run.py": WRAPPER.encode(),
    }

    def run(
        workspace: str | Path, test_cmd: str, *, tests: Sequence[str] = (), env: Mapping[str, str] | None = None,
        timeout_s: float = 600.0, memory_mb: int | None = None, extra_args: Sequence[str] = (),
        inherit_env: bool = False,
    ) -> TestRun:
        # memory_mb: the Job's container has its own memory limit (from the backend's tuning).
        # inherit_env: the pod never sees this process's environment, only `env` and the environment's
        # Secret, so a run in the cluster is always what `inherit_env=False` asks for.
        argv = command_argv(test_cmd, tests=tests, extra_args=extra_args)
        started = time.monotonic()
        result = anyio.from_thread.run(functools.partial(
            backend.run_job, env_id, workspace=Path(workspace),
            command=[python, f"{WORKSPACE_MOUNT}/{RUN_DIR}/cars_run.py", *argv], env=dict(env or {}),
            timeout_s=timeout_s, extra_files=extra,
        ))
        output, report = split_report(str(result.logs))
        collected: int = -1
        results: tuple[TestResult, ...] = ()
        if report is not None:
            try:
                collected, results = plugin_results(report, max_bytes=MAX_REPORT_BYTES)
            except ReportError as exc:
                raise TestRunError(f"the CARS plugin wrote an unreadable report: {exc}") from None
        exit_code = result.exit_code
        return TestRun(
            results=results, collected=collected, exit_code=-1 if exit_code is None else int(exit_code),
            duration_s=time.monotonic() - started, log_tail=output[-LOG_TAIL_BYTES:],
            timed_out=bool(result.timed_out),
        )

    return run


__all__ = ["JobBackend", "job_runner", "split_report"]
