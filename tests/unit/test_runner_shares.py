"""How the runner hands each view its share of a page (`projections.runner._Shares`): by an index of the
page's tags instead of testing every event for every view. It must pick exactly what the plain filter
picks, "tag in the view's types and position past the view's", in log order, for any page (positions
with gaps, tags repeated or absent) and any view position, before, inside or past the page."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from bus.store import Recorded
from contracts import Envelope
from contracts.registry import HeartbeatRecorded, ServiceDeregistered, ServiceLost
from contracts.runs import StormDetected
from projections.runner import _Shares

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
KINDS = [
    HeartbeatRecorded(instance="a", at=T0),
    ServiceLost(instance="a", last_seen_at=T0, timeout_s=1.0),
    ServiceDeregistered(instance="a", reason="bye"),
    StormDetected(project="p", run_id="r", failed_share=0.5, reason="storm"),
]
TAGS = sorted({Envelope(data=k).type for k in KINDS} | {"never.in.a.page"})


@given(
    gaps=st.lists(st.integers(min_value=1, max_value=3), max_size=40),
    kinds=st.lists(st.integers(min_value=0, max_value=len(KINDS) - 1), max_size=40),
    types=st.frozensets(st.sampled_from(TAGS)),
    after=st.integers(min_value=0, max_value=130),
)
def test_a_views_share_is_what_filtering_every_event_gives(
    gaps: list[int], kinds: list[int], types: frozenset[str], after: int
) -> None:
    # Given a page of events at increasing positions with gaps, of a few kinds
    positions = [sum(gaps[:i + 1]) for i in range(len(gaps))]
    page = [Recorded(position=p, envelope=Envelope(data=KINDS[k])) for p, k in zip(positions, kinds, strict=False)]
    # When a view folding `types`, at position `after`, takes its share
    share = _Shares(page).of(types, after)
    # Then it is exactly the events the plain filter keeps, in the page's order
    assert share == [r for r in page if r.envelope.type in types and r.position > after]
