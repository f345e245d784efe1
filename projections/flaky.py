"""The flaky-tests view: per test, its flakiness verdict, its recent flips, and its quarantine.

Folded from the monitor's and the healer's events:

- `test.outcomes_recorded` (the watched tests' outcomes per run): `observations`, `flips` (a change
  between failing and passing from one recorded run to the next, or a pass and a fail within one
  run), the last outcome and the last `LAST_FLIPS` flips (run, time, outcome after the flip);
- `test.flakiness.changed`: `flaky`, the monitor's `flip_rate` over its `window` at that moment, the
  reason, and `flaky_since` (the time of the change to flaky; cleared when it changes back);
- `test.quarantined`: the quarantine is `validated` (CARS proved the entry, `quarantined_since`), and
  `repair.applied` of that quarantine's repair makes it `applied` (written into the project's
  quarantine file). No event lifts a quarantine: removing the line from the file is the user's call.

Table `<prefix>flaky_tests`, one row per (project, test_id) that any of these events named.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from contracts.failures import FlakinessChanged, TestQuarantined
from contracts.monitoring import OutcomesRecorded
from contracts.repairs import RepairApplied
from contracts.values import Outcome
from projections.db import Tx, ViewDB
from projections.rows import CHUNK, TableRows
from projections.views import LIVE_PREFIX, RecordedEvent, iso

LAST_FLIPS = 5
VALIDATED, APPLIED = "validated", "applied"
_FAILING = frozenset({Outcome.FAILED, Outcome.ERROR})

COLUMNS = (
    "project", "test_id", "flaky", "ever_flaky", "flip_rate", "flip_window", "reason", "flaky_since", "changed_at",
    "observations", "flips", "last_outcome", "last_flips", "quarantine", "quarantined_since", "quarantine_file",
    "quarantine_repair", "quarantine_reason", "updated_position",
)


def _new(project: str, test_id: str) -> dict[str, Any]:
    return {
        "project": project, "test_id": test_id, "flaky": 0, "ever_flaky": 0, "flip_rate": None, "flip_window": None,
        "reason": "", "flaky_since": None, "changed_at": None, "observations": 0, "flips": 0, "last_outcome": None,
        "last_flips": "[]", "quarantine": "", "quarantined_since": None, "quarantine_file": None,
        "quarantine_repair": None, "quarantine_reason": "", "updated_position": 0,
    }


class FlakyTestsView:
    """The `flaky_tests` view (see the module docstring)."""

    name: str = "flaky_tests"
    types: frozenset[str] = frozenset({
        "test.outcomes_recorded", "test.flakiness.changed", "test.quarantined", "repair.applied",
    })
    key: tuple[str, ...] = ("project", "test_id")

    def table_names(self, prefix: str) -> list[str]:
        return [f"{prefix}flaky_tests"]

    def tables(self, prefix: str) -> list[str]:
        return [
            f"CREATE TABLE IF NOT EXISTS {prefix}flaky_tests (project TEXT NOT NULL, test_id TEXT NOT NULL, "
            "flaky BIGINT NOT NULL, ever_flaky BIGINT NOT NULL, flip_rate DOUBLE PRECISION, flip_window BIGINT, "
            "reason TEXT NOT NULL, flaky_since TEXT, changed_at TEXT, observations BIGINT NOT NULL, "
            "flips BIGINT NOT NULL, last_outcome TEXT, last_flips TEXT NOT NULL, quarantine TEXT NOT NULL, "
            "quarantined_since TEXT, quarantine_file TEXT, quarantine_repair TEXT, quarantine_reason TEXT NOT NULL, "
            "updated_position BIGINT NOT NULL, PRIMARY KEY (project, test_id))",
            f"CREATE INDEX IF NOT EXISTS {prefix}flaky_tests_repair ON {prefix}flaky_tests (quarantine_repair)",
        ]

    def apply(self, tx: Tx, recorded: RecordedEvent, prefix: str) -> None:
        self.apply_many(tx, [recorded], prefix)

    def apply_many(self, tx: Tx, events: Sequence[RecordedEvent], prefix: str) -> None:
        """Fold a page: each test's row is read once and written once (a `repair.applied` writes the
        rows so far first, as it updates rows by their quarantine's repair)."""
        rows = self._rows(tx, prefix)
        # The repairs some quarantine names: a repair.applied of any other repair changes no row.
        quarantining = _quarantine_repairs(tx, prefix, [str(r.envelope.data.repair_id) for r in events
                                                        if isinstance(r.envelope.data, RepairApplied)])
        for recorded in events:
            env = recorded.envelope
            e = env.data
            at, pos = iso(env.occurred_at), recorded.position
            if isinstance(e, OutcomesRecorded):
                for outcome in e.outcomes:
                    if outcome.outcome is Outcome.SKIPPED:
                        continue
                    row = self._row(rows, e.project, outcome.test_id)
                    now = "failed" if outcome.outcome in _FAILING else "passed"
                    flipped = outcome.mixed or (row["last_outcome"] is not None and row["last_outcome"] != now)
                    if flipped:
                        flips = json.loads(row["last_flips"])
                        flips.append({"run_id": e.run_id, "at": at, "outcome": "mixed" if outcome.mixed else now})
                        row["last_flips"] = json.dumps(flips[-LAST_FLIPS:], sort_keys=True)
                        row["flips"] += 1
                    row.update(observations=row["observations"] + 1, last_outcome=now, updated_position=pos)
                    rows.put(row)
            elif isinstance(e, FlakinessChanged):
                row = self._row(rows, e.project, e.test_id)
                row.update(
                    flaky=int(e.flaky), ever_flaky=int(e.flaky or row["ever_flaky"]), flip_rate=e.flip_rate,
                    flip_window=e.window, reason=e.reason, changed_at=at, updated_position=pos,
                    flaky_since=(row["flaky_since"] or at) if e.flaky else None,
                )
                rows.put(row)
            elif isinstance(e, TestQuarantined):
                row = self._row(rows, e.project, e.test_id)
                if not row["quarantine"]:
                    row.update(quarantine=VALIDATED, quarantined_since=at)
                row.update(quarantine_file=e.quarantine_file, quarantine_reason=e.reason, ever_flaky=1,
                           quarantine_repair=str(e.repair_id) if e.repair_id else None, updated_position=pos)
                rows.put(row)
                if row["quarantine_repair"] is not None:
                    quarantining.add(row["quarantine_repair"])
            elif isinstance(e, RepairApplied):
                if str(e.repair_id) not in quarantining:
                    continue
                rows.flush()
                tx.execute(f"UPDATE {prefix}flaky_tests SET quarantine = ?, updated_position = ? "
                           "WHERE quarantine_repair = ? AND quarantine = ?",
                           (APPLIED, pos, str(e.repair_id), VALIDATED))
                if tx.rowcount:
                    rows = self._rows(tx, prefix)  # the copies read so far may be stale now
        rows.flush()

    def dump(self, tx: Tx, prefix: str) -> list[dict[str, Any]]:
        tx.execute(f"SELECT {', '.join(COLUMNS)} FROM {prefix}flaky_tests")
        return sorted(tx.fetchall(), key=lambda r: (r["project"], r["test_id"]))

    def _rows(self, tx: Tx, prefix: str) -> TableRows:
        return TableRows(tx, f"{prefix}flaky_tests", COLUMNS, ("project", "test_id"))

    def _row(self, rows: TableRows, project: str, test_id: str) -> dict[str, Any]:
        """A test's row to change and put (a copy: a row of `rows` changes only when put)."""
        row = rows.get(project, test_id)
        return dict(row) if row is not None else _new(project, test_id)


def _quarantine_repairs(tx: Tx, prefix: str, repair_ids: Sequence[str]) -> set[str]:
    """Those of `repair_ids` that a row of the table names as its quarantine's repair."""
    wanted = list(dict.fromkeys(repair_ids))
    found: set[str] = set()
    for i in range(0, len(wanted), CHUNK):
        chunk = wanted[i:i + CHUNK]
        tx.execute(f"SELECT DISTINCT quarantine_repair FROM {prefix}flaky_tests "
                   f"WHERE quarantine_repair IN ({', '.join('?' for _ in chunk)})", chunk)
        found.update(str(r["quarantine_repair"]) for r in tx.fetchall())
    return found


def _public(row: dict[str, Any]) -> dict[str, Any]:
    observations, flips = int(row["observations"]), int(row["flips"])
    return {
        "project": row["project"], "test_id": row["test_id"], "flaky": bool(row["flaky"]),
        "flip_rate": row["flip_rate"], "window": row["flip_window"], "reason": row["reason"],
        "flaky_since": row["flaky_since"], "changed_at": row["changed_at"],
        "observations": observations, "flips": flips,
        "lifetime_flip_rate": round(flips / (observations - 1), 6) if observations > 1 else None,
        "last_outcome": row["last_outcome"], "last_flips": json.loads(row["last_flips"]),
        "quarantine": {
            "state": row["quarantine"] or "none", "since": row["quarantined_since"], "file": row["quarantine_file"],
            "repair_id": row["quarantine_repair"], "reason": row["quarantine_reason"],
        },
    }


def list_flaky(db: ViewDB, *, project: str | None = None, current: bool = False,
               prefix: str = LIVE_PREFIX) -> list[dict[str, Any]]:
    """Tests ever flagged flaky or quarantined (only those flaky or quarantined now with `current`),
    ordered by project and test id."""
    where = ["(flaky = 1 OR quarantine <> '')" if current else "(ever_flaky = 1 OR quarantine <> '')"]
    params: list[Any] = []
    if project:
        where.append("project = ?")
        params.append(project)
    with db.transaction(readonly=True) as tx:
        tx.execute(f"SELECT {', '.join(COLUMNS)} FROM {prefix}flaky_tests WHERE {' AND '.join(where)}", params)
        rows = tx.fetchall()
    return [_public(r) for r in sorted(rows, key=lambda r: (r["project"], r["test_id"]))]


def quarantined_tests(db: ViewDB, project: str | None = None, prefix: str = LIVE_PREFIX) -> list[dict[str, Any]]:
    """Tests in quarantine (validated or applied), as `list_flaky` rows."""
    return [r for r in list_flaky(db, project=project, current=True, prefix=prefix)
            if r["quarantine"]["state"] != "none"]


__all__ = ["APPLIED", "LAST_FLIPS", "VALIDATED", "FlakyTestsView", "list_flaky", "quarantined_tests"]
