"""`bus.telemetry.recording`: whether a span made now would go anywhere (the relay skips per-event
spans when it would not)."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from bus import telemetry


def test_an_sdk_provider_records_only_once_it_has_a_span_processor(monkeypatch: pytest.MonkeyPatch) -> None:
    provider = TracerProvider()
    monkeypatch.setattr(telemetry.trace, "get_tracer_provider", lambda: provider)
    assert telemetry.recording() is False
    provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    assert telemetry.recording() is True


def test_without_the_sdk_nothing_records(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(telemetry.trace, "get_tracer_provider", lambda: trace.NoOpTracerProvider())
    assert telemetry.recording() is False


def test_trace_fields_keep_only_the_w3c_trace_context() -> None:
    metadata = {"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01", "tracestate": "x=1", "actor": "monitor"}
    assert telemetry.trace_fields(metadata) == {"traceparent": metadata["traceparent"], "tracestate": "x=1"}


def test_continued_makes_a_consumed_entrys_context_current_unless_a_span_is() -> None:
    provider = TracerProvider()
    parent = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"

    with telemetry.continued({"traceparent": parent, "other": "x"}):
        current = trace.get_current_span().get_span_context()
        assert (format(current.trace_id, "032x"), format(current.span_id, "016x")) == ("a" * 32, "b" * 16)
    assert not trace.get_current_span().get_span_context().is_valid  # and it is undone after

    consumer = provider.get_tracer("t").start_as_current_span("consumer")
    with consumer as span, telemetry.continued({"traceparent": parent}):
        assert trace.get_current_span() is span  # a consumer span (the middleware's) stays current

    with telemetry.continued({}), telemetry.continued({"traceparent": "garbage"}):
        assert not trace.get_current_span().get_span_context().is_valid
