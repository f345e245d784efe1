"""OpenTelemetry set-up from the standard OTEL_* variables, and trace context carried with events.

`OTEL_TRACES_EXPORTER`: `none` (default: spans are still made, so trace context propagates through
the wire format and the store), `console` (spans printed to stderr), `otlp` (OTLP over HTTP: needs
the opentelemetry-exporter-otlp-proto-http package, the `otlp` extra of CARS; it reads
`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_HEADERS` and the other OTLP variables itself), or a
comma-separated list of these. `OTEL_SERVICE_NAME` defaults to `cars`; `OTEL_RESOURCE_ATTRIBUTES` and
`OTEL_TRACES_SAMPLER`/`OTEL_TRACES_SAMPLER_ARG` are read by the SDK. `OTEL_SDK_DISABLED=true` turns
tracing off altogether (no spans, so no trace context either).

One trace follows a message through every hop: a producer's `traceparent` field is continued by
the consuming actor's span (FastStream's RedisTelemetryMiddleware); an event that actor records
keeps that span's context in its `metadata` (`bus.store`); and the relay publishes the event in a
span whose parent is that context (`bus.relay`), which the next actor continues in turn.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

from bus.streams import TRACE_FIELDS

log = logging.getLogger(__name__)

EXPORTERS = ("none", "console", "otlp")


def tracer_provider() -> trace.TracerProvider:
    """The process's tracer provider; installs one from OTEL_* settings if none is set yet."""
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current  # already configured (by tests, or by an earlier call)
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return current
    provider = TracerProvider(resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "cars")}))
    for exporter in span_exporters(os.environ.get("OTEL_TRACES_EXPORTER", "none")):
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider


def span_exporters(setting: str) -> list[SpanExporter]:
    """The exporters an OTEL_TRACES_EXPORTER value names; unknown or unavailable ones are logged."""
    exporters: list[SpanExporter] = []
    for name in (n.strip().lower() for n in setting.split(",")):
        if name == "console":
            exporters.append(ConsoleSpanExporter())
        elif name == "otlp":
            try:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            except ImportError:
                log.warning("OTEL_TRACES_EXPORTER=otlp, but opentelemetry-exporter-otlp-proto-http is not "
                            "installed (pip install 'cars[otlp]'); spans are not exported")
            else:
                exporters.append(OTLPSpanExporter())
        elif name not in ("none", ""):
            log.warning("OTEL_TRACES_EXPORTER=%s is not supported; use %s", name, ", ".join(EXPORTERS))
    return exporters


def recording() -> bool:
    """Whether a span made now goes anywhere: the SDK provider has a span processor (an exporter, or
    a test's in-memory one). With none (`OTEL_TRACES_EXPORTER=none`, the default) a span only carries
    its trace context, so a hot path may pass the context on as it is instead of making a span that
    nothing will ever read (the relay does, per event)."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        return False  # no SDK (or OTEL_SDK_DISABLED): spans are non-recording, their context is the parent's
    processors = getattr(getattr(provider, "_active_span_processor", None), "_span_processors", None)
    return processors is None or len(processors) > 0  # unknown layout: assume someone is listening


def trace_fields(metadata: Mapping[str, str]) -> dict[str, str]:
    """The trace context kept in an envelope's metadata, as stream-entry fields."""
    return {k: v for k, v in metadata.items() if k in TRACE_FIELDS}


def current_trace_context() -> dict[str, str]:
    """The W3C trace context (`traceparent`, `tracestate`) of the current span; empty outside one."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return {k: v for k, v in carrier.items() if k in TRACE_FIELDS}


def context_from(metadata: Mapping[str, str]) -> Context | None:
    """The trace context kept in an envelope's metadata, or None when there is none (or it is invalid)."""
    carrier = trace_fields(metadata)
    if "traceparent" not in carrier:
        return None
    context = propagate.extract(carrier)
    return context if trace.get_current_span(context).get_span_context().is_valid else None


@contextlib.contextmanager
def continued(fields: Mapping[str, str]) -> Iterator[None]:
    """Inside, the trace context of a consumed entry (`fields`: its headers) is the current one,
    unless a span is current already (the consumer span of FastStream's telemetry middleware, which
    the runtime installs only when spans are recorded: without it, what the handler records carries
    the producer's context, the same trace a consumer span would have continued)."""
    parent = None if trace.get_current_span().get_span_context().is_valid else context_from(fields)
    if parent is None:
        yield
        return
    token = otel_context.attach(parent)
    try:
        yield
    finally:
        otel_context.detach(token)
