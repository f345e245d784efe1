"""Shared fixtures: real Redis and real stores (STYLE rule 18).

Redis: REDIS_URL, else a testcontainers Redis when a Docker engine answers, else a redis-server
started for the session. PostgreSQL: POSTGRES_HOST and friends, else testcontainers. When neither
exists a test is skipped locally but FAILS in CI (CI=true): integration tests never vanish silently.
"""

from __future__ import annotations

import contextlib
import functools
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# Tests flush this database, never the one a developer works in. CARS_TEST_REDIS_DB picks another one,
# so that two test runs sharing a Redis server do not flush each other.
TEST_REDIS_DB = int(os.environ.get("CARS_TEST_REDIS_DB", "13"))


def unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


@functools.cache
def docker_available() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


def _with_db(url: str, db: int) -> str:
    from urllib.parse import urlparse, urlunparse

    parts = urlparse(url)
    return urlunparse(parts._replace(path=f"/{db}"))


@pytest.fixture(scope="session")
def redis_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis server for the whole session (database 0 of it; tests use `redis_url`)."""
    if url := os.environ.get("REDIS_URL"):
        yield url
        return
    if docker_available():
        from testcontainers.redis import RedisContainer

        with RedisContainer("redis:7-alpine") as rc:
            yield f"redis://{rc.get_container_host_ip()}:{rc.get_exposed_port(6379)}/0"
        return
    from bus.embedded import EmbeddedRedis, EmbeddedRedisError, free_port

    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), free_port(), persist=False)
    try:
        server.start()
    except EmbeddedRedisError as exc:
        unavailable(f"no Redis: no REDIS_URL, no Docker, and no redis-server ({exc})")
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server_url: str) -> str:
    """A URL of an empty Redis database, flushed before the test."""
    import redis

    url = _with_db(redis_server_url, TEST_REDIS_DB)
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    except redis.ConnectionError as exc:
        unavailable(f"Redis at {url} does not answer: {exc}")
    finally:
        client.close()
    return url


@pytest.fixture(scope="session")
def postgres_base_env() -> Iterator[dict[str, str]]:
    """eventsourcing POSTGRES_* settings of a reachable PostgreSQL server."""
    if os.environ.get("POSTGRES_HOST"):
        env = {
            "POSTGRES_HOST": os.environ["POSTGRES_HOST"],
            "POSTGRES_PORT": os.environ.get("POSTGRES_PORT", "5432"),
            "POSTGRES_USER": os.environ.get("POSTGRES_USER", "postgres"),
            "POSTGRES_PASSWORD": os.environ.get("POSTGRES_PASSWORD", ""),
            "POSTGRES_DBNAME": os.environ.get("POSTGRES_DBNAME", "test"),
        }
        yield env
        return
    if docker_available():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver=None) as pg:
            yield {
                "POSTGRES_HOST": pg.get_container_host_ip(), "POSTGRES_PORT": str(pg.get_exposed_port(5432)),
                "POSTGRES_USER": pg.username, "POSTGRES_PASSWORD": pg.password, "POSTGRES_DBNAME": pg.dbname,
            }
        return
    unavailable("no PostgreSQL: POSTGRES_HOST is unset and there is no Docker engine")
    yield {}  # unreachable; keeps the generator shape


@pytest.fixture
def postgres_env(postgres_base_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """A store environment in a fresh schema of its own, dropped afterwards."""
    import psycopg
    from psycopg import sql

    from projections.db import postgres_conninfo

    schema = f"t_{uuid.uuid4().hex[:12]}"
    env = {"PERSISTENCE_MODULE": "eventsourcing.postgres", **postgres_base_env, "POSTGRES_SCHEMA": schema}
    try:
        with psycopg.connect(postgres_conninfo(env), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    except psycopg.OperationalError as exc:
        unavailable(f"PostgreSQL does not answer: {exc}")
    yield env
    with contextlib.suppress(psycopg.Error), psycopg.connect(postgres_conninfo(env), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def sqlite_env(tmp_path: Path) -> dict[str, str]:
    return {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(tmp_path / "events.sqlite")}
