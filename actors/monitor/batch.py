"""The monitor's batch path: the runs of one read of the ingest stream, decided together and stored in
one transaction.

Handling a run alone costs several store round trips and a commit of its own (its project's watch,
then its run stream). Here every stream the batch touches is read once, the runs are decided in the
order they arrived (each project's watch is folded forward run by run, exactly as one-at-a-time
handling would see it), and everything decided is appended in ONE transaction: all of it is stored,
or none of it.

The outcome equals handling the runs one at a time, in order (tests/integration/test_monitor_batch.py
compares both): the same events, with the same ids (derived from each run's message id or, for the
watch, from the run), and the same idempotency (a cause already in a stream adds nothing there).

A ConcurrencyConflict (another process appended to one of the streams: a project's watch, or a run
redelivered to two consumers) re-reads and decides the batch again, a few times
(`AggregateStore.execute_many`); then it is raised, and the consumer hands the entries to the
one-at-a-time path (`router.handle`), which has its own retries per stream.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from actors.monitor import decide
from actors.monitor import history as watching
from actors.monitor.router import MonitorDeps, NotForMonitor, watch_cause
from actors.ports import Aggregates, Cause
from contracts import Envelope
from contracts.runs import RunReported


@runtime_checkable
class BatchAggregates(Aggregates, Protocol):
    """What the batch path needs of the store besides `Aggregates` (bus.aggregates.AggregateStore)."""

    def caused(self, cause: Cause, decided: Sequence[Any]) -> list[Envelope[Any]]: ...

    async def execute_many(self, stream_ids: Sequence[uuid.UUID], decide_all: DecideAll) -> list[int]: ...


# Given the histories of the streams asked for, the new events of each stream (one transaction).
DecideAll = Callable[[dict[uuid.UUID, list[Envelope[Any]]]], dict[uuid.UUID, list[Envelope[Any]]]]


class _Streams:
    """The streams a batch touches: what they held when read, and what the batch adds to each."""

    def __init__(self, histories: dict[uuid.UUID, list[Envelope[Any]]]) -> None:
        self.stored = histories
        self.added: dict[uuid.UUID, list[Envelope[Any]]] = {}

    def history(self, stream_id: uuid.UUID) -> list[Envelope[Any]]:
        return self.stored[stream_id] + self.added.get(stream_id, [])

    def handled(self, stream_id: uuid.UUID, cause: Cause) -> bool:
        cause_id = str(cause.id)
        return any(e.causation_id == cause_id for e in self.history(stream_id))

    def add(self, stream_id: uuid.UUID, events: list[Envelope[Any]]) -> None:
        if events:
            self.added.setdefault(stream_id, []).extend(events)


def plan(
    aggregates: BatchAggregates, deps: MonitorDeps,
    runs: Sequence[tuple[Envelope[Any], RunReported, decide.Assessment]],
    histories: dict[uuid.UUID, list[Envelope[Any]]],
) -> _Streams:
    """Decide every run of the batch, in order, against the histories read plus what the batch added."""
    config = deps.config
    flakiness = config.flakiness
    streams = _Streams(histories)
    watches: dict[uuid.UUID, watching.Watch] = {}
    for envelope, run, assessed in runs:
        flaky: frozenset[str] = frozenset()
        if assessed.storm is None:
            wid = watching.watch_id(run.project)
            watch = watches.get(wid)
            if watch is None:  # the first run of its project in the batch: what is stored, nothing added yet
                watch = deps.watches.fold(wid, streams.stored[wid], flakiness)
            tick = watch_cause(envelope, run)
            if not streams.handled(wid, tick):
                recorded = aggregates.caused(tick, watching.record_run(watch, run, flakiness, assessed.attempts))
                streams.add(wid, recorded)
                for event in recorded:
                    watch = watching.apply(watch, event.data, flakiness)
            watches[wid] = watch
            flaky = watch.flaky_tests()
        rid = decide.run_stream_id(run.project, run.run_id)
        if streams.handled(rid, envelope):
            continue
        state = decide.RunState(recorded=decide.fold_run(streams.history(rid)), flaky=flaky)
        streams.add(rid, aggregates.caused(envelope, decide.decide_run(state, run, config, assessed)))
    return streams


async def handle_runs(deps: MonitorDeps, envelopes: Sequence[Envelope[Any]]) -> int:
    """Decide the `run.reported` envelopes together and store what they decide in one transaction.

    Returns how many events were appended. Raises NotForMonitor for an envelope of another type (the
    consumer filters them out before), and the store's errors as they are (nothing was stored then;
    a ConcurrencyConflict after the aggregates' retries).
    """
    aggregates = deps.aggregates
    if not isinstance(aggregates, BatchAggregates):
        raise TypeError("the monitor's batch path needs `caused` and `execute_many` of its aggregates")
    runs: list[tuple[Envelope[Any], RunReported, decide.Assessment]] = []
    for envelope in envelopes:
        if not isinstance(envelope.data, RunReported):
            raise NotForMonitor(f"the monitor's batch path handles run.reported only, not {envelope.type!r}")
        runs.append((envelope, envelope.data, decide.assess(envelope.data, deps.config)))
    stream_ids: list[uuid.UUID] = []
    for _, run, _ in runs:
        stream_ids += [watching.watch_id(run.project), decide.run_stream_id(run.project, run.run_id)]

    def decide_all(histories: dict[uuid.UUID, list[Envelope[Any]]]) -> dict[uuid.UUID, list[Envelope[Any]]]:
        return plan(aggregates, deps, runs, histories).added

    return len(await aggregates.execute_many(stream_ids, decide_all))
