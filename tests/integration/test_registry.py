"""The registry on real infrastructure: service commands go through the consumer that
`bus.runtime.Platform.build_router` wires (real Redis), their effects land in a real event store
(SQLite and PostgreSQL: every test body runs on both, STYLE rule 19), and the missed-heartbeat sweep
runs on a clock the test sets.

The sweep reads which services are alive from the real services view, caught up by the real
projection runner; a test lets that view lag behind the store on purpose, as it can in production.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from attrs import evolve
from redis.asyncio import Redis

import contracts
from actors.registry import router as registry
from actors.registry.services import Status, fold, service_id
from bus import streams, wire
from bus.aggregates import AggregateStore
from bus.consumer import StreamConsumer
from bus.runtime import Platform, utcnow
from bus.settings import Settings
from bus.store import EventStore
from contracts import Envelope, natural_id, reply_id
from contracts.registry import (
    DeregisterService,
    Heartbeat,
    HeartbeatRecorded,
    RegisterService,
    ServiceDeregistered,
    ServiceLost,
    ServiceRegistered,
)
from projections.runner import ProjectionRunner
from projections.views import default_views
from tests.integration import waiting
from tests.integration.store_views import OnStore

WAIT_S = 15.0  # the longest any test waits for the bus
SERVICE_TIMEOUT_S = 35.0
TICK = dt.timedelta(microseconds=1)
STARTED_AT = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)
SERVICE_EVENTS = frozenset({"service.registered", "service.heartbeat_recorded", "service.lost",
                            "service.deregistered"})


class ManualClock:
    """A clock that says what the test set it to."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = WAIT_S) -> None:
    await waiting.eventually(check, what, timeout_s=timeout_s)


def new_instance() -> str:
    return f"svc-{uuid.uuid4().hex[:8]}"


def register(instance: str) -> Envelope[Any]:
    return Envelope(data=RegisterService(
        instance=instance, role="worker", version="1.2.3", actors=("registry",), host="box-1", pid=4242,
        started_at=STARTED_AT,
    ))


def registry_consumer(platform: Platform) -> StreamConsumer:
    """The platform's one consumer of the registry group on cars.commands."""
    [consumer] = [c for c in platform.consumers.values() if (c.stream, c.group) == (streams.COMMANDS, registry.ROLE)]
    return consumer


async def no_alive_instances() -> list[str]:
    return []


def sweeper(
    store: EventStore, clock: ManualClock, alive: Callable[[], Awaitable[list[str]]],
) -> registry.RegistryDeps:
    """What `Platform.registry_deps` builds, with the test's clock in both places it is read."""
    return registry.RegistryDeps(
        aggregates=AggregateStore(store, clock), clock=clock, alive_instances=alive,
        service_timeout_s=SERVICE_TIMEOUT_S,
    )


class RegistryContract(OnStore):
    """The test bodies; subclasses choose the store."""

    @pytest.fixture
    def settings(self, store_env: dict[str, str], tmp_path: Path, redis_url: str) -> Settings:
        """CARS settings of one process on this store and this Redis, as `cars worker` reads them."""
        settings = Settings.from_env({
            **store_env, "CARS_HOME": str(tmp_path), "REDIS_URL": redis_url,
            "CARS_CONSUMER": f"test-{uuid.uuid4().hex[:8]}", "CARS_SERVICE_TIMEOUT_S": str(SERVICE_TIMEOUT_S),
            # Long enough that nothing is reclaimed while it is still being handled, which would
            # make the consumer's counts race; the reclaim test shortens it.
            "CARS_RECLAIM_IDLE_MS": "60000",
        })
        # The platform's store is the one the fixture prepared (for SQLite: the same file under tmp_path)
        assert settings.store_env().items() >= store_env.items()
        return settings

    @pytest.fixture
    async def client(self, redis_url: str) -> AsyncIterator[Redis]:
        c = Redis.from_url(redis_url)
        yield c
        await c.aclose()

    @contextlib.asynccontextmanager
    async def running(self, settings: Settings) -> AsyncIterator[Platform]:
        """A CARS process running only the registry actor: its router, consumer group and store."""
        platform = Platform(
            settings=settings, actors=["registry"], role="worker", api=False, relay=False, projections=False,
        )
        assert settings.redis_url is not None
        async with platform.started(settings.redis_url) as started:
            yield started

    async def history(self, store: EventStore, instance: str) -> list[Envelope[Any]]:
        return await anyio.to_thread.run_sync(store.load, service_id(instance))

    async def pending(self, client: Redis) -> int:
        return int((await client.xpending(streams.COMMANDS, registry.ROLE))["pending"])

    async def catch_up_views(self, platform: Platform) -> None:
        assert platform.store is not None and platform.views is not None
        runner = ProjectionRunner(platform.store, platform.views, default_views())
        await anyio.to_thread.run_sync(runner.catch_up)

    # -- commands through the consumer ------------------------------------------------------------------

    async def test_service_commands_through_the_consumer_become_the_services_events(
        self, settings: Settings, store: EventStore, client: Redis,
    ) -> None:
        async with self.running(settings) as platform:
            consumer = registry_consumer(platform)
            instance = new_instance()
            commands = [
                register(instance), Envelope(data=Heartbeat(instance=instance)),
                Envelope(data=DeregisterService(instance=instance, reason="scaled down")),
            ]
            # When a service registers, heartbeats and deregisters over the bus
            sent_at = utcnow()
            for command in commands:
                await platform.publish(command)

            async def all_handled() -> bool:
                return consumer.processed == 3 and await self.pending(client) == 0

            await eventually(all_handled, "the three commands are handled and acknowledged")
            done_at = utcnow()

        # Then its stream holds one event per command, in order, each caused by its command
        history = await self.history(store, instance)
        assert [e.type for e in history] == ["service.registered", "service.heartbeat_recorded",
                                             "service.deregistered"]
        assert [e.causation_id for e in history] == [str(c.id) for c in commands]
        assert [e.correlation_id for e in history] == [str(c.id) for c in commands]
        assert [e.id for e in history] == [reply_id(c.id) for c in commands]
        assert [(e.stream_id, e.stream_version) for e in history] == [(service_id(instance), v) for v in (1, 2, 3)]
        # ... carrying what the service announced, and when it was heard from
        registered, heartbeat, deregistered = (e.data for e in history)
        assert registered == ServiceRegistered(
            instance=instance, role="worker", version="1.2.3", actors=("registry",), host="box-1", pid=4242,
            started_at=STARTED_AT,
        )
        assert isinstance(heartbeat, HeartbeatRecorded) and heartbeat.instance == instance
        assert sent_at <= history[0].occurred_at <= heartbeat.at <= done_at
        assert deregistered == ServiceDeregistered(instance=instance, reason="scaled down")
        assert fold(history).status is Status.DEREGISTERED
        # ... and nothing was dead-lettered or left to retry
        assert (consumer.dead_lettered, consumer.failures) == (0, 0)
        assert await client.xlen(streams.DLQ) == 0

    async def test_a_command_delivered_again_with_the_same_id_is_acknowledged_and_changes_nothing(
        self, settings: Settings, store: EventStore, client: Redis,
    ) -> None:
        async with self.running(settings) as platform:
            consumer = registry_consumer(platform)
            instance = new_instance()
            registration, heartbeat = register(instance), Envelope(data=Heartbeat(instance=instance))
            # Given a service that registered and heartbeated, each command handled
            for command in (registration, heartbeat):
                await platform.publish(command)

            def handled(n: int) -> Callable[[], Awaitable[bool]]:
                async def check() -> bool:
                    return consumer.processed == n and await self.pending(client) == 0
                return check

            await eventually(handled(2), "the first deliveries are handled")
            first = await self.history(store, instance)
            # When a producer sends both again, the very same envelopes (same ids), as a retry would
            for command in (registration, heartbeat):
                await platform.publish(command)

            # Then both new entries are acknowledged as done ...
            await eventually(handled(4), "the second deliveries are acknowledged")

        entries: list[tuple[bytes, dict[bytes, bytes]]] = await client.xrange(streams.COMMANDS)  # type: ignore[assignment]
        sent = [fields.get(streams.MESSAGE_FIELD.encode()) for _, fields in entries]
        assert [sent.count(contracts.dumps(c).encode()) for c in (registration, heartbeat)] == [2, 2]
        assert (consumer.dead_lettered, consumer.failures) == (0, 0)
        assert await client.xlen(streams.DLQ) == 0
        # ... and the store holds each effect once: the same events as after the first deliveries
        history = await self.history(store, instance)
        assert [e.type for e in history] == ["service.registered", "service.heartbeat_recorded"]
        assert history == first
        # (the registry also published the built-in templates when it started: those are not service events)
        service_events = await anyio.to_thread.run_sync(
            lambda: store.read(types=sorted(SERVICE_EVENTS)))
        assert [r.envelope.id for r in service_events] == [e.id for e in first]

    async def test_a_delivery_reclaimed_from_a_consumer_that_died_after_appending_is_acked_without_effect(
        self, settings: Settings, store: EventStore, client: Redis,
    ) -> None:
        # Given a registration read by a consumer that appended its effect, then died before the ack
        instance = new_instance()
        envelope = register(instance)
        entry_id = wire.text(await client.xadd(streams.COMMANDS, wire.entry_fields(envelope)))  # type: ignore[arg-type]
        await client.xgroup_create(streams.COMMANDS, registry.ROLE, id="0")
        await client.xreadgroup(registry.ROLE, "dead-consumer", {streams.COMMANDS: ">"}, count=1)
        await registry.handle(sweeper(store, ManualClock(utcnow()), no_alive_instances), envelope)
        before = await self.history(store, instance)
        assert [e.causation_id for e in before] == [str(envelope.id)]

        # When a live consumer of the group starts, and reclaims the entry once it has been idle 100 ms
        async with self.running(evolve(settings, reclaim_idle_ms=100)) as platform:
            consumer = registry_consumer(platform)

            async def acked() -> bool:
                return await self.pending(client) == 0

            await eventually(acked, "the dead consumer's entry is reclaimed and acknowledged")

        # Then it was handled as already done: acknowledged, with nothing more in the store
        assert (consumer.processed, consumer.dead_lettered, consumer.failures) == (1, 0, 0)
        assert await self.history(store, instance) == before
        assert await client.xlen(streams.DLQ) == 0
        assert not await client.hexists(streams.errors_key(streams.COMMANDS, registry.ROLE), entry_id)

    # -- the sweep ----------------------------------------------------------------------------------------

    async def test_sweep_once_records_a_silent_service_as_lost_once_until_it_heartbeats_again(
        self, settings: Settings, store_env: dict[str, str], store: EventStore, client: Redis,
    ) -> None:
        async with self.running(settings) as platform:
            consumer = registry_consumer(platform)
            assert platform.store is not None
            silent, talking, gone = new_instance(), new_instance(), new_instance()

            async def send(*commands: Envelope[Any]) -> None:
                target = consumer.processed + len(commands)
                for command in commands:
                    await platform.publish(command)

                async def handled() -> bool:
                    return consumer.processed == target and await self.pending(client) == 0

                await eventually(handled, f"{len(commands)} command(s) are handled")

            # Given three services: `silent` registered and said nothing more, `talking` heartbeated
            # after that, and `gone` deregistered after the services view last caught up
            await send(register(silent), register(talking), register(gone))
            await send(Envelope(data=Heartbeat(instance=talking)))
            await self.catch_up_views(platform)
            await send(Envelope(data=DeregisterService(instance=gone)))
            assert sorted(await platform.alive_instances()) == sorted([silent, talking, gone])
            silent_seen = fold(await self.history(store, silent)).last_seen_at
            talking_seen = fold(await self.history(store, talking)).last_seen_at
            assert silent_seen is not None and talking_seen is not None and talking_seen > silent_seen + TICK
            clock = ManualClock(silent_seen + dt.timedelta(seconds=SERVICE_TIMEOUT_S))
            deps = sweeper(platform.store, clock, platform.alive_instances)

            # When a sweep runs exactly the timeout after `silent` was last seen
            # Then nothing is recorded
            assert await registry.sweep_once(deps) == 0
            assert [e.type for e in await self.history(store, silent)] == ["service.registered"]

            # When a sweep runs a microsecond later
            clock.now += TICK
            lost = await registry.sweep_once(deps)

            # Then `silent` alone is lost, recorded at the sweep's time, with when it was last seen
            assert lost == 1
            [_, lost_event] = await self.history(store, silent)
            assert lost_event.data == ServiceLost(instance=silent, last_seen_at=silent_seen,
                                                  timeout_s=SERVICE_TIMEOUT_S)
            assert lost_event.occurred_at == clock.now
            assert lost_event.causation_id == str(natural_id("service-sweep", silent, silent_seen))
            assert [e.type for e in await self.history(store, talking)] == [
                "service.registered", "service.heartbeat_recorded"]
            assert [e.type for e in await self.history(store, gone)] == [
                "service.registered", "service.deregistered"]

            # When sweeps run again much later, while the lagging view still lists all three as alive
            assert sorted(await platform.alive_instances()) == sorted([silent, talking, gone])
            clock.now += dt.timedelta(seconds=10 * SERVICE_TIMEOUT_S)
            again = await registry.sweep_once(deps)
            # Then only `talking`, silent too by now, is lost; `silent` is not lost twice, `gone` never
            assert again == 1
            assert [e.type for e in await self.history(store, silent)] == ["service.registered", "service.lost"]
            assert [e.type for e in await self.history(store, gone)] == [
                "service.registered", "service.deregistered"]
            assert (await self.history(store, talking))[-1].data == ServiceLost(
                instance=talking, last_seen_at=talking_seen, timeout_s=SERVICE_TIMEOUT_S)
            await self.catch_up_views(platform)
            assert await platform.alive_instances() == []

            # When `silent` heartbeats again, and then stays silent past the timeout, and two
            # processes sweep at the same moment
            await send(Envelope(data=Heartbeat(instance=silent)))
            await self.catch_up_views(platform)
            assert await platform.alive_instances() == [silent]
            seen_again = fold(await self.history(store, silent)).last_seen_at
            assert seen_again is not None
            clock.now = seen_again + dt.timedelta(seconds=SERVICE_TIMEOUT_S) + TICK
            other_store = EventStore(store_env)
            try:
                other = sweeper(other_store, clock, platform.alive_instances)
                counts: list[int] = []

                async def sweep(d: registry.RegistryDeps) -> None:
                    counts.append(await registry.sweep_once(d))

                async with anyio.create_task_group() as tg:
                    tg.start_soon(sweep, deps)
                    tg.start_soon(sweep, other)
            finally:
                other_store.close()

            # Then it is lost a second time, once, last seen at the new heartbeat
            assert sorted(counts) == [0, 1]
            history = await self.history(store, silent)
            assert [e.type for e in history] == [
                "service.registered", "service.lost", "service.heartbeat_recorded", "service.lost"]
            assert history[-1].data == ServiceLost(instance=silent, last_seen_at=seen_again,
                                                   timeout_s=SERVICE_TIMEOUT_S)

    async def test_run_sweeps_survives_a_failed_sweep_and_stops_when_cancelled(
        self, settings: Settings, store: EventStore, client: Redis, caplog: pytest.LogCaptureFixture,
    ) -> None:
        async with self.running(settings) as platform:
            consumer = registry_consumer(platform)
            assert platform.store is not None
            instance = new_instance()
            # Given a service that went silent more than the timeout ago ...
            await platform.publish(register(instance))

            async def registered() -> bool:
                return consumer.processed == 1 and await self.pending(client) == 0

            await eventually(registered, "the service is registered")
            await self.catch_up_views(platform)
            last_seen = fold(await self.history(store, instance)).last_seen_at
            assert last_seen is not None
            clock = ManualClock(last_seen + dt.timedelta(seconds=SERVICE_TIMEOUT_S) + TICK)
            # ... and a services view that fails the first time it is read
            reads: list[str] = []

            async def alive_instances() -> list[str]:
                reads.append("read")
                if len(reads) == 1:
                    raise RuntimeError("the services view is being rebuilt")
                return await platform.alive_instances()

            deps = sweeper(platform.store, clock, alive_instances)

            # When the sweep loop runs every 20 ms, until it has recorded the loss and is cancelled
            async def lost() -> bool:
                return any(isinstance(e.data, ServiceLost) for e in await self.history(store, instance))

            with caplog.at_level(logging.ERROR, logger=registry.__name__), anyio.fail_after(WAIT_S):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(registry.run_sweeps, deps, 0.02)
                    await eventually(lost, "the sweep loop records the loss")
                    tg.cancel_scope.cancel()
            reads_when_stopped = len(reads)
            await anyio.sleep(0.2)  # ten sweep periods

        # Then the failed sweep was logged with its error, a later one recorded the loss once ...
        failures = [r for r in caplog.records if r.getMessage().startswith("service sweep failed")]
        assert len(failures) == 1
        assert failures[0].exc_info is not None and "being rebuilt" in str(failures[0].exc_info[1])
        assert [e.type for e in await self.history(store, instance)] == ["service.registered", "service.lost"]
        # ... and once cancelled, the loop swept no more
        assert reads_when_stopped >= 2
        assert len(reads) == reads_when_stopped


class TestSQLite(RegistryContract):
    @pytest.fixture
    def store_env(self, sqlite_env: dict[str, str]) -> dict[str, str]:
        return sqlite_env


@pytest.mark.postgres
class TestPostgres(RegistryContract):
    @pytest.fixture
    def store_env(self, postgres_env: dict[str, str]) -> dict[str, str]:
        return postgres_env
