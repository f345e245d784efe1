"""The HTTP API against real parts: a real Redis bus and a real SQLite event store."""

from __future__ import annotations

import json
import logging
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import anyio.to_thread
import httpx
import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError

import contracts
from bus import streams, wire
from bus.asyncapi import asyncapi_document
from bus.store import EventStore
from contracts import Envelope
from contracts.runs import MonitoringStarted, MonitoringStopped, RunRecorded, RunReported, StartMonitoring
from contracts.values import Outcome, TestResult
from projections.api import ApiDeps, create_api

MAX_BODY = 16 * 1024
MONITOR_ID = contracts.natural_id("monitoring", "demo")

# Rows as the services view would hold them (projections/services.py does not exist yet).
SERVICE_ROWS = [
    {"instance": "host-1-101", "role": "worker", "actors": ["healer"], "status": "alive"},
    {"instance": "host-1-102", "role": "worker", "actors": ["validator"], "status": "lost"},
]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_reported_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "run.reported",
        "data": {
            "project": "demo", "run_id": "r-77", "commit": "abc123", "source": "github-actions",
            "results": [
                {"test_id": "tests/test_a.py::test_ok", "outcome": "passed", "duration_s": 0.5},
                {"test_id": "tests/test_a.py::test_bad", "outcome": "failed", "duration_s": 1.25},
            ],
        },
    }
    body.update(overrides)
    return body


@pytest.fixture
def store(sqlite_env: dict[str, str]) -> Iterator[EventStore]:
    """Given a store with two aggregates: a monitoring stream (2 events) and two recorded runs."""
    es = EventStore(sqlite_env)
    es.append(MONITOR_ID, 0, [
        Envelope(data=MonitoringStarted(project="demo", path="/src/demo", test_cmd="pytest", interval_s=60)),
        Envelope(data=MonitoringStopped(project="demo")),
    ])
    for run_id, failed in (("r-1", 0), ("r-2", 1)):
        recorded = RunRecorded(project="demo", run_id=run_id, total=3, passed=3 - failed, failed=failed)
        es.append(contracts.natural_id("run", "demo", run_id), 0, [Envelope(data=recorded)])
    yield es
    es.close()


@pytest.fixture
async def bus(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


def make_publish(client: aioredis.Redis) -> Callable[[Envelope[Any]], Awaitable[tuple[str, str]]]:
    """What the composition root does: the stream from the message's kind, then the plain-JSON XADD."""

    async def publish(envelope: Envelope[Any]) -> tuple[str, str]:
        stream = streams.inbound_stream(envelope.entry)  # ValueError for an event
        entry_id = await wire.publish(client, stream, envelope, maxlen=10_000)
        return stream, entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    return publish


def make_ready(client: aioredis.Redis, store: EventStore) -> Callable[[], Awaitable[dict[str, str]]]:
    async def ready() -> dict[str, str]:
        components: dict[str, str] = {}
        try:
            await client.ping()
            components["redis"] = "ok"
        except (RedisError, OSError) as exc:
            components["redis"] = f"unavailable: {exc}"
        await anyio.to_thread.run_sync(store.read, 0, 1)
        components["store"] = "ok"
        return components

    return ready


def make_deps(client: aioredis.Redis, store: EventStore, **overrides: Any) -> ApiDeps:
    fields: dict[str, Any] = {
        "read_events": store.read,
        "load_stream": store.load,
        "list_services": lambda: [dict(row) for row in SERVICE_ROWS],
        "publish": make_publish(client),
        "ready": make_ready(client, store),
        "asyncapi": asyncapi_document,
        "max_body_bytes": MAX_BODY,
    }
    fields.update(overrides)
    return ApiDeps(**fields)


def http(deps: ApiDeps) -> httpx.AsyncClient:
    # raise_app_exceptions=False: the client sees what a real HTTP client would, even on a crash.
    transport = httpx.ASGITransport(app=create_api(deps), raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://cars.test")


@pytest.fixture
async def api(bus: aioredis.Redis, store: EventStore) -> AsyncIterator[httpx.AsyncClient]:
    async with http(make_deps(bus, store)) as client:
        yield client


async def entries_of(client: aioredis.Redis, stream: str) -> list[tuple[str, dict[str, bytes]]]:
    return [
        (entry_id.decode(), {k.decode(): v for k, v in fields.items()})
        for entry_id, fields in await client.xrange(stream)
    ]


# ----------------------------------------------------------------------------- probes


async def test_health_answers_ok(api: httpx.AsyncClient) -> None:
    response = await api.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_ready_lists_components_when_all_answer(api: httpx.AsyncClient) -> None:
    response = await api.get("/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "components": {"redis": "ok", "store": "ok"}}


async def test_ready_is_503_with_the_same_body_when_redis_is_down(store: EventStore) -> None:
    # Given a bus client pointed at a port nobody listens on
    dead = aioredis.Redis.from_url(f"redis://127.0.0.1:{closed_port()}/0", socket_connect_timeout=1)
    try:
        async with http(make_deps(dead, store)) as client:
            # When the probe runs
            response = await client.get("/ready")
    finally:
        await dead.aclose()
    # Then it is 503 and says which component failed
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["components"]["store"] == "ok"
    assert body["components"]["redis"].startswith("unavailable")


async def test_ready_is_503_when_the_check_itself_breaks(bus: aioredis.Redis, store: EventStore) -> None:
    async def broken() -> dict[str, str]:
        raise RuntimeError("boom")

    async with http(make_deps(bus, store, ready=broken)) as client:
        response = await client.get("/ready")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "components": {"checks": "failed: RuntimeError"}}


# ----------------------------------------------------------------------------- queries


async def test_services_lists_the_view_rows(api: httpx.AsyncClient) -> None:
    response = await api.get("/services")
    assert response.status_code == 200
    assert response.json() == {"services": SERVICE_ROWS}


async def test_events_pages_through_the_log_in_store_order(api: httpx.AsyncClient, store: EventStore) -> None:
    # Given the four recorded events; when reading them two at a time
    first = (await api.get("/events", params={"limit": 2})).json()
    second = (await api.get("/events", params={"after": first["next_after"], "limit": 2})).json()
    third = (await api.get("/events", params={"after": second["next_after"], "limit": 2})).json()
    # Then each item is the stored envelope's wire form plus its position, and paging ends cleanly
    expected = [{"position": r.position, **contracts.encode(r.envelope)} for r in store.read(0, 10)]
    assert first["events"] + second["events"] == expected
    assert first["next_after"] == expected[1]["position"]
    assert second["next_after"] == expected[3]["position"]
    assert third == {"events": [], "next_after": second["next_after"]}


async def test_events_filters_by_type(api: httpx.AsyncClient) -> None:
    one = (await api.get("/events", params={"type": "run.recorded"})).json()
    two = (await api.get("/events", params=[("type", "run.recorded"), ("type", "monitoring.stopped")])).json()
    assert [e["data"]["run_id"] for e in one["events"]] == ["r-1", "r-2"]
    assert {e["type"] for e in one["events"]} == {"run.recorded"}
    assert [e["type"] for e in two["events"]] == ["monitoring.stopped", "run.recorded", "run.recorded"]


async def test_events_refuses_an_unknown_type_and_lists_the_known_ones(api: httpx.AsyncClient) -> None:
    response = await api.get("/events", params=[("type", "run.recorded"), ("type", "run.exploded")])
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "unknown message type"
    assert len(body["errors"]) == 1
    assert "'run.exploded'" in body["errors"][0]
    assert "failure.detected" in body["errors"][0]
    assert body["errors"][0].endswith("@ $.query.type")


@pytest.mark.parametrize("limit", [0, 1001, "many"])
async def test_events_bounds_the_page_size(api: httpx.AsyncClient, limit: object) -> None:
    response = await api.get("/events", params={"limit": limit})
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "invalid request"
    assert body["errors"][0].endswith("@ $.query.limit")


async def test_audit_returns_the_full_history_of_an_aggregate(api: httpx.AsyncClient) -> None:
    response = await api.get(f"/audit/{MONITOR_ID}")
    assert response.status_code == 200
    body = response.json()
    assert body["aggregate_id"] == str(MONITOR_ID)
    assert body["version"] == 2
    assert [e["type"] for e in body["events"]] == ["monitoring.started", "monitoring.stopped"]
    assert [e["stream_version"] for e in body["events"]] == [1, 2]
    assert {e["stream_id"] for e in body["events"]} == {str(MONITOR_ID)}


async def test_audit_of_an_aggregate_without_events_is_404(api: httpx.AsyncClient) -> None:
    missing = uuid.uuid4()
    response = await api.get(f"/audit/{missing}")
    assert response.status_code == 404
    assert response.json() == {
        "error": "not found", "errors": [f"no events for aggregate {missing} @ $.path.aggregate_id"]
    }


async def test_audit_refuses_an_id_that_is_not_a_uuid(api: httpx.AsyncClient) -> None:
    response = await api.get("/audit/not-a-uuid")
    assert response.status_code == 422
    assert response.json()["errors"][0].endswith("@ $.path.aggregate_id")


# ----------------------------------------------------------------------------- the command edge


async def test_ingest_publishes_a_run_report_that_round_trips(
    api: httpx.AsyncClient, bus: aioredis.Redis
) -> None:
    # Given a producer's run report without id, occurred_at or correlation_id
    body = run_reported_body()
    # When it is posted
    response = await api.post("/ingest", json=body)
    # Then it is accepted with the ids CARS chose, and the entry on cars.ingest decodes to the same message
    assert response.status_code == 202
    accepted = response.json()
    assert accepted["type"] == "run.reported"
    assert accepted["stream"] == streams.INGEST
    assert accepted["correlation_id"] == accepted["id"]  # a new conversation correlates with itself
    [(entry_id, fields)] = await entries_of(bus, streams.INGEST)
    assert entry_id == accepted["entry_id"]
    decoded = wire.decode_text(fields[streams.MESSAGE_FIELD], max_bytes=MAX_BODY)
    assert decoded.id == uuid.UUID(accepted["id"])
    assert decoded.data == RunReported(
        project="demo", run_id="r-77", commit="abc123", source="github-actions",
        results=(
            TestResult(test_id="tests/test_a.py::test_ok", outcome=Outcome.PASSED, duration_s=0.5),
            TestResult(test_id="tests/test_a.py::test_bad", outcome=Outcome.FAILED, duration_s=1.25),
        ),
    )


async def test_ingest_keeps_the_ids_a_producer_chose(api: httpx.AsyncClient, bus: aioredis.Redis) -> None:
    message_id = str(uuid.uuid4())
    body = run_reported_body(id=message_id, correlation_id="ci-build-9", occurred_at="2026-01-02T03:04:05Z")
    response = await api.post("/ingest", json=body)
    assert response.status_code == 202
    [(_, fields)] = await entries_of(bus, streams.INGEST)
    decoded = contracts.loads(fields[streams.MESSAGE_FIELD])
    assert (str(decoded.id), decoded.correlation_id, decoded.occurred_at.isoformat()) == (
        message_id, "ci-build-9", "2026-01-02T03:04:05+00:00"
    )


async def test_ingest_refuses_a_command_of_another_type(api: httpx.AsyncClient, bus: aioredis.Redis) -> None:
    body = {"type": "monitoring.stop", "data": {"project": "demo"}}
    response = await api.post("/ingest", json=body)
    assert response.status_code == 400
    assert response.json() == {
        "error": "wrong endpoint",
        "errors": ["monitoring.stop is not accepted by /ingest; POST it to /commands @ $.type"],
    }
    assert await bus.xlen(streams.INGEST) == 0
    assert await bus.xlen(streams.COMMANDS) == 0


async def test_commands_publishes_a_command_on_the_commands_stream(
    api: httpx.AsyncClient, bus: aioredis.Redis
) -> None:
    body = {"type": "monitoring.start", "correlation_id": "ops-1",
            "data": {"project": "demo", "path": "/src/demo", "test_cmd": "pytest -q", "interval_s": 60}}
    response = await api.post("/commands", json=body)
    assert response.status_code == 202
    accepted = response.json()
    assert (accepted["type"], accepted["stream"], accepted["correlation_id"]) == (
        "monitoring.start", streams.COMMANDS, "ops-1"
    )
    [(entry_id, fields)] = await entries_of(bus, streams.COMMANDS)
    decoded = contracts.loads(fields[streams.MESSAGE_FIELD])
    assert entry_id == accepted["entry_id"]
    assert decoded.data == StartMonitoring(
        project="demo", path="/src/demo", test_cmd="pytest -q", interval_s=60
    )


async def test_commands_routes_a_run_report_to_the_ingest_stream(
    api: httpx.AsyncClient, bus: aioredis.Redis
) -> None:
    response = await api.post("/commands", json=run_reported_body())
    assert response.status_code == 202
    assert response.json()["stream"] == streams.INGEST
    assert await bus.xlen(streams.INGEST) == 1
    assert await bus.xlen(streams.COMMANDS) == 0


@pytest.mark.parametrize("path", ["/ingest", "/commands"])
async def test_an_event_is_refused_because_only_cars_records_events(
    api: httpx.AsyncClient, bus: aioredis.Redis, path: str
) -> None:
    body = {"type": "run.recorded", "data": {"project": "demo", "run_id": "r", "total": 1, "passed": 1,
                                             "failed": 0}}
    response = await api.post(path, json=body)
    assert response.status_code == 400
    assert response.json()["error"] == "events are recorded by CARS only"
    assert response.json()["errors"] == [
        "run.recorded is an event; producers send commands (see GET /asyncapi) @ $.type"
    ]
    assert await bus.xlen(streams.INGEST) + await bus.xlen(streams.COMMANDS) == 0


async def test_malformed_json_is_400(api: httpx.AsyncClient, bus: aioredis.Redis) -> None:
    response = await api.post("/ingest", content=b'{"type": "run.reported", "data": ',
                              headers={"content-type": "application/json"})
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid message"
    [line] = body["errors"]
    assert line.startswith("not valid JSON") and line.endswith("@ $")
    assert await bus.xlen(streams.INGEST) == 0


async def test_contract_errors_name_the_paths(api: httpx.AsyncClient, bus: aioredis.Redis) -> None:
    body = run_reported_body()
    body["data"]["run_id"] = 77
    body["data"]["results"][1]["outcome"] = "exploded"
    response = await api.post("/ingest", json=body)
    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid message",
        "errors": [
            "expected a string, got int @ $.data.run_id",
            "'exploded' is not a valid Outcome @ $.data.results[1].outcome",
        ],
    }
    assert await bus.xlen(streams.INGEST) == 0


async def test_unknown_type_lists_the_known_ones(api: httpx.AsyncClient) -> None:
    response = await api.post("/commands", json={"type": "repair.force", "data": {}})
    assert response.status_code == 400
    [line] = response.json()["errors"]
    assert "'repair.force'" in line and "heal.request" in line and line.endswith("@ $.type")


async def test_an_oversized_body_is_413_and_nothing_is_published(
    api: httpx.AsyncClient, bus: aioredis.Redis
) -> None:
    # Given a valid run report padded past the limit
    body = run_reported_body()
    body["data"]["results"] = [{"test_id": f"t{i}", "outcome": "passed"} for i in range(MAX_BODY // 20)]
    raw = json.dumps(body).encode()
    assert len(raw) > MAX_BODY
    # When it is posted with a declared length, and again streamed without one (chunked)
    declared = await api.post("/ingest", content=raw)

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(raw), 4096):
            yield raw[i:i + 4096]

    streamed = await api.post("/ingest", content=chunks())
    # Then both are 413 with the limit named, and the stream stays empty
    assert declared.status_code == 413
    assert declared.json() == {
        "error": "message too large",
        "errors": [f"message is {len(raw)} bytes; the limit is {MAX_BODY} (CARS_MAX_MESSAGE_BYTES) @ $"],
    }
    assert streamed.status_code == 413
    assert streamed.json()["errors"] == [
        f"message is more than {MAX_BODY} bytes; the limit is {MAX_BODY} (CARS_MAX_MESSAGE_BYTES) @ $"
    ]
    assert await bus.xlen(streams.INGEST) == 0


async def test_a_bus_failure_while_publishing_is_503(store: EventStore) -> None:
    dead = aioredis.Redis.from_url(f"redis://127.0.0.1:{closed_port()}/0", socket_connect_timeout=1)
    try:
        async with http(make_deps(dead, store)) as client:
            response = await client.post("/ingest", json=run_reported_body())
    finally:
        await dead.aclose()
    assert response.status_code == 503
    assert response.json() == {"error": "the bus did not accept the message; retry later", "errors": []}


# ----------------------------------------------------------------------------- errors and documents


async def test_an_unexpected_error_is_a_generic_500_and_is_logged(
    bus: aioredis.Redis, store: EventStore, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_view() -> list[dict[str, Any]]:
        raise RuntimeError("secret connection string postgres://admin:hunter2@db")

    async with http(make_deps(bus, store, list_services=broken_view)) as client:
        with caplog.at_level(logging.ERROR, logger="projections.api"):
            response = await client.get("/services")
    assert response.status_code == 500
    body = response.json()
    assert body["error"].startswith("internal error (incident ")
    assert body["errors"] == []
    assert "hunter2" not in response.text and "Traceback" not in response.text
    [record] = [r for r in caplog.records if r.name == "projections.api"]
    assert record.exc_info is not None and "hunter2" in str(record.exc_info[1])


async def test_an_unknown_route_is_404_in_the_error_shape(api: httpx.AsyncClient) -> None:
    response = await api.get("/nope")
    assert response.status_code == 404
    assert response.json() == {"error": "not found", "errors": []}


def resolve(document: dict[str, Any], ref: str) -> Any:
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def refs_in(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs_in(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs_in(item)


async def test_openapi_describes_every_route(api: httpx.AsyncClient) -> None:
    document = (await api.get("/openapi.json")).json()
    operations = {
        (method.upper(), path): op for path, item in document["paths"].items() for method, op in item.items()
    }
    assert set(operations) == {
        ("GET", "/health"), ("GET", "/ready"), ("GET", "/services"), ("GET", "/events"),
        ("GET", "/audit/{aggregate_id}"), ("POST", "/ingest"), ("POST", "/commands"), ("GET", "/asyncapi"),
        ("POST", "/runs"), ("GET", "/repairs"), ("GET", "/repairs/{repair_id}"),
        ("POST", "/repairs/{repair_id}/approve"), ("GET", "/metrics"),
        ("POST", "/repairs/{repair_id}/reject"), ("GET", "/events/stream"),
        ("GET", "/statistics"), ("GET", "/tests/flaky"), ("GET", "/runs"), ("GET", "/dlq"),
        ("GET", "/templates"), ("GET", "/templates/{name}"), ("GET", "/environments"),
    }
    for key, op in operations.items():
        assert op.get("summary") and op.get("tags"), key
    # The command edge documents its bodies with the message schemas, and every $ref resolves.
    ingest_body = operations[("POST", "/ingest")]["requestBody"]["content"]["application/json"]["schema"]
    assert resolve(document, ingest_body["$ref"])["properties"]["type"] == {"const": "run.reported"}
    commands_body = operations[("POST", "/commands")]["requestBody"]["content"]["application/json"]["schema"]
    command_tags = {e.tag for e in contracts.entries() if e.kind is contracts.Kind.COMMAND}
    assert set(commands_body["discriminator"]["mapping"]) == command_tags
    assert set(operations[("POST", "/ingest")]["responses"]) == {"202", "400", "413", "503"}
    assert [ref for ref in refs_in(document) if not ref.startswith("#/")] == []
    for ref in refs_in(document):
        assert resolve(document, ref) is not None, ref
    assert (await api.get("/docs")).status_code == 200


async def test_metrics_are_a_404_in_a_process_that_serves_none(api: httpx.AsyncClient) -> None:
    # Given an API built without a metrics source, When Prometheus scrapes it, Then it says so
    response = await api.get("/metrics")
    assert response.status_code == 404
    assert "serves no metrics" in response.text


async def test_asyncapi_is_served(api: httpx.AsyncClient) -> None:
    response = await api.get("/asyncapi")
    assert response.status_code == 200
    assert response.json() == json.loads(json.dumps(asyncapi_document()))
    assert response.json()["asyncapi"] == "3.0.0"
