"""Environment templates and environments on real infrastructure: commands go through the consumers that
`bus.runtime.Platform` wires on a real Redis, their effects land in a real event store (SQLite and
PostgreSQL, every body on both: STYLE rule 19), the views are folded by the real projection runner, and
environments are made by the real local backend (a redis-server process).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis
from redis.asyncio import Redis

from actors.provisioner import router as provisioner
from actors.provisioner.backends import LazyBackends
from actors.provisioner.backends.local import AsyncLocalBackend, LocalBackend
from actors.provisioner.services import redis_server_binary
from actors.registry import router as registry
from actors.registry.builtin_templates import builtin_templates
from actors.registry.templates import template_id
from bus import streams
from bus.aggregates import AggregateStore
from bus.consumer import StreamConsumer
from bus.dlq import list_dead_letters
from bus.runtime import Platform, utcnow
from bus.settings import Settings
from bus.store import EventStore
from contracts import Envelope
from contracts.environments import ReleaseEnvironment, RequestEnvironment
from contracts.registry import DeprecateTemplate, PublishTemplate
from contracts.values import Quota, ServiceKind, ServiceSpec, TemplateSpec
from projections.db import ViewDB
from projections.environments import list_environments
from projections.replay import check
from projections.runner import ProjectionRunner
from projections.templates import list_templates, template_versions
from projections.views import default_views
from tests.conftest import unavailable
from tests.integration.store_views import OnStore
from tests.integration.test_registry import eventually

BUILTIN_NAMES = ["full-stack", "python", "python-mongodb", "python-mysql", "python-postgres", "python-redis"]
REDIS = ServiceSpec(name="cache", kind=ServiceKind.REDIS, image="redis", version="7.4-alpine", port=6379)


def team_template(version: str = "1.0.0", **changes: Any) -> TemplateSpec:
    fields: dict[str, Any] = {"name": "team-cache", "version": version, "description": "a cache",
                              "services": (REDIS,), "quota": Quota(cpu="2", memory="2Gi", pods=3), **changes}
    return TemplateSpec(**fields)


def consumer_of(platform: Platform, group: str) -> StreamConsumer:
    [consumer] = [c for c in platform.consumers.values() if (c.stream, c.group) == (streams.COMMANDS, group)]
    return consumer


class TemplatesContract(OnStore):
    """The test bodies; subclasses choose the store."""

    @pytest.fixture
    def settings(self, store_env: dict[str, str], tmp_path: Path, redis_url: str) -> Settings:
        return Settings.from_env({
            **store_env, "CARS_HOME": str(tmp_path), "REDIS_URL": redis_url,
            "CARS_CONSUMER": f"test-{uuid.uuid4().hex[:8]}", "CARS_RECLAIM_IDLE_MS": "60000",
        })

    @pytest.fixture
    async def client(self, redis_url: str) -> AsyncIterator[Redis]:
        c = Redis.from_url(redis_url)
        yield c
        await c.aclose()

    @contextlib.asynccontextmanager
    async def running(self, settings: Settings, actors: list[str]) -> AsyncIterator[Platform]:
        platform = Platform(settings=settings, actors=actors, role="worker", api=False, relay=False,
                            projections=False)
        assert settings.redis_url is not None
        async with platform.started(settings.redis_url) as started:
            yield started

    async def views(self, platform: Platform) -> ViewDB:
        assert platform.store is not None and platform.views is not None
        await anyio.to_thread.run_sync(ProjectionRunner(platform.store, platform.views, default_views()).catch_up)
        return platform.views

    async def types(self, store: EventStore, stream_id: uuid.UUID) -> list[str]:
        return [e.type for e in await anyio.to_thread.run_sync(store.load, stream_id)]

    async def handled(self, consumer: StreamConsumer, n: int) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return consumer.processed + consumer.dead_lettered >= n
        return check

    # -- built-in templates -------------------------------------------------------------------------------

    async def test_built_in_templates_are_published_once_at_first_start_by_any_number_of_processes(
        self, settings: Settings, store: EventStore,
    ) -> None:
        # Given a fresh store, When a registry process starts
        async with self.running(settings, ["registry"]):
            pass
        # Then every built-in template has version 1.0.0 published
        for spec in builtin_templates():
            assert await self.types(store, template_id(spec.name)) == ["template.published"]
        first = await anyio.to_thread.run_sync(store.max_position)
        # When it restarts, and three more processes publish the built-ins at the same moment
        async with self.running(settings, ["provisioner"]):
            pass
        aggregates = [AggregateStore(store, utcnow) for _ in range(3)]
        async with anyio.create_task_group() as tg:
            for agg in aggregates:
                tg.start_soon(registry.publish_builtin_templates, agg)
        # Then nothing more was recorded
        assert await anyio.to_thread.run_sync(store.max_position) == first

    # -- publish and deprecate over the bus ---------------------------------------------------------------

    async def test_publish_is_immutable_and_bad_specs_are_dead_lettered_with_field_paths(
        self, settings: Settings, store: EventStore, client: Redis,
    ) -> None:
        async with self.running(settings, ["registry"]) as platform:
            consumer = consumer_of(platform, registry.ROLE)
            duplicated = team_template("2.0.0", services=(REDIS, REDIS))
            commands = [
                PublishTemplate(spec=team_template()),  # new: published
                PublishTemplate(spec=team_template()),  # the same body: nothing
                PublishTemplate(spec=team_template(description="changed")),  # another body: refused
                PublishTemplate(spec=duplicated),  # a whole-spec problem: refused with its path
                PublishTemplate(spec=team_template("1.1.0")),
                DeprecateTemplate(name="team-cache", version="1.1.0", reason="cache bug"),
                DeprecateTemplate(name="team-cache", version="9.9.9"),  # unknown version: refused
            ]
            for command in commands:
                await platform.publish(Envelope(data=command))
            # And a command whose spec breaks the contract itself, sent as plain JSON
            await client.xadd(streams.COMMANDS, {"message": (
                '{"type": "template.publish", "data": {"spec": {"name": "Team Cache", "version": "1"}}}')})
            await eventually(await self.handled(consumer, len(commands) + 1), "every command is handled")
            views = await self.views(platform)
            listed = {t["name"]: t for t in await anyio.to_thread.run_sync(list_templates, views)}
            shown = await anyio.to_thread.run_sync(template_versions, views, "team-cache")

        # Then the stream holds 1.0.0, 1.1.0 and the deprecation, nothing else
        assert await self.types(store, template_id("team-cache")) == [
            "template.published", "template.published", "template.deprecated"]
        # And the refused commands are dead letters whose reasons say why, with field paths
        reasons = [d.reason for d in await list_dead_letters(client)]
        assert len(reasons) == 4, reasons
        assert any("version 1.0.0 is already published with a different body (it differs at "
                   "$.data.spec.description)" in r for r in reasons)
        assert any("service name 'cache' is used twice (also by services[0]) @ $.data.spec.services[1].name"
                   in r for r in reasons)
        assert any("has no version 9.9.9; published: 1.0.0, 1.1.0" in r for r in reasons)
        assert any("name 'Team Cache' must be a DNS label" in r and "@ $.data.spec" in r for r in reasons)
        assert consumer.dead_lettered == 4 and consumer.failures == 0
        # And the templates view lists the built-ins and the new one, whose latest usable version is 1.0.0
        assert sorted(listed) == sorted([*BUILTIN_NAMES, "team-cache"])
        assert listed["team-cache"]["latest"] == "1.0.0"
        assert listed["team-cache"]["deprecated_versions"] == ["1.1.0"]
        assert listed["python-postgres"]["services"] == ["postgres"]
        assert shown is not None
        assert [(v["version"], v["deprecated"], v["deprecation_reason"]) for v in shown["versions"]] == [
            ("1.0.0", False, ""), ("1.1.0", True, "cache bug")]
        assert shown["versions"][0]["spec"]["services"][0]["image"] == "redis"

    async def test_replay_check_rebuilds_the_templates_and_environments_views_identically(
        self, settings: Settings, tmp_path: Path,
    ) -> None:
        if shutil_missing_redis():
            unavailable("no redis-server for the local backend")
        async with self.running(settings, ["registry", "provisioner"]) as platform:
            await platform.publish(Envelope(data=DeprecateTemplate(name="python-redis", version="1.0.0")))
            env_id = uuid.uuid4()
            await platform.publish(Envelope(data=RequestEnvironment(environment_id=env_id, template="python")))
            assert platform.store is not None
            store = platform.store

            async def failed_or_made() -> bool:
                return len(await self.types(store, env_id)) >= 2

            await eventually(failed_or_made, "the environment is provisioned")
            await platform.publish(Envelope(data=ReleaseEnvironment(environment_id=env_id)))

            async def released() -> bool:
                return "environment.released" in await self.types(store, env_id)

            await eventually(released, "the environment is released")
            views = await self.views(platform)
            report = await anyio.to_thread.run_sync(check, store, views, default_views())
        assert report.ok, report.render()
        assert {d.view for d in report.views} >= {"templates", "environments"}

    # -- environments from templates ----------------------------------------------------------------------

    async def test_environments_are_built_from_the_registrys_templates(
        self, settings: Settings, store: EventStore, client: Redis,
    ) -> None:
        if shutil_missing_redis():
            unavailable("no redis-server for the local backend")
        async with self.running(settings, ["registry", "provisioner"]) as platform:
            reg = consumer_of(platform, registry.ROLE)
            await platform.publish(Envelope(data=PublishTemplate(spec=team_template())))
            await platform.publish(Envelope(data=PublishTemplate(spec=team_template("1.1.0"))))
            await platform.publish(Envelope(data=DeprecateTemplate(name="team-cache", version="1.1.0")))
            await eventually(await self.handled(reg, 3), "the templates are published")

            made, deprecated, unknown, nomad = (uuid.uuid4() for _ in range(4))
            requests = [
                RequestEnvironment(environment_id=made, template="team-cache", ttl_s=120),  # latest usable: 1.0.0
                RequestEnvironment(environment_id=deprecated, template="team-cache", template_version="1.1.0"),
                RequestEnvironment(environment_id=unknown, template="no-such-template"),
                RequestEnvironment(environment_id=nomad, template="python", backend="nomad"),
            ]
            for req in requests:
                await platform.publish(Envelope(data=req))

            async def settled() -> bool:
                for env_id in (made, deprecated, unknown, nomad):
                    types = await self.types(store, env_id)
                    if not {"environment.provisioned", "environment.failed"} & set(types):
                        return False
                return True

            await eventually(settled, "every request is provisioned or failed", timeout_s=60)
            history = await anyio.to_thread.run_sync(store.load, made)
            requested, provisioned = (e.data for e in history)
            # Then the latest non-deprecated version was used, with its services, on the default backend
            assert (requested.template_version, requested.backend, requested.services) == ("1.0.0", "local", ("cache",))
            url = provisioned.service_urls["REDIS_URL"]
            assert redis.Redis.from_url(url).ping()
            assert provisioned.expires_at - history[1].occurred_at <= dt.timedelta(seconds=120)
            # And the requests that cannot be served failed with their reasons
            reasons = {}
            for env_id in (deprecated, unknown, nomad):
                events = [e.data for e in await anyio.to_thread.run_sync(store.load, env_id)]
                assert [type(e).__name__ for e in events] == ["EnvironmentRequested", "EnvironmentFailed"]
                reasons[env_id] = events[1].reason
            assert "template 'team-cache' version 1.1.0 is deprecated" in reasons[deprecated]
            assert reasons[unknown] == "unknown environment template 'no-such-template'"
            assert reasons[nomad] == "unknown environment backend 'nomad'; known: local, kubernetes"
            # And the environments view shows each of them
            views = await self.views(platform)
            rows = {r["environment_id"]: r for r in await anyio.to_thread.run_sync(
                lambda: list_environments(views))}
            assert rows[str(made)]["status"] == "provisioned"
            assert (rows[str(made)]["template"], rows[str(made)]["version"]) == ("team-cache", "1.0.0")
            assert rows[str(made)]["services"] == ["cache"] and rows[str(made)]["workspace"]
            assert rows[str(deprecated)]["status"] == "failed" and "deprecated" in rows[str(deprecated)]["reason"]
            live = await anyio.to_thread.run_sync(lambda: list_environments(views, live=True))
            assert [r["environment_id"] for r in live] == [str(made)]

            # When it is released over the bus
            await platform.publish(Envelope(data=ReleaseEnvironment(environment_id=made)))

            async def released() -> bool:
                return "environment.released" in await self.types(store, made)

            await eventually(released, "the environment is released")
        # Then its redis-server is gone and nothing was dead-lettered
        with pytest.raises(redis.ConnectionError):
            redis.Redis.from_url(url, socket_connect_timeout=1).ping()
        assert await client.xlen(streams.DLQ) == 0

    async def test_a_backend_that_cannot_be_built_fails_the_request_with_its_reason(
        self, settings: Settings, store: EventStore, tmp_path: Path,
    ) -> None:
        # Given the built-in templates and a provisioner whose kubernetes backend cannot be loaded here
        aggregates = AggregateStore(store, utcnow)
        await registry.publish_builtin_templates(aggregates)

        def no_kubernetes() -> Any:
            raise ModuleNotFoundError("No module named 'kubernetes_asyncio'")

        deps = provisioner.ProvisionerDeps(
            aggregates=aggregates, clock=utcnow, default_backend="local",
            backends=LazyBackends({"local": lambda: AsyncLocalBackend(LocalBackend(tmp_path / "home")),
                                   "kubernetes": no_kubernetes}, default="local"),
        )
        env_id = uuid.uuid4()
        # When an environment is asked for on kubernetes
        await provisioner.handle(deps, Envelope(data=RequestEnvironment(
            environment_id=env_id, template="python", backend="kubernetes")))
        # Then it failed, saying why, and the process goes on serving local requests
        events = [e.data for e in await anyio.to_thread.run_sync(store.load, env_id)]
        assert events[0].backend == "kubernetes"
        assert events[1].reason == ("BackendNotConfigured: the kubernetes backend is not available here: "
                                    "ModuleNotFoundError: No module named 'kubernetes_asyncio'")
        # And a release of it changes nothing (a failed environment holds nothing), nor does a reaper round
        await provisioner.handle(deps, Envelope(data=ReleaseEnvironment(environment_id=env_id)))
        assert await self.types(store, env_id) == ["environment.requested", "environment.failed"]
        assert await provisioner.reap_once(deps) == 0


def shutil_missing_redis() -> bool:
    try:
        redis_server_binary()
    except Exception:
        return True
    return False


class TestSQLite(TemplatesContract):
    @pytest.fixture
    def store_env(self, sqlite_env: dict[str, str]) -> dict[str, str]:
        return sqlite_env


@pytest.mark.postgres
class TestPostgres(TemplatesContract):
    @pytest.fixture
    def store_env(self, postgres_env: dict[str, str]) -> dict[str, str]:
        return postgres_env

