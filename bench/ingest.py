"""Figures 1 and 2: ingest throughput and latency, each beside a same-run baseline.

Ingest (figure 1): N `run.reported` messages (200 results, 4 failing = 2 %) go onto `cars.ingest`
with raw pipelined XADD; the clock stops when every resulting `failure.detected` (4 per run) is on
`cars.events.failures`. The relay publishes only what is in the store, so "on its topic stream"
implies "in the store"; the store is counted afterwards to prove it. The baseline, in the same Redis
and the same run: the same messages XADDed onto a stream of its own and read by a plain redis-py
consumer (XREADGROUP COUNT 100, json.loads, XACK), doing nothing else.

Latency (figure 2): runs offered at a fixed rate (default 100/s) by a paced producer; for every
`failure.detected` that appears on its topic stream, the time since its run's XADD. The baseline is
the same paced producer read back by the plain consumer (XADD -> XREADGROUP -> json.loads).

Usage: python bench/ingest.py [--runs N] [--store sqlite|postgres] [--workers 1|2] [--projects P]
       [--rate R --seconds S]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import redis  # noqa: E402
from common import (  # noqa: E402
    DETECTED,
    Cars,
    percentile,
    postgres_base,
    postgres_schema,
    private_redis,
    run_reported,
    write_result,
)

from bus import streams  # noqa: E402
from contracts import Area  # noqa: E402

FAILURES = streams.events_stream(Area.FAILURES)
FAILING = 4
BASELINE_STREAM = "bench.baseline"


def xadd_all(client: redis.Redis, stream: str, messages: list[bytes], batch: int = 100) -> None:
    for i in range(0, len(messages), batch):
        pipe = client.pipeline(transaction=False)
        for m in messages[i:i + batch]:
            pipe.xadd(stream, {streams.MESSAGE_FIELD: m})
        pipe.execute()


class TopicWatcher:
    """Follows `cars.events.failures` from its start and counts `failure.detected` entries.

    `on_detected(entry_fields, seen_at)` is called for each (used by the latency figure).
    """

    def __init__(self, url: str, on_detected: Callable[[dict[bytes, bytes], float], None] | None = None) -> None:
        self.client = redis.Redis.from_url(url)
        # Count from the current end of the stream: what an earlier figure left there is not ours.
        newest = self.client.xrevrange(FAILURES, count=1)
        self.last = newest[0][0].decode() if newest else "0-0"
        self.count = 0
        self.on_detected = on_detected

    def poll(self, block_ms: int = 50) -> None:
        reply = self.client.xread({FAILURES: self.last}, count=1000, block=block_ms or None)
        now = time.perf_counter()
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                self.last = entry_id.decode()
                if DETECTED in fields.get(b"message", b""):
                    self.count += 1
                    if self.on_detected is not None:
                        self.on_detected(fields, now)

    def wait_for(self, count: int, timeout_s: float) -> float:
        """Poll until `count` failure.detected were seen; returns perf_counter() at that moment."""
        deadline = time.monotonic() + timeout_s
        while self.count < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"saw {self.count} of {count} failure.detected within {timeout_s}s")
            self.poll()
        return time.perf_counter()

    def close(self) -> None:
        self.client.close()


def baseline_consume(url: str, stream: str, expected: int, group: str = "baseline",
                     on_message: Callable[[Any, float], None] | None = None,
                     timeout_s: float = 600.0) -> float:
    """The plain consumer: XREADGROUP COUNT 100, json.loads each message, XACK the batch, until
    `expected` messages were read. Returns perf_counter() when the last one was acked."""
    client = redis.Redis.from_url(url)
    try:
        try:
            client.xgroup_create(stream, group, id="0", mkstream=True)
        except redis.ResponseError:
            pass  # BUSYGROUP
        done = 0
        deadline = time.monotonic() + timeout_s
        while done < expected:
            if time.monotonic() > deadline:
                raise TimeoutError(f"baseline read {done} of {expected}")
            reply = client.xreadgroup(group, "c1", {stream: ">"}, count=100, block=100)
            for _s, entries in reply or []:
                ids = []
                for entry_id, fields in entries:
                    doc = json.loads(fields[b"message"])
                    if on_message is not None:
                        on_message(doc, time.perf_counter())
                    ids.append(entry_id)
                if ids:
                    client.xack(stream, group, *ids)
                    done += len(ids)
        return time.perf_counter()
    finally:
        client.close()


def count_in_store(store_env: dict[str, str]) -> int:
    from bus.store import EventStore

    store = EventStore(store_env)
    try:
        total, after = 0, 0
        while True:
            batch = store.recorder.select_notifications(start=after, limit=10_000, topics=["failure.detected"],
                                                        inclusive_of_start=False)
            if not batch:
                return total
            total += len(batch)
            after = batch[-1].id
    finally:
        store.close()


def measure_ingest(url: str, runs: int, projects: int, prefix: str, timeout_s: float) -> dict[str, float]:
    """CARS (already running on `url`) and the baseline over the same `runs` messages."""
    messages = [run_reported(f"{prefix}-p{i % projects}", f"{prefix}-r{i}") for i in range(runs)]
    client = redis.Redis.from_url(url)
    watcher = TopicWatcher(url)
    t0 = time.perf_counter()
    xadd_all(client, streams.INGEST, messages)
    t1 = watcher.wait_for(runs * FAILING, timeout_s)
    cars_s = t1 - t0
    watcher.close()

    t0 = time.perf_counter()
    xadd_all(client, BASELINE_STREAM, messages)
    t1 = baseline_consume(url, BASELINE_STREAM, runs)
    base_s = t1 - t0
    client.delete(BASELINE_STREAM)
    client.close()
    return {
        "runs": runs, "projects": projects, "results_per_run": 200, "failing_per_run": FAILING,
        "cars_s": cars_s, "baseline_s": base_s,
        "msgs_per_s": runs / cars_s, "baseline_msgs_per_s": runs / base_s,
        "results_per_s": runs * 200 / cars_s, "baseline_results_per_s": runs * 200 / base_s,
        "ratio": base_s / cars_s,
    }


def paced(url: str, stream: str, rate: float, seconds: float, prefix: str,
          sent: dict[str, float]) -> None:
    """XADD one run every 1/rate s for `seconds` (no catching up in bursts beyond the schedule)."""
    client = redis.Redis.from_url(url)
    n = int(rate * seconds)
    start = time.perf_counter()
    for i in range(n):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        run_id = f"{prefix}-lat{i}"
        msg = run_reported(f"{prefix}-lat-p{i % 20}", run_id)
        sent[run_id] = time.perf_counter()
        client.xadd(stream, {streams.MESSAGE_FIELD: msg})
    client.close()


def measure_latency(url: str, rate: float, seconds: float, prefix: str) -> dict[str, float]:
    """p50/p99 from XADD to failure.detected on the topic stream, and the same-run baseline."""
    sent: dict[str, float] = {}
    latencies: list[float] = []

    def seen(fields: dict[bytes, bytes], at: float) -> None:
        doc = json.loads(fields[b"message"])
        t = sent.get(doc["data"]["run_id"])
        if t is not None:
            latencies.append((at - t) * 1000)

    watcher = TopicWatcher(url, on_detected=seen)
    producer = threading.Thread(target=paced, args=(url, streams.INGEST, rate, seconds, prefix, sent))
    t0 = time.perf_counter()
    producer.start()
    expected = int(rate * seconds) * FAILING
    watcher.wait_for(expected, timeout_s=seconds + 300)
    producer.join()
    achieved = int(rate * seconds) / (time.perf_counter() - t0)
    watcher.close()

    base_sent: dict[str, float] = {}
    base_lat: list[float] = []

    def got(doc: Any, at: float) -> None:
        t = base_sent.get(doc["data"]["run_id"])
        if t is not None:
            base_lat.append((at - t) * 1000)

    producer = threading.Thread(target=paced, args=(url, BASELINE_STREAM, rate, seconds, prefix + "b", base_sent))
    client = redis.Redis.from_url(url)
    client.xgroup_create(BASELINE_STREAM, "lat", id="$", mkstream=True)
    producer.start()
    baseline_consume(url, BASELINE_STREAM, int(rate * seconds), group="lat", on_message=got)
    producer.join()
    client.delete(BASELINE_STREAM)
    client.close()
    return {
        "offered_runs_per_s": rate, "seconds": seconds, "samples": len(latencies), "expected_samples": expected,
        "completed_runs_per_s": achieved,
        "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies) if latencies else float("nan"),
        "baseline_p50_ms": percentile(base_lat, 50), "baseline_p99_ms": percentile(base_lat, 99),
    }


def run_postgres(runs: int, projects: int, workers: int, timeout_s: float) -> dict[str, float] | None:
    """Figure 1 on PostgreSQL: a `cars up` plus `workers - 1` monitor workers, in a fresh schema."""
    base = postgres_base()
    if base is None:
        return None
    with tempfile.TemporaryDirectory(prefix="bench-pg-") as d, private_redis(Path(d)) as url, \
            postgres_schema(base) as pg:
        env = {**pg, "CARS_STORE": "postgres"}
        procs = [Cars(Path(d) / "up", url, extra_env=env, name="up")]
        try:
            procs[0].wait_ready()
            for k in range(workers - 1):
                w = Cars(Path(d) / f"w{k}", url, command=("worker", "--actors", "monitor"), extra_env=env,
                         name=f"worker{k}")
                procs.append(w)
                w.wait_present(url)
            result = measure_ingest(url, runs, projects, "pg", timeout_s)
            stored = count_in_store({"PERSISTENCE_MODULE": "eventsourcing.postgres", **pg})
        finally:
            for p in procs:
                p.stop()
        result["stored_detected"] = stored
        result["processes"] = workers
        return result


def run_sqlite(runs: int, projects: int, rate: float, seconds: float, timeout_s: float,
               between: Callable[[Cars, str], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Figures 1 and 2 on SQLite with one `cars up`; `between(cars, url)` runs after them, on the same
    process (the memory figure uses it)."""
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-sqlite-") as d, private_redis(Path(d)) as url:
        home = Path(d) / "up"
        with Cars(home, url, name="up") as cars:
            cars.wait_ready()
            time.sleep(3)
            out["idle_rss_mb"] = cars.rss_mb()
            out["ingest"] = measure_ingest(url, runs, projects, "sq", timeout_s)
            out["ingest"]["stored_detected"] = count_in_store(
                {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(home / "events.sqlite")})
            out["after_ingest_rss_mb"] = cars.rss_mb()
            if seconds > 0:
                out["latency"] = measure_latency(url, rate, seconds, "sq")
            if between is not None:
                out.update(between(cars, url))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=500)
    ap.add_argument("--projects", type=int, default=50)
    ap.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--workers", type=int, default=2, help="processes on PostgreSQL (cars up + monitor workers)")
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--seconds", type=float, default=10.0, help="latency run length (0: skip)")
    ap.add_argument("--timeout", type=float, default=600.0)
    args = ap.parse_args()
    if args.store == "postgres":
        result: dict[str, Any] | None = run_postgres(args.runs, args.projects, args.workers, args.timeout)
        if result is None:
            sys.exit("POSTGRES_HOST is unset")
        write_result("ingest_postgres", result)
    else:
        result = run_sqlite(args.runs, args.projects, args.rate, args.seconds, args.timeout)
        write_result("ingest_sqlite", result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
