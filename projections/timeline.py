"""The repair timeline view: which events of the log belong to each repair, by position.

A repair's own stream holds its decisions (`heal.*`, `repair.*`), but the story of a repair also
has events elsewhere: every `failure.detected` of its fingerprint (on the runs' streams), a
`failure.unrepairable` for an infrastructure failure, and the validation environments it used
(`environment.*`, tied to it by the purpose `validate:<repair>:<candidate>`). This view indexes all of
them, so `GET /repairs/{id}` reads exactly those events by position, in log order.

Tables: `<prefix>repair_events (position, repair_id, type)` and `<prefix>repair_envs
(environment_id, repair_id)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from contracts.environments import EnvironmentRequested
from contracts.failures import FailureDetected, FailureUnrepairable, TestQuarantined
from contracts.repairs import repair_stream_id
from projections.db import Tx, ViewDB
from projections.rows import TableRows
from projections.statistics import validation_repair
from projections.views import LIVE_PREFIX, RecordedEvent

#: The newest events of one repair shown at most (a flaky test may fail hundreds of times).
MAX_TIMELINE = 500

_REPAIR_TYPES = frozenset({
    "heal.requested", "heal.proposed", "heal.validated", "heal.rejected", "heal.abandoned", "repair.completed",
    "repair.approved", "repair.rejected", "repair.applied",
})
_ENV_TYPES = frozenset({
    "environment.provisioned", "environment.failed", "environment.released", "environment.expired",
})


class RepairTimelineView:
    """The `repair_timeline` view (see the module docstring)."""

    name: str = "repair_timeline"
    types: frozenset[str] = _REPAIR_TYPES | _ENV_TYPES | frozenset({
        "failure.detected", "failure.unrepairable", "test.quarantined", "environment.requested",
    })
    key: tuple[str, ...] = ("kind", "id")

    def table_names(self, prefix: str) -> list[str]:
        return [f"{prefix}repair_events", f"{prefix}repair_envs"]

    def tables(self, prefix: str) -> list[str]:
        return [
            f"CREATE TABLE IF NOT EXISTS {prefix}repair_events (position BIGINT PRIMARY KEY, repair_id TEXT NOT NULL, "
            "type TEXT NOT NULL)",
            f"CREATE INDEX IF NOT EXISTS {prefix}repair_events_repair ON {prefix}repair_events (repair_id, position)",
            f"CREATE TABLE IF NOT EXISTS {prefix}repair_envs (environment_id TEXT PRIMARY KEY, "
            "repair_id TEXT NOT NULL)",
        ]

    def apply(self, tx: Tx, recorded: RecordedEvent, prefix: str) -> None:
        self.apply_many(tx, [recorded], prefix)

    def apply_many(self, tx: Tx, events: Sequence[RecordedEvent], prefix: str) -> None:
        """Fold a page: its environments are read once, its index rows written in one statement."""
        envs = TableRows(tx, f"{prefix}repair_envs", ("environment_id", "repair_id"), ("environment_id",))
        envs.load((str(r.envelope.data.environment_id),) for r in events if r.envelope.type in _ENV_TYPES
                  or isinstance(r.envelope.data, EnvironmentRequested))
        indexed: list[tuple[int, str, str]] = []
        for recorded in events:
            env = recorded.envelope
            e = env.data
            tag = env.type
            rid: str | None
            if tag in _REPAIR_TYPES:
                rid = str(e.repair_id)
            elif isinstance(e, FailureDetected | FailureUnrepairable):
                rid = str(repair_stream_id(e.project, e.fingerprint))
            elif isinstance(e, TestQuarantined):
                rid = str(e.repair_id) if e.repair_id is not None else None
            elif isinstance(e, EnvironmentRequested):
                rid = validation_repair(e.purpose)
                if rid is not None and envs.get(str(e.environment_id)) is None:  # written once
                    envs.put({"environment_id": str(e.environment_id), "repair_id": rid})
            else:
                found = envs.get(str(e.environment_id))
                rid = None if found is None else str(found["repair_id"])
            if rid is not None:
                indexed.append((recorded.position, rid, tag))
        envs.flush()
        tx.executemany(f"INSERT INTO {prefix}repair_events (position, repair_id, type) VALUES (?, ?, ?) "
                       "ON CONFLICT (position) DO NOTHING", indexed)

    def dump(self, tx: Tx, prefix: str) -> list[dict[str, Any]]:
        tx.execute(f"SELECT position, repair_id, type FROM {prefix}repair_events")
        rows = [{"kind": "event", "id": str(r["position"]), **r} for r in tx.fetchall()]
        tx.execute(f"SELECT environment_id, repair_id FROM {prefix}repair_envs")
        rows += [{"kind": "environment", "id": r["environment_id"], **r} for r in tx.fetchall()]
        return sorted(rows, key=lambda r: (r["kind"], r["id"]))


def repair_event_positions(db: ViewDB, repair_id: str, limit: int = MAX_TIMELINE,
                           prefix: str = LIVE_PREFIX) -> tuple[list[tuple[int, str]], int]:
    """The newest `limit` (position, type) of one repair's events in log order, and how many it has."""
    with db.transaction(readonly=True) as tx:
        tx.execute(f"SELECT COUNT(*) AS n FROM {prefix}repair_events WHERE repair_id = ?", (repair_id,))
        found = tx.fetchone()
        tx.execute(f"SELECT position, type FROM {prefix}repair_events WHERE repair_id = ? "
                   "ORDER BY position DESC LIMIT ?", (repair_id, limit))
        rows = tx.fetchall()
    return [(int(r["position"]), str(r["type"])) for r in reversed(rows)], int(found["n"]) if found else 0


__all__ = ["MAX_TIMELINE", "RepairTimelineView", "repair_event_positions"]
