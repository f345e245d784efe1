"""A registry consumer process for the crash tests in test_consumer.py.

    python tests/integration/consumer_child.py REDIS_URL STORE_ENV_JSON CONSUMER RECLAIM_IDLE_MS

It subscribes the real registry handler (through `bus.aggregates.AggregateStore` on the given store)
to cars.commands with `bus.consumer.subscribe`, exactly as `cars worker` does, prints "ready" once
its subscribers run, and serves until SIGTERM or SIGINT.

CARS_TEST_BLOCK makes the handler hang so that the parent can SIGKILL it mid-message:

- `before`: the handler blocks before it touches the store (nothing written, nothing acked);
- `after`: the handler appends its effects, then blocks before the ack.

Either way it first prints "blocked <mode> <message id>" so the parent knows where it stands.

The in-process tests (test_dlq.py, test_tracing.py) use `running_consumer` from here too, so every
test drives the consumer wired the same way.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio
from faststream.redis import RedisBroker, RedisRouter
from opentelemetry.sdk.trace import TracerProvider
from redis.asyncio import Redis

from actors.registry import router as registry
from bus import streams
from bus.aggregates import AggregateStore
from bus.consumer import ConsumerConfig, Handler, StreamConsumer, run_readers, subscribe
from bus.store import EventStore
from contracts import Envelope

BLOCK_ENV = "CARS_TEST_BLOCK"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def no_alive_instances() -> list[str]:
    return []  # the sweep is not under test here


def blocking(handler: Handler, mode: str) -> Handler:
    """`handler`, hanging before or after it runs, as CARS_TEST_BLOCK says."""

    async def wrapped(envelope: Envelope[Any]) -> None:
        if mode == "before":
            print(f"blocked before {envelope.id}", flush=True)
            await anyio.sleep_forever()
        await handler(envelope)
        if mode == "after":
            print(f"blocked after {envelope.id}", flush=True)
            await anyio.sleep_forever()

    return wrapped


@contextlib.asynccontextmanager
async def running_consumer(
    redis_url: str, handler: Handler, config: ConsumerConfig, middlewares: Sequence[Any] = (),
    tracer_provider: TracerProvider | None = None,
) -> AsyncIterator[StreamConsumer]:
    """`handler` subscribed to cars.commands in the registry group, as `cars worker` wires it; with
    `tracer_provider`, new entries are handled in spans of its own (the reclaim path's spans come from
    `middlewares`)."""
    broker = RedisBroker(redis_url, logger=None, middlewares=tuple(middlewares))
    router = RedisRouter()
    client: Redis | None = None

    async def redis() -> Redis:
        assert client is not None
        return client

    consumer, reader = subscribe(
        router, client=redis, stream=streams.COMMANDS, group=registry.ROLE, handler=handler,
        accepts=registry.ACCEPTS, config=config, title=registry.ROLE,
        tracer=None if tracer_provider is None else tracer_provider.get_tracer("cars-tests"),
    )
    broker.include_router(router)
    client = await broker.connect()
    await broker.start()
    try:
        async with run_readers([reader]):
            yield consumer
    finally:
        with anyio.CancelScope(shield=True):
            await broker.stop()


def registry_handler(store: EventStore) -> Handler:
    """The real registry handler over `store`."""
    deps = registry.RegistryDeps(
        aggregates=AggregateStore(store, utcnow), clock=utcnow, alive_instances=no_alive_instances,
        service_timeout_s=35.0,
    )
    return functools.partial(registry.handle, deps)


async def main(redis_url: str, store_env: dict[str, str], consumer: str, reclaim_idle_ms: int) -> None:
    store = EventStore(store_env)
    handler = registry_handler(store)
    if mode := os.environ.get(BLOCK_ENV, ""):
        handler = blocking(handler, mode)
    config = ConsumerConfig(consumer=consumer, reclaim_idle_ms=reclaim_idle_ms, max_deliveries=5,
                            max_message_bytes=1 << 20, maxlen=10_000, polling_ms=50)
    try:
        async with running_consumer(redis_url, handler, config):
            print("ready", flush=True)
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    break
    finally:
        store.close()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
