"""What the benchmark scripts share: a private Redis, `cars` processes, run.reported messages, RSS.

Everything runs on loopback: a private redis-server on a free port (never the shared one, never
flushed by anybody else), `cars up` / `cars worker` as real subprocesses with their own CARS_HOME,
and PostgreSQL (when POSTGRES_HOST is set) in a fresh schema that is dropped afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
CARS = Path(sys.executable).parent / "cars"

# The wire tag the ingest and latency figures wait for.
DETECTED = b'"type":"failure.detected"'


# ------------------------------------------------------------------ Redis

@contextlib.contextmanager
def private_redis(home: Path) -> Iterator[str]:
    """A redis-server of our own on a free port (no persistence), for as long as the context."""
    from bus.embedded import EmbeddedRedis, free_port

    server = EmbeddedRedis(home, free_port(), persist=False)
    url = server.start()
    try:
        yield url
    finally:
        server.stop()


# ------------------------------------------------------------------ PostgreSQL

def postgres_base() -> dict[str, str] | None:
    """eventsourcing POSTGRES_* settings from the environment, or None when POSTGRES_HOST is unset."""
    if not os.environ.get("POSTGRES_HOST"):
        return None
    return {
        "POSTGRES_HOST": os.environ["POSTGRES_HOST"],
        "POSTGRES_PORT": os.environ.get("POSTGRES_PORT", "5432"),
        "POSTGRES_USER": os.environ.get("POSTGRES_USER", "postgres"),
        "POSTGRES_PASSWORD": os.environ.get("POSTGRES_PASSWORD", ""),
        "POSTGRES_DBNAME": os.environ.get("POSTGRES_DBNAME", "postgres"),
    }


@contextlib.contextmanager
def postgres_schema(base: dict[str, str]) -> Iterator[dict[str, str]]:
    """A fresh schema (as tests/conftest.py makes one), dropped afterwards: POSTGRES_* with its name."""
    import psycopg
    from psycopg import sql

    from projections.db import postgres_conninfo

    schema = f"bench_{uuid.uuid4().hex[:12]}"
    env = {**base, "POSTGRES_SCHEMA": schema}
    with psycopg.connect(postgres_conninfo(env), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield env
    finally:
        with contextlib.suppress(psycopg.Error), psycopg.connect(postgres_conninfo(env), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


# ------------------------------------------------------------------ cars processes

def free_port() -> int:
    from bus.embedded import free_port as port

    return port()


class Cars:
    """One `cars up` or `cars worker` subprocess."""

    def __init__(self, home: Path, redis_url: str, *, command: tuple[str, ...] = ("up",),
                 extra_env: dict[str, str] | None = None, name: str = "bench") -> None:
        self.home = home
        self.port = free_port()
        self.name = name
        env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "CARS_"))}
        env.update({
            "CARS_HOME": str(home), "REDIS_URL": redis_url, "CARS_HTTP_PORT": str(self.port),
            "CARS_LOG_LEVEL": "WARNING", "CARS_CONSUMER": f"{name}-{uuid.uuid4().hex[:6]}",
            "OTEL_TRACES_EXPORTER": "none", "PYTHONUNBUFFERED": "1",
        })
        env.update(extra_env or {})
        home.mkdir(parents=True, exist_ok=True)
        self.log_path = home / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen([str(CARS), *command], env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Until GET /ready answers 200 (a `cars up`)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._check_alive()
            with contextlib.suppress(OSError, urllib.error.URLError):
                with urllib.request.urlopen(self.base_url + "/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return
            time.sleep(0.2)
        raise RuntimeError(f"cars did not become ready in {timeout_s}s; log: {self.log_tail()}")

    def wait_present(self, redis_url: str, timeout_s: float = 60.0) -> None:
        """Until this process's presence key exists (a `cars worker` has started its subscribers)."""
        import redis

        client = redis.Redis.from_url(redis_url)
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                self._check_alive()
                for key in client.scan_iter(match="cars:presence:*"):
                    value = client.get(key)
                    if value and json.loads(value).get("pid") == self.proc.pid:
                        return
                time.sleep(0.2)
        finally:
            client.close()
        raise RuntimeError(f"cars worker did not start in {timeout_s}s; log: {self.log_tail()}")

    def rss_mb(self) -> float:
        return rss_mb(self.proc.pid)

    def _check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"cars exited with {self.proc.returncode}; log: {self.log_tail()}")

    def log_tail(self, n: int = 3000) -> str:
        self._log.flush()
        return self.log_path.read_bytes()[-n:].decode(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def __enter__(self) -> Cars:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def rss_mb(pid: int) -> float:
    """Resident set size of a process in MiB (VmRSS from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


# ------------------------------------------------------------------ messages

def run_reported(project: str, run_id: str, *, results: int = 200, failing: int = 4) -> bytes:
    """A `run.reported` envelope as a producer writes it: `results` tests, the first `failing` of them failed.

    The same tests fail in every run of a project (a stable break, not flakiness), each with its own
    AttributeError, so every run yields exactly `failing` `failure.detected`.
    """
    out: list[dict[str, Any]] = []
    for i in range(results):
        test_id = f"tests/test_mod{i // 20}.py::test_case_{i}"
        if i < failing:
            out.append({"test_id": test_id, "outcome": "failed", "duration_s": 0.02, "evidence": {
                "exception_type": "AttributeError",
                "message": f"module 'shop.cart' has no attribute 'total_price_{i}'",
                "file": f"tests/test_mod{i // 20}.py", "line": 10 + i,
            }})
        else:
            out.append({"test_id": test_id, "outcome": "passed", "duration_s": 0.01})
    return json.dumps({
        "type": "run.reported", "id": str(uuid.uuid4()), "correlation_id": run_id,
        "data": {"project": project, "run_id": run_id, "commit": "c0ffee", "source": "bench", "results": out},
    }, separators=(",", ":")).encode()


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (0..100) by nearest rank."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def write_result(name: str, figures: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(figures, indent=2) + "\n")
    return path
