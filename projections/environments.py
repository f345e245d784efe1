"""The environments view: every environment the provisioner was asked for, and where it stands.

One row per environment id, folded from the provisioner's events: `environment.requested` writes it
(status `requested`, with the resolved template version, the backend and the service names);
`environment.provisioned` adds the workspace and expiry; `environment.failed` the reason;
`environment.released` and `environment.expired` end it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from contracts.environments import (
    EnvironmentExpired,
    EnvironmentFailed,
    EnvironmentProvisioned,
    EnvironmentReleased,
    EnvironmentRequested,
)
from projections.db import Tx, ViewDB
from projections.rows import TableRows
from projections.views import LIVE_PREFIX, RecordedEvent, iso

COLUMNS = (
    "environment_id", "template", "version", "backend", "status", "purpose", "repo_path", "workspace",
    "expires_at", "services", "reason", "requested_at", "updated_at", "updated_position",
)
LIVE_STATUSES = ("requested", "provisioned")


class EnvironmentsView:
    """The `environments` view (see the module docstring). Table: `<prefix>environments`."""

    name: str = "environments"
    types: frozenset[str] = frozenset({
        "environment.requested", "environment.provisioned", "environment.failed", "environment.released",
        "environment.expired",
    })
    key: tuple[str, ...] = ("environment_id",)

    def table_names(self, prefix: str) -> list[str]:
        return [f"{prefix}environments"]

    def tables(self, prefix: str) -> list[str]:
        return [
            f"CREATE TABLE IF NOT EXISTS {prefix}environments ("
            "environment_id TEXT PRIMARY KEY, template TEXT NOT NULL, version TEXT, backend TEXT NOT NULL, "
            "status TEXT NOT NULL, purpose TEXT NOT NULL, repo_path TEXT, workspace TEXT, expires_at TEXT, "
            "services TEXT NOT NULL, reason TEXT NOT NULL, requested_at TEXT NOT NULL, updated_at TEXT NOT NULL, "
            "updated_position BIGINT NOT NULL)"
        ]

    def apply(self, tx: Tx, recorded: RecordedEvent, prefix: str) -> None:
        self.apply_many(tx, [recorded], prefix)

    def apply_many(self, tx: Tx, events: Sequence[RecordedEvent], prefix: str) -> None:
        """Fold a page: each environment's row is read once and written once."""
        rows = TableRows(tx, f"{prefix}environments", COLUMNS, ("environment_id",))
        rows.load((str(r.envelope.data.environment_id),) for r in events)
        for recorded in events:
            env = recorded.envelope
            data = env.data
            at = iso(env.occurred_at)
            row = rows.get(str(data.environment_id))
            if isinstance(data, EnvironmentRequested):
                if row is None:  # a request is written once
                    rows.put({
                        "environment_id": str(data.environment_id), "template": data.template,
                        "version": data.template_version, "backend": data.backend, "status": "requested",
                        "purpose": data.purpose, "repo_path": data.repo_path, "workspace": None, "expires_at": None,
                        "services": json.dumps(list(data.services)), "reason": "", "requested_at": at,
                        "updated_at": at, "updated_position": recorded.position,
                    })
                continue
            changes: dict[str, Any]
            if isinstance(data, EnvironmentProvisioned):
                changes = {"status": "provisioned", "workspace": data.workspace, "expires_at": iso(data.expires_at)}
            elif isinstance(data, EnvironmentFailed):
                changes = {"status": "failed", "reason": data.reason}
            elif isinstance(data, EnvironmentReleased):
                changes = {"status": "released", "reason": data.reason}
            elif isinstance(data, EnvironmentExpired):
                changes = {"status": "expired", "reason": f"expired at {iso(data.expired_at)}"}
            else:
                continue
            if row is not None:
                rows.put({**row, **changes, "updated_at": at, "updated_position": recorded.position})
        rows.flush()

    def dump(self, tx: Tx, prefix: str) -> list[dict[str, Any]]:
        tx.execute(f"SELECT {', '.join(COLUMNS)} FROM {prefix}environments")
        return sorted(tx.fetchall(), key=lambda row: row["environment_id"])


def list_environments(db: ViewDB, *, status: str | None = None, live: bool = False,
                      prefix: str = LIVE_PREFIX) -> list[dict[str, Any]]:
    """Environments, newest request first (`services` as a list); only `status`, or only live ones."""
    with db.transaction(readonly=True) as tx:
        rows = EnvironmentsView().dump(tx, prefix)
    rows = [r for r in rows if (status is None or r["status"] == status)
            and (not live or r["status"] in LIVE_STATUSES)]
    rows.sort(key=lambda r: (r["requested_at"], r["environment_id"]), reverse=True)
    return [{**r, "services": json.loads(r["services"])} for r in rows]


__all__ = ["LIVE_STATUSES", "EnvironmentsView", "list_environments"]
