"""The catch-up runner: folds the notification log into the views, with tracking.

Each view has a tracking row, `<prefix>tracking(view, position)`: every event up to `position` has
been folded into it. A batch's rows and the new position commit in one transaction, so a crash
repeats a batch and never half-applies one (STYLE rule 15). Events a view does not fold still move
its position, so `position == store.max_position()` means "caught up" even when the newest events
are of other types.

The views share their reads: the runner reads one page of the log for all the views behind (only the
types one of them folds, so the store skips the rest without decoding it), decodes each event once,
and gives each view its share of the page (`views.fold`: a view with `apply_many` folds the page in
memory and writes each row once), all the views of a page in one transaction: one commit per page,
and every view's rows and position of that page commit together.

The runner polls (SQLite has no LISTEN/NOTIFY). The store and the databases block, so the async
`run` loop does its work in a worker thread.
"""

from __future__ import annotations

import logging
import re
import time
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from itertools import chain

import anyio
import anyio.to_thread

from projections.db import Tx, ViewDB
from projections.views import LIVE_PREFIX, EventLog, RecordedEvent, View, fold

log = logging.getLogger(__name__)

_PREFIX = re.compile(r"[a-z_][a-z0-9_]*")


class ProjectionRunner:
    """Keeps `views` in `db` up to date with the event log `store`.

    `store` is anything with `read(after, limit, types)` and `max_position()` (`bus.store.EventStore`).
    """

    def __init__(
        self,
        store: EventLog,
        db: ViewDB,
        views: Sequence[View],
        prefix: str = LIVE_PREFIX,
        batch: int = 1000,
        bulk_mb: int | None = None,
    ) -> None:
        if not _PREFIX.fullmatch(prefix):
            raise ValueError(f"table prefix {prefix!r}: use lower-case letters, digits and _")
        names = [v.name for v in views]
        if len(set(names)) != len(names):
            raise ValueError(f"view names must be unique: {names}")
        if batch < 1:
            raise ValueError(f"batch={batch}: must be at least 1")
        self.store = store
        self.db = db
        self.views = list(views)
        self.prefix = prefix
        self.batch = batch
        self.bulk_mb = bulk_mb  # memory for the connections that fold (`Tx.bulk`); None: the defaults
        self._ready = False

    @property
    def tracking_table(self) -> str:
        return f"{self.prefix}tracking"

    def setup(self) -> None:
        """Create the tracking table, the views' tables and their tracking rows (idempotent)."""
        with self.db.transaction() as tx:
            tx.serialize(f"{self.prefix}schema")
            tx.execute(tracking_ddl(self.prefix))
            for view in self.views:
                for ddl in view.tables(self.prefix):
                    tx.execute(ddl)
                tx.execute(
                    f"INSERT INTO {self.tracking_table} (view, position) VALUES (?, 0) "
                    "ON CONFLICT (view) DO NOTHING",
                    (view.name,),
                )
        self._ready = True

    def positions(self) -> dict[str, int]:
        """The tracked position of each view (0 for a view never run)."""
        tracked = self._tracked()
        return {v.name: tracked.get(v.name, 0) for v in self.views}

    def position(self) -> int:
        """The position every view has reached: the lowest of them."""
        return min(self.positions().values(), default=0)

    def catch_up(self, upto: int | None = None) -> int:
        """Fold every event up to the log's current end (or `upto`) into every view.

        Returns the number of events applied. Events appended meanwhile wait for the next call.
        """
        if not self._ready:
            self.setup()
        head = self.store.max_position()
        if upto is not None:
            head = min(head, upto)
        tracked = self._tracked()
        positions = {v.name: tracked[v.name] if v.name in tracked else self._ensure_tracked(v) for v in self.views}
        applied = 0
        while True:
            behind = [v for v in self.views if positions[v.name] < head]
            if not behind:
                return applied
            start = min(positions[v.name] for v in behind)
            types = sorted(set().union(*(v.types for v in behind)))
            # One read for every view behind, of the types they fold: the store skips the others.
            page = self.store.read(after=start, limit=self.batch, types=types) if types else []
            # A short page, or one reaching past `head`, holds every wanted event up to `head`: the
            # views may then jump to `head` over the events of other types (and over gaps). This holds
            # because every event up to max_position() is already visible: SQLite has one writer, and
            # eventsourcing's PostgreSQL recorder commits inserts in position order.
            end = head if len(page) < self.batch or page[-1].position >= head else page[-1].position
            applied += self._fold_page(behind, page, positions, end)

    def _fold_page(
        self, behind: Sequence[View], page: Sequence[RecordedEvent], positions: dict[str, int], end: int
    ) -> int:
        """Fold the events of `page` up to `end` into every view of `behind` after its position, and move
        them to `end`: all in ONE transaction, so the page's rows and positions commit together."""
        share = _Shares([r for r in page if r.position <= end])
        applied = 0
        moved: list[View] = []
        with self.db.transaction() as tx:
            if self.bulk_mb is not None:
                tx.bulk(self.bulk_mb)
            # Views in name order: each one's compare-and-set comes before its fold, so two runners lock
            # the tracking rows in the same order on PostgreSQL and never deadlock.
            for view in sorted(behind, key=lambda v: v.name):
                position = positions[view.name]
                if position >= end:
                    continue
                if not self._advance(tx, view.name, position, end):
                    moved.append(view)
                    continue
                events = share.of(view.types, position)
                fold(view, tx, events, self.prefix)
                applied += len(events)
        for view in behind:
            if view in moved:
                # Another runner or a rebuild moved this view since we read its position.
                log.debug("view %s moved under runner %s; rereading its position", view.name, self.prefix)
                positions[view.name] = self._ensure_tracked(view)
            elif positions[view.name] < end:
                positions[view.name] = end
        return applied

    async def run(self, stop: anyio.Event | None = None, poll_s: float = 0.05) -> None:
        """Catch up, then poll every `poll_s` seconds, until `stop` is set (or forever).

        A failing fold or database error ends the loop with that error: the views stay consistent
        at their last committed batch, and the caller decides whether to restart.
        """
        while stop is None or not stop.is_set():
            applied = await anyio.to_thread.run_sync(self.catch_up)
            if applied:
                continue  # more may have arrived while this batch ran
            if stop is None:
                await anyio.sleep(poll_s)
            else:
                with anyio.move_on_after(poll_s):
                    await stop.wait()

    def wait_for(self, position: int, timeout: float = 5.0, poll_s: float = 0.01) -> None:
        """Block until every view has folded the log up to `position` (read-your-writes).

        Raises TimeoutError after `timeout` seconds. Something else (`run`, `catch_up`) must be
        moving the views; this only watches.
        """
        deadline = time.monotonic() + timeout
        while True:
            reached = self.position()
            if reached >= position:
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"views reached position {reached}, not {position}, within {timeout}s")
            time.sleep(poll_s)

    def _advance(self, tx: Tx, name: str, expected: int, position: int) -> bool:
        # Compare-and-set, first in the transaction: on PostgreSQL it also locks the tracking row,
        # so two runners never fold the same batch into one view.
        tx.execute(
            f"UPDATE {self.tracking_table} SET position = ? WHERE view = ? AND position = ?",
            (position, name, expected),
        )
        return tx.rowcount == 1

    def _tracked(self) -> dict[str, int]:
        with self.db.transaction(readonly=True) as tx:
            return tracked_positions(tx, self.prefix)

    def _ensure_tracked(self, view: View) -> int:
        """The view's position, recreating its tracking row at 0 when it was deleted from outside."""
        position = self._tracked().get(view.name)
        if position is None:
            self.setup()
            position = self._tracked().get(view.name, 0)
        return position


class _Shares:
    """A page's events indexed by wire tag, to hand each view its share without testing every event."""

    def __init__(self, events: Sequence[RecordedEvent]) -> None:
        self.events = events
        self.positions = [r.position for r in events]
        self.by_tag: dict[str, list[int]] = {}
        for i, r in enumerate(events):
            self.by_tag.setdefault(r.envelope.type, []).append(i)

    def of(self, types: frozenset[str], after: int) -> list[RecordedEvent]:
        """The events whose tags are in `types` and whose positions are past `after`, in log order."""
        by_tag = self.by_tag
        picked = sorted(chain.from_iterable(by_tag[t] for t in types if t in by_tag))
        first = bisect_right(self.positions, after)  # the index of the first event past `after`
        if first:
            picked = picked[bisect_left(picked, first):]
        events = self.events
        return [events[i] for i in picked]


def tracking_ddl(prefix: str) -> str:
    """The tracking table under `prefix`: one row per view, the position it has folded up to."""
    return f"CREATE TABLE IF NOT EXISTS {prefix}tracking (view TEXT PRIMARY KEY, position BIGINT NOT NULL)"


def tracked_positions(tx: Tx, prefix: str) -> dict[str, int]:
    """Every tracking row under `prefix`: view name -> position."""
    tx.execute(f"SELECT view, position FROM {prefix}tracking")
    return {row["view"]: int(row["position"]) for row in tx.fetchall()}


__all__ = ["ProjectionRunner", "tracked_positions", "tracking_ddl"]
