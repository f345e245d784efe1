"""Scale-out on one machine: two `cars worker` processes per actor role share each consumer group.

Real subprocesses against one Redis (the test database) and one PostgreSQL store (a fresh schema):
`cars up --actors none` runs the API, the relay and the projections, as the deploy/ files do; two
`cars worker --actors ROLE` per role run the actors. A batch of failing test runs of small real git
repositories (a refactor renamed the function a test calls) goes onto cars.ingest in one transaction.

Then, for every group, both of its consumers handled messages (each process logs what it handled at
DEBUG); the store holds each fact once (one failure per test, one repair per failure, one verdict
per candidate, one environment per request), the relay published each position once, and after the
workers stop nothing is left pending in any group. A service that stops heartbeating is recorded
lost exactly once although both registry workers sweep.
"""

from __future__ import annotations

import collections
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from actors.testrun import run_tests
from bus import runtime, streams, wire
from bus.settings import Settings
from bus.store import EventStore
from contracts import Envelope
from contracts.registry import RegisterService
from contracts.runs import RunReported
from tests.e2e.conftest import Cars, CarsProcess, base_env, eventually, free_port
from tests.integration.test_repair_loop import SHOP, git, make_repo

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(600)]

PROJECTS = 4  # failing runs in the batch: one renamed function each
SETTLE_TIMEOUT_S = 400.0  # the whole loop for the batch on a loaded 2-core machine
HEARTBEAT_S = 2.0
SERVICE_TIMEOUT_S = 10.0
TEST_CMD = f"{sys.executable} -m pytest -q -p no:cacheprovider"


def consumer_name(role: str, n: int) -> str:
    return f"{role}-{'ab'[n]}"


@pytest.fixture
def cluster(tmp_path: Path, redis_url: str, postgres_env: dict[str, str]) -> Iterator[tuple[Cars, dict[str, Any]]]:
    """The API process and two workers per actor role, every one present (its presence key set)."""
    env = base_env(tmp_path / "home")
    env.update({k: v for k, v in postgres_env.items() if k.startswith("POSTGRES_")})
    env.update({
        "REDIS_URL": redis_url, "CARS_STORE": "postgres", "CARS_LOG_LEVEL": "DEBUG", "CARS_LOG_JSON": "1",
        "CARS_HEARTBEAT_S": str(HEARTBEAT_S), "CARS_SERVICE_TIMEOUT_S": str(SERVICE_TIMEOUT_S),
        # Only the CARS plugin in the projects' pytest runs: other plugins cost seconds per run.
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
    })
    cars = Cars(env, tmp_path / "logs")
    port = free_port()
    processes: dict[str, Any] = {"api": cars.with_env(CARS_CONSUMER="api").start(
        "up", "--actors", "none", "--port", str(port))}
    for role in runtime.ACTORS:
        for n in range(2):
            name = consumer_name(role, n)
            processes[name] = cars.with_env(CARS_CONSUMER=name).start("worker", "--actors", role)
    client = redis.Redis.from_url(redis_url)
    try:
        def all_present() -> bool:
            for process in processes.values():
                process.assert_running()
            return all(client.exists(streams.PRESENCE_PREFIX + name) for name in processes)

        eventually(all_present, "every process is up (presence key set)", 180.0,
                   details=lambda: "\n".join(p.describe() for p in processes.values()), interval_s=0.5)
        yield cars, {"processes": processes, "redis": client, "port": port}
    finally:
        client.close()
        cars.close()


def failing_repos(root: Path) -> list[Path]:
    """Small real git repos whose last commit renamed the function their test calls."""
    repos = []
    for i in range(PROJECTS):
        new_name = f"sum_all_{i}"
        refactor = {"shop/cart.py": SHOP["shop/cart.py"].replace("total_price", new_name)}
        repo = make_repo(root / f"shop{i}", SHOP, refactor)
        git(repo, "log", "-1")
        repos.append(repo)
    return repos


def handled_by(process: CarsProcess) -> list[dict[str, Any]]:
    """The messages this process logged as handled (JSON log lines, DEBUG)."""
    found = []
    for line in process.output().splitlines():
        if line.startswith("{") and '"handled"' in line:
            doc = json.loads(line)
            if doc.get("msg") == "handled":
                found.append(doc)
    return found


def test_two_workers_per_role_split_the_work_without_duplicates(
    cluster: tuple[Cars, dict[str, Any]], tmp_path: Path, postgres_env: dict[str, str],
) -> None:
    _, parts = cluster
    processes: dict[str, CarsProcess] = parts["processes"]
    client: redis.Redis = parts["redis"]
    details = lambda: "\n".join(p.describe() for p in processes.values())  # noqa: E731

    # Given a batch of failing runs of real repositories, and a service that registers and then goes silent
    reports = []
    for repo in failing_repos(tmp_path / "repos"):
        run = run_tests(repo, TEST_CMD, env={**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"})
        assert [r.test_id for r in run.failed()] == ["tests/test_cart.py::test_total"], run.log_tail
        reports.append(RunReported(project=repo.name, run_id=f"ci-{repo.name}", repo_path=str(repo), test_cmd=TEST_CMD,
                                   source="scale-out test", auto_apply=False, results=run.results))
    # When they all arrive at once (one MULTI/EXEC)
    with client.pipeline(transaction=True) as pipe:
        for report in reports:
            pipe.xadd(streams.INGEST, wire.entry_fields(Envelope(data=report)))  # type: ignore[arg-type]
        pipe.xadd(streams.COMMANDS, wire.entry_fields(  # type: ignore[arg-type]
            Envelope(data=RegisterService(instance="ghost-1", role="ci"))))
        pipe.execute()

    # Then every failure is repaired, every environment released, and the ghost recorded lost
    store = EventStore(Settings.from_env({**postgres_env, "CARS_STORE": "postgres"}).store_env())
    try:
        def events() -> list[Envelope[Any]]:
            out, after = [], 0
            while batch := store.read(after=after, limit=1000):
                out += [r.envelope for r in batch]
                after = batch[-1].position
            return out

        def settled() -> list[Envelope[Any]] | None:
            for process in processes.values():
                process.assert_running()
            history = events()
            count = collections.Counter(e.type for e in history)
            requested = count["environment.requested"]
            done = (count["repair.completed"] == PROJECTS and requested >= PROJECTS
                    and count["environment.released"] + count["environment.expired"] == requested
                    and count["service.lost"] >= 1)
            return history if done else None

        history = eventually(settled, f"{PROJECTS} repairs completed, environments released, ghost lost",
                             SETTLE_TIMEOUT_S, details=details, interval_s=1.0)
        positions = [r.position for r in store.read(after=0, limit=100_000)]
    finally:
        store.close()

    # The store holds each fact once
    def once(kind: str, key: Any) -> None:
        keys = [key(e) for e in history if e.type == kind]
        duplicated = [k for k, n in collections.Counter(keys).items() if n > 1]
        assert not duplicated, f"{kind} recorded more than once for {duplicated}"

    assert len({e.id for e in history}) == len(history)
    assert len(set(positions)) == len(positions)
    once("run.recorded", lambda e: e.data.run_id)
    once("failure.detected", lambda e: (e.data.project, e.data.test_id))
    once("heal.proposed", lambda e: e.data.candidate_id)
    once("heal.validated", lambda e: e.data.candidate_id)
    once("heal.rejected", lambda e: e.data.candidate_id)
    once("repair.completed", lambda e: e.data.repair_id)
    once("environment.requested", lambda e: e.data.environment_id)
    once("environment.provisioned", lambda e: e.data.environment_id)
    once("environment.released", lambda e: e.data.environment_id)
    once("service.lost", lambda e: e.data.instance)
    count = collections.Counter(e.type for e in history)
    assert count["run.recorded"] == PROJECTS and count["failure.detected"] == PROJECTS
    assert sorted(e.data.project for e in history if e.type == "repair.completed") == [
        f"shop{i}" for i in range(PROJECTS)]
    assert [e.data.instance for e in history if e.type == "service.lost"] == ["ghost-1"]

    # And the relay published each position once on its stream
    for stream in streams.ALL_EVENT_STREAMS:
        published = [wire.text(f[b"position"]) for _, f in client.xrange(stream)]
        assert len(published) == len(set(published)), f"{stream} repeats positions"

    # And both consumers of every group handled messages
    seen: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for name, process in processes.items():
        for doc in handled_by(process):
            consumer = doc["consumer"].removesuffix("-reclaim")
            assert consumer == name, doc
            seen[doc["group"]][consumer] += 1
    for role in runtime.ACTORS:
        if role == "notifier":
            # Its few events (one per finished repair) come one at a time, minutes apart, so which of
            # two idle consumers takes each is up to Redis's queue of waiting readers: a split is not
            # guaranteed, only that its group handled them.
            assert seen[role], (role, dict(seen))
            continue
        assert set(seen[role]) == {consumer_name(role, 0), consumer_name(role, 1)}, (role, dict(seen))
    print({group: dict(c) for group, c in seen.items()})  # the split, shown with -s

    # And nothing stays pending in any group of any stream: each group's pending list empties (the
    # commands stream never rests, as every process heartbeats, so each group is polled until it is empty)
    groups = [(stream, wire.text(g["name"])) for stream in (streams.INGEST, streams.COMMANDS,
              *streams.ALL_EVENT_STREAMS, streams.RESULTS) if client.exists(stream)
              for g in client.xinfo_groups(stream)]
    assert {g for _, g in groups} == set(runtime.ACTORS)

    def drained(stream: str, group: str) -> bool:
        return int(client.xpending(stream, group)["pending"]) == 0

    for stream, group in groups:
        eventually(lambda s=stream, g=group: drained(s, g), f"{group} has nothing pending on {stream}", 30.0,
                   details=lambda s=stream, g=group: str(client.xpending(s, g)), interval_s=0.05)

    # When the workers stop (Ctrl-C), each exits cleanly
    stopping_ms = int(time.time() * 1000)
    for name, process in processes.items():
        if name != "api":
            assert process.interrupt() == 0, process.describe()
    # Then the only entries still pending are ones a worker read while it was being stopped: they stay
    # with that consumer, to be reclaimed by the group's next process (at-least-once delivery)
    for stream, group in groups:
        summary = client.xpending(stream, group)
        if summary["pending"]:
            assert int(wire.text(summary["min"]).split("-")[0]) >= stopping_ms - 1000, (stream, group, summary)
            assert summary["consumers"], summary
