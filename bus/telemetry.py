"""OpenTelemetry set-up from the standard OTEL_* variables.

`OTEL_TRACES_EXPORTER`: `none` (default: spans are still made, so trace context propagates through
the wire format), `console` (spans printed to stderr), or `otlp` (needs the
opentelemetry-exporter-otlp package installed). `OTEL_SERVICE_NAME` defaults to `cars`.
"""

from __future__ import annotations

import logging
import os

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

log = logging.getLogger(__name__)


def tracer_provider() -> trace.TracerProvider:
    """The process's tracer provider; installs one from OTEL_* settings if none is set yet."""
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current  # already configured (by tests, or by an earlier call)
    provider = TracerProvider(resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "cars")}))
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "none").strip().lower()
    if exporter == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    elif exporter == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            log.warning("OTEL_TRACES_EXPORTER=otlp but opentelemetry-exporter-otlp is not installed; no export")
        else:
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    elif exporter not in ("none", ""):
        log.warning("OTEL_TRACES_EXPORTER=%s is not supported here; use none, console or otlp", exporter)
    trace.set_tracer_provider(provider)
    return provider
