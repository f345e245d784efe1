"""Faults with real processes: the Redis bus restarted under traffic, a consumer group deleted at runtime.

Each test runs its own redis-server on a free port (never the shared one), with the append-only file
CARS's embedded Redis uses, so that a restart keeps what was accepted, and its own PostgreSQL when it
stops one. Unlike the other e2e tests these import CARS, for its service launchers only.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import unavailable
from tests.e2e.conftest import (
    STARTUP_TIMEOUT_S,
    Cars,
    RedisCli,
    eventually,
    free_port,
    running_platform,
)


class PrivateRedis:
    """A redis-server of this test only, run exactly as CARS runs its embedded one (`bus.embedded`:
    an append-only file, SIGTERM to stop, which flushes it)."""

    def __init__(self, folder: Path, cli_binary: str) -> None:
        from bus.embedded import EmbeddedRedis

        self.server = EmbeddedRedis(folder, free_port(), persist=True)
        self.port = self.server.port
        self.cli = RedisCli(cli_binary, ["-p", str(self.port)])

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture
def private_redis(tmp_path: Path, redis_cli_binary: str) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path / "private", redis_cli_binary)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def register(instance: str) -> str:
    return json.dumps({"type": "service.register", "data": {"instance": instance, "role": "ci"}})


def relayed(cli: RedisCli) -> list[tuple[str, dict[str, str]]]:
    """Every entry of every topic stream (cars.events.*)."""
    entries: list[tuple[str, dict[str, str]]] = []
    for stream in cli("KEYS", "cars.events.*").split():
        entries += [(stream, fields) for _, fields in cli.xread(stream, count=100_000)]
    return entries


def registrations(cli: RedisCli) -> list[str]:
    """The instance of every service.registered on the topic stream, in stream order."""
    return [
        m["data"]["instance"] for _, f in cli.xread("cars.events.registry", count=100_000)
        if (m := json.loads(f["message"]))["type"] == "service.registered"
    ]


def test_a_redis_restart_under_traffic_loses_nothing_and_relays_nothing_twice(
    cars: Cars, private_redis: PrivateRedis,
) -> None:
    # Given `cars up` and a `cars worker` of the registry on a private Redis (quick to reclaim)
    cli = private_redis.cli
    cars = cars.with_env(REDIS_URL=private_redis.url, CARS_RECLAIM_IDLE_MS="1000", CARS_HEARTBEAT_S="1")
    with running_platform(cars) as platform:
        worker = cars.start("worker", "--actors", "registry")
        eventually(lambda: len(cli("KEYS", "cars:presence:*").split()) == 2,
                   "the worker is up (its presence key is set)", STARTUP_TIMEOUT_S, details=worker.describe)
        before = [f"before-{i}" for i in range(20)]
        after = [f"after-{i}" for i in range(20)]
        # When commands keep arriving, and Redis is stopped and started again in the middle of them
        for instance in before:
            cli.xadd("cars.commands", "message", register(instance))
        private_redis.stop()
        private_redis.start()
        for instance in after:
            cli.xadd("cars.commands", "message", register(instance))

        # Then both processes reconnect by themselves: every service, before and after, is registered
        def all_alive() -> bool:
            platform.process.assert_running()
            worker.assert_running()
            services = platform.services()
            return all(services.get(i, {}).get("status") == "alive" for i in before + after)

        eventually(all_alive, "every service is alive in GET /services", 60.0,
                   details=lambda: platform.process.describe() + "\n" + worker.describe())
        # And each registration was relayed exactly once
        eventually(lambda: set(registrations(cli)) >= set(before + after), "every registration is relayed", 30.0)
        seen = registrations(cli)
        assert sorted(i for i in seen if i in before + after) == sorted(before + after)
        # And the relay resumed from its position: across all topic streams, every log position from 1 to
        # the last appears once, none skipped, none twice
        positions = sorted(int(fields["position"]) for _, fields in relayed(cli))
        assert positions == list(range(1, len(positions) + 1))
        assert int(cli("GET", "cars:relay:position")) >= positions[-1]
        # And nothing is left pending or dead-lettered
        assert cli.xlen("cars.dlq") == 0
        # (heartbeats keep flowing, so an entry may be in flight; none may stay pending past reclaim)
        for group in ("registry", "monitor", "healer", "provisioner"):
            stuck = cli.json("XPENDING", "cars.commands", group, "IDLE", "5000", "-", "+", "10")
            assert stuck == [], (group, stuck)
        worker.assert_running()
        assert worker.interrupt() == 0, worker.describe()


def test_a_deleted_consumer_group_stops_the_process_non_zero_and_a_restart_recreates_it(
    cars: Cars, private_redis: PrivateRedis,
) -> None:
    # Given a running `cars up` whose registry group consumes cars.commands
    cli = private_redis.cli
    cars = cars.with_env(REDIS_URL=private_redis.url)
    with running_platform(cars) as first:
        cli.xadd("cars.commands", "message", register("early"))
        first.wait_for_service("early")
        # When the group is deleted under it
        assert cli("XGROUP", "DESTROY", "cars.commands", "registry") == "1"

        # Then the process exits non-zero, saying which stream and group and why
        code = eventually(lambda: first.process.proc.poll(), "cars up exits", 20.0, details=first.process.describe)
        assert code == 1, first.process.describe()
        output = first.process.output()
        assert "stopped consuming cars.commands (group registry): the consumer group no longer exists" in output

    # And a restart (what a supervisor does) recreates the group and carries on
    with running_platform(cars) as second:
        groups = {g["name"] for g in cli.json("XINFO", "GROUPS", "cars.commands")}
        assert "registry" in groups
        cli.xadd("cars.commands", "message", register("late"))
        second.wait_for_service("late")
        # (the service registered before the deletion is still known: the store kept it)
        assert "early" in second.services()


class PrivatePostgres:
    """A PostgreSQL of this test only (`actors.provisioner.services.start_postgres`), which it can stop
    and start again on the same data and port."""

    def __init__(self) -> None:
        from actors.provisioner import services

        self.services = services
        # Reachable by the unprivileged user PostgreSQL runs as when the tests run as root.
        self.folder = Path(tempfile.mkdtemp(prefix="cars-faults-pg-"))
        self.folder.chmod(0o755)
        self.service = services.start_postgres(self.folder)
        self.port = self.service.port

    def env(self) -> dict[str, str]:
        # (a connect timeout of 5 s instead of eventsourcing's 30 s keeps the test short)
        return {"CARS_STORE": "postgres", "POSTGRES_HOST": "127.0.0.1", "POSTGRES_PORT": str(self.port),
                "POSTGRES_CONNECT_TIMEOUT": "5",
                "POSTGRES_USER": "postgres", "POSTGRES_PASSWORD": "", "POSTGRES_DBNAME": "postgres"}

    def stop(self) -> None:
        """A fast shutdown (SIGINT), keeping the data (`stop_service` would remove it)."""
        self.services.stop_process_group(self.service.pid, self.service.started, signal.SIGINT)

    def start_again(self) -> None:
        """The same server, data and port (what `start_postgres` runs, without initdb)."""
        _initdb, postgres, pg_isready = self.services.postgres_binaries()
        user = self.services.service_user()
        as_user: dict[str, Any] = {} if user is None else {
            "user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        with (self.folder / "postgres.log").open("ab") as out:
            proc = subprocess.Popen(
                [postgres, "-D", str(self.folder / "data"), "-p", str(self.port), "-k", str(self.folder / "sock"),
                 "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=30",
                 "-c", "shared_buffers=16MB"],
                cwd=self.folder, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"},
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **as_user,
            )
        self.service = self.services.ServiceProcess(
            kind="postgres", pid=proc.pid, started=self.services.process_start_time(proc.pid), port=self.port,
            data_dir=str(self.folder), stop_signal=int(signal.SIGINT),
        )
        eventually(lambda: subprocess.run([pg_isready, "-q", "-h", "127.0.0.1", "-p", str(self.port)],
                                          check=False, timeout=10).returncode == 0,
                   "the private PostgreSQL accepts connections again", 30.0)

    def close(self) -> None:
        self.services.stop_service(self.service)


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    from actors.provisioner.services import EnvironmentUnavailable

    try:
        server = PrivatePostgres()
    except EnvironmentUnavailable as exc:
        unavailable(f"no local PostgreSQL binaries: {exc}")
        raise
    try:
        yield server
    finally:
        server.close()


def test_a_postgres_outage_leaves_messages_pending_and_they_are_stored_once_when_it_returns(
    cars: Cars, private_redis: PrivateRedis, private_postgres: PrivatePostgres,
) -> None:
    # Given `cars up` on a private PostgreSQL store, reclaiming after 1 s and trying 60 times
    cli = private_redis.cli
    cars = cars.with_env(REDIS_URL=private_redis.url, CARS_RECLAIM_IDLE_MS="1000", CARS_MAX_DELIVERIES="60",
                         **private_postgres.env())
    with running_platform(cars) as platform:
        cli.xadd("cars.commands", "message", register("before"))
        platform.wait_for_service("before")

        # When PostgreSQL stops, and commands arrive while it is down
        private_postgres.stop()
        during = [f"during-{i}" for i in range(10)]
        for instance in during:
            cli.xadd("cars.commands", "message", register(instance))

        # Then none of them is acknowledged (a handler waits on the store, or failed and left its entry
        # pending; the rest wait unread in the stream), nothing is dead-lettered, and the process lives on
        def unacknowledged() -> int:
            group = next(g for g in cli.json("XINFO", "GROUPS", "cars.commands") if g["name"] == "registry")
            unread = cli.json("XRANGE", "cars.commands", "(" + group["last-delivered-id"], "+")
            return int(group["pending"]) + len(unread)

        time.sleep(3)
        platform.process.assert_running()
        assert unacknowledged() >= len(during)
        assert cli.xlen("cars.dlq") == 0
        # (the API says the store is unreachable, and answers, for as long as the outage lasts: the
        # projections and the relay, which hit the store all the time, wait it out instead of ending
        # the process)
        for _ in range(4):
            try:
                ready = platform.get("/ready").status_code
            except httpx.HTTPError as exc:
                raise AssertionError(f"the API went away: {exc}\n{platform.process.output()[-6000:]}") from exc
            assert ready == 503
            time.sleep(2)
        platform.process.assert_running()

        # When PostgreSQL comes back
        private_postgres.start_again()

        # Then every command is retried and takes effect, exactly once
        def all_alive() -> bool:
            platform.process.assert_running()
            response = platform.get("/services")
            rows = {r["instance"]: r["status"] for r in response.json()["services"]} if response.is_success else {}
            return all(rows.get(i) == "alive" for i in ["before", *during])

        eventually(all_alive, "every service is alive in GET /services", 60.0, details=platform.process.describe)
        eventually(lambda: set(registrations(cli)) >= {"before", *during}, "every registration is relayed", 30.0)
        assert sorted(i for i in registrations(cli) if i in during) == sorted(during)
        positions = sorted(int(fields["position"]) for _, fields in relayed(cli))
        assert positions == list(range(1, len(positions) + 1))
        assert cli.xlen("cars.dlq") == 0
        stuck = cli.json("XPENDING", "cars.commands", "registry", "IDLE", "5000", "-", "+", "10")
        assert stuck == []
        assert platform.get("/ready").status_code == 200
