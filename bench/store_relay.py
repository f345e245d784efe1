"""Quick rates of the event store and the relay, each beside a baseline measured in the same run.

- store append: CARS's EventStore.append (envelope -> JSON through the one converter -> recorder)
  versus the baseline of inserting the same, already-encoded StoredEvents into the same recorder.
- relay: Relay.relay_once() from store to topic streams versus the baseline of XADDing the same
  entry fields with pipelined MULTI/EXEC batches and doing nothing else.

Usage: python bench/store_relay.py [--events N]. Starts a private redis-server on a free port.
Results also go to bench/results/store_relay.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import tempfile
import time
import uuid
from pathlib import Path

import anyio
from redis.asyncio import Redis

from bus import streams, wire
from bus.embedded import EmbeddedRedis, free_port
from bus.relay import Relay
from bus.store import EventStore, Pending
from contracts import Envelope
from contracts.registry import HeartbeatRecorded


def envelopes(n: int) -> list[Envelope[HeartbeatRecorded]]:
    now = dt.datetime.now(dt.UTC)
    return [Envelope(data=HeartbeatRecorded(instance=f"svc-{i % 50}", at=now)) for i in range(n)]


def bench_store(n: int, per_append: int, tmp: Path) -> tuple[float, float]:
    store = EventStore({"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(tmp / f"a{per_append}.db")})
    envs = envelopes(n)
    t0 = time.perf_counter()
    for i in range(0, n, per_append):
        store.append(uuid.uuid4(), 0, envs[i:i + per_append])
    cars = n / (time.perf_counter() - t0)
    base_env = {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(tmp / f"b{per_append}.db")}
    base_store = EventStore(base_env)
    stored = []
    for i in range(0, n, per_append):
        sid = uuid.uuid4()
        stored.append([base_store.mapper.to_stored_event(Pending(originator_id=sid, originator_version=j + 1,
                       timestamp=e.occurred_at, envelope=e)) for j, e in enumerate(envs[i:i + per_append])])
    t0 = time.perf_counter()
    for batch in stored:
        base_store.recorder.insert_events(batch)
    base = n / (time.perf_counter() - t0)
    store.close()
    base_store.close()
    return cars, base


async def bench_relay(url: str, n: int, tmp: Path) -> tuple[float, float]:
    store = EventStore({"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(tmp / "relay.db")})
    envs = envelopes(n)
    for i in range(0, n, 100):
        store.append(uuid.uuid4(), 0, envs[i:i + 100])
    client = Redis.from_url(url)
    await client.flushdb()
    relay = Relay(store, client, maxlen=n * 2, batch=500)
    t0 = time.perf_counter()
    while await relay.relay_once():
        pass
    cars = n / (time.perf_counter() - t0)
    fields = [wire.entry_fields(e, extra={streams.POSITION_FIELD: str(i)}) for i, e in enumerate(envs)]
    t0 = time.perf_counter()
    for i in range(0, n, 500):
        async with client.pipeline(transaction=True) as pipe:
            for f in fields[i:i + 500]:
                pipe.xadd("bench.baseline", f, maxlen=n * 2, approximate=True)
            await pipe.execute()
    base = n / (time.perf_counter() - t0)
    await client.flushdb()
    await client.aclose()
    store.close()
    return cars, base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    args = parser.parse_args()
    n = args.events
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        # A private redis-server: the relay figure flushes its database, never a shared one.
        server = EmbeddedRedis(tmp, free_port(), persist=False)
        url = server.start()
        try:
            for per in (1, 100):
                cars, base = bench_store(n if per > 1 else n // 4, per, tmp)
                results[f"store_append_{per}_per_s"] = cars
                results[f"store_append_{per}_baseline_per_s"] = base
            cars, base = anyio.run(bench_relay, url, n, tmp)
            results["relay_events_per_s"] = cars
            results["relay_baseline_per_s"] = base
        finally:
            server.stop()
    rows = [
        ("store append, 1 event per append (SQLite)", "store_append_1_per_s", "store_append_1_baseline_per_s"),
        ("store append, 100 events per append (SQLite)", "store_append_100_per_s", "store_append_100_baseline_per_s"),
        ("relay store -> topic streams (batch 500)", "relay_events_per_s", "relay_baseline_per_s"),
    ]
    print(f"{'figure':<48} {'CARS ev/s':>12} {'baseline ev/s':>14} {'ratio':>7}")
    for label, k, b in rows:
        print(f"{label:<48} {results[k]:>12,.0f} {results[b]:>14,.0f} {results[k] / results[b]:>7.2f}")
    print("baselines: store = raw recorder insert of pre-encoded events; "
          "relay = raw pipelined XADD of the same entries")
    out = Path(__file__).parent / "results" / "store_relay.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"events": n, **results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
