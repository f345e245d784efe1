"""Rebuilding views from the log, and proving a rebuild gives the same rows (`cars replay`).

`rebuild` drops a view's tables and tracking row (never an event) and folds the log again from
position 0. `check` folds every view into scratch tables next to the live ones, at the live view's
position, and compares the rows: a view that is a deterministic function of the history shows no
difference. Run one check at a time: concurrent checks would share the scratch tables.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from attrs import frozen

from projections.db import ViewDB
from projections.runner import ProjectionRunner, tracked_positions, tracking_ddl
from projections.views import LIVE_PREFIX, SCRATCH_PREFIX, EventLog, View

Row = dict[str, Any]

#: Events per page of a rebuild: larger than the live runner's, as nobody waits for a rebuild's first
#: page and each page costs a few queries and one commit whatever its size.
REBUILD_BATCH = 5000
#: MB of view pages the rebuild's connection keeps in memory, and of log between checkpoints (`Tx.bulk`):
#: a rebuild writes every row of every view, and with SQLite's defaults it would read most pages of a
#: large view again for each page, and copy pages into the database that the next page rewrites.
REBUILD_BULK_MB = 64


@frozen(kw_only=True)
class RowChange:
    """A row present in both, with different values: column -> (live, rebuilt)."""

    key: dict[str, Any]
    columns: dict[str, tuple[Any, Any]]


@frozen(kw_only=True)
class ViewDiff:
    """How a live view differs from its rebuild at the same position."""

    view: str
    position: int
    missing: list[Row]  # in the rebuild, not in the live view
    extra: list[Row]  # in the live view, not in the rebuild
    changed: list[RowChange]

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.changed)

    def lines(self, limit: int = 20) -> list[str]:
        """Readable lines, at most `limit` rows of each kind."""
        if self.ok:
            return [f"{self.view} @ {self.position}: identical"]
        out = [
            f"{self.view} @ {self.position}: {len(self.changed)} changed, {len(self.missing)} missing, "
            f"{len(self.extra)} extra"
        ]
        for change in self.changed[:limit]:
            cols = "; ".join(f"{c}: live {lv!r}, rebuilt {rv!r}" for c, (lv, rv) in change.columns.items())
            out.append(f"  changed {_key_text(change.key)}: {cols}")
        out += [f"  missing from live {row!r}" for row in self.missing[:limit]]
        out += [f"  extra in live {row!r}" for row in self.extra[:limit]]
        hidden = sum(max(0, len(x) - limit) for x in (self.changed, self.missing, self.extra))
        if hidden:
            out.append(f"  ... and {hidden} more")
        return out


@frozen(kw_only=True)
class CheckReport:
    """The result of `check`: one ViewDiff per view."""

    views: list[ViewDiff]

    @property
    def ok(self) -> bool:
        return all(v.ok for v in self.views)

    @property
    def differences(self) -> list[ViewDiff]:
        return [v for v in self.views if not v.ok]

    def render(self, limit: int = 20) -> str:
        head = "replay check: every view matches its rebuild" if self.ok else (
            f"replay check: {len(self.differences)} of {len(self.views)} views differ from their rebuild"
        )
        return "\n".join([head, *(line for v in self.views for line in v.lines(limit))])

    def __str__(self) -> str:
        return self.render()


def rebuild(
    store: EventLog,
    db: ViewDB,
    views: Sequence[View],
    names: Iterable[str] | None = None,
    prefix: str = LIVE_PREFIX,
    batch: int = REBUILD_BATCH,
) -> dict[str, int]:
    """Drop the named views (all when `names` is None) and fold them again from position 0.

    Returns the position each rebuilt view reached. Readers see the view fill up again meanwhile.
    """
    chosen = select(views, names)
    drop(db, chosen, prefix)
    runner = ProjectionRunner(store, db, chosen, prefix=prefix, batch=batch, bulk_mb=REBUILD_BULK_MB)
    runner.catch_up()
    return runner.positions()


def check(store: EventLog, db: ViewDB, views: Sequence[View], batch: int = REBUILD_BATCH) -> CheckReport:
    """Compare every live view with a rebuild of it from position 0 at the same position.

    The live views are first caught up with the log; the scratch tables are dropped afterwards.
    """
    live = ProjectionRunner(store, db, views, prefix=LIVE_PREFIX, batch=batch)
    live.catch_up()
    # Positions and rows from one snapshot: a runner elsewhere may keep moving the live views.
    with db.transaction(readonly=True) as tx:
        positions = tracked_positions(tx, LIVE_PREFIX)
        live_rows = {v.name: v.dump(tx, LIVE_PREFIX) for v in views}
    diffs: list[ViewDiff] = []
    try:
        for view in views:
            drop(db, [view], SCRATCH_PREFIX)
            scratch = ProjectionRunner(store, db, [view], prefix=SCRATCH_PREFIX, batch=batch,
                                       bulk_mb=REBUILD_BULK_MB)
            scratch.catch_up(upto=positions[view.name])
            with db.transaction(readonly=True) as tx:
                rebuilt = view.dump(tx, SCRATCH_PREFIX)
            diffs.append(compare(view, positions[view.name], live_rows[view.name], rebuilt))
    finally:
        with db.transaction() as tx:
            tx.serialize(f"{SCRATCH_PREFIX}schema")
            for view in views:
                for table in view.table_names(SCRATCH_PREFIX):
                    tx.execute(f"DROP TABLE IF EXISTS {table}")
            tx.execute(f"DROP TABLE IF EXISTS {SCRATCH_PREFIX}tracking")
    return CheckReport(views=diffs)


def compare(view: View, position: int, live: list[Row], rebuilt: list[Row]) -> ViewDiff:
    """The rows of `live` that are missing, extra or changed relative to `rebuilt`, by `view.key`."""
    live_by_key = {_key(view, row): row for row in live}
    rebuilt_by_key = {_key(view, row): row for row in rebuilt}
    changed = []
    for k in sorted(live_by_key.keys() & rebuilt_by_key.keys(), key=repr):
        lrow, rrow = live_by_key[k], rebuilt_by_key[k]
        cols = {c: (lrow.get(c), rrow.get(c)) for c in sorted(lrow.keys() | rrow.keys())
                if lrow.get(c) != rrow.get(c)}
        if cols:
            changed.append(RowChange(key=dict(zip(view.key, k, strict=True)), columns=cols))
    return ViewDiff(
        view=view.name, position=position, changed=changed,
        missing=[rebuilt_by_key[k] for k in sorted(rebuilt_by_key.keys() - live_by_key.keys(), key=repr)],
        extra=[live_by_key[k] for k in sorted(live_by_key.keys() - rebuilt_by_key.keys(), key=repr)],
    )


def select(views: Sequence[View], names: Iterable[str] | None) -> list[View]:
    """The views called `names` (all when None); an unknown name is a ValueError."""
    if names is None:
        return list(views)
    wanted = list(names)
    known = {v.name: v for v in views}
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise ValueError(f"unknown view(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return [known[n] for n in dict.fromkeys(wanted)]


def drop(db: ViewDB, views: Sequence[View], prefix: str) -> None:
    """Drop the views' tables and tracking rows under `prefix`, in one transaction."""
    with db.transaction() as tx:
        tx.serialize(f"{prefix}schema")
        tx.execute(tracking_ddl(prefix))
        for view in views:
            # The tracking row first: on PostgreSQL this waits for a runner holding it mid-batch.
            tx.execute(f"DELETE FROM {prefix}tracking WHERE view = ?", (view.name,))
            for table in view.table_names(prefix):
                tx.execute(f"DROP TABLE IF EXISTS {table}")


def _key(view: View, row: Row) -> tuple[Any, ...]:
    return tuple(row.get(c) for c in view.key)


def _key_text(key: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in key.items())


__all__ = [
    "REBUILD_BATCH", "REBUILD_BULK_MB", "CheckReport", "RowChange", "ViewDiff", "check", "compare", "drop", "rebuild",
    "select",
]
