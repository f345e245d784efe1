"""One trace from `run.reported` to `repair.completed`, across every bus hop and the relay.

A real repair loop (real Redis, real SQLite store, the real actors and relay in this process, a real
git repository whose refactor breaks a test) runs with an in-memory span exporter on the process's
tracer provider. The spans of every hop must share the trace that the ingestion of `run.reported`
started, and each must descend from that ingestion span.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from bus.settings import Settings
from bus.telemetry import tracer_provider
from tests.integration.test_repair_loop import SHOP, make_repo, run_loop, settings  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow

HOPS = ("failure.detected", "heal.proposed", "heal.validated", "repair.completed")


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Every span the process finishes, kept in memory (added to the process's SDK provider)."""
    provider = tracer_provider()
    assert isinstance(provider, TracerProvider), "CARS must install an SDK tracer provider"
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()  # the processor stays on the provider; a shut-down exporter drops what it gets
    exporter.clear()


def message_type(span: ReadableSpan) -> object:
    return (span.attributes or {}).get("cars.message.type")


def ancestors(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[ReadableSpan]:
    chain = []
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
        chain.append(span)
    return chain


async def test_one_trace_runs_from_the_reported_run_to_the_completed_repair(
    settings: Settings, tmp_path: Path, spans: InMemorySpanExporter,  # noqa: F811
) -> None:
    # Given a project whose refactor renamed a function its test calls
    repo = make_repo(tmp_path / "traced", SHOP, {
        "shop/cart.py": SHOP["shop/cart.py"].replace("total_price", "cart_total")})

    # When its run is reported and the loop validates a repair
    result = await run_loop(settings, repo, apply=False)
    assert [r.status for r in result.repairs] == ["validated"]
    finished = list(spans.get_finished_spans())
    by_id = {s.context.span_id: s for s in finished if s.context is not None}

    # Then the ingestion of run.reported started one trace ...
    [ingest] = [s for s in finished if s.kind is SpanKind.CONSUMER and message_type(s) == "run.reported"]
    assert ingest.name == "cars.ingest process"
    assert ingest.context is not None
    trace_id = ingest.context.trace_id

    # ... every event of the loop was published by the relay in that trace, as a descendant of it ...
    for hop in HOPS:
        published = [s for s in finished if s.kind is SpanKind.PRODUCER and message_type(s) == hop]
        assert published, f"the relay published no {hop} in a span"
        for span in published:
            assert span.context is not None and span.context.trace_id == trace_id, (hop, span.name)
            assert ingest in ancestors(span, by_id), f"{hop} is not a descendant of the ingestion span"
            assert span.name.startswith("cars.events.") and span.name.endswith(" publish")

    # ... and every actor that consumed them continued it: monitor, healer, validator, provisioner
    consumed = {(s.name, message_type(s)) for s in finished
                if s.kind is SpanKind.CONSUMER and s.context is not None and s.context.trace_id == trace_id}
    assert {
        ("cars.ingest process", "run.reported"),
        ("cars.events.failures process", "failure.detected"),
        ("cars.events.repairs process", "heal.proposed"),
        ("cars.commands process", "environment.request"),
        ("cars.events.environments process", "environment.provisioned"),
    } <= consumed
    completed = next(s for s in finished if s.kind is SpanKind.PRODUCER and message_type(s) == "repair.completed")
    # And the path from the root to repair.completed goes through every hop, each relay publish
    # between the actor that recorded the event and the actor that consumed it
    assert [s.name for s in reversed(ancestors(completed, by_id))] == [
        "cars.ingest create", "cars.ingest process",  # FastStream's consumer opens the trace: monitor
        "cars.events.failures publish", "cars.events.failures process",  # relay, healer
        "cars.events.repairs publish", "cars.events.repairs process",  # relay (heal.proposed), validator
        "cars.commands process",  # environment.request, sent by the validator: provisioner
        "cars.events.environments publish", "cars.events.environments process",  # relay, validator
    ]
