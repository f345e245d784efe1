"""The statistics view: heal rates, verified precision, time to repair, why candidates fail, storms and
environment time, kept as precomputed counters so `GET /statistics` reads a few hundred rows.

Definitions (the README repeats them):

- **repair**: one failure fingerprint of one project (`repair_id`) that CARS tried to heal, counted
  once, at its first `heal.requested`. **healed**: a repair with at least one `repair.completed` (a
  validated patch). **heal rate** = healed / repairs. A quarantine (`heal.validated` of a quarantine
  candidate) is counted as `quarantined`, never as healed. **unrepairable** counts fingerprints with
  a `failure.unrepairable` (once each), including those never tried (product regressions,
  infrastructure failures), which are therefore not in the heal rate's denominator.
- per **strategy**: candidates proposed, validated and rejected; heal rate = validated /
  (validated + rejected); `completed` counts the repairs the strategy won.
- **verified precision** = verified / validated, where `validated` counts every `repair.completed`,
  and `verified` those whose repair was then applied (`repair.applied`) and not later
  - **reverted**: a `repair.rejected` recorded after the `repair.applied` (the only record of an
    applied patch being withdrawn that the history can hold; today's healer refuses to reject an
    applied repair, so this stays 0 until a revert command exists), nor
  - **re-broken**: a `failure.detected` of the same project and fingerprint (the same test failing
    the same way: the repair id is a function of both) after the `repair.applied`.
- **time to validated repair**: from the first `failure.detected` of a fingerprint that is not yet
  repaired (a later one starts a new episode after a completion) to its `repair.completed`, in
  event time (`occurred_at`). Repairs opened by `heal.request` without a detected failure have none.
- **rejected candidates** by reason: out of date (`stale`: the files changed since it was proposed),
  else the first broken guardrail rule, else regressions, the
  mutation check, a patch that does not apply, a failed rerun, an environment that could not be
  provisioned (else `other`). **abandoned** repairs by the `heal.abandoned` reason, numbers elided.
- **storms**: `run.storm_detected`, per project, and the most recent ones.
- **environment minutes**: for environments the validator asked for (purpose
  `validate:<repair>:<candidate>`), from `environment.requested` to its first `environment.released`,
  `environment.expired` or `environment.failed`; environments still running are not counted yet.
  Minutes per repair = total / repairs that used at least one environment.

Tables: `<prefix>stat_counts` (the counters: dim, key, metric -> value), `<prefix>stat_repairs`
(per-repair state the counters need), `<prefix>stat_candidates` (each candidate's strategy),
`<prefix>stat_envs` (open validation environments) and
`<prefix>stat_storms` (one row per storm).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import re
import time
import uuid
from collections.abc import Sequence
from typing import Any

import anyio.to_thread

from contracts.environments import (
    EnvironmentExpired,
    EnvironmentFailed,
    EnvironmentReleased,
    EnvironmentRequested,
)
from contracts.failures import FailureDetected, FailureUnrepairable
from contracts.repairs import (
    HealAbandoned,
    HealProposed,
    HealRejected,
    HealRequested,
    HealValidated,
    RepairApplied,
    RepairCompleted,
    RepairRejected,
    repair_stream_id,
)
from contracts.runs import StormDetected
from contracts.values import MutationVerdict
from projections.db import Tx, ViewDB
from projections.rows import TableRows
from projections.runner import tracked_positions
from projections.views import LIVE_PREFIX, RecordedEvent, iso

log = logging.getLogger(__name__)

ALL = "all"
RECENT_STORMS = 10

REPAIR_COLUMNS = (
    "repair_id", "project", "category", "strategy", "counted", "healed", "quarantined", "unrepairable", "failed_at",
    "state", "env_seconds",
)
# What became of the latest validated patch of a repair (for verified precision).
VALIDATED, APPLIED, REVERTED, REBROKEN = "validated", "applied", "reverted", "rebroken"


def seconds_between(start: str, end: str) -> float:
    """Seconds from one stored ISO timestamp to another (never negative)."""
    return max(0.0, (dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds())


def validation_repair(purpose: str) -> str | None:
    """The repair id in a validation environment's purpose, `validate:<repair_id>:<candidate_id>`
    (written by actors/validator/router.py `purpose`; projections may not import actors)."""
    kind, _, rest = purpose.partition(":")
    rid = rest.partition(":")[0]
    if kind != "validate":
        return None
    try:
        return str(uuid.UUID(rid))
    except ValueError:
        return None


def rejection_reason(event: HealRejected) -> str:
    """The group a candidate's rejection is counted under (see the module docstring)."""
    if event.stale:
        return "out of date"  # another repair changed the files since; proposed again, not wrong
    ev = event.evidence
    if ev.guardrails:
        return f"guardrail: {ev.guardrails[0].rule}"
    if ev.regressions:
        return "regressions"
    if ev.mutation is MutationVerdict.FAILED:
        return "mutation check failed"
    text = event.reason
    if text.startswith("guardrails: "):
        return "guardrail: " + text.removeprefix("guardrails: ").split(":", 1)[0]
    for prefix, group in (
        ("the patch does not apply", "patch does not apply"),
        ("the patch changes no file", "patch changes no file"),
        ("rerun ", "rerun failed"),
        ("the environment could not be provisioned", "environment not provisioned"),
        ("mutation check failed", "mutation check failed"),
    ):
        if text.startswith(prefix):
            return group
    if "regression" in text:
        return "regressions"
    return "other"


_NUMBERS = re.compile(r"\d+")


def abandon_reason(text: str) -> str:
    """An abandon reason with its numbers elided, so `(3 tried)` and `(2 tried)` group together."""
    return _NUMBERS.sub("N", " ".join(text.split()))[:200]


class StatisticsView:
    """The `statistics` view (see the module docstring)."""

    name: str = "statistics"
    types: frozenset[str] = frozenset({
        "failure.detected", "failure.unrepairable", "heal.requested", "heal.proposed", "heal.validated",
        "heal.rejected", "heal.abandoned", "repair.completed", "repair.applied", "repair.rejected",
        "run.storm_detected", "environment.requested", "environment.released", "environment.expired",
        "environment.failed",
    })
    key: tuple[str, ...] = ("kind", "id")

    def table_names(self, prefix: str) -> list[str]:
        return [f"{prefix}stat_counts", f"{prefix}stat_repairs", f"{prefix}stat_candidates", f"{prefix}stat_envs",
                f"{prefix}stat_storms"]

    def tables(self, prefix: str) -> list[str]:
        return [
            f"CREATE TABLE IF NOT EXISTS {prefix}stat_counts (dim TEXT NOT NULL, key TEXT NOT NULL, "
            "metric TEXT NOT NULL, value DOUBLE PRECISION NOT NULL, PRIMARY KEY (dim, key, metric))",
            f"CREATE TABLE IF NOT EXISTS {prefix}stat_repairs (repair_id TEXT PRIMARY KEY, project TEXT NOT NULL, "
            "category TEXT NOT NULL, strategy TEXT, counted BIGINT NOT NULL, healed BIGINT NOT NULL, "
            "quarantined BIGINT NOT NULL, unrepairable BIGINT NOT NULL, failed_at TEXT, state TEXT NOT NULL, "
            "env_seconds DOUBLE PRECISION NOT NULL)",
            f"CREATE TABLE IF NOT EXISTS {prefix}stat_candidates (candidate_id TEXT PRIMARY KEY, "
            "strategy TEXT NOT NULL, quarantine BIGINT NOT NULL)",
            f"CREATE TABLE IF NOT EXISTS {prefix}stat_envs (environment_id TEXT PRIMARY KEY, repair_id TEXT NOT NULL, "
            "requested_at TEXT NOT NULL)",
            f"CREATE TABLE IF NOT EXISTS {prefix}stat_storms (position BIGINT PRIMARY KEY, project TEXT NOT NULL, "
            "run_id TEXT NOT NULL, at TEXT NOT NULL, failed_share DOUBLE PRECISION NOT NULL, reason TEXT NOT NULL)",
        ]

    # ------------------------------------------------------------------ fold

    def apply(self, tx: Tx, recorded: RecordedEvent, prefix: str) -> None:
        self.apply_many(tx, [recorded], prefix)

    def apply_many(self, tx: Tx, events: Sequence[RecordedEvent], prefix: str) -> None:
        """Fold a page: the repairs, candidates and environments it touches are read once and written
        once, its counter additions and storms written in one statement each (`_Page`)."""
        page = _Page(tx, prefix)
        about = page.load(events)
        for recorded, (rid, cid) in zip(events, about, strict=True):
            self._fold(page, recorded, rid, cid)
        page.flush()

    def _fold(self, page: _Page, recorded: RecordedEvent, rid: str | None, cid: str | None) -> None:
        """Fold one event about the repair `rid` (None for storms and environments) and the candidate
        `cid` (for the events about one)."""
        env = recorded.envelope
        e = env.data
        if isinstance(e, FailureDetected):
            self._failure(page, e, str(rid), iso(env.occurred_at))
        elif isinstance(e, HealRequested):
            row = self._row(page, str(rid)) or self._new(str(rid), e.project, e.category.value)
            self._count_repair(page, row)
            page.repairs.put({**row, "category": e.category.value})
        elif isinstance(e, FailureUnrepairable):
            row = self._row(page, str(rid)) or self._new(str(rid), e.project, e.category.value)
            if not row["unrepairable"]:
                page.add([d for d in self._dims(row) if d[0] != "strategy"], "unrepairable")
            page.repairs.put({**row, "unrepairable": 1, "failed_at": None})
        elif isinstance(e, StormDetected):
            page.add([(ALL, ""), ("project", e.project)], "storms")
            page.storms.append((recorded.position, e.project, e.run_id, iso(env.occurred_at), e.failed_share,
                                e.reason))
        elif isinstance(e, EnvironmentRequested):
            for_repair = validation_repair(e.purpose)
            if for_repair is not None and page.envs.get(str(e.environment_id)) is None:  # the first request stays
                page.envs.put({"environment_id": str(e.environment_id), "repair_id": for_repair,
                               "requested_at": iso(env.occurred_at)})
        elif isinstance(e, EnvironmentReleased | EnvironmentExpired | EnvironmentFailed):
            end = iso(e.expired_at if isinstance(e, EnvironmentExpired) else env.occurred_at)
            self._environment_ended(page, str(e.environment_id), end)
        else:
            self._repair_event(page, e, str(rid), cid, env.occurred_at)

    def _repair_event(self, page: _Page, e: Any, rid: str, cid: str | None, occurred_at: dt.datetime) -> None:
        # The row as the page left it: never changed in place, every change puts a new dict.
        row = page.repairs.get(rid)
        if row is None:
            return  # a repair whose request this view never saw
        if isinstance(e, HealProposed):
            page.add([("strategy", e.strategy)], "proposed")
            if page.candidates.get(cid) is None:  # a candidate is written once
                page.candidates.put({"candidate_id": cid, "strategy": e.strategy, "quarantine": int(e.quarantine)})
        elif isinstance(e, HealValidated | HealRejected):
            cand = page.candidates.get(cid)
            by_strategy = [("strategy", str(cand["strategy"]))] if cand else []
            if isinstance(e, HealRejected):
                page.add([(ALL, ""), *by_strategy], "rejected")
                page.add([("rejected_reason", rejection_reason(e))], "count")
                return
            page.add(by_strategy, "validated")
            if cand is not None and cand["quarantine"] and not row["quarantined"]:
                page.add([d for d in self._dims(row) if d[0] != "strategy"], "quarantined")
                page.repairs.put({**row, "quarantined": 1})
        elif isinstance(e, HealAbandoned):
            page.add(self._dims(row), "abandoned")
            page.add([("abandoned_reason", abandon_reason(e.reason))], "count")
        elif isinstance(e, RepairCompleted):
            row = {**row, "strategy": e.strategy}
            dims = self._dims(row)
            page.add(dims, "validated_repairs")
            page.add([("strategy", e.strategy)], "completed")
            if not row["healed"]:
                page.add([d for d in dims if d[0] != "strategy"], "healed")
                row["healed"] = 1
            if row["failed_at"] is not None:
                page.add(dims, "repair_seconds", seconds_between(row["failed_at"], iso(occurred_at)))
                page.add(dims, "repair_timed")
            page.repairs.put({**row, "failed_at": None, "state": VALIDATED})
        elif isinstance(e, RepairApplied):
            if row["state"] == VALIDATED:
                page.add(self._dims(row), "applied")
                page.repairs.put({**row, "state": APPLIED})
        elif isinstance(e, RepairRejected) and row["state"] == APPLIED:
            page.add(self._dims(row), "reverted")
            page.repairs.put({**row, "state": REVERTED})

    def _failure(self, page: _Page, e: FailureDetected, rid: str, at: str) -> None:
        row = self._row(page, rid) or self._new(rid, e.project, e.category.value)
        if row["state"] == APPLIED:
            page.add(self._dims(row), "rebroken")
            row = {**row, "state": REBROKEN}
        if row["failed_at"] is None:
            row = {**row, "failed_at": at}
        page.repairs.put(row)

    def _environment_ended(self, page: _Page, env_id: str, end: str) -> None:
        found = page.envs.get(env_id)
        if found is None:
            return  # not a validation environment, or already ended
        page.envs.delete(env_id)
        row = self._row(page, found["repair_id"])
        if row is None:
            return
        spent = seconds_between(found["requested_at"], end)
        dims = [(ALL, ""), ("class", row["category"]), ("project", row["project"])]
        page.add(dims, "env_seconds", spent)
        page.add(dims, "environments")
        if row["env_seconds"] == 0.0:
            page.add(dims, "env_repairs")
        page.repairs.put({**row, "env_seconds": row["env_seconds"] + spent})

    def _count_repair(self, page: _Page, row: dict[str, Any]) -> None:
        if not row["counted"]:
            page.add([d for d in self._dims(row) if d[0] != "strategy"], "repairs")
            row["counted"] = 1

    # ------------------------------------------------------------------ rows

    @staticmethod
    def _new(rid: str, project: str, category: str) -> dict[str, Any]:
        return {"repair_id": rid, "project": project, "category": category, "strategy": None, "counted": 0,
                "healed": 0, "quarantined": 0, "unrepairable": 0, "failed_at": None, "state": "", "env_seconds": 0.0}

    @staticmethod
    def _dims(row: dict[str, Any]) -> list[tuple[str, str]]:
        dims = [(ALL, ""), ("class", row["category"]), ("project", row["project"])]
        if row["strategy"]:
            dims.append(("strategy", row["strategy"]))
        return dims

    @staticmethod
    def _row(page: _Page, rid: str) -> dict[str, Any] | None:
        """A repair's row as the page has left it so far (a copy, changed only by putting it), or None."""
        row = page.repairs.get(rid)
        return None if row is None else dict(row)

    def dump(self, tx: Tx, prefix: str) -> list[dict[str, Any]]:
        tx.execute(f"SELECT dim, key, metric, value FROM {prefix}stat_counts")
        rows = [{"kind": "count", "id": f"{r['dim']}|{r['key']}|{r['metric']}", **r} for r in tx.fetchall()]
        tx.execute(f"SELECT {', '.join(REPAIR_COLUMNS)} FROM {prefix}stat_repairs")
        rows += [{"kind": "repair", "id": r["repair_id"], **r} for r in tx.fetchall()]
        tx.execute(f"SELECT candidate_id, strategy, quarantine FROM {prefix}stat_candidates")
        rows += [{"kind": "candidate", "id": r["candidate_id"], **r} for r in tx.fetchall()]
        tx.execute(f"SELECT environment_id, repair_id, requested_at FROM {prefix}stat_envs")
        rows += [{"kind": "environment", "id": r["environment_id"], **r} for r in tx.fetchall()]
        tx.execute(f"SELECT position, project, run_id, at, failed_share, reason FROM {prefix}stat_storms")
        rows += [{"kind": "storm", "id": str(r["position"]), **r} for r in tx.fetchall()]
        return sorted(rows, key=lambda r: (r["kind"], r["id"]))


class _Page:
    """The statistics tables as a page of events leaves them (`StatisticsView.apply_many`).

    Repairs, candidates and open environments are `TableRows`. Counter additions are kept in the
    order the events make them and added to each counter's stored value in that order at `flush`,
    so a sum of seconds rounds exactly as one UPSERT per event would (whatever the page size:
    `replay --check` compares a rebuild with rows folded live).
    """

    def __init__(self, tx: Tx, prefix: str) -> None:
        self.tx, self.prefix = tx, prefix
        self.repairs = TableRows(tx, f"{prefix}stat_repairs", REPAIR_COLUMNS, ("repair_id",))
        self.candidates = TableRows(tx, f"{prefix}stat_candidates", ("candidate_id", "strategy", "quarantine"),
                                    ("candidate_id",))
        self.envs = TableRows(tx, f"{prefix}stat_envs", ("environment_id", "repair_id", "requested_at"),
                              ("environment_id",))
        self.counts = TableRows(tx, f"{prefix}stat_counts", ("dim", "key", "metric", "value"),
                                ("dim", "key", "metric"))
        self.additions: dict[tuple[str, str, str], list[float]] = {}
        self.storms: list[tuple[Any, ...]] = []

    def load(self, events: Sequence[RecordedEvent]) -> list[tuple[str | None, str | None]]:
        """Read the rows the page's events name, a few queries in all; returns the repair each event
        is about (None for storms and environments) and its candidate (None unless it is about one)."""
        about: list[tuple[str | None, str | None]] = []
        candidates: list[str] = []
        envs: list[str] = []
        repairs: list[str] = []
        for recorded in events:
            e = recorded.envelope.data
            rid: str | None = None
            cid: str | None = None
            if isinstance(e, FailureDetected | FailureUnrepairable):
                rid = str(repair_stream_id(e.project, e.fingerprint))
            elif isinstance(e, EnvironmentRequested):
                envs.append(str(e.environment_id))
                for_repair = validation_repair(e.purpose)
                if for_repair is not None:
                    repairs.append(for_repair)
            elif isinstance(e, EnvironmentReleased | EnvironmentExpired | EnvironmentFailed):
                envs.append(str(e.environment_id))
            elif not isinstance(e, StormDetected):
                rid = str(e.repair_id)
                if isinstance(e, HealProposed | HealValidated | HealRejected):
                    cid = str(e.candidate_id)
                    candidates.append(cid)
            about.append((rid, cid))
        self.envs.load((k,) for k in envs)
        repairs += [str(found["repair_id"]) for k in envs if (found := self.envs.get(k)) is not None]
        self.repairs.load((k,) for k in [*repairs, *(rid for rid, _ in about if rid is not None)])
        self.candidates.load((k,) for k in candidates)
        return about

    def add(self, dims: list[tuple[str, str]], metric: str, amount: float = 1.0) -> None:
        """Add `amount` to the counter `metric` of every dimension in `dims`."""
        for dim, key in dims:
            self.additions.setdefault((dim, key, metric), []).append(amount)

    def flush(self) -> None:
        """Write what the page changed: each table in one or two statements."""
        self.repairs.flush()
        self.candidates.flush()
        self.envs.flush()
        self.tx.executemany(
            f"INSERT INTO {self.prefix}stat_storms (position, project, run_id, at, failed_share, reason) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (position) DO NOTHING", self.storms)
        self.counts.load(self.additions)
        for (dim, key, metric), amounts in self.additions.items():
            stored = self.counts.get(dim, key, metric)
            value = None if stored is None else float(stored["value"])
            for amount in amounts:
                value = amount if value is None else value + amount
            self.counts.put({"dim": dim, "key": key, "metric": metric, "value": value})
        self.counts.flush()


# ---------------------------------------------------------------------- reading


def _rate(part: float, whole: float) -> float | None:
    return round(part / whole, 6) if whole else None


def _mean(total: float, n: float) -> float | None:
    return round(total / n, 3) if n else None


def _group(counts: dict[tuple[str, str], dict[str, float]], dim: str) -> dict[str, dict[str, float]]:
    return {key: metrics for (d, key), metrics in sorted(counts.items()) if d == dim}


def _heal_block(m: dict[str, float]) -> dict[str, Any]:
    repairs, healed = m.get("repairs", 0), m.get("healed", 0)
    return {
        "repairs": int(repairs), "healed": int(healed), "abandoned": int(m.get("abandoned", 0)),
        "unrepairable": int(m.get("unrepairable", 0)), "quarantined": int(m.get("quarantined", 0)),
        "heal_rate": _rate(healed, repairs),
    }


def _precision_block(m: dict[str, float]) -> dict[str, Any]:
    validated, applied = m.get("validated_repairs", 0), m.get("applied", 0)
    reverted, rebroken = m.get("reverted", 0), m.get("rebroken", 0)
    verified = applied - reverted - rebroken
    return {"validated": int(validated), "applied": int(applied), "reverted": int(reverted),
            "rebroken": int(rebroken), "verified": int(verified), "precision": _rate(verified, validated)}


def _time_block(m: dict[str, float]) -> dict[str, Any]:
    n = m.get("repair_timed", 0)
    return {"repairs": int(n), "mean_seconds": _mean(m.get("repair_seconds", 0), n)}


def _env_block(m: dict[str, float]) -> dict[str, Any]:
    minutes = m.get("env_seconds", 0) / 60
    repairs = m.get("env_repairs", 0)
    return {"environments": int(m.get("environments", 0)), "minutes": round(minutes, 3),
            "repairs": int(repairs), "minutes_per_repair": _mean(minutes, repairs)}


def read_statistics(db: ViewDB, prefix: str = LIVE_PREFIX) -> dict[str, Any]:
    """Every statistic from the counters, as one JSON-ready dict (see the module docstring)."""
    with db.transaction(readonly=True) as tx:
        position = tracked_positions(tx, prefix).get(StatisticsView.name, 0)
        tx.execute(f"SELECT dim, key, metric, value FROM {prefix}stat_counts")
        rows = tx.fetchall()
        tx.execute(f"SELECT position, project, run_id, at, failed_share, reason FROM {prefix}stat_storms "
                   "ORDER BY position DESC LIMIT ?", (RECENT_STORMS,))
        storms = tx.fetchall()
    return statistics_from_rows(position, rows, storms)


def statistics_from_rows(position: int, rows: list[dict[str, Any]], storms: list[dict[str, Any]]) -> dict[str, Any]:
    counts: dict[tuple[str, str], dict[str, float]] = {}
    for r in rows:
        counts.setdefault((r["dim"], r["key"]), {})[r["metric"]] = float(r["value"])
    total = counts.get((ALL, ""), {})
    by_class, by_project, by_strategy = _group(counts, "class"), _group(counts, "project"), _group(counts, "strategy")
    strategies = {}
    for name, m in by_strategy.items():
        validated, rejected = m.get("validated", 0), m.get("rejected", 0)
        strategies[name] = {
            "proposed": int(m.get("proposed", 0)), "validated": int(validated), "rejected": int(rejected),
            "completed": int(m.get("completed", 0)), "heal_rate": _rate(validated, validated + rejected),
        }
    return {
        "position": position,
        "repairs": {**_heal_block(total), "rejected_candidates": int(total.get("rejected", 0))},
        "heal_rate": {
            "by_class": {k: _heal_block(m) for k, m in by_class.items()},
            "by_strategy": strategies,
            "by_project": {k: _heal_block(m) for k, m in by_project.items()},
        },
        "verified_precision": {
            **_precision_block(total),
            "by_class": {k: _precision_block(m) for k, m in by_class.items() if m.get("validated_repairs")},
            "by_strategy": {k: _precision_block(m) for k, m in by_strategy.items() if m.get("validated_repairs")},
            "by_project": {k: _precision_block(m) for k, m in by_project.items() if m.get("validated_repairs")},
        },
        "time_to_validated_repair": {
            **_time_block(total), "by_class": {k: _time_block(m) for k, m in by_class.items() if m.get("repair_timed")},
        },
        "rejected_candidates": {
            "total": int(total.get("rejected", 0)),
            "by_reason": {k: int(m.get("count", 0)) for k, m in _group(counts, "rejected_reason").items()},
        },
        "abandoned_repairs": {
            "total": int(total.get("abandoned", 0)),
            "by_reason": {k: int(m.get("count", 0)) for k, m in _group(counts, "abandoned_reason").items()},
        },
        "storms": {
            "total": int(total.get("storms", 0)),
            "by_project": {k: int(m["storms"]) for k, m in by_project.items() if m.get("storms")},
            "recent": storms,
        },
        "environment_minutes": {
            **_env_block(total), "by_class": {k: _env_block(m) for k, m in by_class.items() if m.get("environments")},
        },
    }


class StatisticsReader:
    """`read_statistics`, remembered until the view's position moves.

    Checking the position is one small query; it is done at most every `max_age_s` seconds (the
    runner itself only looks for new events every CARS_POLL_MS), so a burst of requests is answered
    from memory, at most `max_age_s` behind the view. The counters are read again only when it moved.

    `answer()` (the event loop's way in) never makes a request wait for a check while it remembers an
    answer checked within `stale_after_s`: the first request that finds the memory older than
    `max_age_s` starts one check in a worker thread (at most one at a time) and, like every request
    until it ends, is answered from memory, at most `max_age_s` plus the check's duration behind the
    view. Only the first request, or those after `stale_after_s` without a successful check (a view
    database that does not answer), wait for the check, and see its error if it fails.
    """

    def __init__(self, db: ViewDB, prefix: str = LIVE_PREFIX, max_age_s: float = 0.05,
                 stale_after_s: float = 5.0) -> None:
        self.db = db
        self.prefix = prefix
        self.max_age_s = max_age_s
        self.stale_after_s = stale_after_s
        self._cached: tuple[int, dict[str, Any], bytes] | None = None
        self._checked_at = 0.0
        self._checking: asyncio.Task[bytes | Exception] | None = None
        self.checks = 0  # positions read: how many times the memory was older than max_age_s

    def __call__(self) -> dict[str, Any]:
        return self._current()[1]

    def encoded(self) -> bytes:
        """The statistics as compact JSON (encoded once per position). Blocking."""
        return self._current()[2]

    def recent(self) -> bytes | None:
        """The encoded statistics if the position was checked within `max_age_s`, without any I/O."""
        cached = self._cached
        if cached is not None and time.monotonic() - self._checked_at < self.max_age_s:
            return cached[2]
        return None

    async def answer(self) -> bytes:
        """The encoded statistics, checked against the view at most once per `max_age_s` for all callers
        together (call from one asyncio event loop only)."""
        if (body := self.recent()) is not None:
            return body
        checking = self._checking
        if checking is None:
            # A task of its own, not the request's: a client that goes away does not cancel it.
            checking = self._checking = asyncio.get_running_loop().create_task(self._check())
        cached = self._cached
        if cached is not None and time.monotonic() - self._checked_at < self.stale_after_s:
            return cached[2]
        found = await asyncio.shield(checking)
        if isinstance(found, Exception):
            raise found
        return found

    async def _check(self) -> bytes | Exception:
        """The check's answer, or its error (returned, not raised: no request may be waiting for it)."""
        try:
            return await anyio.to_thread.run_sync(self.encoded)
        except Exception as exc:
            log.warning("the statistics view could not be read: %s: %s", type(exc).__name__, exc)
            return exc
        finally:
            self._checking = None

    def _current(self) -> tuple[int, dict[str, Any], bytes]:
        self.checks += 1
        with self.db.transaction(readonly=True) as tx:
            tx.execute(f"SELECT position FROM {self.prefix}tracking WHERE view = ?", (StatisticsView.name,))
            found = tx.fetchone()
        position = int(found["position"]) if found else 0
        cached = self._cached
        if cached is None or cached[0] != position:
            fresh = read_statistics(self.db, self.prefix)
            cached = (int(fresh["position"]), fresh, json.dumps(fresh, separators=(",", ":")).encode())
            self._cached = cached  # one assignment: readers in other threads see the old or the new entry
        self._checked_at = time.monotonic()
        return cached


__all__ = [
    "StatisticsReader", "StatisticsView", "abandon_reason", "read_statistics", "rejection_reason",
    "statistics_from_rows", "validation_repair",
]
