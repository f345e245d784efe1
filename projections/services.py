"""The services view: which CARS processes exist, what they run, and whether they are alive.

One row per `instance` (a process's unique consumer name), folded from the registry's events:

- `service.registered`: the row is (re)written from the registration, status `alive`;
- `service.heartbeat_recorded`: `alive` again (also after `lost`), `last_seen_at` moves forward;
- `service.lost`: `lost`;
- `service.deregistered`: `deregistered`. Only a new registration brings it back: a heartbeat that
  was in flight when the process shut down must not resurrect it.

Events about an instance the view has never seen registered are ignored: without a registration
there is no role, host or version to show.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from contracts.registry import HeartbeatRecorded, ServiceDeregistered, ServiceLost, ServiceRegistered
from projections.db import Tx, ViewDB
from projections.rows import TableRows
from projections.views import LIVE_PREFIX, RecordedEvent, iso

ALIVE = "alive"
LOST = "lost"
DEREGISTERED = "deregistered"

COLUMNS = (
    "instance", "role", "version", "actors", "host", "pid", "started_at", "status", "last_seen_at",
    "updated_position",
)

Row = dict[str, Any]


def next_row(row: Row | None, recorded: RecordedEvent) -> Row | None:
    """The row after `recorded` is folded into `row` (None: the event changes nothing)."""
    env = recorded.envelope
    data = env.data
    if isinstance(data, ServiceRegistered):
        return {
            "instance": data.instance, "role": data.role, "version": data.version,
            "actors": json.dumps(list(data.actors)), "host": data.host, "pid": data.pid,
            "started_at": iso(data.started_at), "status": ALIVE, "last_seen_at": iso(env.occurred_at),
            "updated_position": recorded.position,
        }
    if row is None or row["status"] == DEREGISTERED:
        return None
    if isinstance(data, HeartbeatRecorded):
        # max(): a heartbeat recorded late must not move last_seen_at backwards (ISO text sorts as time).
        return {**row, "status": ALIVE, "last_seen_at": max(row["last_seen_at"], iso(data.at)),
                "updated_position": recorded.position}
    if isinstance(data, ServiceLost):
        return {**row, "status": LOST, "updated_position": recorded.position}
    if isinstance(data, ServiceDeregistered):
        return {**row, "status": DEREGISTERED, "updated_position": recorded.position}
    return None


class ServicesView:
    """The `services` view (see the module docstring). Table: `<prefix>services`."""

    name: str = "services"
    types: frozenset[str] = frozenset({
        "service.registered", "service.heartbeat_recorded", "service.lost", "service.deregistered",
    })
    key: tuple[str, ...] = ("instance",)

    def table_names(self, prefix: str) -> list[str]:
        return [f"{prefix}services"]

    def tables(self, prefix: str) -> list[str]:
        return [
            f"CREATE TABLE IF NOT EXISTS {prefix}services ("
            "instance TEXT PRIMARY KEY, role TEXT NOT NULL, version TEXT NOT NULL, "
            "actors TEXT NOT NULL, host TEXT NOT NULL, pid BIGINT, started_at TEXT NOT NULL, "
            "status TEXT NOT NULL, last_seen_at TEXT NOT NULL, updated_position BIGINT NOT NULL)"
        ]

    def apply(self, tx: Tx, recorded: RecordedEvent, prefix: str) -> None:
        self.apply_many(tx, [recorded], prefix)

    def apply_many(self, tx: Tx, events: Sequence[RecordedEvent], prefix: str) -> None:
        """Fold a page: each instance's row is read once and written once."""
        rows = TableRows(tx, f"{prefix}services", COLUMNS, ("instance",))
        rows.load((r.envelope.data.instance,) for r in events)
        for recorded in events:
            row = next_row(rows.get(recorded.envelope.data.instance), recorded)
            if row is not None:
                rows.put(row)
        rows.flush()

    def dump(self, tx: Tx, prefix: str) -> list[dict[str, Any]]:
        tx.execute(f"SELECT {', '.join(COLUMNS)} FROM {prefix}services")
        # Sorted here, not by ORDER BY: PostgreSQL orders text by the database's locale, SQLite by
        # bytes, and the order must be the same on both.
        return sorted(tx.fetchall(), key=lambda row: row["instance"])


def list_services(db: ViewDB, prefix: str = LIVE_PREFIX) -> list[dict[str, Any]]:
    """Every known service as a JSON-ready dict (`actors` as a list), ordered by instance."""
    with db.transaction(readonly=True) as tx:
        rows = ServicesView().dump(tx, prefix)
    return [{**row, "actors": json.loads(row["actors"])} for row in rows]


__all__ = ["ALIVE", "DEREGISTERED", "LOST", "ServicesView", "list_services", "next_row"]
