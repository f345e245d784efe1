"""GET /metrics after real traffic: a real platform (real Redis, real SQLite store, every actor, the relay,
the projections and the HTTP API in this process) repairs a real repository, dead-letters a malformed
command, and provisions an environment; the scrape, parsed with prometheus_client's own parser, must
agree with what Redis and the store say independently.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from actors.provisioner import environments as envs
from bus import streams, wire
from bus.metrics import STREAMS
from bus.repair_session import repair
from bus.runtime import ACTORS, Platform
from bus.settings import Settings
from bus.store import EventStore
from contracts import Envelope
from contracts.environments import RequestEnvironment
from contracts.registry import RegisterService
from projections.runner import ProjectionRunner
from projections.views import default_views
from tests.integration import waiting
from tests.integration.test_repair_loop import SHOP, make_repo

pytestmark = pytest.mark.slow

TIMEOUT_S = 60.0
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def settings(redis_url: str, tmp_path: Path) -> Iterator[Settings]:
    old = os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD")
    os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # the project's pytest runs need only CARS's plugin
    # No heartbeats during the test: the store and the streams hold still once the traffic is done.
    yield Settings.from_env({"REDIS_URL": redis_url, "CARS_HOME": str(tmp_path / "cars-home"),
                             "CARS_CONSUMER": f"metrics-{uuid.uuid4().hex[:8]}", "CARS_HTTP_PORT": "0",
                             "CARS_HEARTBEAT_S": "600"})
    if old is None:
        os.environ.pop("PYTEST_DISABLE_PLUGIN_AUTOLOAD", None)
    else:
        os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = old


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Redis]:
    c = Redis.from_url(redis_url)
    yield c
    await c.aclose()


@contextlib.asynccontextmanager
async def running(settings: Settings, **kw: object) -> AsyncIterator[Platform]:
    """A platform serving until the block ends; `kw` overrides what it runs."""
    options: dict[str, object] = {"actors": ACTORS, "role": "test", "api": True, "relay": True, "projections": True}
    options.update(kw)
    platform = Platform(settings=settings, **options)  # type: ignore[arg-type]
    ready = anyio.Event()
    assert settings.redis_url is not None
    async with platform.started(settings.redis_url), anyio.create_task_group() as tg:
        tg.start_soon(functools.partial(platform.serve, lambda _: ready.set()))
        await ready.wait()
        try:
            yield platform
        finally:
            tg.cancel_scope.cancel()


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    await waiting.eventually(check, what, timeout_s=TIMEOUT_S)


async def scrape(url: str) -> Samples:
    async with httpx.AsyncClient() as http:
        answer = await http.get(url)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(answer.text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    assert key in samples, f"no sample {name}{labels}; have {sorted(k for k in samples if k[0] == name)}"
    return samples[key]


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of every sample of `name` whose labels include `labels`."""
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= ls)


async def live_environments(store: EventStore) -> dict[uuid.UUID, envs.EnvStatus]:
    """Environments requested or provisioned now, by the provisioner's own fold of each one's history."""
    requested = await anyio.to_thread.run_sync(
        functools.partial(store.read, after=0, limit=1000, types=["environment.requested"]))
    states = {r.envelope.data.environment_id: envs.fold(await anyio.to_thread.run_sync(
        store.load, r.envelope.data.environment_id)).status for r in requested}
    return {k: v for k, v in states.items() if v in envs.LIVE}


async def test_a_scrape_after_a_repair_agrees_with_redis_and_the_store(
    settings: Settings, tmp_path: Path, client: Redis,
) -> None:
    repo = make_repo(tmp_path / "shop", SHOP, {
        "shop/cart.py": SHOP["shop/cart.py"].replace("total_price", "cart_total")})
    async with running(settings) as platform:
        assert platform.store is not None and platform.views is not None
        store, views = platform.store, platform.views
        # Given a repaired run (through this platform: the session finds it running) ...
        lines: list[str] = []
        result = await repair(settings, repo, test_cmd=f"{sys.executable} -m pytest -q -p no:cacheprovider",
                              project="shop", apply=False, timeout_s=120, progress=lines.append)
        assert [r.status for r in result.repairs] == ["validated"], lines
        # ... a command that is not JSON, dead-lettered at once ...
        await client.xadd(streams.COMMANDS, {"message": "{not json"})
        # ... an environment requested and kept ...
        env_id = uuid.uuid4()
        await platform.publish(Envelope(data=RequestEnvironment(environment_id=env_id, repo_path=str(repo))))
        # ... and an external subscriber of cars.results that read one entry and has not acknowledged it
        # (once the relay has put the repair there: the session returns when the store has it)
        with anyio.fail_after(30):
            while not await client.xlen(streams.RESULTS):  # noqa: ASYNC110  (Redis offers no event here)
                await anyio.sleep(0.05)
        await client.xgroup_create(streams.RESULTS, "watcher", id="0")
        await client.xreadgroup("watcher", "w1", {streams.RESULTS: ">"}, count=1)

        async def settled() -> bool:
            head = await anyio.to_thread.run_sync(store.max_position)
            relayed = int(await client.get(streams.RELAY_POSITION_KEY) or 0)
            folded = await anyio.to_thread.run_sync(ProjectionRunner(store, views, default_views()).position)
            live = await live_environments(store)
            groups = [g for s in {c.stream for c in platform.consumers.values()} for g in await client.xinfo_groups(s)
                      if wire.text(g["name"]) != "watcher"]  # (the external subscriber stays behind on purpose)
            return (await client.xlen(streams.DLQ) == 1 and live == {env_id: envs.EnvStatus.PROVISIONED}
                    and relayed == head == folded and all(g["pending"] == 0 and g["lag"] == 0 for g in groups))

        await eventually(settled, "the dead letter, the environment, the relay, the views and every group settle")

        # When Prometheus scrapes the API
        assert platform.http_port is not None
        samples = await scrape(f"http://127.0.0.1:{platform.http_port}/metrics")

        # Then every source could be read
        for source in ("redis", "store", "views"):
            assert value(samples, "cars_metrics_source_up", source=source) == 1
        # ... messages in: the run was handled once by the monitor, the failure by the healer; the malformed
        # command was dead-lettered by exactly one group and ignored by the others
        assert value(samples, "cars_messages_consumed_total", stream=streams.INGEST, group="monitor",
                     outcome="handled") == 1
        assert value(samples, "cars_messages_consumed_total", stream="cars.events.failures", group="healer",
                     outcome="handled") >= 1
        assert total(samples, "cars_messages_consumed_total", stream=streams.COMMANDS,
                     outcome="dead_lettered") == 1
        assert total(samples, "cars_messages_consumed_total", outcome="failed") == 0
        # ... handler latency per group: one observation for the one run, taking some time
        assert value(samples, "cars_handler_duration_seconds_count", stream=streams.INGEST, group="monitor") == 1
        assert value(samples, "cars_handler_duration_seconds_sum", stream=streams.INGEST, group="monitor") > 0
        assert value(samples, "cars_handler_duration_seconds_bucket", stream=streams.INGEST, group="monitor",
                     le="+Inf") == 1
        # ... messages out: this process's relay published every entry of the topic streams, and the dead letter
        for stream in (*streams.ALL_EVENT_STREAMS, streams.RESULTS):
            published = total(samples, "cars_messages_published_total", stream=stream)
            assert published == await client.xlen(stream), stream
        assert value(samples, "cars_messages_published_total", stream=streams.DLQ) == 1
        assert value(samples, "cars_messages_published_total", stream=streams.COMMANDS) >= 2  # register, env
        # ... stream lengths, the DLQ size, and the external group's pending count and lag, as Redis says
        for stream in STREAMS:
            assert value(samples, "cars_stream_length", stream=stream) == await client.xlen(stream), stream
        assert value(samples, "cars_dlq_entries") == 1
        results = await client.xlen(streams.RESULTS)
        assert results >= 1
        assert value(samples, "cars_group_pending", stream=streams.RESULTS, group="watcher") == 1
        assert value(samples, "cars_group_lag", stream=streams.RESULTS, group="watcher") == results - 1
        assert value(samples, "cars_group_consumers", stream=streams.RESULTS, group="watcher") == 1
        for consumer in platform.consumers.values():  # every actor's group on every stream it reads: all done
            assert value(samples, "cars_group_pending", stream=consumer.stream, group=consumer.group) == 0
            assert value(samples, "cars_group_lag", stream=consumer.stream, group=consumer.group) == 0
        # ... the relay is at the end of the log
        head = await anyio.to_thread.run_sync(store.max_position)
        assert value(samples, "cars_relay_position") == value(samples, "cars_store_position") == head
        # ... heal outcomes by class and strategy: every proposed candidate, validated ones as such
        proposed = len(await anyio.to_thread.run_sync(
            functools.partial(store.read, after=0, limit=1000, types=["heal.proposed"])))
        assert total(samples, "cars_heal_candidates") == proposed >= 1
        assert value(samples, "cars_heal_candidates", **{"class": "renamed_symbol"}, strategy="renamed_symbol",
                     verdict="validated") == 1
        assert value(samples, "cars_repairs", **{"class": "renamed_symbol"}, status="completed") == 1
        # ... and the environments alive now: the one kept (the validator released its own)
        assert value(samples, "cars_environments_active", backend="local", state="provisioned") == 1
        assert total(samples, "cars_environments_active") == 1

        # When the kept environment is released, Then the next scrape no longer counts it
        await client.xadd(streams.COMMANDS, {"message": f'{{"type":"environment.release","data":'
                                                        f'{{"environment_id":"{env_id}"}}}}'})

        async def released() -> bool:
            return await live_environments(store) == {}

        await eventually(released, "the environment is released")
        after = await scrape(f"http://127.0.0.1:{platform.http_port}/metrics")
        assert total(after, "cars_environments_active") == 0


async def test_a_worker_serves_its_own_counters_on_the_metrics_port(
    settings: Settings, redis_url: str,
) -> None:
    # Given a worker running only the registry, with no API and CARS_METRICS_PORT set (0: any free port)
    worker = Settings.from_env({"REDIS_URL": redis_url, "CARS_HOME": str(settings.home), "CARS_METRICS_PORT": "0",
                                "CARS_CONSUMER": f"worker-{uuid.uuid4().hex[:8]}", "CARS_HEARTBEAT_S": "600"})
    async with running(worker, actors=["registry"], api=False, relay=False, projections=False) as platform:
        # When a service registers (the worker registered itself at start-up as well)
        await platform.publish(Envelope(data=RegisterService(instance="svc-1", role="ci")))
        registry = platform.consumers[f"registry@{streams.COMMANDS}"]

        async def handled() -> bool:
            return registry.processed == 2

        await eventually(handled, "both registrations are handled")
        assert platform.metrics_port is not None
        samples = await scrape(f"http://127.0.0.1:{platform.metrics_port}/metrics")
    # Then its port serves this process's counters ...
    assert value(samples, "cars_messages_consumed_total", stream=streams.COMMANDS, group="registry",
                 outcome="handled") == 2
    assert value(samples, "cars_messages_published_total", stream=streams.COMMANDS) == 2
    assert value(samples, "cars_handler_duration_seconds_count", stream=streams.COMMANDS, group="registry") == 2
    # ... and not the bus-wide gauges, which the API process serves once for all
    assert not [k for k in samples if k[0] in ("cars_stream_length", "cars_group_lag", "cars_heal_candidates")]
