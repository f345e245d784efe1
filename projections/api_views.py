"""Query routes of the operator surface: repairs (paged, with their timeline), statistics, flaky tests,
run trends and dead letters. Appended to `projections.api.ROUTES`; import `projections.api`, not this
module (it is loaded at the end of that one).

Every route here reads views (`ApiDeps.views`) or the store, never folds history per request:
`GET /statistics` reads precomputed counters, remembered until the statistics view moves.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any

from fastapi import Path, Query, Request
from fastapi.responses import Response

import contracts
from projections.api import MAX_PAGE, ApiDeps, BadRequest, Deps, NotFound, _error, encode_json, read_views
from projections.db import ViewDB
from projections.flaky import list_flaky
from projections.heals import BadCursor, get_repair, page_repairs, repair_candidates
from projections.statistics import StatisticsReader
from projections.timeline import repair_event_positions
from projections.trends import run_trends

STATUSES = ("validating", "completed", "approved", "applied", "abandoned", "rejected", "quarantined", "unrepairable")
_ENTRY_ID = r"^(-|\d{1,20}-\d{1,20})$"
_BAD_PARAMS: dict[int | str, dict[str, Any]] = {422: _error("A query or path parameter is invalid.")}


def _views(deps: ApiDeps) -> ViewDB:
    if deps.views is None:
        raise NotFound("not found", ["this process serves no views @ $.path"])
    return deps.views


# ----------------------------------------------------------------------------- repairs


async def repairs(
    request: Request,
    deps: Deps,
    project: Annotated[str | None, Query(max_length=512, description="Only this project's repairs.")] = None,
    status: Annotated[str | None, Query(description=f"Only repairs in this status ({', '.join(STATUSES)}).")] = None,
    category: Annotated[str | None, Query(alias="class", description="Only this failure class.")] = None,
    strategy: Annotated[str | None, Query(max_length=512, description="Only repairs with a candidate of this "
                                          "strategy.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="At most this many repairs.")] = 100,
    cursor: Annotated[str | None, Query(max_length=32, description="The `next` of the previous page.")] = None,
    offset: Annotated[int, Query(ge=0, description="Skip this many repairs (instead of a cursor).")] = 0,
) -> Response:
    """Repairs, newest change first (the heals view), one page at a time: follow `next` as `cursor`."""
    if status is not None and status not in STATUSES:
        known = ", ".join(STATUSES)
        raise BadRequest("invalid request", [f"unknown status {status!r}; known: {known} @ $.query.status"])
    if cursor and offset:
        raise BadRequest("invalid request", ["give a cursor or an offset, not both @ $.query.cursor"])
    db = _views(deps)
    try:
        # Encoded in the worker thread too: a page of 100 repairs is ~60 kB of JSON, kept off the event loop.
        return Response(await read_views(request, lambda: encode_json(page_repairs(
            db, project=project, status=status, category=category, strategy=strategy, limit=limit, cursor=cursor,
            offset=offset))), media_type="application/json")
    except BadCursor as exc:
        raise BadRequest("invalid request", [f"{exc} @ $.query.cursor"]) from None


def _timeline(deps: ApiDeps, db: ViewDB, rid: str) -> tuple[list[dict[str, Any]], int]:
    """The repair's events (newest MAX_TIMELINE), read from the store by position, oldest first."""
    positions, total = repair_event_positions(db, rid)
    events = []
    for position, tag in positions:
        found = [r for r in deps.read_events(position - 1, 1, [tag]) if r.position == position]
        events += [{"position": r.position, **contracts.encode(r.envelope)} for r in found]
    return events, total


def _detail(deps: ApiDeps, db: ViewDB, rid: str) -> dict[str, Any] | None:
    row = get_repair(db, rid)
    timeline, total = _timeline(deps, db, rid)
    if row is None and not timeline:
        return None
    candidates = {c["candidate_id"]: {**c, "patch": None, "explanation": "", "needs_approval": False,
                                      "evidence": None, "environment_id": None}
                  for c in repair_candidates(db, rid)}
    failure: dict[str, Any] | None = None
    for event in timeline:
        data = event["data"]
        if event["type"] in ("heal.requested", "failure.detected"):
            failure = {k: data.get(k) for k in ("test_id", "fingerprint", "category", "reason", "evidence",
                                                "run_id", "commit")}
        cand = candidates.get(str(data.get("candidate_id")))
        if cand is None:
            continue
        if event["type"] == "heal.proposed":
            cand.update(patch=data["patch"], explanation=data.get("explanation", ""),
                        needs_approval=data.get("needs_approval", False))
        elif event["type"] in ("heal.validated", "heal.rejected"):
            cand.update(evidence=data.get("evidence"), environment_id=data.get("environment_id"))
    return {
        **(row or {"repair_id": rid}),
        "failure": failure,
        "candidates": list(candidates.values()),
        "timeline": timeline,
        "timeline_total": total,
        "timeline_truncated": total > len(timeline),
    }


async def repair(request: Request, deps: Deps,
                 repair_id: Annotated[uuid.UUID, Path(description="The repair id.")]) -> dict[str, Any]:
    """One repair: its state, the failure and its evidence, every candidate with its confidence, rank,
    patch, verdict and validation evidence, and the timeline of every event of the repair and its
    failure (failures, decisions, validation environments), oldest first, with their log positions."""
    db = _views(deps)
    detail = await read_views(request, lambda: _detail(deps, db, str(repair_id)))
    if detail is None:
        raise NotFound("not found", [f"no repair {repair_id} @ $.path.repair_id"])
    return detail


# ----------------------------------------------------------------------------- statistics


def _statistics_reader(request: Request, db: ViewDB) -> StatisticsReader:
    """The app's one reader (made on first use; only the event loop's thread gets here)."""
    state = request.app.state
    reader: StatisticsReader | None = getattr(state, "statistics_reader", None)
    if reader is None or reader.db is not db:
        reader = StatisticsReader(db)
        state.statistics_reader = reader
    return reader


async def statistics(request: Request) -> Response:
    """Heal rate by class, strategy and project; verified precision; mean time from failure to
    validated repair; rejected candidates and abandoned repairs grouped by reason; infrastructure
    storms; environment minutes per repair. Precomputed by the statistics view; the README defines each."""
    deps: ApiDeps = request.app.state.deps
    reader = _statistics_reader(request, _views(deps))
    body = reader.recent() or await reader.answer()
    return Response(body, media_type="application/json")


# ----------------------------------------------------------------------------- tests, runs, dead letters


async def flaky_tests(
    request: Request,
    deps: Deps,
    project: Annotated[str | None, Query(max_length=512, description="Only this project's tests.")] = None,
    current: Annotated[bool, Query(description="Only tests flaky or quarantined now (default: ever).")] = False,
) -> dict[str, Any]:
    """Tests CARS has judged flaky: the monitor's flip rate, the last flips, and the quarantine state
    (none, validated, applied) and since when."""
    db = _views(deps)
    rows = await read_views(request, lambda: list_flaky(db, project=project, current=current))
    return {"tests": rows}


async def runs_trends(
    request: Request,
    deps: Deps,
    project: Annotated[str | None, Query(max_length=512, description="Only this project.")] = None,
    since: Annotated[dt.date | None, Query(description="First day (YYYY-MM-DD, UTC).")] = None,
    until: Annotated[dt.date | None, Query(description="Last day (YYYY-MM-DD, UTC).")] = None,
) -> dict[str, Any]:
    """Per-project trends: runs, tests passed/failed/skipped, failing runs and storms per UTC day,
    totals with the pass rate, and the latest run."""
    if since and until and since > until:
        raise BadRequest("invalid request", [f"since {since} is after until {until} @ $.query.since"])
    db = _views(deps)
    return await read_views(request, lambda: run_trends(
        db, project=project, since=since.isoformat() if since else None,
        until=until.isoformat() if until else None))


async def dead_letters(
    deps: Deps,
    after: Annotated[str, Query(pattern=_ENTRY_ID, description="Entries after this DLQ entry id (`-`: from the "
                                "start).")] = "-",
    count: Annotated[int, Query(ge=1, le=MAX_PAGE, description="At most this many.")] = 100,
) -> dict[str, Any]:
    """Dead letters (the `cars.dlq` stream), oldest first: each with its reason, origin stream and
    group, original entry id, deliveries and the message as received. Follow `next` as `after`."""
    if deps.dead_letters is None:
        raise NotFound("not found", ["this process serves no dead letters @ $.path"])
    letters, total = await deps.dead_letters(after, count)
    return {"dead_letters": letters, "total": total,
            "next": letters[-1]["id"] if len(letters) == count else None}


ROUTES: list[dict[str, Any]] = [
    {"path": "/repairs", "endpoint": repairs, "methods": ["GET"], "tags": ["queries"], "summary": "List repairs",
     "responses": {200: {"description": "A page of repairs and the cursor of the next (`next`, null on the last).",
                         "content": {"application/json": {"schema": {"type": "object"}}}},
                   400: _error("An unknown status, a foreign cursor, or both cursor and offset."), **_BAD_PARAMS}},
    {"path": "/repairs/{repair_id}", "endpoint": repair, "methods": ["GET"], "tags": ["queries"],
     "summary": "One repair: candidates, patch, evidence and timeline",
     "responses": {404: _error("No such repair."), **_BAD_PARAMS}},
    {"path": "/statistics", "endpoint": statistics, "methods": ["GET"], "tags": ["queries"],
     "summary": "Heal rates, verified precision, time to repair, rejections, storms, environment time",
     "responses": {200: {"description": "The statistics.", "content": {"application/json": {}}}}},
    {"path": "/tests/flaky", "endpoint": flaky_tests, "methods": ["GET"], "tags": ["queries"],
     "summary": "Flaky tests and their quarantine"},
    {"path": "/runs", "endpoint": runs_trends, "methods": ["GET"], "tags": ["queries"],
     "summary": "Per-project run trends", "responses": {400: _error("since is after until."), **_BAD_PARAMS}},
    {"path": "/dlq", "endpoint": dead_letters, "methods": ["GET"], "tags": ["queries"],
     "summary": "Dead letters with their reasons", "responses": _BAD_PARAMS},
]


__all__ = ["ROUTES", "STATUSES"]
