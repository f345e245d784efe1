"""The span exporter is chosen by the standard OTEL_* variables: a real `python` process configured only
through its environment exports over OTLP/HTTP to a real receiver on loopback, prints to the console,
or exports nothing. A subprocess each, because a process can install its tracer provider only once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

SCRIPT = """
from bus.telemetry import tracer_provider
provider = tracer_provider()
with provider.get_tracer("cars.test").start_as_current_span("hello-otel"):
    pass
provider.shutdown()  # flushes the batch processor
"""


class Receiver:
    """An OTLP/HTTP receiver: keeps the body of every POST to /v1/traces."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                outer.requests.append((self.path, self.headers.get("content-type", ""), body))
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.end_headers()
                self.wfile.write(b"")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    thread = threading.Thread(target=r.server.serve_forever, daemon=True)
    thread.start()
    yield r
    r.server.shutdown()
    r.server.server_close()


def run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run([sys.executable, "-c", SCRIPT], env={**clean, **env}, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done


def test_otlp_exports_over_http_to_the_configured_endpoint(receiver: Receiver) -> None:
    # Given only the standard variables: the exporter, the endpoint, the service name and a resource attribute
    run({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
         "OTEL_SERVICE_NAME": "cars-otlp-test", "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=ci"})
    # Then the receiver got the span in OTLP protobuf, with the resource those variables describe
    [(path, content_type, body)] = receiver.requests
    assert (path, content_type) == ("/v1/traces", "application/x-protobuf")
    request = ExportTraceServiceRequest.FromString(body)
    [resource_spans] = request.resource_spans
    attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
    assert attributes["service.name"] == "cars-otlp-test"
    assert attributes["deployment.environment"] == "ci"
    assert [s.name for ss in resource_spans.scope_spans for s in ss.spans] == ["hello-otel"]


def test_console_prints_the_spans_and_none_exports_nothing(receiver: Receiver) -> None:
    printed = run({"OTEL_TRACES_EXPORTER": "console", "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url})
    assert '"name": "hello-otel"' in printed.stdout
    silent = run({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url})
    assert "hello-otel" not in silent.stdout + silent.stderr
    assert receiver.requests == []


def test_an_unknown_exporter_is_named_in_a_warning() -> None:
    done = run({"OTEL_TRACES_EXPORTER": "zipkin"})
    assert "OTEL_TRACES_EXPORTER=zipkin is not supported; use none, console, otlp" in done.stderr
