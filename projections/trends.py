"""The run trends view: per project and UTC day, how many runs and how their tests went.

Folded from `run.recorded` (runs, tests, passed, failed, skipped, runs with a failure) and
`run.storm_detected` (storms). Table `<prefix>run_days`, one row per (project, day); plus
`<prefix>run_last`, each project's latest run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from contracts.runs import RunRecorded, StormDetected
from projections.db import Tx, ViewDB
from projections.views import LIVE_PREFIX, RecordedEvent, iso

DAY_COLUMNS = ("project", "day", "runs", "tests", "passed", "failed", "skipped", "failed_runs", "storms")
COUNTERS = DAY_COLUMNS[2:]
LAST_COLUMNS = ("project", "run_id", "commit_sha", "at", "total", "passed", "failed", "skipped", "position")


class RunTrendsView:
    """The `run_trends` view (see the module docstring)."""

    name: str = "run_trends"
    types: frozenset[str] = frozenset({"run.recorded", "run.storm_detected"})
    key: tuple[str, ...] = ("kind", "id")

    def table_names(self, prefix: str) -> list[str]:
        return [f"{prefix}run_days", f"{prefix}run_last"]

    def tables(self, prefix: str) -> list[str]:
        return [
            f"CREATE TABLE IF NOT EXISTS {prefix}run_days (project TEXT NOT NULL, day TEXT NOT NULL, "
            "runs BIGINT NOT NULL, tests BIGINT NOT NULL, passed BIGINT NOT NULL, failed BIGINT NOT NULL, "
            "skipped BIGINT NOT NULL, failed_runs BIGINT NOT NULL, storms BIGINT NOT NULL, PRIMARY KEY (project, day))",
            f"CREATE TABLE IF NOT EXISTS {prefix}run_last (project TEXT PRIMARY KEY, run_id TEXT NOT NULL, "
            "commit_sha TEXT, at TEXT NOT NULL, total BIGINT NOT NULL, passed BIGINT NOT NULL, failed BIGINT NOT NULL, "
            "skipped BIGINT NOT NULL, position BIGINT NOT NULL)",
        ]

    def apply(self, tx: Tx, recorded: RecordedEvent, prefix: str) -> None:
        self.apply_many(tx, [recorded], prefix)

    def apply_many(self, tx: Tx, events: Sequence[RecordedEvent], prefix: str) -> None:
        """Fold a page: the day counters are summed in memory and added once per (project, day); each
        project's latest run is written once."""
        days: dict[tuple[str, str], list[int]] = {}
        last: dict[str, tuple[Any, ...]] = {}
        for recorded in events:
            env = recorded.envelope
            e = env.data
            at = iso(env.occurred_at)
            if isinstance(e, RunRecorded):
                counts = (1, e.total, e.passed, e.failed, e.skipped, int(e.failed > 0), 0)
                last[e.project] = (e.project, e.run_id, e.commit, at, e.total, e.passed, e.failed, e.skipped,
                                   recorded.position)
            elif isinstance(e, StormDetected):
                counts = (0, 0, 0, 0, 0, 0, 1)
            else:
                continue
            summed = days.setdefault((e.project, at[:10]), [0] * len(COUNTERS))
            for i, n in enumerate(counts):
                summed[i] += n
        updates = ", ".join(f"{c} = {prefix}run_days.{c} + excluded.{c}" for c in COUNTERS)
        tx.executemany(
            f"INSERT INTO {prefix}run_days (project, day, {', '.join(COUNTERS)}) "
            f"VALUES (?, ?, {', '.join('?' for _ in COUNTERS)}) ON CONFLICT (project, day) DO UPDATE SET {updates}",
            [(project, day, *summed) for (project, day), summed in days.items()],
        )
        updates = ", ".join(f"{c} = excluded.{c}" for c in LAST_COLUMNS if c != "project")
        tx.executemany(
            f"INSERT INTO {prefix}run_last ({', '.join(LAST_COLUMNS)}) VALUES ({', '.join('?' for _ in LAST_COLUMNS)}) "
            f"ON CONFLICT (project) DO UPDATE SET {updates}",
            list(last.values()),
        )

    def dump(self, tx: Tx, prefix: str) -> list[dict[str, Any]]:
        tx.execute(f"SELECT {', '.join(DAY_COLUMNS)} FROM {prefix}run_days")
        rows = [{"kind": "day", "id": f"{r['project']}|{r['day']}", **r} for r in tx.fetchall()]
        tx.execute(f"SELECT {', '.join(LAST_COLUMNS)} FROM {prefix}run_last")
        rows += [{"kind": "last", "id": r["project"], **r} for r in tx.fetchall()]
        return sorted(rows, key=lambda r: (r["kind"], r["id"]))


def run_trends(db: ViewDB, *, project: str | None = None, since: str | None = None, until: str | None = None,
               prefix: str = LIVE_PREFIX) -> dict[str, Any]:
    """Per project: its latest run, totals, and one entry per day in [since, until] (YYYY-MM-DD)."""
    where, params = [], []
    for clause, value in (("project = ?", project), ("day >= ?", since), ("day <= ?", until)):
        if value:
            where.append(clause)
            params.append(value)
    cond = f" WHERE {' AND '.join(where)}" if where else ""
    with db.transaction(readonly=True) as tx:
        tx.execute(f"SELECT {', '.join(DAY_COLUMNS)} FROM {prefix}run_days{cond}", params)
        days = tx.fetchall()
        tx.execute(f"SELECT {', '.join(LAST_COLUMNS)} FROM {prefix}run_last"
                   + (" WHERE project = ?" if project else ""), [project] if project else [])
        last = {r["project"]: r for r in tx.fetchall()}
    projects: dict[str, dict[str, Any]] = {}
    for row in sorted(days, key=lambda r: (r["project"], r["day"])):
        entry = projects.setdefault(row["project"], {"project": row["project"], "totals": dict.fromkeys(
            DAY_COLUMNS[2:], 0), "days": []})
        for c in DAY_COLUMNS[2:]:
            entry["totals"][c] += int(row[c])
        entry["days"].append({c: row[c] for c in DAY_COLUMNS[1:]})
    for name, entry in projects.items():
        t = entry["totals"]
        entry["totals"]["pass_rate"] = round(t["passed"] / t["tests"], 6) if t["tests"] else None
        entry["last_run"] = last.get(name)
    return {"projects": [projects[k] for k in sorted(projects)]}


__all__ = ["RunTrendsView", "run_trends"]
