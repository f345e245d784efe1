"""Trace context over the wire: the consumer's span continues the producer's trace, whether the producer
is `bus.wire.publish` inside a span or any program that writes a W3C `traceparent` field (real Redis)."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from faststream.redis.opentelemetry import RedisTelemetryMiddleware
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, SpanKind
from redis.asyncio import Redis

import contracts
from bus import streams, wire
from bus.consumer import ConsumerConfig
from contracts import Envelope
from contracts.registry import RegisterService
from tests.integration.consumer_child import running_consumer
from tests.integration.waiting import eventually

TIMEOUT_S = 15.0


@pytest.fixture(scope="module")
def tracing() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    """An SDK provider whose spans land in memory, synchronously.

    The global provider can be set only once per process, so it is set here only if nobody has set
    an SDK provider yet. Nothing below depends on it: the provider is passed explicitly to the
    producer's tracer and to the broker's telemetry middleware.
    """
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "cars-tests"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(provider)
    yield provider, exporter
    exporter.clear()


@pytest.fixture
def provider(tracing: tuple[TracerProvider, InMemorySpanExporter]) -> TracerProvider:
    return tracing[0]


@pytest.fixture
def spans(tracing: tuple[TracerProvider, InMemorySpanExporter]) -> Iterator[InMemorySpanExporter]:
    tracing[1].clear()
    yield tracing[1]
    tracing[1].clear()


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Redis]:
    c = Redis.from_url(redis_url)
    yield c
    await c.aclose()


class SeenContext:
    """A handler that remembers the span it ran in, per message id."""

    def __init__(self) -> None:
        self.seen: dict[uuid.UUID, SpanContext] = {}

    async def __call__(self, envelope: Envelope[Any]) -> None:
        self.seen[envelope.id] = trace.get_current_span().get_span_context()


def config() -> ConsumerConfig:
    return ConsumerConfig(consumer=f"test-{uuid.uuid4().hex[:8]}", reclaim_idle_ms=30_000, max_deliveries=2,
                          max_message_bytes=1 << 20, maxlen=10_000, polling_ms=50)


async def consumer_span(spans: InMemorySpanExporter, trace_id: int) -> ReadableSpan:
    """The one finished CONSUMER `process` span of `trace_id` (it ends once the message is handled)."""

    def found() -> list[ReadableSpan]:
        return [s for s in spans.get_finished_spans()
                if s.kind is SpanKind.CONSUMER and s.name == f"{streams.COMMANDS} process"
                and s.context is not None and s.context.trace_id == trace_id]

    async def one() -> bool:
        return len(found()) == 1

    await eventually(one, f"a consumer span of trace {trace_id:032x} has ended")
    return found()[0]


def register(instance: str) -> Envelope[Any]:
    return Envelope(data=RegisterService(instance=instance, role="worker"))


async def test_a_command_published_inside_a_span_is_processed_in_the_same_trace(
    redis_url: str, client: Redis, provider: TracerProvider, spans: InMemorySpanExporter,
) -> None:
    handler = SeenContext()
    telemetry = RedisTelemetryMiddleware(tracer_provider=provider)
    async with running_consumer(redis_url, handler, config(), middlewares=[telemetry], tracer_provider=provider):
        # Given a producer in a span of its own
        envelope = register("traced")
        tracer = provider.get_tracer("a-producer")
        with tracer.start_as_current_span(f"{streams.COMMANDS} publish", kind=SpanKind.PRODUCER) as producer:
            # When it publishes a command with bus.wire.publish
            entry_id = await wire.publish(client, streams.COMMANDS, envelope, maxlen=10_000)
        produced = producer.get_span_context()

        # Then the entry carries the producer's W3C trace context beside the message ...
        [(_, fields)] = await client.xrange(streams.COMMANDS, min=entry_id, max=entry_id)
        assert fields[b"traceparent"].decode() == (
            f"00-{produced.trace_id:032x}-{produced.span_id:016x}-{produced.trace_flags:02x}"
        )
        assert produced.trace_flags.sampled
        assert contracts.loads(fields[b"message"]).id == envelope.id

        # ... the consumer's span is in the producer's trace, a child of the producer's span ...
        span = await consumer_span(spans, produced.trace_id)
        assert span.parent is not None and span.parent.span_id == produced.span_id
        assert span.attributes is not None
        assert span.attributes.get("messaging.system") == "redis"
        assert span.attributes.get("messaging.destination_publish.name") == streams.COMMANDS

    # ... and the handler ran inside that span
    seen = handler.seen[envelope.id]
    assert (seen.trace_id, seen.span_id) == (produced.trace_id, span.context.span_id)


async def test_a_literal_traceparent_from_any_producer_is_continued(
    redis_url: str, client: Redis, provider: TracerProvider, spans: InMemorySpanExporter,
) -> None:
    handler = SeenContext()
    telemetry = RedisTelemetryMiddleware(tracer_provider=provider)
    async with running_consumer(redis_url, handler, config(), middlewares=[telemetry], tracer_provider=provider):
        # Given a producer outside Python, which only knows the W3C header format
        trace_id, parent_id = random.getrandbits(128) | 1, random.getrandbits(64) | 1
        envelope = register("from-bash")

        # When it XADDs the message with a traceparent field
        await client.xadd(streams.COMMANDS, {
            "message": contracts.dumps(envelope), "traceparent": f"00-{trace_id:032x}-{parent_id:016x}-01",
        })

        # Then the consumer's span continues that trace, as a child of the producer's (remote) span
        span = await consumer_span(spans, trace_id)
        assert span.parent is not None
        assert (span.parent.trace_id, span.parent.span_id, span.parent.is_remote) == (trace_id, parent_id, True)

    seen = handler.seen[envelope.id]
    assert (seen.trace_id, seen.span_id) == (trace_id, span.context.span_id)


async def test_without_the_telemetry_middleware_the_handler_runs_in_the_producers_context(
    redis_url: str, client: Redis,
) -> None:
    # Given a consumer that makes no spans (what the runtime builds when no span would be recorded:
    # OTEL_TRACES_EXPORTER=none)
    handler = SeenContext()
    async with running_consumer(redis_url, handler, config(), middlewares=[]):
        # When a producer XADDs a message with a traceparent field
        trace_id, parent_id = random.getrandbits(128) | 1, random.getrandbits(64) | 1
        envelope = register("untraced-consumer")
        await client.xadd(streams.COMMANDS, {
            "message": contracts.dumps(envelope), "traceparent": f"00-{trace_id:032x}-{parent_id:016x}-01",
        })

        async def handled() -> bool:
            return envelope.id in handler.seen

        await eventually(handled, "the handler has run")

    # Then the handler ran in the producer's context as it is: what it records stays in that trace
    seen = handler.seen[envelope.id]
    assert (seen.trace_id, seen.span_id, seen.is_remote) == (trace_id, parent_id, True)
