"""`GET /events/stream`: the store's events as server-sent events, live.

The stream reads the notification log by position, as the projections do, so it shows exactly what
was recorded, in the store's order, whichever process recorded it. Each event is one SSE message:
`id:` is its position and `data:` its envelope (the same JSON as `GET /events`). A client that
reconnects sends the last id it saw as `Last-Event-ID` and resumes right after it; browsers'
`EventSource` does this by itself.

Filters: `type` (repeatable) keeps only those message types; `project` (repeatable) keeps events whose
`data.project` is one of them, and the events of those projects' repairs that do not repeat it
(`heal.proposed`, `repair.applied`, ...: `ProjectOf`). Events of no project (`service.*`,
`environment.*`, ...) only pass when no `project` filter is given.

A comment line (`: heartbeat`) goes out when nothing was sent for `stream_heartbeat_s`, so proxies keep
the connection open. The stream ends when the client goes away (Starlette cancels it) or when the
process shuts down (`ApiDeps.stopping`), so it never holds up a shutdown.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Annotated, Any

import anyio.to_thread
from attrs import frozen
from fastapi import Depends, Header, Query
from fastapi.sse import EventSourceResponse, ServerSentEvent

from projections.api import BadRequest, Deps, positioned, wanted_types

log = logging.getLogger(__name__)

BATCH = 500  # events read from the store per round trip
RETRY_MS = 2000  # how long a disconnected EventSource waits before it reconnects


@frozen(kw_only=True)
class StreamRequest:
    """What one client asked for, checked before the stream starts (a bad request is a 400, not a broken stream)."""

    types: list[str]
    projects: frozenset[str]
    after: int | None  # None: from the end of the log (new events only)


def stream_request(
    types: Annotated[list[str] | None, Query(
        alias="type", description="Only these message types (repeatable); see GET /asyncapi for all.")] = None,
    projects: Annotated[list[str] | None, Query(
        alias="project", description="Only events of these projects (repeatable). Events that carry no "
                                     "project pass only when this is not given.")] = None,
    after: Annotated[int | None, Query(
        ge=0, description="Start after this position [default: the end of the log: only new events]. "
                          "Last-Event-ID, when sent, wins.")] = None,
    last_event_id: Annotated[str | None, Header(
        alias="Last-Event-ID", description="The `id` of the last event received: resume right after it.")] = None,
) -> StreamRequest:
    if last_event_id is not None and last_event_id.strip():
        text = last_event_id.strip()
        if not text.isdigit():
            raise BadRequest("invalid Last-Event-ID",
                             [f"expected a notification-log position (an integer), got {text[:64]!r} "
                              "@ $.header.Last-Event-ID"])
        after = int(text)
    return StreamRequest(types=wanted_types(types), projects=frozenset(projects or ()), after=after)


class ProjectOf:
    """Which project an event belongs to: its own `project`, else, for the events of a repair that do
    not repeat it (`heal.proposed`, `repair.applied`, ...), the project of the repair it names, read once
    per repair from the repair's own stream (its `heal.requested`)."""

    MAX_KNOWN = 10_000

    def __init__(self, load_stream: Any) -> None:
        self.load_stream = load_stream
        self.known: dict[Any, str | None] = {}

    async def __call__(self, data: Any) -> str | None:
        project = getattr(data, "project", None)
        repair = getattr(data, "repair_id", None)
        if isinstance(project, str):
            if repair is not None:
                self._remember(repair, project)
            return project
        if repair is None:
            return None
        if repair not in self.known:
            history = await anyio.to_thread.run_sync(self.load_stream, repair)
            found = (getattr(e.data, "project", None) for e in history)
            self._remember(repair, next((p for p in found if isinstance(p, str)), None))
        return self.known[repair]

    def _remember(self, repair: Any, project: str | None) -> None:
        if len(self.known) >= self.MAX_KNOWN:
            self.known.clear()
        self.known[repair] = project


async def matches(item: Any, projects: frozenset[str], project_of: ProjectOf) -> bool:
    """Whether a store item passes the project filter (the type filter is the store's)."""
    if not projects:
        return True
    return await project_of(item.envelope.data) in projects


async def stream_events(
    deps: Deps, wanted: Annotated[StreamRequest, Depends(stream_request)],
) -> AsyncIterator[ServerSentEvent]:
    """Follow the event log live as server-sent events (`text/event-stream`).

    Each message: `id` = position in the notification log, `data` = the event's envelope with its
    `position`. Resume with `Last-Event-ID`. Heartbeat comments keep idle connections open.
    """
    read, head = deps.read_events, deps.max_position
    project_of = ProjectOf(deps.load_stream)
    after = wanted.after
    if after is None:  # "now" is before the client hears back: whatever it does next is in the stream
        after = await anyio.to_thread.run_sync(head) if head is not None else 0
    # The first line answers at once, so the client knows it is connected, and sets its reconnect delay.
    yield ServerSentEvent(comment="cars events", retry=RETRY_MS)
    last_sent = time.monotonic()
    while not deps.stopping():
        try:
            end = await anyio.to_thread.run_sync(head) if head is not None else None
            batch: Sequence[Any] = await anyio.to_thread.run_sync(read, after, BATCH, wanted.types)
        except Exception:
            # The client reconnects (with Last-Event-ID) after RETRY_MS; a broken stream would too, later.
            log.exception("event stream: reading the store failed; ending the stream")
            return
        for item in batch:
            after = item.position
            if await matches(item, wanted.projects, project_of):
                yield ServerSentEvent(id=str(item.position), data=positioned(item))
                last_sent = time.monotonic()
        if len(batch) == BATCH:
            continue  # more are waiting
        if end is not None:
            # A short batch holds every wanted event up to `end` (all of them were visible when it was
            # read: see projections.runner), so skip the rest of the log instead of scanning it again.
            after = max(after, end)
        if time.monotonic() - last_sent >= deps.stream_heartbeat_s:
            yield ServerSentEvent(comment="heartbeat")
            last_sent = time.monotonic()
        await anyio.sleep(deps.stream_poll_s)


ROUTES: list[dict[str, Any]] = [
    {"path": "/events/stream", "endpoint": stream_events, "methods": ["GET"], "tags": ["queries"],
     "summary": "Follow the event log live (server-sent events)", "response_class": EventSourceResponse,
     "responses": {400: {"description": "A `type` is not a known message type, or Last-Event-ID is not a "
                                        "position."}}},
]

__all__ = ["ROUTES", "ProjectOf", "StreamRequest", "matches", "stream_events", "stream_request"]
