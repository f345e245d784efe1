"""What a view is, and what the projections need from the event store.

A view is a deterministic fold of the notification log into tables (STYLE rule 15): the same history
always gives the same rows. So a fold never reads the clock or anything outside the event it is
given; times come from the events (`envelope.occurred_at` or a field of the event).

Projections may import only `contracts` (DESIGN.md), so the event store is described here by the
two methods the runner uses, `EventLog`; `bus.store.EventStore` satisfies it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, Protocol

from contracts import Envelope
from projections.db import Tx

LIVE_PREFIX = "cars_v_"
SCRATCH_PREFIX = "cars_scratch_"


class RecordedEvent(Protocol):
    """An envelope with its position in the notification log (`bus.store.Recorded`)."""

    @property
    def position(self) -> int: ...

    @property
    def envelope(self) -> Envelope[Any]: ...


class EventLog(Protocol):
    """The read side of the event store. Positions increase but may have gaps (PostgreSQL)."""

    def read(self, after: int = 0, limit: int = 500, types: Sequence[str] = ()) -> Sequence[RecordedEvent]:
        """Events after position `after`, oldest first; only tags in `types` unless it is empty."""
        ...

    def max_position(self) -> int:
        """The position of the newest event, 0 when the log is empty."""
        ...


class View(Protocol):
    """A query view: tables plus a fold of the events whose wire tags are in `types`.

    Table names are `<prefix><table>`, so the same view can be built live (`cars_v_`) and in
    scratch tables (`cars_scratch_`) for `cars replay --check`.
    """

    #: Unique, stable name; the key of the view's tracking row.
    name: str
    #: Wire tags this view folds. Other events are not given to `apply` (but still advance it).
    types: frozenset[str]
    #: Columns of a `dump()` row that identify it (used to report changed rows).
    key: tuple[str, ...]

    def tables(self, prefix: str) -> list[str]:
        """Portable DDL (`CREATE TABLE IF NOT EXISTS ...`, indexes) of the view's tables."""
        ...

    def table_names(self, prefix: str) -> list[str]:
        """The names of the tables `tables(prefix)` creates (dropped by a rebuild)."""
        ...

    def apply(self, tx: Tx, recorded: RecordedEvent, prefix: str) -> None:
        """Fold one event into the tables, inside the runner's transaction.

        A view may also have `apply_many(tx, events, prefix)`, which folds a page of events (each of
        `types`, in log order) at once, reading and writing each row once (`projections.rows`). It
        must leave exactly the rows that `apply` on each event in turn leaves; the runner uses it
        when it is there (`fold`).
        """
        ...

    def dump(self, tx: Tx, prefix: str) -> list[dict[str, Any]]:
        """Every row, in a deterministic order: what `replay --check` compares."""
        ...


def fold(view: View, tx: Tx, events: Sequence[RecordedEvent], prefix: str) -> None:
    """Fold a page of `events` into `view`: with its `apply_many` when it has one, else one by one."""
    many = getattr(view, "apply_many", None)
    if many is not None:
        many(tx, events, prefix)
        return
    for recorded in events:
        view.apply(tx, recorded, prefix)


def iso(moment: dt.datetime) -> str:
    """A timestamp as stored in views: UTC, ISO 8601 with microseconds, so text order is time order."""
    return moment.astimezone(dt.UTC).isoformat(timespec="microseconds")


def default_views() -> list[View]:
    """Every view CARS maintains: the one list the runtime, the API and `cars replay` use."""
    # Imported here: the view modules import this one for the protocol and helpers.
    from projections.environments import EnvironmentsView
    from projections.flaky import FlakyTestsView
    from projections.heals import HealsView
    from projections.services import ServicesView
    from projections.statistics import StatisticsView
    from projections.templates import TemplatesView
    from projections.timeline import RepairTimelineView
    from projections.trends import RunTrendsView

    return [ServicesView(), HealsView(), StatisticsView(), RepairTimelineView(), FlakyTestsView(), RunTrendsView(),
            TemplatesView(), EnvironmentsView()]


__all__ = [
    "LIVE_PREFIX", "SCRATCH_PREFIX", "EventLog", "RecordedEvent", "View", "default_views", "fold", "iso",
]
