"""Which HTTP requests make a span (projections/api.py `_telemetry`): a write continues the client's W3C
trace context into the command it puts on the bus; reads and probes make none (real Redis, an SDK
tracer provider whose spans land in memory)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from redis import asyncio as aioredis

from bus import streams
from bus.store import EventStore
from projections import api as api_module
from tests.integration.test_api import bus, entries_of, make_deps, store  # noqa: F401  (fixtures)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    """FastAPI's telemetry given an SDK provider of its own (the global one can be set once per process)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    chosen = api_module._telemetry()
    if not chosen:
        pytest.skip("this FastAPI has no telemetry of its own")
    monkeypatch.setattr(api_module, "_telemetry",
                        lambda: {"telemetry": {**chosen["telemetry"], "tracer_provider": provider}})
    return exporter


@pytest.fixture
async def api(spans: InMemorySpanExporter, bus: aioredis.Redis,  # noqa: F811
              store: EventStore) -> AsyncIterator[httpx.AsyncClient]:  # noqa: F811
    transport = httpx.ASGITransport(app=api_module.create_api(make_deps(bus, store)))
    async with httpx.AsyncClient(transport=transport, base_url="http://cars.test") as client:
        yield client


async def test_a_command_continues_the_clients_trace_and_reads_make_no_span(
    api: httpx.AsyncClient, bus: aioredis.Redis, spans: InMemorySpanExporter,  # noqa: F811
) -> None:
    # When a client in a trace posts a command
    body = {"type": "monitoring.stop", "data": {"project": "demo"}}
    answer = await api.post("/commands", json=body, headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})
    assert answer.status_code == 202, answer.text
    # Then the request made a span in the client's trace, and the command on the bus carries it
    [server_span] = [s for s in spans.get_finished_spans() if s.parent is not None and s.parent.is_remote]
    assert f"{server_span.context.trace_id:032x}" == TRACE_ID and f"{server_span.parent.span_id:016x}" == PARENT_ID
    [(_, fields)] = await entries_of(bus, streams.COMMANDS)
    assert fields["traceparent"].decode().split("-")[1] == TRACE_ID
    # And queries and probes make none
    spans.clear()
    for path in ("/health", "/statistics", "/events", "/services"):
        assert (await api.get(path)).status_code in (200, 404), path
    assert spans.get_finished_spans() == ()
