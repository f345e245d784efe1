"""`GET /templates`, `/templates/{name}` and `/environments` over real views: a real SQLite event store
holding the registry's built-in templates and environment events, folded by the real projection runner."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from actors.registry import router as registry
from actors.registry.templates import template_id
from bus import streams
from bus.aggregates import AggregateStore
from bus.runtime import utcnow
from bus.store import EventStore
from contracts import Envelope
from contracts.environments import (
    EnvironmentFailed,
    EnvironmentProvisioned,
    EnvironmentReleased,
    EnvironmentRequested,
)
from contracts.registry import TemplateDeprecated, TemplatePublished
from contracts.values import TemplateSpec
from projections.db import ViewDB
from projections.environments import list_environments
from projections.runner import ProjectionRunner
from projections.templates import list_templates, template_versions
from projections.views import default_views
from tests.integration.test_api import http, make_deps

EXPIRES = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
LIVE, FAILED, RELEASED = (uuid.UUID(int=i) for i in (1, 2, 3))


@pytest.fixture
async def store(sqlite_env: dict[str, str]) -> AsyncIterator[EventStore]:
    """Given the built-in templates, python 2.0.0 published and deprecated, and three environments."""
    es = EventStore(sqlite_env)
    await registry.publish_builtin_templates(AggregateStore(es, utcnow))
    python = template_id("python")
    es.append(python, 1, [
        Envelope(data=TemplatePublished(spec=TemplateSpec(name="python", version="2.0.0"))),
        Envelope(data=TemplateDeprecated(name="python", version="2.0.0", reason="broken runner")),
    ])

    def requested(env_id: uuid.UUID, template: str, services: tuple[str, ...]) -> Envelope[EnvironmentRequested]:
        return Envelope(data=EnvironmentRequested(
            environment_id=env_id, template=template, template_version="1.0.0", backend="local", ttl_s=600,
            purpose="manual", services=services))

    es.append(LIVE, 0, [requested(LIVE, "full-stack", ("postgres", "redis")), Envelope(data=EnvironmentProvisioned(
        environment_id=LIVE, backend="local", workspace="/tmp/ws", service_urls={}, expires_at=EXPIRES))])
    es.append(FAILED, 0, [requested(FAILED, "python-mysql", ("mysql",)),
                          Envelope(data=EnvironmentFailed(environment_id=FAILED, reason="mysql is not installed"))])
    es.append(RELEASED, 0, [requested(RELEASED, "python", ()),
                            Envelope(data=EnvironmentReleased(environment_id=RELEASED))])
    yield es
    es.close()


@pytest.fixture
def views(store: EventStore, tmp_path: Path) -> Iterator[ViewDB]:
    db = ViewDB.sqlite(tmp_path / "views.sqlite")
    ProjectionRunner(store, db, default_views()).catch_up()
    yield db
    db.close()


@pytest.fixture
async def api(redis_url: str, store: EventStore, views: ViewDB) -> AsyncIterator[httpx.AsyncClient]:
    bus = aioredis.Redis.from_url(redis_url)
    deps = make_deps(
        bus, store, list_templates=lambda: list_templates(views),
        template_versions=lambda name: template_versions(views, name),
        list_environments=lambda status, live: list_environments(views, status=status, live=live),
    )
    async with http(deps) as client:
        yield client
    await bus.aclose()


async def test_templates_lists_every_template_with_its_latest_usable_version(api: httpx.AsyncClient) -> None:
    response = await api.get("/templates")
    assert response.status_code == 200
    listed = {t["name"]: t for t in response.json()["templates"]}
    assert sorted(listed) == ["full-stack", "python", "python-mongodb", "python-mysql", "python-postgres",
                              "python-redis"]
    # python 2.0.0 is deprecated: the latest usable version stays 1.0.0
    assert listed["python"] == {
        "name": "python", "latest": "1.0.0", "versions": ["1.0.0", "2.0.0"], "deprecated_versions": ["2.0.0"],
        "description": "Python test runner, no backing services.", "services": [], "backend": None,
    }
    assert listed["full-stack"]["services"] == ["postgres", "redis"]


async def test_one_template_shows_every_version_with_its_spec_and_deprecation(api: httpx.AsyncClient) -> None:
    response = await api.get("/templates/python")
    assert response.status_code == 200
    body = response.json()
    assert [(v["version"], v["deprecated"], v["deprecation_reason"]) for v in body["versions"]] == [
        ("1.0.0", False, ""), ("2.0.0", True, "broken runner")]
    postgres = (await api.get("/templates/python-postgres")).json()["versions"][0]["spec"]
    assert postgres["services"][0]["image"] == "postgres" and postgres["services"][0]["port"] == 5432
    assert postgres["quota"] == {"cpu": "3", "memory": "3Gi", "pods": 6}


async def test_an_unknown_template_is_404_with_the_path(api: httpx.AsyncClient) -> None:
    response = await api.get("/templates/ruby")
    assert response.status_code == 404
    assert response.json() == {"error": "not found", "errors": ["no template named 'ruby' @ $.path.name"]}


async def test_environments_lists_them_newest_first_and_filters(api: httpx.AsyncClient) -> None:
    rows = (await api.get("/environments")).json()["environments"]
    assert {r["environment_id"]: r["status"] for r in rows} == {
        str(LIVE): "provisioned", str(FAILED): "failed", str(RELEASED): "released"}
    live = (await api.get("/environments", params={"live": "true"})).json()["environments"]
    assert len(live) == 1
    assert {k: live[0][k] for k in ("environment_id", "template", "version", "backend", "workspace", "services",
                                     "expires_at")} == {
        "environment_id": str(LIVE), "template": "full-stack", "version": "1.0.0", "backend": "local",
        "workspace": "/tmp/ws", "services": ["postgres", "redis"], "expires_at": "2030-01-01T00:00:00.000000+00:00"}
    failed = (await api.get("/environments", params={"status": "failed"})).json()["environments"]
    assert [(r["environment_id"], r["reason"]) for r in failed] == [(str(FAILED), "mysql is not installed")]


async def test_a_process_without_the_views_answers_404(redis_url: str, store: EventStore) -> None:
    bus = aioredis.Redis.from_url(redis_url)
    async with http(make_deps(bus, store)) as client:
        for path in ("/templates", "/templates/python", "/environments"):
            response = await client.get(path)
            assert response.status_code == 404
            assert response.json()["errors"][0].endswith("view @ $.path")
    await bus.aclose()


async def test_a_bad_template_is_refused_at_the_edge_with_its_field_path(
    api: httpx.AsyncClient, redis_url: str,
) -> None:
    body = {"type": "template.publish", "data": {"spec": {"name": "ruby", "version": "1.0.0",
                                                          "quota": {"cpu": "lots"}}}}
    response = await api.post("/commands", json=body)
    assert response.status_code == 400
    assert response.json()["errors"] == [
        "cpu 'lots' must be a CPU quantity such as 500m, 1 or 1.5 @ $.data.spec.quota"]
    bus = aioredis.Redis.from_url(redis_url)
    assert await bus.xlen(streams.COMMANDS) == 0
    await bus.aclose()
