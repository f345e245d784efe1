"""The repair side of the HTTP API: POST /runs (JUnit XML or plugin JSON), GET /repairs, GET /repairs/{id}
and POST /repairs/{id}/approve, over real Redis, a real SQLite store and the real heals view."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from redis import asyncio as aioredis

import contracts
from bus import streams
from bus.runtime import _parse_report
from bus.store import EventStore
from projections.db import ViewDB
from projections.heals import list_repairs, repair_candidates
from projections.runner import ProjectionRunner
from projections.views import default_views
from tests.integration.test_api import MAX_BODY, entries_of, http, make_deps
from tests.integration.test_heals_view import write_history

JUNIT = b"""<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" tests="2" failures="1">
<testcase classname="tests.test_cart" name="test_total" file="tests/test_cart.py" time="0.01">
<failure message="AttributeError: module 'shop.cart' has no attribute 'total_price'">
tests/test_cart.py:5: AttributeError</failure>
</testcase>
<testcase classname="tests.test_cart" name="test_count" file="tests/test_cart.py" time="0.01"/>
</testsuite></testsuites>"""


@pytest.fixture
def store(sqlite_env: dict[str, str]) -> Iterator[EventStore]:
    s = EventStore(sqlite_env)
    yield s
    s.close()


@pytest.fixture
def views(store: EventStore, tmp_path: Path) -> Iterator[ViewDB]:
    db = ViewDB.sqlite(tmp_path / "views.sqlite")
    write_history(store)
    ProjectionRunner(store, db, default_views()).catch_up()
    yield db
    db.close()


@pytest.fixture
async def bus(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def api(bus: aioredis.Redis, store: EventStore, views: ViewDB) -> AsyncIterator[httpx.AsyncClient]:
    deps = make_deps(bus, store, parse_report=_parse_report,
                     list_repairs=lambda project, status: list_repairs(views, project=project, status=status),
                     repair_candidates=lambda rid: repair_candidates(views, rid), views=views)
    async with http(deps) as client:
        yield client


async def test_a_junit_report_is_published_as_one_run_reported(api: httpx.AsyncClient, bus: aioredis.Redis) -> None:
    # When a JUnit XML report is posted
    answer = await api.post("/runs", params={"project": "shop", "run_id": "ci-7", "commit": "abc"}, content=JUNIT,
                            headers={"content-type": "application/xml"})
    # Then it is accepted, and one run.reported with both results is on the ingest stream
    assert answer.status_code == 202, answer.text
    assert answer.json()["type"] == "run.reported" and answer.json()["correlation_id"] == "ci-7"
    [(_, fields)] = await entries_of(bus, streams.INGEST)
    run = contracts.loads(fields["message"]).data
    assert (run.project, run.run_id, run.commit) == ("shop", "ci-7", "abc")
    outcomes = {r.test_id: r.outcome.value for r in run.results}
    assert outcomes == {"tests/test_cart.py::test_total": "failed", "tests/test_cart.py::test_count": "passed"}


@pytest.mark.parametrize("body", [
    b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><testsuites>&b;</testsuites>',
    b"not a report at all",
    b"{\"format\": \"cars-pytest\", \"version\": 1, \"results\": [{\"test_id\": 5}]}",
])
async def test_a_hostile_or_broken_report_is_a_400_and_nothing_is_published(
    api: httpx.AsyncClient, bus: aioredis.Redis, body: bytes
) -> None:
    answer = await api.post("/runs", params={"project": "shop"}, content=body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "invalid report" and answer.json()["errors"]
    assert await bus.xlen(streams.INGEST) == 0


async def test_runs_needs_a_project(api: httpx.AsyncClient) -> None:
    assert (await api.post("/runs", content=JUNIT)).status_code == 422


async def test_repairs_are_listed_and_one_shows_its_candidates(api: httpx.AsyncClient) -> None:
    listing = (await api.get("/repairs")).json()["repairs"]
    assert {r["fingerprint"]: r["status"] for r in listing} == {
        "f1": "applied", "f2": "abandoned", "f3": "unrepairable"}
    assert [r["fingerprint"] for r in (await api.get("/repairs", params={"status": "applied"})).json()["repairs"]] \
        == ["f1"]
    f1 = next(r for r in listing if r["fingerprint"] == "f1")
    detail = (await api.get(f"/repairs/{f1['repair_id']}")).json()
    assert [(c["rank"], c["strategy"], c["verdict"]) for c in detail["candidates"]] == [
        (1, "renamed_symbol", "rejected"), (2, "import_path", "validated")]
    assert (await api.get(f"/repairs/{uuid.uuid4()}")).status_code == 404


async def test_approve_sends_repair_approve(api: httpx.AsyncClient, bus: aioredis.Redis) -> None:
    rid = uuid.uuid4()
    answer = await api.post(f"/repairs/{rid}/approve", params={"by": "alice"})
    assert answer.status_code == 202, answer.text
    [(_, fields)] = await entries_of(bus, streams.COMMANDS)
    sent = json.loads(fields["message"])
    assert (sent["type"], sent["data"]["repair_id"], sent["data"]["by"]) == ("repair.approve", str(rid), "alice")
    assert (await api.post("/repairs/not-a-uuid/approve")).status_code == 422


@pytest.mark.parametrize("path", ["approve", "reject"])
async def test_a_parameter_the_contract_refuses_is_a_422_and_nothing_is_published(
    api: httpx.AsyncClient, bus: aioredis.Redis, path: str,
) -> None:
    # Given a `by` within the declared length but empty once read by the contract (found by schemathesis)
    params = {"by": "\x1f", "reason": "flaky"}
    # When a repair command is sent with it
    answer = await api.post(f"/repairs/{uuid.uuid4()}/{path}", params=params)
    # Then it is an invalid parameter with the contract's reason, not a server error, and nothing is sent
    assert answer.status_code == 422, answer.text
    assert answer.json()["errors"] == ["by must not be empty @ $.query"]
    assert await entries_of(bus, streams.COMMANDS) == []


async def test_an_oversized_report_is_a_413_and_nothing_is_published(
    api: httpx.AsyncClient, bus: aioredis.Redis
) -> None:
    answer = await api.post("/runs", params={"project": "shop"}, content=b"<" + b"x" * (MAX_BODY + 1))
    assert answer.status_code == 413 and "limit" in answer.json()["errors"][0]
    assert await bus.xlen(streams.INGEST) == 0
