"""The dashboard's HTTP side over a real Redis and a real SQLite store: the page, its static files, and
POST /repairs/{id}/reject. (What the page does in a browser: tests/e2e/test_dashboard.py.)"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from importlib.resources import files

import httpx
import pytest
import redis.asyncio as aioredis

from bus import streams
from bus.store import EventStore
from contracts import Envelope
from contracts.runs import RunRecorded
from tests.integration.test_api import entries_of, http, make_deps


@pytest.fixture
def store(sqlite_env: dict[str, str]) -> Iterator[EventStore]:
    """Given a store holding 60 events."""
    es = EventStore(sqlite_env)
    for n in range(60):
        es.append(uuid.uuid4(), 0, [Envelope(data=RunRecorded(project="shop", run_id=f"r{n}", total=1, passed=1,
                                                               failed=0))])
    yield es
    es.close()


@pytest.fixture
async def bus(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def api(bus: aioredis.Redis, store: EventStore) -> AsyncIterator[httpx.AsyncClient]:
    async with http(make_deps(bus, store, max_position=store.max_position)) as client:
        yield client


def package_file(name: str) -> bytes:
    return files("projections.dashboard").joinpath(name).read_bytes()


async def test_the_page_is_served_at_the_root_with_a_strict_content_security_policy(
    api: httpx.AsyncClient, store: EventStore
) -> None:
    response = await api.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    # Scripts and styles come from this server only; no inline script could run even if one slipped in
    policy = response.headers["content-security-policy"]
    assert "script-src 'self';" in policy and "default-src 'none'" in policy and "unsafe" not in policy
    page = response.text
    assert re.findall(r"<script[^>]*>", page) == ['<script src="/dashboard/static/dashboard.js" defer>']
    assert "http://" not in page and "https://" not in page  # nothing from a CDN
    # The live feed starts a little before the end of the log, so it is not empty on arrival
    assert f'data-start-after="{store.max_position() - 50}"' in page


async def test_the_static_files_are_served_and_nothing_else_in_the_package(api: httpx.AsyncClient) -> None:
    for name, media in (("dashboard.js", "text/javascript"), ("dashboard.css", "text/css")):
        response = await api.get(f"/dashboard/static/{name}")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith(media)
        assert response.content == package_file(f"static/{name}")
    for other in ("page.html", "..%2F__init__.py", "%2E%2E/page.html", "nope.js"):
        response = await api.get(f"/dashboard/static/{other}")
        assert response.status_code == 404, other
        assert response.json()["error"] == "not found"


def test_the_script_never_parses_data_as_markup() -> None:
    # Every value reaches the page as text; these are the ways a script turns a string into markup.
    script = package_file("static/dashboard.js").decode()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in script, sink


async def test_reject_sends_repair_reject_with_the_reason(api: httpx.AsyncClient, bus: aioredis.Redis) -> None:
    rid = uuid.uuid4()
    answer = await api.post(f"/repairs/{rid}/reject", params={"reason": "wrong expectation", "by": "bob"})
    assert answer.status_code == 202, answer.text
    [(_, fields)] = await entries_of(bus, streams.COMMANDS)
    sent = json.loads(fields["message"])
    assert (sent["type"], sent["data"]) == (
        "repair.reject", {"repair_id": str(rid), "reason": "wrong expectation", "by": "bob"})
    assert answer.json()["stream"] == streams.COMMANDS


async def test_reject_needs_a_reason(api: httpx.AsyncClient, bus: aioredis.Redis) -> None:
    answer = await api.post(f"/repairs/{uuid.uuid4()}/reject")
    assert answer.status_code == 422
    assert any("$.query.reason" in line for line in answer.json()["errors"])
    assert await entries_of(bus, streams.COMMANDS) == []


async def test_the_event_stream_is_described_in_the_openapi_document(api: httpx.AsyncClient) -> None:
    doc = (await api.get("/openapi.json")).json()
    stream = doc["paths"]["/events/stream"]["get"]
    assert "text/event-stream" in stream["responses"]["200"]["content"]
    assert {p["name"] for p in stream["parameters"]} >= {"type", "project", "after", "Last-Event-ID"}
    assert "/" not in doc["paths"]  # the page is not part of the API
