"""The monitor's batch path on the ingest stream: real Redis, a real SQLite store.

- Deciding runs together (`actors.monitor.batch.handle_runs`) stores exactly what handling them one at
  a time (`actors.monitor.router.handle`) stores: the same events with the same ids in every stream,
  flakiness included, whatever the batches are cut into.
- Through the consumer (`bus.consumer.subscribe` with `handle_batch` + `BatchReader`, as `cars up` wires it): in one
  read, a malformed entry is dead-lettered, a rejected one too, a run already stored adds nothing,
  the others are stored, and all of them are acknowledged; a store that refuses writes leaves every
  entry pending with its error, and the reclaim path stores them once the store is back.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
from faststream.redis import RedisBroker, RedisRouter
from redis.asyncio import Redis

import contracts
from actors.errors import Rejected
from actors.monitor import batch, history
from actors.monitor import router as monitor
from bus import streams, wire
from bus.aggregates import AggregateStore
from bus.consumer import BatchReader, ConsumerConfig, ConsumerGroupGone, StreamConsumer, run_readers, subscribe
from bus.store import EventStore
from contracts import Envelope, natural_id
from contracts.failures import FailureDetected, FlakinessChanged
from contracts.runs import RunRecorded, RunReported
from contracts.values import FailureClass, FailureEvidence, Outcome, TestResult
from tests.integration import waiting

T0 = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)
TIMEOUT_S = 20.0
RENAMED = FailureEvidence(exception_type="AttributeError", message="module 'cart' has no attribute 'total_price'",
                          file="tests/test_cart.py", line=12, failing_frame="test_total")
POISON = "poison"  # the run id the rejecting handler below refuses


def store_at(path: Path, **extra: str) -> EventStore:
    return EventStore({"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(path), **extra})


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EventStore]:
    s = store_at(tmp_path / "events.sqlite", SQLITE_LOCK_TIMEOUT="1")
    yield s
    s.close()


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Redis]:
    c = Redis.from_url(redis_url)
    yield c
    await c.aclose()


def deps_on(store: EventStore) -> monitor.MonitorDeps:
    clock = lambda: T0  # noqa: E731

    async def no_report(run: RunReported) -> None:
        raise AssertionError("the ingest path reports nothing")

    return monitor.MonitorDeps(aggregates=AggregateStore(store, clock), clock=clock, report=no_report)


def result(name: str, outcome: Outcome) -> TestResult:
    failed = outcome in (Outcome.FAILED, Outcome.ERROR)
    return TestResult(test_id=f"tests/test_cart.py::{name}", outcome=outcome, evidence=RENAMED if failed else None)


def run(project: str, run_id: str, commit: str, **outcomes: Outcome) -> Envelope[Any]:
    """A run of `project`: the named outcomes among six passing tests (never a storm)."""
    results = [result(name, o) for name, o in outcomes.items()]
    results += [result(f"ok{i}", Outcome.PASSED) for i in range(6)]
    return Envelope(data=RunReported(project=project, run_id=run_id, commit=commit, results=tuple(results),
                                     repo_path=f"/repos/{project}", source="ci"),
                    correlation_id=run_id)


F, P = Outcome.FAILED, Outcome.PASSED


def flapping_runs() -> list[Envelope[Any]]:
    """Runs of two projects, interleaved: `total` flips on every run of shop (flaky by flip rate, then
    failing as flaky), `tax` fails then passes on one commit of shop (flaky by commit), and `stock`
    of depot breaks once and stays broken (never flaky)."""
    shop = [F, P, F, P, F, P, F, F]
    envelopes = []
    for i, outcome in enumerate(shop):
        tax = {"tax": F if i == 2 else P} if i in (2, 3) else {}
        envelopes.append(run("shop", f"s{i}", f"c{i}" if i != 3 else "c2", total=outcome, **tax))
        envelopes.append(run("depot", f"d{i}", f"c{i}", stock=F if i >= 1 else P))
    # the same run reported again under a new message id, and a redelivery of the same message
    envelopes.append(run("shop", "s1", "c1", total=P))
    envelopes.append(envelopes[4])
    return envelopes


def streams_of(store: EventStore, envelopes: Sequence[Envelope[Any]]) -> dict[uuid.UUID, list[tuple[Any, ...]]]:
    """Every stream the runs touch, as (id, type, data, causation, correlation) per event."""
    ids: dict[uuid.UUID, None] = {}
    for envelope in envelopes:
        data = envelope.data
        ids[history.watch_id(data.project)] = None
        ids[natural_id("run", data.project, data.run_id)] = None
    return {sid: [(e.id, e.type, e.data, e.causation_id, e.correlation_id, e.stream_version)
                  for e in store.load(sid)] for sid in ids}


@pytest.mark.parametrize("cut", [1, 3, 100], ids=["batches-of-1", "batches-of-3", "one-batch"])
async def test_deciding_runs_together_stores_what_one_at_a_time_stores(tmp_path: Path, cut: int) -> None:
    # Given the same runs, handled one at a time on one store and in batches on another
    envelopes = flapping_runs()
    alone, together = store_at(tmp_path / "alone.sqlite"), store_at(tmp_path / "together.sqlite")
    try:
        one_by_one = deps_on(alone)
        for envelope in envelopes:
            await monitor.handle(one_by_one, envelope)
        batched = deps_on(together)
        for i in range(0, len(envelopes), cut):
            await batch.handle_runs(batched, envelopes[i:i + cut])

        # Then every stream holds the same events, with the same ids, causes and versions
        expected, got = streams_of(alone, envelopes), streams_of(together, envelopes)
        assert got == expected
        # (and the runs did what they should: flakiness found both ways, flaky failures detected, the
        # repeated run and the redelivery added nothing)
        watch = [e[2] for e in expected[history.watch_id("shop")]]
        flagged = [(e.test_id.rsplit("::")[1], e.flaky) for e in watch if isinstance(e, FlakinessChanged)]
        assert ("total", True) in flagged and ("tax", True) in flagged
        assert not any(isinstance(e[2], FlakinessChanged) for e in expected[history.watch_id("depot")])
        last = [e[2] for e in expected[natural_id("run", "shop", "s7")]]
        assert [type(e) for e in last] == [RunRecorded, FailureDetected]
        assert last[1].category is FailureClass.FLAKY
        assert len(expected[natural_id("run", "shop", "s1")]) == 1  # run.recorded once
        assert alone.max_position() == together.max_position()
    finally:
        alone.close()
        together.close()


async def test_a_batch_is_one_transaction(store: EventStore) -> None:
    # Given three runs of two projects
    envelopes = [run("shop", "r1", "c1", total=F), run("depot", "r2", "c1", stock=F), run("shop", "r3", "c2", total=F)]
    before = store.max_position()
    # When they are handled together
    appended = await batch.handle_runs(deps_on(store), envelopes)
    # Then their events are contiguous in the log, written by one insert (positions without a gap),
    # and a second delivery of the whole batch adds nothing
    positions = [r.position for r in store.read(after=before, limit=100)]
    assert appended == len(positions) == 3 * (1 + 2)  # per run: its watch's outcomes, run.recorded, failure.detected
    assert positions == list(range(positions[0], positions[0] + len(positions)))
    assert await batch.handle_runs(deps_on(store), envelopes) == 0
    assert store.max_position() == positions[-1]


# -- through the consumer, with real Redis ------------------------------------------------------------

LIMIT = 64_000  # bytes: a message limit the test's runs are well within


def config(**overrides: Any) -> ConsumerConfig:
    values: dict[str, Any] = {"consumer": f"test-{uuid.uuid4().hex[:8]}", "reclaim_idle_ms": 300,
                              "max_deliveries": 50, "max_message_bytes": 1 << 20, "maxlen": 10_000,
                              "polling_ms": 50, "batch_records": 50}
    values.update(overrides)
    return ConsumerConfig(**values)


def rejecting(
    inner: Callable[[Any, Any], Awaitable[Any]], deps: monitor.MonitorDeps,
) -> Callable[[Any], Awaitable[Any]]:
    """The real handler (one envelope, or a batch of them), except that a run named POISON is refused
    as if it could never be carried out: a stand-in for a monitor rule that rejects input."""

    async def handle(arg: Any) -> Any:
        envelopes = arg if isinstance(arg, list) else [arg]
        if any(e.data.run_id == POISON for e in envelopes):
            raise Rejected(f"run {POISON!r} cannot be monitored")
        return await inner(deps, arg)

    return handle


@contextlib.asynccontextmanager
async def running_ingest(redis_url: str, store: EventStore, cfg: ConsumerConfig) -> AsyncIterator[
        tuple[StreamConsumer, BatchReader]]:
    """The monitor on cars.ingest, wired as `cars up` wires it (bus.runtime.Platform.build_router)."""
    deps = deps_on(store)
    broker = RedisBroker(redis_url, logger=None)
    router = RedisRouter()
    client: Redis | None = None

    async def redis() -> Redis:
        assert client is not None
        return client

    consumer, reader = subscribe(
        router, client=redis, stream=streams.INGEST, group=monitor.ROLE,
        handler=rejecting(monitor.handle, deps), handle_batch=rejecting(batch.handle_runs, deps),
        accepts=monitor.INGEST_ACCEPTS, config=cfg, title=monitor.ROLE,
    )
    broker.include_router(router)
    client = await broker.connect()
    await broker.start()
    try:
        async with run_readers([reader]):
            yield consumer, reader
    finally:
        with anyio.CancelScope(shield=True):
            await broker.stop()


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    await waiting.eventually(check, what, timeout_s=TIMEOUT_S)


def entry(envelope: Envelope[Any]) -> dict[str, str]:
    return {streams.MESSAGE_FIELD: contracts.dumps(envelope)}


async def pending(client: Redis) -> int:
    return int((await client.xpending(streams.INGEST, monitor.ROLE))["pending"])


async def dead_letters(client: Redis) -> dict[str, str]:
    """Original entry id -> reason, of every dead letter."""
    return {wire.text(f[b"original_id"]): wire.text(f[b"reason"]) for _, f in await client.xrange(streams.DLQ)}


async def test_one_read_with_malformed_rejected_duplicate_and_valid_runs(
    redis_url: str, client: Redis, store: EventStore,
) -> None:
    # Given a run already stored, and the monitor's group on cars.ingest with entries waiting: the
    # reader's first read takes one entry, the next read all the others together
    stored = run("shop", "r0", "c0", total=F)
    await batch.handle_runs(deps_on(store), [stored])
    await client.xgroup_create(streams.INGEST, monitor.ROLE, id="0", mkstream=True)
    await client.xadd(streams.INGEST, entry(run("depot", "d0", "c0", stock=F)))  # type: ignore[arg-type]
    valid = [run("shop", f"r{i}", f"c{i}", total=F if i % 2 else P) for i in range(1, 5)]
    ids = {
        "malformed": await client.xadd(streams.INGEST, {streams.MESSAGE_FIELD: "{not JSON"}),
        "oversized": await client.xadd(streams.INGEST, {
            streams.MESSAGE_FIELD: '{"type": "run.reported", "pad": "' + "x" * LIMIT + '"}'}),
        "v1": await client.xadd(streams.INGEST, entry(valid[0])),  # type: ignore[arg-type]
        "rejected": await client.xadd(streams.INGEST, entry(run("shop", POISON, "c9", total=F))),  # type: ignore[arg-type]
        "v2": await client.xadd(streams.INGEST, entry(valid[1])),  # type: ignore[arg-type]
        "duplicate": await client.xadd(streams.INGEST, entry(stored)),  # type: ignore[arg-type]
        "v3": await client.xadd(streams.INGEST, entry(valid[2])),  # type: ignore[arg-type]
        "v4": await client.xadd(streams.INGEST, entry(valid[3])),  # type: ignore[arg-type]
    }
    position = store.max_position()

    # When the monitor reads them
    cfg = config(reclaim_idle_ms=30_000, max_message_bytes=LIMIT)
    async with running_ingest(redis_url, store, cfg) as (consumer, reader):
        async def drained() -> bool:
            info = await client.xinfo_groups(streams.INGEST)
            return await pending(client) == 0 and wire.text(info[0]["last-delivered-id"]) == wire.text(ids["v4"])

        await eventually(drained, "every entry read and acknowledged")

    # Then the malformed, the oversized and the rejected entries are dead letters with their reasons ...
    letters = await dead_letters(client)
    assert set(letters) == {wire.text(ids[k]) for k in ("malformed", "oversized", "rejected")}
    assert letters[wire.text(ids["malformed"])].startswith("invalid message: not valid JSON")
    assert f"the limit is {LIMIT}" in letters[wire.text(ids["oversized"])]
    assert letters[wire.text(ids["rejected"])] == f"rejected: run {POISON!r} cannot be monitored"
    # ... every valid run is stored once, the duplicate added nothing, the rejected run nothing
    for envelope in [*valid, stored]:
        events = store.load(natural_id("run", "shop", envelope.data.run_id))
        assert [type(e.data) for e in events][:1] == [RunRecorded]
        assert sum(isinstance(e.data, RunRecorded) for e in events) == 1
    assert store.load(natural_id("run", "shop", POISON)) == []
    assert store.load(natural_id("run", "depot", "d0"))
    assert consumer.processed == 6 and consumer.dead_lettered == 3
    # (the first entry came alone, the rest in one read; with a rejected run in it, that batch was
    # handled one entry at a time, each with its own outcome)
    assert reader.batches == 2
    # ... and the watch of shop recorded each valid run once, in order
    watched = [e.data.run_id for e in store.load(history.watch_id("shop")) if e.type == "test.outcomes_recorded"]
    assert watched == ["r0", "r1", "r2", "r3", "r4"]
    assert store.max_position() > position


async def test_a_batch_of_valid_runs_is_stored_by_one_read_and_acknowledged(
    redis_url: str, client: Redis, store: EventStore,
) -> None:
    # Given ten runs of three projects waiting on cars.ingest behind a first one
    await client.xgroup_create(streams.INGEST, monitor.ROLE, id="0", mkstream=True)
    envelopes = [run(f"p{i % 3}", f"r{i}", "c1", total=F) for i in range(11)]
    for envelope in envelopes:
        await client.xadd(streams.INGEST, entry(envelope))  # type: ignore[arg-type]
    # When the monitor reads them (batches of at most 6)
    async with running_ingest(redis_url, store, config(batch_records=6, reclaim_idle_ms=30_000)) as (consumer, reader):
        await eventually(lambda: _handled(consumer, 11), "eleven runs handled")
        assert await pending(client) == 0
    # Then they came in three reads (1, 6, 4), and each run is stored with its failure detected
    assert reader.batches == 3
    for envelope in envelopes:
        events = store.load(natural_id("run", envelope.data.project, envelope.data.run_id))
        assert [type(e.data) for e in events] == [RunRecorded, FailureDetected]
        assert events[0].causation_id == str(envelope.id)


async def _handled(consumer: StreamConsumer, n: int) -> bool:
    return consumer.processed >= n


async def test_a_store_refusing_writes_leaves_the_batch_pending_and_reclaim_stores_it_once(
    redis_url: str, client: Redis, store: EventStore, tmp_path: Path,
) -> None:
    # Given another connection holding the SQLite store's write lock (readers still read: WAL)
    await client.xgroup_create(streams.INGEST, monitor.ROLE, id="0", mkstream=True)
    envelopes = [run("shop", f"r{i}", "c1", total=F) for i in range(3)]
    blocker = sqlite3.connect(tmp_path / "events.sqlite", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        async with running_ingest(redis_url, store, config()) as (consumer, _):
            # When runs arrive
            for envelope in envelopes:
                await client.xadd(streams.INGEST, entry(envelope))  # type: ignore[arg-type]

            # Then none is acknowledged or stored, and each entry's error is remembered for its dead letter
            async def all_failed() -> bool:
                errors = await client.hgetall(streams.errors_key(streams.INGEST, monitor.ROLE))
                return len(errors) == 3 and consumer.failures >= 3

            await eventually(all_failed, "every entry failed once and was left pending")
            errors = await client.hgetall(streams.errors_key(streams.INGEST, monitor.ROLE))
            assert all("locked" in wire.text(e) for e in errors.values()), errors
            assert await pending(client) == 3
            assert consumer.processed == 0

            # When the store takes writes again
            blocker.execute("ROLLBACK")

            # Then the reclaim path stores every run once, and nothing stays pending or remembered
            await eventually(lambda: _handled(consumer, 3), "the three runs handled on reclaim")
            await eventually(lambda: _nothing_pending(client), "nothing pending")
    finally:
        blocker.close()
    for envelope in envelopes:
        events = store.load(natural_id("run", "shop", envelope.data.run_id))
        assert [type(e.data) for e in events] == [RunRecorded, FailureDetected]
    watched = [e.data.run_id for e in store.load(history.watch_id("shop")) if e.type == "test.outcomes_recorded"]
    assert sorted(watched) == ["r0", "r1", "r2"]
    assert await client.hlen(streams.errors_key(streams.INGEST, monitor.ROLE)) == 0
    assert await client.xlen(streams.DLQ) == 0


async def _nothing_pending(client: Redis) -> bool:
    return await pending(client) == 0


async def test_a_deleted_group_stops_the_reader_with_a_reason(redis_url: str, client: Redis, store: EventStore) -> None:
    # Given the monitor reading cars.ingest
    with pytest.raises(BaseException) as raised:  # the task group wraps it: checked below
        async with running_ingest(redis_url, store, config()):
            await client.xadd(streams.INGEST, entry(run("shop", "r1", "c1", total=F)))  # type: ignore[arg-type]
            # When its consumer group is deleted under it
            assert await client.xgroup_destroy(streams.INGEST, monitor.ROLE)
            await anyio.sleep(TIMEOUT_S)
    # Then the reader stops, saying which stream and group, so that the process exits and a restart
    # recreates the group (as bus.runtime does for FastStream's subscribers)
    leaves = [raised.value]
    while isinstance(leaves[-1], BaseExceptionGroup):
        leaves.append(leaves[-1].exceptions[0])
    assert isinstance(leaves[-1], ConsumerGroupGone), repr(raised.value)
    assert "stopped consuming cars.ingest (group monitor): the consumer group no longer exists" in str(leaves[-1])
