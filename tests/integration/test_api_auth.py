"""API security over real HTTP on loopback (uvicorn), with a real Redis bus and a real SQLite store:
bearer token on writes, open reads, body-size limit, CORS off by default, cross-origin writes refused,
and `cars up` refusing a non-loopback host without a token."""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import redis.asyncio as aioredis
import uvicorn

from bus import streams
from bus.settings import Settings, SettingsError
from bus.store import EventStore
from projections.api import create_api
from projections.security import bearer_matches, exposed_without_token, is_loopback
from tests.integration.test_api import MAX_BODY, make_deps, run_reported_body

TOKEN = "s3cret-token-for-tests-0123456789"
CARS = Path(sys.executable).with_name("cars")
COMMAND = {"type": "service.register", "data": {"instance": "ci-bot-1", "role": "ci"}}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


@contextlib.asynccontextmanager
async def serving(bus: aioredis.Redis, store: EventStore, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The API on a free loopback port (uvicorn, as `cars up` serves it), and an HTTP client of it."""
    port = free_port()
    config = uvicorn.Config(create_api(make_deps(bus, store, **overrides)), host="127.0.0.1", port=port,
                            log_config=None, access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        with anyio.fail_after(10):
            while not server.started:
                if server.should_exit:
                    pytest.fail(f"uvicorn could not listen on 127.0.0.1:{port}")
                await anyio.sleep(0.01)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            yield client
        server.should_exit = True


@pytest.fixture
def serve(bus: aioredis.Redis, store: EventStore) -> Any:
    """`async with serve(**ApiDeps overrides) as client`."""
    return functools.partial(serving, bus, store)


async def commands_on_bus(bus: aioredis.Redis) -> int:
    return int(await bus.xlen(streams.COMMANDS))


# ----------------------------------------------------------------------------- the token


async def test_with_a_token_a_post_without_it_is_401_and_nothing_is_published(serve: Any, bus: aioredis.Redis) -> None:
    async with serve(api_token=TOKEN) as api:
        missing = await api.post("/commands", json=COMMAND)
        wrong = await api.post("/commands", json=COMMAND, headers={"Authorization": "Bearer not-the-token"})
        basic = await api.post("/commands", json=COMMAND, headers={"Authorization": f"Basic {TOKEN}"})
        approve = await api.post(f"/repairs/{uuid.uuid4()}/approve")
    for response in (missing, wrong, basic, approve):
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == 'Bearer realm="cars"'
        assert response.json() == {"error": "unauthorized", "errors": [
            "this endpoint needs `Authorization: Bearer <CARS_API_TOKEN>` @ $.headers.authorization"]}
    assert await commands_on_bus(bus) == 0


async def test_with_the_token_a_post_is_accepted(serve: Any, bus: aioredis.Redis) -> None:
    async with serve(api_token=TOKEN) as api:
        response = await api.post("/commands", json=COMMAND, headers={"Authorization": f"Bearer {TOKEN}"})
        lower = await api.post("/ingest", json=run_reported_body(), headers={"authorization": f"bearer {TOKEN}"})
    assert response.status_code == 202, response.text
    assert lower.status_code == 202, lower.text
    assert await commands_on_bus(bus) == 1
    assert int(await bus.xlen(streams.INGEST)) == 1


async def test_reads_stay_open_when_a_token_is_set(serve: Any) -> None:
    async with serve(api_token=TOKEN) as api:
        for path in ("/health", "/events", "/services", "/asyncapi", "/openapi.json"):
            response = await api.get(path)
            assert response.status_code == 200, (path, response.text)


async def test_without_a_token_posts_need_none(serve: Any, bus: aioredis.Redis) -> None:
    async with serve() as api:
        response = await api.post("/commands", json=COMMAND)
    assert response.status_code == 202
    assert await commands_on_bus(bus) == 1


async def test_the_openapi_document_declares_the_bearer_scheme_on_writes(serve: Any) -> None:
    async with serve(api_token=TOKEN) as api:
        doc = (await api.get("/openapi.json")).json()
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert doc["paths"]["/commands"]["post"]["security"] == [{"bearer": []}]
    assert "security" not in doc["paths"]["/events"]["get"]


def test_the_token_is_compared_whole() -> None:
    assert bearer_matches(f"Bearer {TOKEN}", TOKEN)
    assert not bearer_matches(f"Bearer {TOKEN[:-1]}", TOKEN)
    assert not bearer_matches(f"Bearer {TOKEN}x", TOKEN)
    assert not bearer_matches("Bearer", TOKEN)
    assert not bearer_matches(None, TOKEN)


# ----------------------------------------------------------------------------- body size


async def test_a_body_over_the_limit_is_refused_with_413_declared_or_chunked(serve: Any, bus: aioredis.Redis) -> None:
    big = b'{"type":"service.register","data":{"instance":"' + b"x" * (MAX_BODY + 10) + b'"}}'

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(big), 4096):
            yield big[i:i + 4096]

    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with serve(api_token=TOKEN) as api:
        declared = await api.post("/commands", content=big, headers=auth)
        chunked = await api.post("/commands", content=chunks(), headers=auth)
    assert declared.status_code == 413
    assert declared.json()["errors"] == [
        f"message is {len(big)} bytes; the limit is {MAX_BODY} (CARS_MAX_MESSAGE_BYTES) @ $"]
    assert chunked.status_code == 413
    assert chunked.json()["error"] == "message too large"
    assert await commands_on_bus(bus) == 0


# ----------------------------------------------------------------------------- CORS and cross-origin writes


async def test_cors_is_off_by_default(serve: Any) -> None:
    async with serve() as api:
        simple = await api.get("/events", headers={"Origin": "http://evil.example"})
        preflight = await api.options("/commands", headers={
            "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
    assert simple.status_code == 200
    assert "access-control-allow-origin" not in simple.headers
    assert "access-control-allow-origin" not in preflight.headers
    assert preflight.status_code >= 400


async def test_listed_origins_get_cors_and_others_do_not(serve: Any) -> None:
    dash = "http://dash.example:3000"
    async with serve(cors_origins=(dash,), api_token=TOKEN) as api:
        allowed = await api.get("/events", headers={"Origin": dash})
        preflight = await api.options("/commands", headers={
            "Origin": dash, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type"})
        other = await api.get("/events", headers={"Origin": "http://evil.example"})
        post = await api.post("/commands", json=COMMAND, headers={"Origin": dash, "Authorization": f"Bearer {TOKEN}"})
    assert allowed.headers["access-control-allow-origin"] == dash
    assert preflight.status_code == 200
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-origin" not in other.headers
    assert post.status_code == 202


async def test_a_cross_origin_post_is_refused_even_without_a_token(serve: Any, bus: aioredis.Redis) -> None:
    async with serve() as api:
        # A page elsewhere makes the browser send a "simple" POST (no preflight): refused
        foreign = await api.post("/commands", content=b'{"type":"service.register","data":{"instance":"x",'
                                 b'"role":"ci"}}', headers={"Origin": "http://evil.example",
                                                            "Content-Type": "text/plain"})
        # The API's own page (same origin) may post
        own = await api.post("/commands", json=COMMAND, headers={"Origin": str(api.base_url).rstrip("/")})
    assert foreign.status_code == 403
    assert foreign.json()["error"] == "cross-origin request refused"
    assert own.status_code == 202
    assert await commands_on_bus(bus) == 1


# ----------------------------------------------------------------------------- `cars up` and settings


@pytest.mark.slow
def test_cars_up_on_a_non_loopback_host_without_a_token_refuses_to_start(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CARS_API_TOKEN"}
    env.update({"CARS_HOME": str(tmp_path), "REDIS_URL": "redis://127.0.0.1:1/0"})
    done = subprocess.run([str(CARS), "up", "--host", "0.0.0.0", "--port", str(free_port())], env=env,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 2
    assert "not a loopback address" in done.stderr and "CARS_API_TOKEN" in done.stderr, done.stderr
    assert "is up" not in done.stderr
    assert not (tmp_path / "events.sqlite").exists()  # it stopped before touching anything


def test_cars_up_refuses_a_non_loopback_cars_http_host_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from bus.cli import app

    monkeypatch.delenv("CARS_API_TOKEN", raising=False)
    env = {"CARS_HOME": str(tmp_path), "CARS_HTTP_HOST": "0.0.0.0", "REDIS_URL": "redis://127.0.0.1:1/0"}
    done = CliRunner().invoke(app, ["up"], env=env)
    assert done.exit_code == 2
    assert "refusing to serve the API on 0.0.0.0" in done.output
    assert not (tmp_path / "events.sqlite").exists()


def test_a_short_token_is_a_configuration_error() -> None:
    with pytest.raises(SettingsError, match="at least 16"):
        Settings.from_env({"CARS_API_TOKEN": "short"})
    settings = Settings.from_env({"CARS_API_TOKEN": TOKEN, "CARS_CORS_ORIGINS": "http://a.example, http://b.example"})
    assert settings.api_token == TOKEN
    assert settings.cors_origins == ("http://a.example", "http://b.example")
    assert TOKEN not in repr(settings)


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("192.168.1.10", False), ("cars.internal", False),
])
def test_which_hosts_count_as_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
    assert (exposed_without_token(host, None) is None) is loopback
    assert exposed_without_token(host, TOKEN) is None
