"""The fixtures every "same tests on SQLite and on PostgreSQL" contract over the store (and the view
database) shares: a contract class inherits `OnStore` or `StoreAndViews`, and its SQLite and
PostgreSQL subclasses choose `store_env` (`sqlite_env` / `postgres_env` from tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bus.store import EventStore
from projections.db import ViewDB


class OnStore:
    """`store_env` (chosen by the SQLite and PostgreSQL subclasses) and the EventStore on it."""

    @pytest.fixture
    def store_env(self) -> dict[str, str]:
        raise NotImplementedError

    @pytest.fixture
    def store(self, store_env: dict[str, str]) -> Iterator[EventStore]:
        es = EventStore(store_env)
        yield es
        es.close()


class StoreAndViews(OnStore):
    """`OnStore`, and the view database beside it."""

    @pytest.fixture
    def db(self, store_env: dict[str, str], tmp_path: Path) -> Iterator[ViewDB]:
        views = ViewDB.from_store_env(store_env, tmp_path)
        yield views
        views.close()


class WriterAndReader:
    """Two EventStores on one store: `writer` appends, `reader` (another process, in effect) has appended
    nothing, so it decodes every event it reads. Subclasses choose `store_env`."""

    @pytest.fixture
    def store_env(self) -> dict[str, str]:
        raise NotImplementedError

    @pytest.fixture
    def stores(self, store_env: dict[str, str]) -> Iterator[tuple[EventStore, EventStore]]:
        writer, reader = EventStore(store_env), EventStore(store_env)
        yield writer, reader
        writer.close()
        reader.close()
