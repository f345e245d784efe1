"""Figure 3: rebuilding every view from a large store, beside the raw speed of reading the log.

The store is generated quickly but honestly: real envelopes of each event kind are encoded once through
the contracts converter, then copied with fresh ids (repair, candidate, envelope) and test names, and
inserted through the eventsourcing recorder in batches. Every copy decodes and validates like any
stored event. The mix, per 10 events: 7 of one repair's life (heal.requested, 2 x heal.proposed,
heal.rejected, heal.validated, repair.completed, repair.applied: folded by the heals, statistics and
repair timeline views; repair.applied also by flaky_tests), 2 service heartbeats (the services view)
and 1 run.recorded (the run trends view). So a store of E events holds E/10 repairs: 1,000,000
events hold the 100,000 repairs of figure 4.

CARS: `projections.replay.rebuild` of every default view (what `cars replay` runs), from position 0.
Baselines, same store, same run:
- raw (`raw_events_per_s`, the ratio's denominator): the notification log's rows (position, topic,
  state) paged straight out of the SQLite file with sqlite3, 10,000 rows a page, nothing decoded:
  the fastest way to read the log, which no rebuild can beat;
- the recorder (`recorder_events_per_s`): the same paging through eventsourcing's
  `select_notifications` (1,000 a page, as the runner reads), still undecoded;
- decoded (`decoded_events_per_s`): the runner's reads, decoded into envelopes (`EventStore.read`).

Usage: python bench/replay.py [--events N] [--home DIR]   (the home is kept for figure 4 when given)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sqlite3
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from common import write_result  # noqa: E402
from eventsourcing.persistence import StoredEvent  # noqa: E402

from bus.store import EventStore, Pending  # noqa: E402
from contracts import Envelope  # noqa: E402
from contracts.registry import HeartbeatRecorded  # noqa: E402
from contracts.repairs import (  # noqa: E402
    HealProposed,
    HealRejected,
    HealRequested,
    HealValidated,
    RepairApplied,
    RepairCompleted,
)
from contracts.runs import RunRecorded  # noqa: E402
from contracts.values import FailureClass, ValidationEvidence  # noqa: E402
from projections.db import ViewDB  # noqa: E402
from projections.replay import rebuild  # noqa: E402
from projections.views import default_views  # noqa: E402

# Placeholders replaced in every copy (valid values, so the template itself is a real event).
RID = "00000000-0000-4000-8000-0000000000a1"
C1 = "00000000-0000-4000-8000-0000000000c1"
C2 = "00000000-0000-4000-8000-0000000000c2"
TEST = "TESTPLACEHOLDER"
PROJECT = "PROJPLACEHOLDER"
PATCH = ("--- a/tests/test_x.py\n+++ b/tests/test_x.py\n@@ -1 +1 @@\n"
         "-from shop import total\n+from shop import total_price\n")
INSTANCES = 20
PROJECTS = 20


def template_events() -> tuple[list[Any], Any, Any]:
    """The messages of the mix, with the placeholders in: a repair's life (7 events), a heartbeat and a
    run.recorded."""
    now = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    rid, c1, c2 = uuid.UUID(RID), uuid.UUID(C1), uuid.UUID(C2)
    evidence = ValidationEvidence(reruns=3, passes=3)
    life: list[Any] = [
        HealRequested(repair_id=rid, project=PROJECT, test_id=f"tests/test_x.py::{TEST}", fingerprint=f"fp-{TEST}",
                      category=FailureClass.RENAMED_SYMBOL, reason="module shop has no attribute total"),
        HealProposed(repair_id=rid, candidate_id=c1, strategy="renamed_symbol", rank=1, confidence=0.9, patch=PATCH,
                     files=("tests/test_x.py",)),
        HealProposed(repair_id=rid, candidate_id=c2, strategy="import_path", rank=2, confidence=0.5, patch=PATCH,
                     files=("tests/test_x.py",)),
        HealRejected(repair_id=rid, candidate_id=c2, reason="the healed test still fails"),
        HealValidated(repair_id=rid, candidate_id=c1, evidence=evidence),
        RepairCompleted(repair_id=rid, candidate_id=c1, project=PROJECT, test_id=f"tests/test_x.py::{TEST}",
                        category=FailureClass.RENAMED_SYMBOL, strategy="renamed_symbol", confidence=0.9, patch=PATCH,
                        evidence=evidence),
        RepairApplied(repair_id=rid, files=("tests/test_x.py",)),
    ]
    heartbeat = HeartbeatRecorded(instance="svc-INST", at=now)
    run = RunRecorded(project=PROJECT, run_id=f"run-{TEST}", total=200, passed=196, failed=4,
                      failed_tests=(f"tests/test_x.py::{TEST}",))
    return life, heartbeat, run


def _templates(store: EventStore) -> tuple[list[tuple[str, bytes]], tuple[str, bytes], tuple[str, bytes]]:
    now = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    rid = uuid.UUID(RID)
    life, heartbeat, run = template_events()

    def encoded(data: Any) -> tuple[str, bytes]:
        env = Envelope(data=data, occurred_at=now, correlation_id="bench")
        stored = store.mapper.to_stored_event(Pending(originator_id=rid, originator_version=1, timestamp=now,
                                                      envelope=env))
        return stored.topic, stored.state

    return [encoded(e) for e in life], encoded(heartbeat), encoded(run)


def generate(store: EventStore, events: int, batch_repairs: int = 1000, repairs_only: bool = False) -> int:
    """Insert about `events` events (a multiple of 10) in the mix above; returns how many.

    `repairs_only`: `events // 2` repairs of two events each (heal.requested, repair.completed) and
    nothing else: the cheapest store that holds that many completed repairs (figure 4).
    """
    life, (hb_topic, hb_state), (run_topic, run_state) = _templates(store)
    repairs = events // 2 if repairs_only else events // 10
    if repairs_only:
        life = [life[0], life[5]]
    heartbeat_versions = [0] * INSTANCES
    instance_ids = [uuid.uuid4() for _ in range(INSTANCES)]
    written = 0
    for start in range(0, repairs, batch_repairs):
        stored: list[StoredEvent] = []
        for k in range(start, min(start + batch_repairs, repairs)):
            rid, c1, c2 = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
            project = f"proj-{k % PROJECTS}"
            for version, (topic, state) in enumerate(life, start=1):
                text = (state.decode().replace(RID, rid).replace(C1, c1).replace(C2, c2)
                        .replace(TEST, f"test_{k}").replace(PROJECT, project))
                text = _fresh_id(text)
                stored.append(StoredEvent(originator_id=uuid.UUID(rid), originator_version=version, topic=topic,
                                          state=text.encode()))
            if repairs_only:
                continue
            for j in (0, 1):
                i = (2 * k + j) % INSTANCES
                heartbeat_versions[i] += 1
                text = _fresh_id(hb_state.decode().replace("svc-INST", f"svc-{i}"))
                stored.append(StoredEvent(originator_id=instance_ids[i], originator_version=heartbeat_versions[i],
                                          topic=hb_topic, state=text.encode()))
            text = _fresh_id(run_state.decode().replace(TEST, f"test_{k}").replace(PROJECT, project))
            stored.append(StoredEvent(originator_id=uuid.uuid4(), originator_version=1, topic=run_topic,
                                      state=text.encode()))
        store.recorder.insert_events(stored)
        written += len(stored)
    return written


def _fresh_id(text: str) -> str:
    """The envelope's own `id` (the first one in the JSON) replaced by a new uuid."""
    head = '"id":"'
    i = text.index(head) + len(head)
    return text[:i] + str(uuid.uuid4()) + text[i + 36:]


def raw_read(path: Path, table: str, page: int = 10_000) -> int:
    """Every row of the notification log, straight from the SQLite file, as tuples."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        after, total = 0, 0
        query = f"SELECT rowid, topic, state FROM {table} WHERE rowid > ? ORDER BY rowid LIMIT ?"
        while rows := conn.execute(query, (after, page)).fetchall():
            total += len(rows)
            after = rows[-1][0]
        return total
    finally:
        conn.close()


def recorder_read(store: EventStore, page: int = 1000) -> int:
    after, total = 0, 0
    while True:
        batch = store.recorder.select_notifications(start=after, limit=page, inclusive_of_start=False)
        if not batch:
            return total
        total += len(batch)
        after = batch[-1].id


def decoded_read(store: EventStore, page: int = 1000) -> int:
    after, total = 0, 0
    while True:
        batch = store.read(after=after, limit=page)
        if not batch:
            return total
        total += len(batch)
        after = batch[-1].position


def measure(home: Path, events: int) -> dict[str, Any]:
    home.mkdir(parents=True, exist_ok=True)
    env = {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(home / "events.sqlite"),
           "SQLITE_LOCK_TIMEOUT": "30"}
    store = EventStore(env)
    t0 = time.perf_counter()
    n = generate(store, events)
    gen_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    raw = raw_read(home / "events.sqlite", store.recorder.events_table_name)  # type: ignore[attr-defined]
    raw_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    recorder = recorder_read(store)
    recorder_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    decoded = decoded_read(store)
    decoded_s = time.perf_counter() - t0
    db = ViewDB.from_store_env(env, home)
    t0, cpu0 = time.perf_counter(), time.process_time()
    positions = rebuild(store, db, default_views())
    rebuild_s, rebuild_cpu_s = time.perf_counter() - t0, time.process_time() - cpu0
    with db.transaction(readonly=True) as tx:
        tx.execute("SELECT COUNT(*) AS n FROM cars_v_repairs")
        row = tx.fetchone()
    repairs = int(row["n"]) if row else 0
    db.close()
    store.close()
    if raw != n or recorder != n or decoded != n or min(positions.values()) < n:
        raise RuntimeError(f"wrote {n} events, read {raw} raw / {recorder} by the recorder / {decoded} decoded, "
                           f"views at {positions}")
    return {
        "events": n, "repairs_in_view": repairs, "generate_s": gen_s,
        "rebuild_s": rebuild_s, "events_per_s": n / rebuild_s,
        # CPU seconds of this process in the rebuild: on a busy box, less noisy than the wall clock.
        "rebuild_cpu_s": rebuild_cpu_s,
        "raw_read_s": raw_s, "raw_events_per_s": n / raw_s,
        "recorder_read_s": recorder_s, "recorder_events_per_s": n / recorder_s,
        "decoded_read_s": decoded_s, "decoded_events_per_s": n / decoded_s,
        "ratio": raw_s / rebuild_s,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--home", type=Path, help="build the store here and keep it (default: a temporary folder)")
    args = ap.parse_args()
    if args.home:
        result = measure(args.home, args.events)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-replay-") as d:
            result = measure(Path(d), args.events)
    write_result("replay", result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
