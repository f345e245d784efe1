"""A page's working copy of some rows of one table, for views that fold a page of events at a time.

Folding event by event costs a SELECT and an UPSERT per event. A batched fold (`View.apply_many`)
instead reads each row the page touches once (`load`: one `SELECT ... WHERE key IN (...)`, or
`(a = ? AND b = ?) OR ...` for a key of several columns, per chunk of keys), changes it in memory
as often as the page's events say (`get`, `put`, `delete`), and writes every changed row once at
the end (`flush`: one executemany of UPSERTs of the final rows and one of DELETEs of the rows
deleted), inside the runner's transaction. It leaves exactly the rows the event-by-event fold
leaves: every read of a row after its first sees the working copy, which holds what the database
would hold by then.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from operator import itemgetter
from typing import Any

from projections.db import Tx, upsert_sql

Row = dict[str, Any]
Key = tuple[Any, ...]

# Keys per `SELECT ... IN (...)`: well under SQLite's oldest limit of 999 bound parameters.
CHUNK = 500


class TableRows:
    """The rows of `table` (its `columns`, primary key `key`) that a page of events reads or writes."""

    def __init__(self, tx: Tx, table: str, columns: Sequence[str], key: Sequence[str]) -> None:
        self.tx = tx
        self.table = table
        self.columns = tuple(columns)
        self.key = tuple(key)
        self._rows: dict[Key, Row | None] = {}  # None: known to be absent
        self._dirty: dict[Key, None] = {}  # an ordered set
        names = ", ".join(self.columns)
        self._select = f"SELECT {names} FROM {table} WHERE "
        self._upsert = upsert_sql(table, self.columns, self.key)
        # A row's values in column order, and its key, as tuples (itemgetter builds them in C).
        self._values: Callable[[Row], tuple[Any, ...]] = _tuple_getter(self.columns)
        self._key_of: Callable[[Row], Key] = _tuple_getter(self.key)

    def load(self, keys: Iterable[Key]) -> None:
        """Read the rows of `keys` not read yet, a chunk of keys per query."""
        missing = [k for k in dict.fromkeys(keys) if k not in self._rows]
        step = max(1, CHUNK // len(self.key))
        for i in range(0, len(missing), step):
            chunk = missing[i:i + step]
            if len(self.key) == 1:
                where = f"{self.key[0]} IN ({', '.join('?' for _ in chunk)})"
            else:  # (a = ? AND b = ?) OR ...: both databases look each one up in the primary key
                one = f"({' AND '.join(f'{c} = ?' for c in self.key)})"
                where = " OR ".join(one for _ in chunk)
            self.tx.execute(self._select + where, [v for k in chunk for v in k])
            for row in self.tx.fetchall():
                self._rows[self._key_of(row)] = row
        for k in missing:
            self._rows.setdefault(k, None)

    def get(self, *key: Any) -> Row | None:
        """The row with primary key `key` as the page has left it so far, or None.

        The dict is the working copy: change it only to `put` it.
        """
        if key not in self._rows:
            self.load([key])
        return self._rows[key]

    def put(self, row: Row) -> None:
        """Insert or replace the row (every column of `columns` given); written by `flush`."""
        k = self._key_of(row)
        self._rows[k] = row
        self._dirty[k] = None

    def delete(self, *key: Any) -> None:
        """Remove the row with primary key `key`, if there is one; deleted by `flush`."""
        self._rows[key] = None
        self._dirty[key] = None

    def flush(self) -> None:
        """Write every row put or deleted since the last flush: one executemany of each."""
        rows = [self._rows[k] for k in self._dirty]
        gone = [k for k in self._dirty if self._rows[k] is None]
        where = " AND ".join(f"{c} = ?" for c in self.key)
        self.tx.executemany(f"DELETE FROM {self.table} WHERE {where}", gone)
        values = self._values
        self.tx.executemany(self._upsert, [values(r) for r in rows if r is not None])
        self._dirty.clear()


def _tuple_getter(names: Sequence[str]) -> Callable[[Row], tuple[Any, ...]]:
    """A function of a row giving the values of `names`, always as a tuple (even of one name)."""
    if len(names) == 1:
        one = names[0]
        return lambda row: (row[one],)
    get: Callable[[Row], tuple[Any, ...]] = itemgetter(*names)
    return get


__all__ = ["CHUNK", "TableRows"]
