"""The run trends view: per project and UTC day, how many runs and how their tests went.

Folded from `run.recorded` (runs, tests, passed, failed, skipped, runs with a failure) and
`run.storm_detected` (storms). Table `<prefix>run_days`, one row per (project, day); plus
`<prefix>run_last`, each project's latest run.
"""

from __future__ import annotations

from typing import Any

from contracts.runs import RunRecorded, StormDetected
from projections.db import Tx, ViewDB
from projections.views import LIVE_PREFIX, RecordedEvent, iso

DAY_COLUMNS = ("project", "day", "runs", "tests", "passed", "failed", "skipped", "failed_runs", "storms")
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
        env = recorded.envelope
        e = env.data
        at = iso(env.occurred_at)
        day = at[:10]
        if isinstance(e, RunRecorded):
            self._add(tx, prefix, e.project, day, runs=1, tests=e.total, passed=e.passed, failed=e.failed,
                      skipped=e.skipped, failed_runs=int(e.failed > 0), storms=0)
            values = (e.project, e.run_id, e.commit, at, e.total, e.passed, e.failed, e.skipped, recorded.position)
            tx.upsert(f"{prefix}run_last", dict(zip(LAST_COLUMNS, values, strict=True)), ("project",))
        elif isinstance(e, StormDetected):
            self._add(tx, prefix, e.project, day, runs=0, tests=0, passed=0, failed=0, skipped=0, failed_runs=0,
                      storms=1)

    def _add(self, tx: Tx, prefix: str, project: str, day: str, **counts: int) -> None:
        names = list(counts)
        updates = ", ".join(f"{c} = {prefix}run_days.{c} + excluded.{c}" for c in names)
        tx.execute(
            f"INSERT INTO {prefix}run_days (project, day, {', '.join(names)}) "
            f"VALUES (?, ?, {', '.join('?' for _ in names)}) ON CONFLICT (project, day) DO UPDATE SET {updates}",
            (project, day, *counts.values()),
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
