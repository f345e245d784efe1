"""The relay against real Redis and a real store (SQLite and PostgreSQL): every position once, in order."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

import anyio
import pytest
import redis
from opentelemetry import trace
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

import bus.relay
import contracts
from bus.relay import PositionAhead, Relay
from bus.store import EventStore
from bus.streams import ALL_EVENT_STREAMS, POSITION_FIELD, RELAY_POSITION_KEY, RESULTS, events_stream
from bus.telemetry import tracer_provider
from contracts import Area, Envelope
from contracts.environments import EnvironmentFailed, EnvironmentRequested
from contracts.failures import FailureDetected, FailureUnrepairable
from contracts.registry import ServiceLost
from contracts.repairs import HealAbandoned, RepairCompleted
from contracts.runs import RunRecorded
from contracts.values import FailureClass
from tests.integration.store_views import OnStore

MAXLEN = 100_000
ROOT = Path(__file__).resolve().parents[2]
NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)


# -- Given: stored events ---------------------------------------------------------------------------

def sample(i: int) -> Envelope[Any]:
    """The i-th event of a mix of every area, including the three public summary types."""
    env_id = uuid.uuid5(uuid.NAMESPACE_OID, f"env-{i}")
    repair_id = uuid.uuid5(uuid.NAMESPACE_OID, f"repair-{i}")
    data: list[Any] = [
        RunRecorded(project="p", run_id=f"r{i}", total=3, passed=2, failed=1),
        FailureDetected(project="p", test_id=f"t{i}", run_id=f"r{i}", fingerprint=f"f{i}",
                        category=FailureClass.RENAMED_SYMBOL),
        FailureUnrepairable(project="p", test_id=f"t{i}", fingerprint=f"f{i}",
                            category=FailureClass.PRODUCT_REGRESSION, reason="a real bug"),
        HealAbandoned(repair_id=repair_id, reason="no strategy applies"),
        RepairCompleted(repair_id=repair_id, candidate_id=uuid.uuid5(repair_id, "c"), project="p",
                        test_id=f"t{i}", category=FailureClass.RENAMED_SYMBOL, strategy="rename",
                        confidence=0.9, patch="--- a\n+++ b\n"),
        EnvironmentRequested(environment_id=env_id, template="python", backend="local", ttl_s=600),
        EnvironmentFailed(environment_id=env_id, reason="out of disk"),
        ServiceLost(instance=f"w{i}", last_seen_at=NOW, timeout_s=35.0),
    ]
    return Envelope(data=data[i % len(data)], occurred_at=NOW)


def append_events(store: EventStore, count: int, start: int = 0, per_stream: int = 100) -> list[int]:
    """Append `count` sample events in aggregates of up to `per_stream`; returns their positions."""
    positions: list[int] = []
    for first in range(start, start + count, per_stream):
        last = min(first + per_stream, start + count)
        positions += store.append(uuid.uuid4(), 0, [sample(i) for i in range(first, last)])
    return positions


# -- Then: what a plain consumer sees ----------------------------------------------------------------

Entries = dict[str, list[tuple[int, Envelope[Any]]]]


def decode(entries: list[tuple[bytes, dict[bytes, bytes]]]) -> list[tuple[int, Envelope[Any]]]:
    return [(int(f[POSITION_FIELD.encode()]), contracts.loads(f[b"message"])) for _, f in entries]


async def read_all(client: Redis) -> Entries:
    return {s: decode(await client.xrange(s)) for s in (*ALL_EVENT_STREAMS, RESULTS)}


def read_all_sync(client: redis.Redis) -> Entries:
    return {s: decode(client.xrange(s)) for s in (*ALL_EVENT_STREAMS, RESULTS)}


def assert_exactly_once(entries: Entries, store: EventStore) -> None:
    """Each stored position is on exactly one topic stream, each summary on cars.results; in order."""
    stored = store.read(after=0, limit=1_000_000)
    topics = [p for s in ALL_EVENT_STREAMS for p, _ in entries[s]]
    duplicates = [p for p, n in Counter(topics).items() if n > 1]
    assert duplicates == [], f"published twice: {duplicates[:20]}"
    assert sorted(topics) == [r.position for r in stored], "missing or unknown positions"
    assert [p for p, _ in entries[RESULTS]] == [r.position for r in stored if r.envelope.entry.summary]
    for stream, relayed in entries.items():
        stream_positions = [p for p, _ in relayed]
        assert stream_positions == sorted(set(stream_positions)), f"{stream} is out of order"


# -- Fault injection: a real Redis client whose EXECs fail on cue ------------------------------------

class FlakyPipeline(Pipeline):
    """Fails the next EXECs as `plan` says: "before" (never reached Redis) or "after" (reply lost)."""

    def __init__(self, *args: Any, plan: list[str]) -> None:
        super().__init__(*args)
        self.plan = plan

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        if not (self.explicit_transaction and self.plan):
            return await super().execute(raise_on_error)
        if self.plan.pop(0) == "before":
            await self.reset()
            raise redis.ConnectionError("connection reset before EXEC was sent")
        await super().execute(raise_on_error)
        raise redis.ConnectionError("connection reset after EXEC; its reply was lost")


class FlakyRedis(Redis):
    plan: list[str]

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        return FlakyPipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint,
                             plan=self.plan)


# -- A relay in a process of its own, to SIGKILL ----------------------------------------------------

def start_relay_child(redis_url: str, store_env: dict[str, str], batch: int) -> subprocess.Popen[str]:
    """Start tests/integration/relay_child.py and wait until it is about to relay."""
    child = subprocess.Popen(
        [sys.executable, str(ROOT / "tests/integration/relay_child.py"), redis_url, json.dumps(store_env),
         str(batch)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line == "ready\n", f"relay child did not start: {child.communicate()[1]}"
    return child


class LaggyProxy:
    """A TCP proxy in front of Redis that holds every chunk for `delay_s` in each direction.

    On loopback a round trip takes microseconds, so a random kill almost never falls between
    sending a transaction and its reply. With the lag it often does, and the crash test then covers
    a half-sent MULTI and an EXEC that ran but was never answered. A killed client's socket closes,
    and the proxy passes that on, as the kernel would.
    """

    def __init__(self, redis_url: str, delay_s: float) -> None:
        self.url = urlparse(redis_url)
        self.delay_s = delay_s
        self.listener = socket.create_server(("127.0.0.1", 0))

    def __enter__(self) -> str:
        threading.Thread(target=self._accept, daemon=True).start()
        port = self.listener.getsockname()[1]
        return urlunparse(self.url._replace(netloc=f"127.0.0.1:{port}"))

    def __exit__(self, *exc: object) -> None:
        self.listener.close()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):  # the listener was closed: the test is over
            while True:
                downstream, _ = self.listener.accept()
                upstream = socket.create_connection((self.url.hostname or "127.0.0.1", self.url.port or 6379))
                for src, dst in ((downstream, upstream), (upstream, downstream)):
                    threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                time.sleep(self.delay_s)
                dst.sendall(data)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


# -- The tests, once for each store ------------------------------------------------------------------

class RelayContract(OnStore):
    """Test bodies; subclasses provide `store_env`."""

    @pytest.fixture
    async def client(self, redis_url: str) -> AsyncIterator[Redis]:
        client = Redis.from_url(redis_url)
        yield client
        await client.aclose()

    @pytest.fixture
    async def flaky(self, redis_url: str) -> AsyncIterator[FlakyRedis]:
        client = FlakyRedis.from_url(redis_url)
        client.plan = []
        yield client
        await client.aclose()

    async def test_events_go_to_their_area_streams_and_summaries_also_to_results(
        self, store: EventStore, client: Redis
    ) -> None:
        # Given one event of each sample type in the store
        positions = append_events(store, 8)
        relay = Relay(store, client, maxlen=MAXLEN)

        # When the relay runs once
        published = await relay.relay_once()

        # Then each event is on its area's stream with its position and unchanged envelope
        assert published == 8
        entries = await read_all(client)
        expected = {p: r.envelope for p, r in zip(positions, store.read(after=0, limit=100), strict=True)}
        areas = {s: [e.type for _, e in entries[s]] for s in ALL_EVENT_STREAMS}
        assert areas == {
            events_stream(Area.RUNS): ["run.recorded"],
            events_stream(Area.FAILURES): ["failure.detected", "failure.unrepairable"],
            events_stream(Area.REPAIRS): ["heal.abandoned", "repair.completed"],
            events_stream(Area.ENVIRONMENTS): ["environment.requested", "environment.failed"],
            events_stream(Area.REGISTRY): ["service.lost"],
            events_stream(Area.NOTIFICATIONS): [],
        }
        for stream in ALL_EVENT_STREAMS:
            for position, envelope in entries[stream]:
                assert envelope == expected[position]
        # and the summaries are on cars.results as well
        assert [e.type for _, e in entries[RESULTS]] == [
            "failure.unrepairable", "repair.completed", "environment.failed"]
        assert_exactly_once(entries, store)
        assert await relay.position() == positions[-1]

        # When it runs again with nothing new, Then nothing more is published
        assert await relay.relay_once() == 0
        assert await read_all(client) == entries
        assert relay.stats.published == 8

    async def test_a_plain_consumer_group_reads_envelopes_and_positions(
        self, store: EventStore, client: Redis
    ) -> None:
        # Given relayed failure events and a consumer group created on the stream from its start
        positions = append_events(store, 16)
        await Relay(store, client, maxlen=MAXLEN).relay_once()
        stream = events_stream(Area.FAILURES)
        await client.xgroup_create(stream, "billing", id="0")

        # When a consumer with no CARS code but the contracts reads the group
        [(_, entries)] = await client.xreadgroup("billing", "c1", {stream: ">"}, count=100)

        # Then every entry decodes with contracts.loads and carries its log position as text
        got = [(f[b"position"].decode(), contracts.loads(f[b"message"]).type) for _, f in entries]
        failures = {1: "failure.detected", 2: "failure.unrepairable"}
        assert got == [(str(p), failures[i % 8]) for i, p in enumerate(positions) if i % 8 in failures]

    @pytest.mark.parametrize("spans", [True, False], ids=["span-per-event", "no-span-processor"])
    async def test_each_entry_continues_the_trace_its_event_was_recorded_in(
        self, store: EventStore, client: Redis, spans: bool, monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        # Given events recorded inside a trace, one recorded outside any, and an SDK tracer provider
        # with (or, as by default, without) a span processor
        tracer_provider()
        monkeypatch.setattr(bus.relay, "recording", lambda: spans)
        with trace.get_tracer(__name__).start_as_current_span("ingest") as ingest:
            append_events(store, 3)
        store.append(uuid.uuid4(), 0, [Envelope(data=sample(1).data, occurred_at=NOW, metadata={})])
        traced = {r.position: r.envelope.metadata["traceparent"] for r in store.read(after=0, limit=10)
                  if "traceparent" in r.envelope.metadata}

        # When the relay publishes them
        await Relay(store, client, maxlen=MAXLEN).relay_once()

        # Then each entry's traceparent is in the trace the event was recorded in; without spans it
        # is the recorded context itself (the same trace, and the same parent a span would have)
        entries = {int(f[POSITION_FIELD.encode()]): f.get(b"traceparent", b"").decode()
                   for s in ALL_EVENT_STREAMS for _, f in await client.xrange(s)}
        trace_id = format(ingest.get_span_context().trace_id, "032x")
        assert len(traced) == 3 and len(entries) == 4
        for position, parent in traced.items():
            assert entries[position].split("-")[1] == trace_id
            assert (entries[position] == parent) is not spans
        # and the event recorded outside any trace goes out in the relay batch's own trace
        [outside] = set(entries) - set(traced)
        assert entries[outside].startswith("00-") and entries[outside].split("-")[1] != trace_id

    async def test_batches_are_at_most_batch_events(self, store: EventStore, client: Redis) -> None:
        # Given 25 stored events and a relay with batches of 10
        append_events(store, 25)
        relay = Relay(store, client, maxlen=MAXLEN, batch=10)

        # When it runs until idle
        counts = [await relay.relay_once() for _ in range(4)]

        # Then it took three rounds, and each position is on the streams once
        assert counts == [10, 10, 5, 0]
        assert_exactly_once(await read_all(client), store)

    async def test_an_exec_that_never_reached_redis_is_republished_once(
        self, store: EventStore, flaky: FlakyRedis, client: Redis
    ) -> None:
        # Given stored events, and a connection that drops before the first EXEC is sent
        append_events(store, 20)
        flaky.plan = ["before"]
        relay = Relay(store, flaky, maxlen=MAXLEN)

        # When the relay runs, Then it fails, and neither entries nor a position were committed
        with pytest.raises(redis.ConnectionError):
            await relay.relay_once()
        assert await relay.position() == 0
        assert [await client.xlen(s) for s in (*ALL_EVENT_STREAMS, RESULTS)] == [0] * (len(ALL_EVENT_STREAMS) + 1)

        # When it runs again, Then the whole batch is published, once
        assert await relay.relay_once() == 20
        assert await relay.relay_once() == 0
        assert_exactly_once(await read_all(client), store)

    async def test_an_exec_whose_reply_was_lost_is_not_published_again(
        self, store: EventStore, flaky: FlakyRedis, client: Redis
    ) -> None:
        # Given stored events, and a connection that drops after the first EXEC ran on the server
        append_events(store, 20)
        flaky.plan = ["after"]
        relay = Relay(store, flaky, maxlen=MAXLEN)

        # When the relay runs, Then it fails, but Redis has committed the batch and its position
        with pytest.raises(redis.ConnectionError):
            await relay.relay_once()
        assert await relay.position() == store.max_position()

        # When it runs again, Then it publishes nothing: every position is there once
        assert await relay.relay_once() == 0
        assert_exactly_once(await read_all(client), store)

    @pytest.mark.slow
    def test_a_relay_killed_at_random_moments_publishes_every_position_exactly_once(
        self, store: EventStore, store_env: dict[str, str], redis_url: str
    ) -> None:
        # Given 2,000 stored events, and a relay process with small batches that talks to Redis over
        # a laggy link, so that a kill often lands with a transaction on the wire or unanswered
        append_events(store, 2000)
        end = store.max_position()
        client = redis.Redis.from_url(redis_url)
        seed = random.randrange(2**32)
        rng = random.Random(seed)

        def position() -> int:
            return int(client.get(RELAY_POSITION_KEY) or 0)

        # When it is SIGKILLed at random moments while relaying, and restarted each time
        killed_at: list[int] = []
        child: subprocess.Popen[str] | None = None
        with LaggyProxy(redis_url, delay_s=0.001) as laggy_url:
            try:
                for _ in range(6):
                    child = start_relay_child(laggy_url, store_env, batch=25)
                    before = position()
                    deadline = time.monotonic() + 20
                    while position() == before and child.poll() is None and time.monotonic() < deadline:
                        time.sleep(0.001)  # wait until it is relaying, then pick a moment
                    time.sleep(rng.uniform(0.0, 0.05))
                    if child.poll() is not None:
                        break
                    child.send_signal(signal.SIGKILL)
                    child.communicate()
                    killed_at.append(position())
                # ... and finally left to finish
                child = start_relay_child(laggy_url, store_env, batch=25)
                _, err = child.communicate(timeout=60)
                assert child.returncode == 0, err
                entries = read_all_sync(client)
                final = position()
            finally:
                if child is not None and child.poll() is None:
                    child.kill()
                    child.communicate()
                client.close()

        # Then the kills interrupted a partly relayed log, and yet each position is there once
        assert any(0 < p < end for p in killed_at), f"no kill landed mid-log: {killed_at} (seed {seed})"
        assert final == end
        assert_exactly_once(entries, store)

    async def test_run_picks_up_events_appended_after_it_started(
        self, store: EventStore, client: Redis
    ) -> None:
        # Given a running relay that has caught up with the store
        await anyio.to_thread.run_sync(append_events, store, 3)
        relay = Relay(store, client, maxlen=MAXLEN, batch=10)
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(relay.run, stop, 0.01)
            await wait_for_position(relay, store.max_position())

            # When events are appended later
            positions = await anyio.to_thread.run_sync(lambda: append_events(store, 37, start=3))

            # Then it publishes them, and stops when asked
            await wait_for_position(relay, positions[-1])
            stop.set()
        assert_exactly_once(await read_all(client), store)
        assert relay.stats.published == 40

    async def test_run_outlives_transient_redis_errors(
        self, store: EventStore, flaky: FlakyRedis, client: Redis
    ) -> None:
        # Given stored events and a Redis whose first three EXECs fail: two never reach it, and one
        # runs but its reply is lost
        append_events(store, 30)
        flaky.plan = ["before", "after", "before"]
        relay = Relay(store, flaky, maxlen=MAXLEN, batch=10)

        # When the relay runs
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(relay.run, stop, 0.01)
            await wait_for_position(relay, store.max_position())
            stop.set()

        # Then it retried past every failure, and each position is there once
        assert relay.stats.errors == 3
        assert_exactly_once(await read_all(client), store)

    async def test_two_relays_at_once_still_publish_each_position_once(
        self, store: EventStore, client: Redis, redis_url: str
    ) -> None:
        # Given stored events and two relays (a misconfigured deployment), each with its own client
        append_events(store, 300)
        other = Redis.from_url(redis_url)
        relays = [Relay(store, client, maxlen=MAXLEN, batch=7), Relay(store, other, maxlen=MAXLEN, batch=7)]

        # When both relay the store concurrently
        async def drain(relay: Relay) -> None:
            while await relay.position() < store.max_position():
                await relay.relay_once()

        try:
            async with anyio.create_task_group() as tg:
                for relay in relays:
                    tg.start_soon(drain, relay)
        finally:
            await other.aclose()

        # Then the position guard let one EXEC win each round: no position twice
        assert sum(r.stats.published for r in relays) == 300
        assert_exactly_once(await read_all(client), store)

    async def test_a_position_past_the_end_of_the_store_is_refused(
        self, store: EventStore, client: Redis
    ) -> None:
        # Given a Redis that relayed a longer store than this one
        append_events(store, 3)
        await client.set(RELAY_POSITION_KEY, 999)

        # When the relay runs, Then it refuses instead of waiting silently past unpublished events
        with pytest.raises(PositionAhead):
            await Relay(store, client, maxlen=MAXLEN).relay_once()
        assert [await client.xlen(s) for s in (*ALL_EVENT_STREAMS, RESULTS)] == [0] * (len(ALL_EVENT_STREAMS) + 1)


async def wait_for_position(relay: Relay, position: int) -> None:
    """Poll Redis, as an outside observer would, until the relay has committed `position`."""
    with anyio.fail_after(10):
        while await relay.position() < position:  # noqa: ASYNC110  (the state is in Redis: no Event)
            await anyio.sleep(0.01)


class TestRelaySQLite(RelayContract):
    @pytest.fixture
    def store_env(self, sqlite_env: dict[str, str]) -> dict[str, str]:
        return sqlite_env


@pytest.mark.postgres
class TestRelayPostgres(RelayContract):
    @pytest.fixture
    def store_env(self, postgres_env: dict[str, str]) -> dict[str, str]:
        return postgres_env

