"""`GET /metrics`: the Prometheus metrics of this process and of the whole bus, for the HTTP API.

(A module of its own so that `projections.metrics`, which the runtime of every process imports for
its metric families, does not import FastAPI: a `cars worker` or `cars repair` serves no HTTP.)
"""

from __future__ import annotations

from typing import Any

from fastapi import Request, Response

# The classic text format, which every Prometheus version reads (prometheus_client's own
# CONTENT_TYPE became version=1.0.0 in 0.22; the body generate_latest writes is the same).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


async def metrics(request: Request) -> Response:
    """Prometheus metrics of this process and of the whole bus, in the text exposition format."""
    deps = request.app.state.deps
    if deps.metrics is None:
        return Response("this process serves no metrics\n", status_code=404, media_type="text/plain")
    body: bytes = await deps.metrics()
    return Response(body, media_type=CONTENT_TYPE)


ROUTE: dict[str, Any] = {
    "path": "/metrics", "endpoint": metrics, "methods": ["GET"], "tags": ["operations"],
    "summary": "Prometheus metrics", "response_class": Response,
    "responses": {200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text format 0.0.4."},
                  404: {"description": "This process serves no metrics."}},
}
