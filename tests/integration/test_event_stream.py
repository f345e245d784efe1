"""GET /events/stream over real HTTP: a real uvicorn on loopback, a real SQLite event store, httpx as the client.

(httpx's in-process ASGI transport buffers whole responses, so a live stream needs a real server.)
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
import httpx
import pytest
import redis.asyncio as aioredis
import uvicorn

import contracts
from bus.store import EventStore
from contracts import Envelope
from contracts.repairs import HealAbandoned, HealRequested
from contracts.runs import RunRecorded
from contracts.values import FailureClass
from projections.api import ApiDeps, create_api
from tests.integration.test_api import make_deps

WAIT_S = 15.0  # bound on every wait: a hang fails the test instead of blocking the suite


class Server(uvicorn.Server):
    """uvicorn without signal handlers: pytest keeps its own Ctrl-C."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Stopping:
    """ApiDeps.stopping, switched by the test."""

    def __init__(self) -> None:
        self.now = False

    def __call__(self) -> bool:
        return self.now


async def until(check: Callable[[], object]) -> None:
    """Poll `check` until it is true, for at most WAIT_S."""
    with anyio.fail_after(WAIT_S):
        while not check():  # noqa: ASYNC110  (uvicorn's state offers no event to wait on)
            await anyio.sleep(0.02)


@contextlib.asynccontextmanager
async def serving(deps: ApiDeps) -> AsyncIterator[tuple[str, Server]]:
    """The API on a free loopback port for the duration of the block; the base URL and the server."""
    config = uvicorn.Config(create_api(deps), host="127.0.0.1", port=0, log_config=None, access_log=False,
                            lifespan="off", timeout_graceful_shutdown=5)
    server = Server(config)
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        await until(lambda: server.started)
        port = server.servers[0].sockets[0].getsockname()[1]
        try:
            yield f"http://127.0.0.1:{port}", server
        finally:
            server.should_exit = True


class Sse:
    """A parsed event stream: `messages` (id + decoded data) and `comments`, as they arrive."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.lines = response.aiter_lines()
        self.comments: list[str] = []

    async def next_message(self) -> tuple[str | None, dict[str, Any]]:
        """The next message (its `id` and decoded `data`); comments on the way are kept in `comments`."""
        fields: dict[str, str] = {}
        with anyio.fail_after(WAIT_S):
            async for line in self.lines:
                if line.startswith(":"):
                    self.comments.append(line[1:].strip())
                elif line:
                    name, _, value = line.partition(":")
                    fields[name] = value.removeprefix(" ")
                elif "data" in fields:
                    return fields.get("id"), json.loads(fields["data"])
                else:
                    fields = {}
        raise AssertionError("the stream ended")

    async def messages_until(self, last_type: str) -> list[tuple[str | None, dict[str, Any]]]:
        """Every message up to and including the first of type `last_type`."""
        found = []
        while True:
            message = await self.next_message()
            found.append(message)
            if message[1]["type"] == last_type:
                return found


@contextlib.asynccontextmanager
async def sse(base: str, path: str = "/events/stream", **kwargs: Any) -> AsyncIterator[Sse]:
    async with httpx.AsyncClient(base_url=base, timeout=WAIT_S) as client, client.stream("GET", path, **kwargs) as r:
        assert r.status_code == 200, await r.aread()
        assert r.headers["content-type"].startswith("text/event-stream")
        yield Sse(r)


def run(project: str, run_id: str) -> Envelope[Any]:
    return Envelope(data=RunRecorded(project=project, run_id=run_id, total=1, passed=1, failed=0))


def record(store: EventStore, *envelopes: Envelope[Any]) -> list[int]:
    """Append each envelope to a stream of its own; their positions."""
    return [store.append(uuid.uuid4(), 0, [e])[0] for e in envelopes]


def abandoned() -> Envelope[Any]:
    """An event with no project in its data."""
    return Envelope(data=HealAbandoned(repair_id=uuid.uuid4(), reason="no strategy applies"))


@pytest.fixture
def store(sqlite_env: dict[str, str]) -> Iterator[EventStore]:
    es = EventStore(sqlite_env)
    yield es
    es.close()


@pytest.fixture
async def bus(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


def deps_for(bus: aioredis.Redis, store: EventStore, **overrides: Any) -> ApiDeps:
    return make_deps(bus, store, max_position=store.max_position, stream_poll_s=0.05, **overrides)


async def test_new_events_arrive_live_with_their_position_as_id(bus: aioredis.Redis, store: EventStore) -> None:
    # Given a log that already holds an event, and a client following the stream from now
    record(store, run("shop", "old"))
    async with serving(deps_for(bus, store)) as (base, _), sse(base) as stream:
        # When two events are recorded after it connected
        positions = await anyio.to_thread.run_sync(lambda: record(store, run("shop", "r1"), abandoned()))
        got = [await stream.next_message(), await stream.next_message()]
    # Then it receives exactly those two, in order, each with its position as the SSE id and the
    # same JSON as GET /events
    expected = [{"position": r.position, **contracts.encode(r.envelope)} for r in store.read(positions[0] - 1, 10)]
    assert got == [(str(e["position"]), e) for e in expected]
    assert [e["data"].get("run_id") for _, e in got] == ["r1", None]
    assert stream.comments[0] == "cars events"  # the opening line, sent before any event


async def test_type_and_project_filters(bus: aioredis.Redis, store: EventStore) -> None:
    # Given runs of two projects and an event that carries no project, then a last "shop" run as an end mark
    record(store, run("shop", "s1"), run("web", "w1"), abandoned(), run("shop", "end"))
    async with serving(deps_for(bus, store)) as (base, _):
        async with sse(base, params={"after": 0, "project": "shop"}) as stream:
            shop = [e["data"]["run_id"] for _, e in await stream.messages_until("run.recorded") +
                    await stream.messages_until("run.recorded")]
        async with sse(base, params={"after": 0, "project": ["shop", "web"], "type": "run.recorded"}) as stream:
            both = [(await stream.next_message())[1]["data"]["run_id"] for _ in range(3)]
        async with sse(base, params={"after": 0, "type": "heal.abandoned"}) as stream:
            _, only = await stream.next_message()
        async with sse(base, params={"after": 0}) as stream:
            everything = [e["type"] for _, e in [await stream.next_message() for _ in range(4)]]
    # Then a project filter keeps that project's events only (the event without a project is left out),
    assert shop == ["s1", "end"]
    # several values of a filter are alternatives, a type filter keeps that type,
    assert both == ["s1", "w1", "end"]
    assert only["type"] == "heal.abandoned"
    # and with no project filter, events without a project are sent too
    assert everything == ["run.recorded", "run.recorded", "heal.abandoned", "run.recorded"]


async def test_a_project_filter_keeps_the_events_of_its_repairs_that_do_not_name_it(
    bus: aioredis.Redis, store: EventStore
) -> None:
    # Given a repair of "shop" (its first event names the project, the next one does not), and another
    # project's repair, then an end mark
    rid, other = uuid.uuid4(), uuid.uuid4()

    def requested(repair: uuid.UUID, project: str) -> Envelope[Any]:
        return Envelope(data=HealRequested(repair_id=repair, project=project, test_id="t.py::t", fingerprint="f",
                                           category=FailureClass.RENAMED_SYMBOL))
    store.append(rid, 0, [requested(rid, "shop")])
    store.append(other, 0, [requested(other, "web")])
    store.append(other, 1, [Envelope(data=HealAbandoned(repair_id=other, reason="none"))])
    store.append(rid, 1, [Envelope(data=HealAbandoned(repair_id=rid, reason="none"))])
    record(store, run("shop", "end"))
    async with serving(deps_for(bus, store)) as (base, _):
        # When a client follows "shop" from the start, and another joins after the repair began
        async with sse(base, params={"after": 0, "project": "shop"}) as stream:
            seen = [e["type"] for _, e in await stream.messages_until("run.recorded")]
        async with sse(base, params={"after": 2, "project": "shop", "type": "heal.abandoned"}) as stream:
            _, late = await stream.next_message()
    # Then both get the shop repair's abandonment, never the web one's
    assert seen == ["heal.requested", "heal.abandoned", "run.recorded"]
    assert late["data"]["repair_id"] == str(rid)


async def test_last_event_id_resumes_right_after_that_position(bus: aioredis.Redis, store: EventStore) -> None:
    positions = record(store, run("shop", "r1"), run("shop", "r2"), run("shop", "r3"))
    async with serving(deps_for(bus, store)) as (base, _):
        # When a client reconnects saying it saw the first event (the header wins over `after`)
        async with sse(base, params={"after": 0}, headers={"Last-Event-ID": str(positions[0])}) as stream:
            got = [await stream.next_message(), await stream.next_message()]
    # Then it gets the events after it, and nothing twice
    assert [(i, e["data"]["run_id"]) for i, e in got] == [(str(positions[1]), "r2"), (str(positions[2]), "r3")]


async def test_an_idle_stream_sends_heartbeat_comments(bus: aioredis.Redis, store: EventStore) -> None:
    async with serving(deps_for(bus, store, stream_heartbeat_s=0.1)) as (base, _), sse(base) as stream:
        with anyio.fail_after(WAIT_S):
            async for line in stream.lines:
                if line == ": heartbeat":
                    break


@pytest.mark.parametrize(("params", "headers", "problem"), [
    ({"type": "no.such"}, {}, "unknown message type 'no.such'"),
    ({}, {"Last-Event-ID": "abc"}, "@ $.header.Last-Event-ID"),
    ({"after": "-1"}, {}, "@ $.query.after"),
])
async def test_a_bad_request_is_a_400_before_the_stream_starts(
    bus: aioredis.Redis, store: EventStore, params: dict[str, str], headers: dict[str, str], problem: str
) -> None:
    async with serving(deps_for(bus, store)) as (base, _), httpx.AsyncClient(base_url=base) as client:
        response = await client.get("/events/stream", params=params, headers=headers)
    assert response.status_code in (400, 422)
    assert any(problem in line for line in response.json()["errors"]), response.json()


async def test_the_stream_ends_and_the_server_stops_when_the_process_shuts_down(
    bus: aioredis.Redis, store: EventStore
) -> None:
    # Given a client following the stream
    stopping = Stopping()
    async with serving(deps_for(bus, store, stopping=stopping)) as (base, server), sse(base) as stream:
        record(store, run("shop", "r1"))
        await stream.next_message()
        # When the process shuts down (what bus.runtime does on Ctrl-C)
        stopping.now = True
        server.should_exit = True
        # Then the stream ends cleanly (no error, no hang) and the server finishes its graceful shutdown
        with anyio.fail_after(WAIT_S):
            rest = [line async for line in stream.lines]
        await until(lambda: not server.server_state.connections)
    assert all(not line.startswith("data:") for line in rest)
    assert not server.server_state.tasks


async def test_a_client_that_goes_away_leaves_nothing_running(bus: aioredis.Redis, store: EventStore) -> None:
    async with serving(deps_for(bus, store)) as (base, server):
        # Given a client following the stream
        async with sse(base) as stream:
            record(store, run("shop", "r1"))
            await stream.next_message()
            assert server.server_state.tasks  # the stream is being served
        # When it disconnects, then the server drops the stream (the generator does not poll on forever)
        await until(lambda: not server.server_state.tasks)
