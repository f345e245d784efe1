"""The composition root: builds every part from Settings and runs them in one process.

`cars up` runs all actors, the relay, the projections and the HTTP API here; `cars worker` runs only
the named actors. Nothing here is created at import time.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import anyio
import uvicorn
from attrs import define, field
from faststream.redis import RedisBroker, RedisRouter
from faststream.redis.opentelemetry import RedisTelemetryMiddleware
from redis.asyncio import Redis

from actors.registry import router as registry
from bus import streams, wire
from bus.aggregates import AggregateStore
from bus.asyncapi import asyncapi_document
from bus.consumer import ConsumerConfig, StreamConsumer, subscribe
from bus.embedded import EmbeddedRedis
from bus.relay import Relay
from bus.settings import Settings
from bus.store import EventStore
from bus.telemetry import tracer_provider
from contracts import Envelope
from contracts.registry import DeregisterService, Heartbeat, RegisterService
from projections.api import ApiDeps, create_api
from projections.db import ViewDB
from projections.runner import ProjectionRunner
from projections.services import list_services
from projections.views import default_views

log = logging.getLogger(__name__)

ACTORS = ("registry",)  # the repair-loop actors join as they are built


def cars_version() -> str:
    try:
        return version("cars")
    except PackageNotFoundError:
        return "0+unknown"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def parse_actors(text: str) -> list[str]:
    """`registry,healer` -> ["registry", "healer"]; `all` -> every actor. ValueError names bad ones."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["all"]:
        return list(ACTORS)
    unknown = [n for n in names if n not in ACTORS]
    if unknown or not names:
        raise ValueError(f"unknown actor(s) {', '.join(unknown) or '(none given)'}; known: {', '.join(ACTORS)}")
    return names


@contextlib.contextmanager
def bus_url(settings: Settings) -> Iterator[str]:
    """REDIS_URL, or an embedded redis-server that lives as long as the context."""
    if settings.redis_url:
        yield settings.redis_url
        return
    with EmbeddedRedis(settings.home, settings.embedded_redis_port) as server:
        log.info("embedded Redis started", extra={"url": server.url})
        yield server.url


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


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the platform owns Ctrl-C and shuts down in order."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@define
class Platform:
    """Every part of one CARS process, built from settings."""

    settings: Settings
    actors: Sequence[str]
    role: str
    api: bool
    relay: bool
    projections: bool
    store: EventStore | None = None
    views: ViewDB | None = None
    broker: RedisBroker | None = None
    client: Redis | None = None
    consumers: dict[str, StreamConsumer] = field(factory=dict)
    started_at: dt.datetime = field(factory=utcnow)
    http_port: int | None = None

    async def redis(self) -> Redis:
        assert self.client is not None, "the platform is not started"
        return self.client

    async def publish(self, envelope: Envelope[Any]) -> tuple[str, str]:
        """Put a command on its inbound stream (ValueError for an event)."""
        stream = streams.inbound_stream(envelope.entry)
        entry_id = await wire.publish(await self.redis(), stream, envelope, maxlen=self.settings.stream_maxlen)
        return stream, entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    async def ready(self) -> dict[str, str]:
        status: dict[str, str] = {}
        try:
            await (await self.redis()).ping()
            status["redis"] = "ok"
        except Exception as exc:
            status["redis"] = f"unreachable: {exc}"
        try:
            assert self.store is not None
            await anyio.to_thread.run_sync(self.store.max_position)
            status["store"] = "ok"
        except Exception as exc:
            status["store"] = f"unreachable: {exc}"
        return status

    async def alive_instances(self) -> list[str]:
        assert self.views is not None
        rows = await anyio.to_thread.run_sync(list_services, self.views)
        return [r["instance"] for r in rows if r["status"] == "alive"]

    def consumer_config(self) -> ConsumerConfig:
        s = self.settings
        return ConsumerConfig(
            consumer=s.consumer, reclaim_idle_ms=s.reclaim_idle_ms, max_deliveries=s.max_deliveries,
            max_message_bytes=s.max_message_bytes, maxlen=s.stream_maxlen,
        )

    def registry_deps(self) -> registry.RegistryDeps:
        assert self.store is not None
        return registry.RegistryDeps(
            aggregates=AggregateStore(self.store, utcnow), clock=utcnow, alive_instances=self.alive_instances,
            service_timeout_s=self.settings.service_timeout_s,
        )

    def build_router(self, actor: str) -> RedisRouter:
        router = RedisRouter()
        if actor == "registry":
            deps = self.registry_deps()
            self.consumers[actor] = subscribe(
                router, client=self.redis, stream=streams.COMMANDS, group=registry.ROLE,
                handler=functools.partial(registry.handle, deps), accepts=registry.ACCEPTS,
                config=self.consumer_config(), title=registry.ROLE,
            )
        return router

    def api_deps(self) -> ApiDeps:
        assert self.store is not None and self.views is not None
        views = self.views
        return ApiDeps(
            read_events=self.store.read, load_stream=self.store.load,
            list_services=lambda: list_services(views), publish=self.publish, ready=self.ready,
            asyncapi=asyncapi_document, max_body_bytes=self.settings.max_message_bytes,
        )

    @contextlib.asynccontextmanager
    async def started(self, url: str) -> AsyncIterator[Platform]:
        s = self.settings
        s.home.mkdir(parents=True, exist_ok=True)
        self.store = await anyio.to_thread.run_sync(EventStore, s.store_env())
        self.views = await anyio.to_thread.run_sync(ViewDB.from_store_env, s.store_env(), s.home)
        self.broker = RedisBroker(
            url, graceful_timeout=10.0, log_level=logging.DEBUG,
            middlewares=[RedisTelemetryMiddleware(tracer_provider=tracer_provider())],
        )
        for actor in self.actors:
            self.broker.include_router(self.build_router(actor))
        self.client = await self.broker.connect()
        await self.broker.start()
        try:
            yield self
        finally:
            with anyio.CancelScope(shield=True):
                await self.broker.stop()
                self.views.close()
                self.store.close()

    async def register(self) -> None:
        await self.publish(Envelope(data=RegisterService(
            instance=self.settings.consumer, role=self.role, version=cars_version(), actors=tuple(self.actors),
            host=socket.gethostname(), pid=os.getpid(), started_at=self.started_at,
        )))

    async def heartbeat_forever(self) -> None:
        while True:
            await anyio.sleep(self.settings.heartbeat_s)
            try:
                await self.publish(Envelope(data=Heartbeat(instance=self.settings.consumer)))
            except Exception as exc:  # Redis down: keep beating, the sweep decides what it means
                log.warning("heartbeat not sent: %s", exc)

    async def deregister(self) -> None:
        with contextlib.suppress(Exception):
            await self.publish(Envelope(data=DeregisterService(instance=self.settings.consumer)))

    async def serve(self, on_ready: Callable[[Platform], Awaitable[None] | None] | None = None) -> None:
        """Run until cancelled (Ctrl-C / SIGTERM are turned into cancellation by the caller)."""
        s = self.settings
        assert self.store is not None and self.views is not None
        async with anyio.create_task_group() as tg:
            if self.projections:
                runner = ProjectionRunner(self.store, self.views, default_views())
                await anyio.to_thread.run_sync(runner.setup)
                tg.start_soon(runner.run, None, s.poll_ms / 1000)
            if self.relay:
                tg.start_soon(Relay(self.store, await self.redis(), maxlen=s.stream_maxlen, batch=s.relay_batch).run,
                              None, s.poll_ms / 1000)
            if "registry" in self.actors:
                tg.start_soon(registry.run_sweeps, self.registry_deps(), s.heartbeat_s)
            server: _Server | None = None
            if self.api:
                config = uvicorn.Config(
                    create_api(self.api_deps()), host=s.http_host, port=s.http_port, log_config=None,
                    access_log=False, lifespan="off",
                )
                server = _Server(config)
                tg.start_soon(server.serve)
                while not server.started:
                    if server.should_exit:
                        raise RuntimeError(f"the HTTP API could not listen on {s.http_host}:{s.http_port}")
                    await anyio.sleep(0.02)
                self.http_port = server.servers[0].sockets[0].getsockname()[1]
            await self.register()
            tg.start_soon(self.heartbeat_forever)
            if on_ready is not None:
                result = on_ready(self)
                if result is not None:
                    await result
            try:
                await anyio.sleep_forever()
            finally:
                with anyio.CancelScope(shield=True):
                    await self.deregister()
                    if server is not None:
                        server.should_exit = True


async def run_until_signal(
    settings: Settings, *, actors: Sequence[str], role: str, api: bool, relay: bool, projections: bool,
    on_ready: Callable[[Platform], Awaitable[None] | None] | None = None,
) -> None:
    """Start a platform and run it until SIGINT or SIGTERM, then shut it down gracefully."""
    import signal

    platform = Platform(settings=settings, actors=actors, role=role, api=api, relay=relay, projections=projections)
    with bus_url(settings) as url:
        async with platform.started(url), anyio.create_task_group() as tg:
            async def stop_on_signal() -> None:
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for sig in signals:
                        log.info("received %s; shutting down", signal.Signals(sig).name)
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(stop_on_signal)
            tg.start_soon(platform.serve, on_ready)
