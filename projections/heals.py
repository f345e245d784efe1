"""The heals view: every repair (one per failure fingerprint) and every candidate with its verdict.

Tables `<prefix>repairs` (one row per repair, its latest round) and `<prefix>heal_candidates` (one row
per candidate). The healer ranks strategies with `strategy_stats`, folded from this view, so the
ranking is a function of the history and a replay gives the same one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from contracts.failures import FailureUnrepairable
from contracts.repairs import (
    HealAbandoned,
    HealProposed,
    HealRejected,
    HealRequested,
    HealValidated,
    RepairApplied,
    RepairApproved,
    RepairCompleted,
    RepairRejected,
    repair_stream_id,
)
from projections.db import Tx, ViewDB
from projections.rows import TableRows
from projections.views import LIVE_PREFIX, RecordedEvent, iso

REPAIR_COLUMNS = (
    "repair_id", "project", "test_id", "fingerprint", "category", "status", "round", "strategy", "confidence",
    "candidate_id", "patch", "needs_approval", "reason", "branch", "commit_sha", "updated_at", "updated_position",
)
_CANDIDATE_EVENTS = (HealProposed, HealValidated, HealRejected)
CANDIDATE_COLUMNS = (
    "candidate_id", "repair_id", "round", "category", "strategy", "rank", "confidence", "quarantine", "verdict",
    "reason", "files",
)


class HealsView:
    name: str = "heals"
    types: frozenset[str] = frozenset({
        "heal.requested", "heal.proposed", "heal.validated", "heal.rejected", "heal.abandoned", "repair.completed",
        "repair.approved", "repair.rejected", "repair.applied", "failure.unrepairable",
    })
    key: tuple[str, ...] = ("kind", "id")

    def table_names(self, prefix: str) -> list[str]:
        return [f"{prefix}repairs", f"{prefix}heal_candidates"]

    def tables(self, prefix: str) -> list[str]:
        return [
            f"CREATE TABLE IF NOT EXISTS {prefix}repairs (repair_id TEXT PRIMARY KEY, project TEXT NOT NULL, "
            "test_id TEXT NOT NULL, fingerprint TEXT NOT NULL, category TEXT NOT NULL, status TEXT NOT NULL, "
            "round BIGINT NOT NULL, strategy TEXT, confidence DOUBLE PRECISION, candidate_id TEXT, patch TEXT, "
            "needs_approval BIGINT NOT NULL, reason TEXT NOT NULL, branch TEXT, commit_sha TEXT, "
            "updated_at TEXT NOT NULL, updated_position BIGINT NOT NULL)",
            f"CREATE TABLE IF NOT EXISTS {prefix}heal_candidates (candidate_id TEXT PRIMARY KEY, "
            "repair_id TEXT NOT NULL, round BIGINT NOT NULL, category TEXT NOT NULL, strategy TEXT NOT NULL, "
            "rank BIGINT NOT NULL, confidence DOUBLE PRECISION NOT NULL, quarantine BIGINT NOT NULL, verdict TEXT, "
            "reason TEXT NOT NULL, files TEXT NOT NULL)",
            # GET /repairs pages newest first and filters; a repair's candidates are read by repair id.
            f"CREATE INDEX IF NOT EXISTS {prefix}repairs_updated ON {prefix}repairs (updated_position)",
            f"CREATE INDEX IF NOT EXISTS {prefix}heal_candidates_repair ON {prefix}heal_candidates (repair_id)",
        ]

    def apply(self, tx: Tx, recorded: RecordedEvent, prefix: str) -> None:
        self.apply_many(tx, [recorded], prefix)

    def apply_many(self, tx: Tx, events: Sequence[RecordedEvent], prefix: str) -> None:
        """Fold a page: the repairs and candidates it touches are read once and written once."""
        repairs = TableRows(tx, f"{prefix}repairs", REPAIR_COLUMNS, ("repair_id",))
        candidates = TableRows(tx, f"{prefix}heal_candidates", CANDIDATE_COLUMNS, ("candidate_id",))
        # Each event's repair and candidate id as text, worked out once for the loads and the fold.
        rids = [_repair_id(r.envelope.data) for r in events]
        cids = [str(e.candidate_id) if isinstance(e, _CANDIDATE_EVENTS) else None
                for e in (r.envelope.data for r in events)]
        repairs.load((rid,) for rid in rids)
        candidates.load((cid,) for cid in cids if cid is not None)
        for recorded, rid, cid in zip(events, rids, cids, strict=True):
            self._fold(repairs, candidates, recorded, rid, cid)
        repairs.flush()
        candidates.flush()

    def _fold(self, repairs: TableRows, candidates: TableRows, recorded: RecordedEvent, rid: str,
              cid: str | None) -> None:
        """Fold one event about repair `rid` (and candidate `cid`, for the events about one)."""
        env = recorded.envelope
        e = env.data
        pos = recorded.position
        row = repairs.get(rid)
        if isinstance(e, HealRequested):
            repairs.put({
                "repair_id": rid, "project": e.project, "test_id": e.test_id,
                "fingerprint": e.fingerprint, "category": e.category.value, "status": "validating",
                "round": (row["round"] if row else 0) + 1, "strategy": None, "confidence": None,
                "candidate_id": None, "patch": None, "needs_approval": 0, "reason": e.reason, "branch": None,
                "commit_sha": None, "updated_at": iso(env.occurred_at), "updated_position": pos,
            })
            return
        if isinstance(e, FailureUnrepairable):
            if row is not None and row["status"] == "abandoned":
                return
            repairs.put({
                "repair_id": rid, "project": e.project, "test_id": e.test_id, "fingerprint": e.fingerprint,
                "category": e.category.value, "status": "unrepairable", "round": row["round"] if row else 0,
                "strategy": None, "confidence": None, "candidate_id": None, "patch": None, "needs_approval": 0,
                "reason": e.reason, "branch": None, "commit_sha": None, "updated_at": iso(env.occurred_at),
                "updated_position": pos,
            })
            return
        if row is None:
            return  # events of a repair whose request this view never saw
        if isinstance(e, HealProposed):
            if candidates.get(cid) is None:  # a candidate is written once
                candidates.put(dict(zip(CANDIDATE_COLUMNS, (
                    cid, rid, row["round"], row["category"], e.strategy, e.rank, e.confidence,
                    int(e.quarantine), None, "", "\n".join(e.files)), strict=True)))
            return
        at = iso(env.occurred_at)
        if isinstance(e, HealValidated | HealRejected):
            cand = candidates.get(cid)
            if cand is None:
                return
            validated = isinstance(e, HealValidated)
            candidates.put({**cand, "verdict": "validated" if validated else "rejected",
                            "reason": e.reason if isinstance(e, HealRejected) else ""})
            if validated and cand["quarantine"]:
                _update(repairs, row, at, pos, status="quarantined")
            return
        if isinstance(e, HealAbandoned):
            _update(repairs, row, at, pos, status="abandoned", reason=e.reason)
        elif isinstance(e, RepairCompleted):
            _update(repairs, row, at, pos, status="completed", strategy=e.strategy, confidence=e.confidence,
                    candidate_id=str(e.candidate_id), patch=e.patch, needs_approval=int(e.needs_approval))
        elif isinstance(e, RepairApproved):
            _update(repairs, row, at, pos, status="approved", reason=f"approved by {e.by}")
        elif isinstance(e, RepairRejected):
            _update(repairs, row, at, pos, status="rejected", reason=f"rejected by {e.by}: {e.reason}")
        elif isinstance(e, RepairApplied):
            _update(repairs, row, at, pos, status="applied", branch=e.branch, commit_sha=e.commit)

    def dump(self, tx: Tx, prefix: str) -> list[dict[str, Any]]:
        tx.execute(f"SELECT {', '.join(REPAIR_COLUMNS)} FROM {prefix}repairs")
        repairs = [{"kind": "repair", "id": r["repair_id"], **r} for r in tx.fetchall()]
        tx.execute(f"SELECT {', '.join(CANDIDATE_COLUMNS)} FROM {prefix}heal_candidates")
        candidates = [{"kind": "candidate", "id": r["candidate_id"], **r} for r in tx.fetchall()]
        return sorted(repairs + candidates, key=lambda r: (r["kind"], r["id"]))


def _repair_id(e: Any) -> str:
    """The repair an event of this view is about (an unrepairable failure names its fingerprint)."""
    if isinstance(e, FailureUnrepairable):
        return str(repair_stream_id(e.project, e.fingerprint))
    return str(e.repair_id)


def _update(repairs: TableRows, row: dict[str, Any], at: str, pos: int, **changes: Any) -> None:
    repairs.put({**row, **changes, "updated_at": at, "updated_position": pos})


def list_repairs(db: ViewDB, *, project: str | None = None, status: str | None = None,
                 prefix: str = LIVE_PREFIX) -> list[dict[str, Any]]:
    """Repairs, newest change first, optionally of one project and/or in one status."""
    where, params = [], []
    if project:
        where.append("project = ?")
        params.append(project)
    if status:
        where.append("status = ?")
        params.append(status)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    with db.transaction(readonly=True) as tx:
        tx.execute(f"SELECT {', '.join(REPAIR_COLUMNS)} FROM {prefix}repairs{clause} "
                   "ORDER BY updated_position DESC", params)
        rows = tx.fetchall()
    return [{**r, "needs_approval": bool(r["needs_approval"])} for r in rows]


class BadCursor(ValueError):
    """A `cursor` that `page_repairs` did not hand out."""


def page_repairs(db: ViewDB, *, project: str | None = None, status: str | None = None, category: str | None = None,
                 strategy: str | None = None, limit: int = 100, cursor: str | None = None, offset: int = 0,
                 prefix: str = LIVE_PREFIX) -> dict[str, Any]:
    """One page of repairs, newest change first: `{"repairs": [...], "next": cursor or None}`.

    `strategy` matches repairs with a candidate of that strategy. `cursor` is the `next` of the
    previous page (a repair that changes meanwhile moves to the front and is not seen again on
    later pages); `offset` skips rows instead.
    """
    where: list[str] = []
    params: list[Any] = []
    for clause, value in (("r.project = ?", project), ("r.status = ?", status), ("r.category = ?", category)):
        if value:
            where.append(clause)
            params.append(value)
    if strategy:
        where.append(f"EXISTS (SELECT 1 FROM {prefix}heal_candidates c WHERE c.repair_id = r.repair_id "
                     "AND c.strategy = ?)")
        params.append(strategy)
    if cursor:
        try:
            before = int(cursor)
        except ValueError:
            raise BadCursor(f"cursor {cursor!r} is not one GET /repairs handed out (`next`)") from None
        where.append("r.updated_position < ?")
        params.append(before)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    columns = ", ".join(f"r.{c}" for c in REPAIR_COLUMNS)
    with db.transaction(readonly=True) as tx:
        tx.execute(f"SELECT {columns} FROM {prefix}repairs r{clause} ORDER BY r.updated_position DESC "
                   "LIMIT ? OFFSET ?", [*params, limit + 1, offset])
        rows = tx.fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    return {"repairs": [{**r, "needs_approval": bool(r["needs_approval"])} for r in rows],
            "next": str(rows[-1]["updated_position"]) if more else None}


def get_repair(db: ViewDB, repair_id: str, prefix: str = LIVE_PREFIX) -> dict[str, Any] | None:
    """One repair's row, or None."""
    with db.transaction(readonly=True) as tx:
        tx.execute(f"SELECT {', '.join(REPAIR_COLUMNS)} FROM {prefix}repairs WHERE repair_id = ?", (repair_id,))
        row = tx.fetchone()
    return None if row is None else {**row, "needs_approval": bool(row["needs_approval"])}


def repair_candidates(db: ViewDB, repair_id: str, prefix: str = LIVE_PREFIX) -> list[dict[str, Any]]:
    with db.transaction(readonly=True) as tx:
        tx.execute(f"SELECT {', '.join(CANDIDATE_COLUMNS)} FROM {prefix}heal_candidates WHERE repair_id = ? "
                   "ORDER BY round, rank", (repair_id,))
        rows = tx.fetchall()
    return [{**r, "quarantine": bool(r["quarantine"]), "files": [f for f in r["files"].split("\n") if f]}
            for r in rows]


def strategy_stats(db: ViewDB, prefix: str = LIVE_PREFIX) -> dict[tuple[str, str], tuple[int, int]]:
    """(category, strategy) -> (validated, rejected), over every candidate ever judged."""
    with db.transaction(readonly=True) as tx:
        tx.execute(
            f"SELECT category, strategy, SUM(CASE WHEN verdict = 'validated' THEN 1 ELSE 0 END) AS ok, "
            f"SUM(CASE WHEN verdict = 'rejected' THEN 1 ELSE 0 END) AS bad FROM {prefix}heal_candidates "
            "WHERE verdict IS NOT NULL GROUP BY category, strategy"
        )
        return {(r["category"], r["strategy"]): (int(r["ok"]), int(r["bad"])) for r in tx.fetchall()}


__all__ = ["BadCursor", "HealsView", "get_repair", "list_repairs", "page_repairs", "repair_candidates",
           "strategy_stats"]
