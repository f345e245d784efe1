"""The composition root: builds every part from Settings and runs them in one process.

`cars up` runs all actors, the relay, the projections and the HTTP API here; `cars worker` runs only
the named actors. Nothing here is created at import time.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import uvicorn
from attrs import define, field
from faststream.redis import RedisBroker, RedisRouter
from faststream.redis.opentelemetry import RedisTelemetryMiddleware
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from actors.errors import Rejected
from actors.healer import ranking
from actors.healer import router as healer
from actors.healer.strategies import all_strategies
from actors.monitor import batch as monitor_batch
from actors.monitor import router as monitor
from actors.monitor.ingest import parse_report
from actors.monitor.schedule import run_monitoring
from actors.notifier import router as notifier
from actors.notifier.config import EVENTS as NOTIFIED_EVENTS
from actors.notifier.deliver import Sender
from actors.provisioner import router as provisioner
from actors.provisioner.backends import Backend, BackendNotConfigured, LazyBackends
from actors.provisioner.backends.local import AsyncLocalBackend, LocalBackend
from actors.registry import router as registry
from actors.testrun import run_tests
from actors.validator import router as validator
from actors.validator.validate import validate_candidate
from bus import streams, wire
from bus.aggregates import AggregateStore
from bus.asyncapi import asyncapi_document
from bus.audit import aggregate_state
from bus.consumer import BatchReader, ConsumerConfig, StreamConsumer, run_readers, subscribe
from bus.dlq import dlq_size, list_dead_letters
from bus.embedded import EmbeddedRedis, running_bus_url
from bus.metrics import BusMetrics, render, source_up_family, store_position_family, stream_families
from bus.notify_queue import RedisRetryQueue
from bus.relay import Relay
from bus.settings import Settings
from bus.store import EventStore
from bus.telemetry import recording, tracer_provider
from contracts import Area, Envelope
from contracts.registry import DeregisterService, Heartbeat, RegisterService
from contracts.runs import RunReported
from contracts.values import FailureClass
from projections.db import ViewDB
from projections.environments import list_environments
from projections.heals import list_repairs, repair_candidates, strategy_stats
from projections.metrics import ActiveEnvironments, view_families
from projections.runner import ProjectionRunner
from projections.services import list_services
from projections.templates import list_templates, template_versions
from projections.views import default_views

if TYPE_CHECKING:
    from projections.api import ApiDeps

log = logging.getLogger(__name__)

ACTORS = ("registry", "monitor", "healer", "validator", "provisioner", "notifier")
GRACEFUL_HTTP_S = 5  # on shutdown, requests still running after this long are cancelled

# How long GET /ready waits for the store before it says the store is unreachable.
READY_STORE_TIMEOUT_S = 2.0

# How often a running process checks that every subscriber still consumes (see `watch_subscribers`).
SUBSCRIBER_CHECK_S = 0.5


class SubscriberStopped(RuntimeError):
    """A subscriber stopped for good while the process runs (its consumer group was deleted): the
    process exits non-zero, and the supervisor's restart recreates the group."""


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


def _parse_report(data: bytes, project: str, run_id: str, commit: str | None, repo_path: str | None) -> RunReported:
    """The API's report parser: an unreadable report is a ValueError with the reason."""
    try:
        return parse_report(data, project=project, run_id=run_id, commit=commit, repo_path=repo_path)
    except Rejected as exc:
        raise ValueError(str(exc)) from None


def running_platform_url(settings: Settings, needs: Sequence[str] = ("monitor", "healer", "validator",
                                                                    "provisioner")) -> str | None:
    """The bus of a CARS platform that is running now and runs every actor in `needs`, else None.

    Live platforms keep a presence key (`streams.PRESENCE_PREFIX` + consumer name) with a TTL of three
    heartbeats; a process that died stops refreshing it, and a clean exit deletes it.
    """
    import redis

    try:
        url = running_bus_url(settings)
    except RuntimeError:
        return None
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        running: set[str] = set()
        for key in client.scan_iter(match=streams.PRESENCE_PREFIX + "*", count=100):
            value = client.get(key)
            if value:
                running.update(json.loads(value).get("actors", []))
    except (redis.RedisError, ValueError):
        return None
    finally:
        client.close()
    return url if set(needs) <= running else None


@define
class _KubernetesJobs:
    """The validator's way to run tests as Jobs in a kubernetes environment: the process's Kubernetes
    backend, built when a kubernetes environment is first validated (a process that never sees one
    never loads it)."""

    backends: LazyBackends

    async def run_job(self, env_id: uuid.UUID, **kwargs: Any) -> Any:
        backend: Any = self.backends["kubernetes"]
        return await backend.run_job(env_id, **kwargs)


def kubernetes_backend(settings: Settings) -> Backend:
    """The Kubernetes backend, imported only when a request (or CARS_ENV_BACKEND) asks for it.

    A missing module or cluster configuration raises BackendNotConfigured: the request that asked
    becomes `environment.failed` with this reason, and the process keeps running.
    """
    try:
        from actors.provisioner.backends.kubernetes import KubernetesBackend
    except ImportError as exc:
        raise BackendNotConfigured(f"the kubernetes backend cannot be loaded: {exc}") from exc
    # The cluster configuration (in-cluster service account, else the kubeconfig) is read at first use:
    # a missing one fails that request with the reason.
    backend: Backend = KubernetesBackend(settings.home)
    return backend


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
    readers: list[BatchReader] = field(factory=list)  # run beside the broker's subscribers
    started_at: dt.datetime = field(factory=utcnow)
    http_port: int | None = None
    metrics_port: int | None = None
    monitor_shared: monitor.MonitorDeps | None = None
    notifier_shared: notifier.NotifierDeps | None = None
    provisioner_shared: provisioner.ProvisionerDeps | None = None
    backends_shared: LazyBackends | None = None
    quiet: bool = False  # no FastStream log lines (a command line that prints its own progress)
    stopping: bool = False  # set on shutdown: long-lived HTTP responses (the event stream) end

    async def serve_http(self, server: uvicorn.Server) -> None:
        """Run the HTTP server. Cancelled (Ctrl-C, or a failing part), it still shuts down gracefully:
        a cancelled uvicorn skips its own shutdown, and open responses would be killed at exit instead."""
        try:
            await server.serve()
        except anyio.get_cancelled_exc_class():
            self.stopping = True  # event streams end, so the graceful shutdown is quick
            if server.started:
                with anyio.CancelScope(shield=True):
                    await server.shutdown()
            raise
    metrics: BusMetrics = field(factory=BusMetrics)
    active_environments: ActiveEnvironments | None = None

    async def redis(self) -> Redis:
        assert self.client is not None, "the platform is not started"
        return self.client

    async def publish(self, envelope: Envelope[Any]) -> tuple[str, str]:
        """Put a command on its inbound stream (ValueError for an event)."""
        stream, entry_id = await wire.publish_inbound(await self.redis(), envelope, maxlen=self.settings.stream_maxlen)
        self.metrics.published_one(stream)
        return stream, entry_id

    async def scrape(self) -> bytes:
        """GET /metrics: this process's counters, plus the bus, the store and the views read now. A part
        that cannot be read is left out and reported by `cars_metrics_source_up{source}` = 0."""
        assert self.store is not None and self.views is not None
        store, views = self.store, self.views
        if self.active_environments is None:
            self.active_environments = ActiveEnvironments(store)
        environments = self.active_environments
        families: list[Any] = []
        up: dict[str, bool] = {}
        sources: dict[str, Callable[[], Awaitable[list[Any]]]] = {
            "redis": lambda: self._redis_families(),
            "store": lambda: self._store_families(store),
            "views": lambda: view_families(views, environments),
        }
        for source, read in sources.items():
            try:
                families += await read()
                up[source] = True
            except Exception as exc:  # a scrape must answer; the gauge below says what is missing
                log.warning("metrics: could not read %s: %s", source, exc)
                up[source] = False
        return render(self.metrics.registry, [*families, source_up_family(up)])

    async def _redis_families(self) -> list[Any]:
        return await stream_families(await self.redis())

    async def _store_families(self, store: EventStore) -> list[Any]:
        return [store_position_family(await anyio.to_thread.run_sync(store.max_position))]

    async def ready(self) -> dict[str, str]:
        status: dict[str, str] = {}
        try:
            await (await self.redis()).ping()
            status["redis"] = "ok"
        except Exception as exc:
            status["redis"] = f"unreachable: {exc}"
        try:
            assert self.store is not None
            # A stopped PostgreSQL makes the store wait for a connection (eventsourcing retries for
            # up to 10 x POSTGRES_CONNECT_TIMEOUT): answer "unreachable" in time for a probe instead,
            # leaving the waiting thread to give up by itself.
            with anyio.fail_after(READY_STORE_TIMEOUT_S):
                await anyio.to_thread.run_sync(self.store.max_position, abandon_on_cancel=True)
            status["store"] = "ok"
        except TimeoutError:
            status["store"] = f"unreachable: no answer within {READY_STORE_TIMEOUT_S:g} s"
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
        """The subscriptions of one actor: (stream, the wire tags it handles there) each, one group per actor."""
        router = RedisRouter()
        handler: Callable[[Envelope[Any]], Awaitable[None]]
        if actor == "registry":
            handler = functools.partial(registry.handle, self.registry_deps())
            subscriptions = {streams.COMMANDS: registry.ACCEPTS}
        elif actor == "monitor":
            handler = functools.partial(monitor.handle, self.monitor_deps())
            subscriptions = {streams.INGEST: monitor.INGEST_ACCEPTS, streams.COMMANDS: monitor.COMMAND_ACCEPTS}
        elif actor == "healer":
            handler = functools.partial(healer.handle, self.healer_deps())
            subscriptions = {
                streams.events_stream(Area.FAILURES): frozenset({"failure.detected", "test.quarantined"}),
                streams.events_stream(Area.REPAIRS): frozenset({"heal.rejected", "repair.completed"}),
                streams.COMMANDS: healer.COMMANDS,
            }
        elif actor == "validator":
            handler = functools.partial(validator.handle, self.validator_deps())
            subscriptions = {
                streams.events_stream(Area.REPAIRS): frozenset({"heal.proposed"}),
                streams.events_stream(Area.ENVIRONMENTS): frozenset({"environment.provisioned", "environment.failed"}),
            }
        elif actor == "provisioner":
            handler = functools.partial(provisioner.handle, self.provisioner_deps())
            subscriptions = {streams.COMMANDS: provisioner.COMMANDS}
        elif actor == "notifier":
            handler = functools.partial(notifier.handle, self.notifier_deps())
            # The public summaries, from the results topic that carries only them: read from the area
            # streams, the group would take (and skip) every other event of three busy streams.
            subscriptions = {streams.RESULTS: frozenset(NOTIFIED_EVENTS)}
        else:
            raise ValueError(f"unknown actor {actor!r}; known: {', '.join(ACTORS)}")
        # A consumer span per entry only when spans go somewhere; otherwise each handler runs in its
        # producer's trace context as it is (as the broker's middleware, for the reclaim subscribers).
        tracer = tracer_provider().get_tracer("bus.consumer") if recording() else None
        for stream, accepts in subscriptions.items():
            # Runs are many and alike: the monitor reads them in batches, decided together and stored
            # in one transaction. Everything else is handled one entry at a time.
            batched = actor == "monitor" and stream == streams.INGEST
            self.consumers[f"{actor}@{stream}"], reader = subscribe(
                router, client=self.redis, stream=stream, group=actor, handler=handler, accepts=accepts,
                config=self.consumer_config(), title=actor, metrics=self.metrics,
                handle_batch=functools.partial(monitor_batch.handle_runs, self.monitor_deps()) if batched else None,
                tracer=tracer,
            )
            self.readers.append(reader)
        return router

    def aggregates(self) -> AggregateStore:
        assert self.store is not None
        return AggregateStore(self.store, utcnow)

    def monitor_deps(self) -> monitor.MonitorDeps:
        """One per process: its subscriber and its scheduler share the active monitorings."""
        if self.monitor_shared is None:
            async def report(run: RunReported) -> None:
                await self.publish(Envelope(data=run, correlation_id=run.run_id))

            self.monitor_shared = monitor.MonitorDeps(aggregates=self.aggregates(), clock=utcnow, report=report)
        return self.monitor_shared

    async def monitored_projects(self) -> list[str]:
        """Every project that ever started monitoring (the scheduler folds which are still active)."""
        store = self.store
        assert store is not None
        found: dict[str, None] = {}
        after = 0
        while True:
            batch = await anyio.to_thread.run_sync(
                functools.partial(store.read, after=after, limit=1000, types=["monitoring.started"]))
            if not batch:
                return list(found)
            found.update((r.envelope.data.project, None) for r in batch)
            after = batch[-1].position

    def healer_deps(self) -> healer.HealerDeps:
        views = self.views
        assert views is not None

        async def stats() -> ranking.Stats:
            rows = await anyio.to_thread.run_sync(strategy_stats, views)
            return {(FailureClass(c), name): ranking.Record(validated=ok, rejected=bad)
                    for (c, name), (ok, bad) in rows.items()}

        return healer.HealerDeps(aggregates=self.aggregates(), clock=utcnow, strategies=all_strategies(),
                                 stats=stats)

    def validator_deps(self) -> validator.ValidatorDeps:
        return validator.ValidatorDeps(aggregates=self.aggregates(), clock=utcnow, publish=self.publish,
                                       validate=validate_candidate, memory_mb=self.settings.validation_memory_mb,
                                       jobs=_KubernetesJobs(self.env_backends()))

    def env_backends(self) -> LazyBackends:
        """One per process, shared by the provisioner (environments) and the validator (Jobs in them);
        each backend is built the first time it is asked for."""
        if self.backends_shared is None:
            settings = self.settings
            self.backends_shared = LazyBackends({
                "local": lambda: AsyncLocalBackend(LocalBackend(settings.home)),
                "kubernetes": lambda: kubernetes_backend(settings),
            }, default=settings.env_backend)
        return self.backends_shared

    def provisioner_deps(self) -> provisioner.ProvisionerDeps:
        """One per process: its subscriber and its reaper share the backends (each built once, when needed)."""
        if self.provisioner_shared is None:
            self.provisioner_shared = provisioner.ProvisionerDeps(
                aggregates=self.aggregates(), clock=utcnow, backends=self.env_backends(),
                default_backend=self.settings.env_backend)
        return self.provisioner_shared

    def notifier_deps(self) -> notifier.NotifierDeps:
        """One per process: its subscriber and its retry loop share the targets' circuit breakers."""
        if self.notifier_shared is None:
            s = self.settings
            queue = RedisRetryQueue(self.redis, consumer=s.consumer, min_idle_ms=int(s.notifier.retry_s * 1000),
                                    maxlen_dlq=s.stream_maxlen)
            self.notifier_shared = notifier.NotifierDeps(
                aggregates=self.aggregates(), sender=Sender(s.notifier), queue=queue, settings=s.notifier)
        return self.notifier_shared

    def api_deps(self) -> ApiDeps:
        from projections.api import ApiDeps  # (FastAPI: only a process that serves the API imports it)

        assert self.store is not None and self.views is not None
        views = self.views
        return ApiDeps(
            read_events=self.store.read, load_stream=self.store.load,
            list_services=lambda: list_services(views), publish=self.publish, ready=self.ready,
            asyncapi=asyncapi_document, max_body_bytes=self.settings.max_message_bytes,
            parse_report=_parse_report,
            list_repairs=lambda project, status: list_repairs(views, project=project, status=status),
            repair_candidates=lambda rid: repair_candidates(views, rid),
            api_token=self.settings.api_token, cors_origins=self.settings.cors_origins,
            max_position=self.store.max_position, stopping=lambda: self.stopping,
            metrics=self.scrape,
            views=views, dead_letters=self.dead_letters, fold_aggregate=aggregate_state,
            list_templates=lambda: list_templates(views),
            template_versions=lambda name: template_versions(views, name),
            list_environments=lambda status, live: list_environments(views, status=status, live=live),
        )

    async def dead_letters(self, after: str, count: int) -> tuple[list[dict[str, Any]], int]:
        """A page of cars.dlq (oldest first, after entry id `after`), and its length."""
        client = await self.redis()
        letters = await list_dead_letters(client, after=after, count=count)
        return [d.as_dict() for d in letters], await dlq_size(client)

    @contextlib.asynccontextmanager
    async def started(self, url: str) -> AsyncIterator[Platform]:
        s = self.settings
        s.home.mkdir(parents=True, exist_ok=True)
        self.store = await anyio.to_thread.run_sync(EventStore, s.store_env())
        self.views = await anyio.to_thread.run_sync(ViewDB.from_store_env, s.store_env(), s.home)
        if {"registry", "provisioner"} & set(self.actors):
            # Before any consumer starts: an environment request must find the built-in templates.
            published = await registry.publish_builtin_templates(self.aggregates())
            if published:
                log.info("built-in templates published", extra={"count": published})
        quiet: dict[str, Any] = {"logger": None} if self.quiet else {}
        provider = tracer_provider()
        self.broker = RedisBroker(
            url, graceful_timeout=10.0, log_level=logging.DEBUG, **quiet,
            # A consumer span per delivery only when spans go somewhere (`recording`); otherwise each
            # handler runs in the producer's trace context as it is (`bus.telemetry.continued`).
            middlewares=[RedisTelemetryMiddleware(tracer_provider=provider)] if recording() else [],
        )
        for actor in self.actors:
            self.broker.include_router(self.build_router(actor))
        self.client = await self.broker.connect()
        await self._create_event_groups()
        await self.broker.start()
        try:
            async with run_readers(self.readers):
                yield self
        finally:
            with anyio.CancelScope(shield=True):
                await self.broker.stop()
                await self._forget_consumers()
                self.views.close()
                self.store.close()

    async def _create_event_groups(self) -> None:
        """Groups on topic streams start at the beginning of the stream, not at `$`: an actor started after
        the relay published something still sees it (handlers are idempotent, so old entries are harmless).
        FastStream would create them at `$`; it leaves existing groups alone."""
        client = await self.redis()
        for consumer in self.consumers.values():
            if consumer.stream.startswith(streams.EVENTS_PREFIX) or consumer.stream == streams.RESULTS:
                with contextlib.suppress(ResponseError):  # BUSYGROUP: it exists
                    await client.xgroup_create(consumer.stream, consumer.group, id="0", mkstream=True)

    async def _forget_consumers(self) -> None:
        """Remove this process's consumers from their groups when they hold nothing pending, so that
        XINFO CONSUMERS shows live processes only. A consumer with pending entries stays: deleting it
        would drop them instead of letting another consumer reclaim them."""
        client = self.client
        if client is None:
            return
        mine = {self.settings.consumer, f"{self.settings.consumer}-reclaim"}
        for consumer in self.consumers.values():
            try:
                for info in await client.xinfo_consumers(consumer.stream, consumer.group):
                    name = wire.text(info["name"])
                    if name in mine and int(info["pending"]) == 0:
                        await client.xgroup_delconsumer(consumer.stream, consumer.group, name)
            except Exception as exc:  # best effort: a leftover idle consumer is harmless
                log.debug("could not remove consumer: %s", exc)

    async def watch_subscribers(self, every_s: float = SUBSCRIBER_CHECK_S) -> None:
        """Raise SubscriberStopped once any subscriber has stopped by itself.

        FastStream stops a subscriber for good when its consumer group disappears (XGROUP DESTROY, a
        deleted stream, a flushed Redis: NOGROUP). It logs CRITICAL and would exit a FastStream app, but
        this process runs the broker itself, so without this check it would go on, alive and healthy by
        every probe, never reading that stream again. Exiting non-zero lets a supervisor restart it,
        which recreates the group (see README, "Delivery guarantees").
        """
        assert self.broker is not None
        while True:
            await anyio.sleep(every_s)
            stopped = [sub for sub in self.broker.subscribers if not sub.running]
            if stopped:
                names = ", ".join(sorted({_describe(sub) for sub in stopped}))
                raise SubscriberStopped(
                    f"stopped consuming {names}: the consumer group no longer exists (deleted, or the stream "
                    "was deleted or Redis flushed). Exiting so that a restart recreates it."
                )

    async def mark_present(self) -> None:
        """Refresh this process's presence key (see `running_platform_url`)."""
        key = streams.PRESENCE_PREFIX + self.settings.consumer
        value = json.dumps({"actors": list(self.actors), "role": self.role, "pid": os.getpid()})
        await (await self.redis()).set(key, value, ex=max(int(self.settings.heartbeat_s * 3), 5))

    async def register(self) -> None:
        await self.mark_present()
        await self.publish(Envelope(data=RegisterService(
            instance=self.settings.consumer, role=self.role, version=cars_version(), actors=tuple(self.actors),
            host=socket.gethostname(), pid=os.getpid(), started_at=self.started_at,
        )))

    async def heartbeat_forever(self) -> None:
        while True:
            await anyio.sleep(self.settings.heartbeat_s)
            try:
                await self.mark_present()
                await self.publish(Envelope(data=Heartbeat(instance=self.settings.consumer)))
            except Exception as exc:  # Redis down: keep beating, the sweep decides what it means
                log.warning("heartbeat not sent: %s", exc)

    async def deregister(self) -> None:
        with contextlib.suppress(Exception):
            await (await self.redis()).delete(streams.PRESENCE_PREFIX + self.settings.consumer)
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
                tg.start_soon(keep_projecting, runner, s.poll_ms / 1000)
            if self.relay:
                relay = Relay(self.store, await self.redis(), maxlen=s.stream_maxlen, batch=s.relay_batch,
                              metrics=self.metrics)
                # What this process appends is published at once; the poll finds other processes' appends.
                self.store.on_append(relay.wake)
                tg.start_soon(relay.run, None, s.poll_ms / 1000)
            if "registry" in self.actors and (self.projections or s.store == "postgres"):
                # The sweep reads the services view: kept by this process's projections, or, on
                # PostgreSQL, by the process that runs them (`cars up --actors none`) in the shared
                # database. Every registry process sweeps; the same silence gives one service.lost.
                tg.start_soon(registry.run_sweeps, self.registry_deps(), s.heartbeat_s)
            if "provisioner" in self.actors:
                tg.start_soon(provisioner.run_reaper, self.provisioner_deps(), 30.0)
            if "notifier" in self.actors:
                tg.start_soon(notifier.run_retries, self.notifier_deps())
            if "monitor" in self.actors:
                tg.start_soon(functools.partial(
                    # Project code run by the CARS process: none of its secrets (actors.testrun.scrubbed_environ).
                    run_monitoring, self.monitor_deps(), functools.partial(run_tests, inherit_env=False),
                    self.monitored_projects))
            server: _Server | None = None
            if self.api:
                from projections.api import create_api

                server, self.http_port = await _listen(tg, create_api(self.api_deps()), s.http_host, s.http_port,
                                                       "the HTTP API", run=self.serve_http)
            metrics_server: _Server | None = None
            if s.metrics_port is not None:
                # This process's own counters (not the bus-wide gauges of GET /metrics), so that a
                # `cars worker` without the API can be scraped too.
                from prometheus_client import make_asgi_app

                metrics_server, self.metrics_port = await _listen(
                    tg, make_asgi_app(self.metrics.registry), s.http_host, s.metrics_port, "the metrics port")
            await self.register()
            tg.start_soon(self.heartbeat_forever)
            tg.start_soon(self.watch_subscribers)
            if on_ready is not None:
                result = on_ready(self)
                if result is not None:
                    await result
            try:
                await anyio.sleep_forever()
            finally:
                with anyio.CancelScope(shield=True):
                    await self.deregister()
                    self.stopping = True
                    if server is not None:
                        server.should_exit = True
                    if metrics_server is not None:
                        metrics_server.should_exit = True


async def _listen(tg: anyio.abc.TaskGroup, app: Any, host: str, port: int, what: str,
                  run: Callable[[uvicorn.Server], Coroutine[Any, Any, None]] | None = None) -> tuple[_Server, int]:
    """Serve the ASGI `app` on host:port in `tg` (through `run(server)` when given); returns the server
    and the port it listens on."""
    server = _Server(uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False, lifespan="off",
                                    timeout_graceful_shutdown=GRACEFUL_HTTP_S))
    tg.start_soon(run or _serve, server)
    while not server.started:
        if server.should_exit:
            raise RuntimeError(f"{what} could not listen on {host}:{port}")
        await anyio.sleep(0.02)
    return server, server.servers[0].sockets[0].getsockname()[1]


async def keep_projecting(runner: ProjectionRunner, poll_s: float, backoff_max_s: float = 30.0) -> None:
    """Run the projections for as long as the process lives. A database that went away (or a fold that
    failed) stops a round, not the process: the views stay at their last committed batch, the error is
    logged, and the runner starts again after a growing pause, so a store outage is waited out."""
    delay = 0.5
    while True:
        started = time.monotonic()
        try:
            await runner.run(None, poll_s)
        except Exception as exc:
            if time.monotonic() - started > 60:
                delay = 0.5  # it had been running fine: this is a new problem
            log.error("projections stopped: %s: %s; starting again in %.1f s", type(exc).__name__, exc, delay)
            await anyio.sleep(delay)
            delay = min(delay * 2, backoff_max_s)


async def _serve(server: uvicorn.Server) -> None:
    await server.serve()


def _describe(subscriber: Any) -> str:
    sub = getattr(subscriber, "stream_sub", None)
    return f"{sub.name} (group {sub.group})" if sub is not None else repr(subscriber)


@contextlib.contextmanager
def _one_error() -> Iterator[None]:
    """Task groups wrap a failure in (nested) exception groups; a single one is re-raised as itself, so
    that the command line reports it as one clear error with a non-zero exit."""
    try:
        yield
    except BaseExceptionGroup as group:
        leaves: list[BaseException] = []
        pending: list[BaseException] = [group]
        while pending:
            exc = pending.pop()
            if isinstance(exc, BaseExceptionGroup):
                pending.extend(exc.exceptions)
            else:
                leaves.append(exc)
        if len(leaves) == 1:
            raise leaves[0] from None
        raise


async def run_until_signal(
    settings: Settings, *, actors: Sequence[str], role: str, api: bool, relay: bool, projections: bool,
    on_ready: Callable[[Platform], Awaitable[None] | None] | None = None,
) -> None:
    """Start a platform and run it until SIGINT or SIGTERM, then shut it down gracefully."""
    import signal

    platform = Platform(settings=settings, actors=actors, role=role, api=api, relay=relay, projections=projections)
    with bus_url(settings) as url, _one_error():
        async with platform.started(url), anyio.create_task_group() as tg:
            async def stop_on_signal() -> None:
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for sig in signals:
                        log.info("received %s; shutting down", signal.Signals(sig).name)
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(stop_on_signal)
            tg.start_soon(platform.serve, on_ready)
