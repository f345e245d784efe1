"""A tiny portable SQL layer for the views: SQLite (sqlite3) or PostgreSQL (psycopg 3).

SQL is written once with `?` placeholders and portable types (TEXT, BIGINT, DOUBLE PRECISION,
`INSERT ... ON CONFLICT ... DO UPDATE`); for PostgreSQL it is translated to psycopg's `%s` style.

    db = ViewDB.from_store_env(store_env, home)
    with db.transaction() as tx:
        tx.execute("SELECT position FROM cars_v_tracking WHERE view = ?", ("services",))
        row = tx.fetchone()

Thread safety: the HTTP API reads views from worker threads while the runner writes. Every
transaction takes a connection of its own from a small idle list (or opens one), so no connection is
ever used by two threads at once; the database does the isolation.
"""

from __future__ import annotations

import functools
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, Protocol

Dialect = Literal["sqlite", "postgres"]

# Idle connections kept per ViewDB: enough for the runner plus a few API threads.
MAX_IDLE = 4


class Tx:
    """One open transaction: execute statements, fetch rows as dicts."""

    def __init__(self, cursor: Any, dialect: Dialect) -> None:
        self._cursor = cursor
        self.dialect: Dialect = dialect

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Tx:
        """Run one statement written with `?` placeholders."""
        if self.dialect == "postgres":
            self._cursor.execute(_to_format_style(sql), tuple(params))
        else:
            self._cursor.execute(sql, tuple(params))
        return self

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> Tx:
        """Run one statement written with `?` placeholders once per parameter tuple in `rows`.

        One call for a page of rows: sqlite3 steps the prepared statement in C, and psycopg sends
        the rows in one pipeline instead of one round trip each.
        """
        if not rows:
            return self
        if self.dialect == "postgres":
            self._cursor.executemany(_to_format_style(sql), rows)
        else:
            self._cursor.executemany(sql, rows)
        return self

    def upsert(self, table: str, row: Mapping[str, Any], key: Sequence[str]) -> Tx:
        """Insert `row` (column -> value) into `table`, or update the other columns of the row with its `key`."""
        columns = list(row)
        return self.execute(upsert_sql(table, columns, key), [row[c] for c in columns])

    def fetchall(self) -> list[dict[str, Any]]:
        return [dict(row) for row in self._cursor.fetchall()]

    def fetchone(self) -> dict[str, Any] | None:
        row = self._cursor.fetchone()
        return None if row is None else dict(row)

    def serialize(self, name: str) -> None:
        """Hold a lock called `name` until this transaction ends.

        For schema changes: two PostgreSQL sessions racing through `CREATE TABLE IF NOT EXISTS`
        can both try to create the table, and one fails. SQLite needs nothing, as its writers
        already run one at a time (BEGIN IMMEDIATE).
        """
        if self.dialect == "postgres":
            self.execute("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", (name,))

    def bulk(self, mb: int) -> None:
        """Tune this connection for folding many pages (SQLite; PostgreSQL needs nothing): keep up to `mb`
        MB of the database's pages in memory, and let the write-ahead log grow as large before its
        contents are copied into the database. SQLite's defaults (2 MB of cache, a checkpoint every
        4 MB of log) make each page of upserts into a large view read its pages again, and copy pages
        that the next page rewrites anyway. The connection keeps the settings after the transaction."""
        if self.dialect == "sqlite":
            self.execute(f"PRAGMA cache_size=-{int(mb) * 1024}")
            self.execute(f"PRAGMA wal_autocheckpoint={int(mb) * 1024 * 1024 // 4096}")  # in pages of 4 KB

    @property
    def rowcount(self) -> int:
        """Rows changed by the last INSERT, UPDATE or DELETE."""
        return int(self._cursor.rowcount)


class _Backend(Protocol):
    dialect: Dialect

    def connect(self) -> Any: ...

    @contextmanager
    def transaction(self, conn: Any, readonly: bool) -> Iterator[Tx]: ...


class _SQLite:
    dialect: Dialect = "sqlite"

    def __init__(self, path: Path, busy_timeout_s: float) -> None:
        self.path = path
        self.busy_timeout_s = busy_timeout_s
        self._use_wal()

    def connect(self) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves. check_same_thread=False: a pooled
        # connection moves between threads, but only ever serves one transaction at a time.
        conn = sqlite3.connect(
            self.path, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        conn.row_factory = sqlite3.Row
        # The views are rebuildable, so synchronous=NORMAL is enough: in WAL mode it keeps every
        # transaction atomic and may only lose the last ones on a power cut.
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def _use_wal(self) -> None:
        """Put the file in WAL mode (it stays so), letting API readers run while the runner writes.

        Switching needs the file to itself, and SQLite reports "database is locked" at once instead
        of waiting when another connection opens it meanwhile, so this retries until busy_timeout.
        """
        deadline = time.monotonic() + self.busy_timeout_s
        while True:
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
            finally:
                conn.close()
            time.sleep(0.01)

    @contextmanager
    def transaction(self, conn: sqlite3.Connection, readonly: bool) -> Iterator[Tx]:
        cursor = conn.cursor()
        # A writer takes the write lock up front: a deferred transaction that reads and then writes
        # fails at once with SQLITE_BUSY when another writer got in between, busy_timeout or not.
        cursor.execute("BEGIN" if readonly else "BEGIN IMMEDIATE")
        try:
            yield Tx(cursor, self.dialect)
        except BaseException:
            cursor.execute("ROLLBACK")
            raise
        else:
            cursor.execute("COMMIT")
        finally:
            cursor.close()


class _Postgres:
    dialect: Dialect = "postgres"

    def __init__(self, conninfo: str, schema: str | None) -> None:
        self.conninfo = conninfo
        self.schema = schema
        self._schema_ready = False
        self._schema_lock = threading.Lock()

    def connect(self) -> Any:
        import psycopg
        from psycopg import sql
        from psycopg.rows import dict_row

        conn = psycopg.connect(self.conninfo, autocommit=True, row_factory=dict_row)
        if self.schema:
            # Two racing CREATE SCHEMA IF NOT EXISTS can still collide on PostgreSQL: one at a time.
            with self._schema_lock:
                if not self._schema_ready:
                    create = sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema))
                    conn.execute(create)
                    self._schema_ready = True
            # Unqualified table names then resolve in the store's schema, so SQL stays portable.
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
        return conn

    @contextmanager
    def transaction(self, conn: Any, readonly: bool) -> Iterator[Tx]:
        with conn.transaction(), conn.cursor() as cursor:
            if readonly:
                # One snapshot for every statement: a reader sees a view and its position together.
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield Tx(cursor, self.dialect)


class ViewDB:
    """The database the views live in. Build it with `sqlite`, `postgres` or `from_store_env`."""

    def __init__(self, backend: _Backend) -> None:
        self._backend = backend
        self._idle: list[Any] = []
        self._lock = threading.Lock()

    @classmethod
    def sqlite(cls, path: str | Path, busy_timeout_s: float = 30.0) -> ViewDB:
        """Views in the SQLite file `path` (created if missing), in WAL mode."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return cls(_SQLite(path, busy_timeout_s))

    @classmethod
    def postgres(cls, conninfo: str, schema: str | None = None) -> ViewDB:
        """Views in PostgreSQL, in `schema` (created if missing) or the server's search_path."""
        return cls(_Postgres(conninfo, schema))

    @classmethod
    def from_store_env(cls, env: Mapping[str, str], home: Path) -> ViewDB:
        """The view database that goes with the event store configured by `env`.

        PostgreSQL store: the same server, database and schema (POSTGRES_* keys). Otherwise a SQLite
        file `<home>/views.sqlite` of its own, so projections never wait on the event store's lock.
        """
        if env.get("PERSISTENCE_MODULE") == "eventsourcing.postgres":
            return cls.postgres(postgres_conninfo(env), env.get("POSTGRES_SCHEMA") or None)
        return cls.sqlite(Path(home) / "views.sqlite")

    @property
    def dialect(self) -> Dialect:
        return self._backend.dialect

    @contextmanager
    def transaction(self, readonly: bool = False) -> Iterator[Tx]:
        """A transaction: committed when the block ends, rolled back when it raises.

        `readonly=True` for readers: on SQLite they then do not take the write lock, and on
        PostgreSQL all their statements see one snapshot.
        """
        conn = self._checkout()
        try:
            with self._backend.transaction(conn, readonly) as tx:
                yield tx
        except BaseException:
            # After a failure the connection's state is unknown (broken socket, aborted transaction):
            # never hand it to the next caller.
            _close_quietly(conn)
            raise
        self._checkin(conn)

    def close(self) -> None:
        """Close the idle connections. Transactions still open close theirs when they end."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            _close_quietly(conn)

    def _checkout(self) -> Any:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return self._backend.connect()

    def _checkin(self, conn: Any) -> None:
        with self._lock:
            if len(self._idle) < MAX_IDLE:
                self._idle.append(conn)
                return
        _close_quietly(conn)


def upsert_sql(table: str, columns: Sequence[str], key: Sequence[str]) -> str:
    """INSERT of `columns` into `table` that updates the other columns of the row with `key` instead."""
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in key)
    return (f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)}) "
            f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}")


def postgres_conninfo(env: Mapping[str, str]) -> str:
    """A libpq connection string from eventsourcing's POSTGRES_* keys (the event store's settings)."""
    from psycopg.conninfo import make_conninfo

    return make_conninfo(
        host=env.get("POSTGRES_HOST", "127.0.0.1"), port=env.get("POSTGRES_PORT", "5432"),
        user=env.get("POSTGRES_USER", "postgres"), password=env.get("POSTGRES_PASSWORD", ""),
        dbname=env.get("POSTGRES_DBNAME", "postgres"),
        connect_timeout=env.get("POSTGRES_CONNECT_TIMEOUT", "5"),
    )


@functools.lru_cache(maxsize=512)
def _to_format_style(sql: str) -> str:
    """`?` placeholders to psycopg's `%s`.

    psycopg reads `%` everywhere in a query with parameters, string literals included, so every
    literal `%` is doubled; a `?` inside a quoted literal or identifier is left alone.
    """
    out: list[str] = []
    quote: str | None = None
    for ch in sql:
        if ch == "%":
            out.append("%%")
        elif quote is not None:
            out.append(ch)
            if ch == quote:
                quote = None
        elif ch in ("'", '"'):
            quote = ch
            out.append(ch)
        elif ch == "?":
            out.append("%s")
        else:
            out.append(ch)
    return "".join(out)


def _close_quietly(conn: Any) -> None:
    try:
        conn.close()
    except Exception:  # closing a dead connection may fail again; it is being dropped anyway
        pass


__all__ = ["Dialect", "Tx", "ViewDB", "postgres_conninfo"]
