"""The operator dashboard at `/`: one server-rendered page, a stylesheet and a little vanilla JavaScript.

No build step, no CDN: the files live in this package and are served by the API itself. The page
reads only the public JSON endpoints (`/repairs`, `/services`, `/events`, `/events/stream`) and sends
commands only through `POST /repairs/{id}/approve` and `/reject`, so it can do nothing a script
could not. All data is put into the page as text (`textContent`), never as markup, and a Content
Security Policy allows scripts from this server only: a test id like `<script>` shows as itself.
"""

from __future__ import annotations

import html
from importlib.resources import files
from string import Template
from typing import Annotated, Any

import anyio.to_thread
from fastapi import Path
from fastapi.responses import HTMLResponse, Response

from projections.api import Deps, NotFound

#: The files under static/ that are served, by name: nothing else in the package is reachable.
STATIC = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
FEED_BACKLOG = 50  # events before "now" the live feed starts with
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _resource(name: str) -> bytes:
    return files(__package__).joinpath(name).read_bytes()


def render_page(start_after: int) -> str:
    """The page, with the position the live feed starts after (every inserted value is escaped)."""
    template = Template(_resource("page.html").decode("utf-8"))
    return template.substitute(start_after=html.escape(str(start_after), quote=True))


async def page(deps: Deps) -> HTMLResponse:
    """The dashboard."""
    head = deps.max_position
    position = await anyio.to_thread.run_sync(head) if head is not None else 0
    return HTMLResponse(render_page(max(0, position - FEED_BACKLOG)), headers=SECURITY_HEADERS)


async def static(name: Annotated[str, Path(description="A file of the dashboard.")]) -> Response:
    """One of the dashboard's static files."""
    media_type = STATIC.get(name)
    if media_type is None:
        raise NotFound("not found", [f"no dashboard file {name[:64]!r} @ $.path.name"])
    body = await anyio.to_thread.run_sync(_resource, f"static/{name}")
    return Response(body, media_type=media_type, headers=SECURITY_HEADERS)


ROUTES: list[dict[str, Any]] = [
    {"path": "/", "endpoint": page, "methods": ["GET"], "include_in_schema": False, "response_class": HTMLResponse},
    {"path": "/dashboard/static/{name}", "endpoint": static, "methods": ["GET"], "include_in_schema": False},
]

__all__ = ["ROUTES", "render_page"]
