"""GET /statistics under load, beside the API's own ceiling (GET /health) measured in the same run.

Builds a SQLite event store with N repairs (default 100,000: each requested, proposed twice, one
candidate rejected with a reason, one validated and completed, most applied, some failing again;
spread over 10 projects and every failure class), folds it into the statistics view with the
projection runner, serves the real API alone (no actors, relay or projections beside it) with uvicorn
on loopback, as `cars up` configures it (uvloop and httptools when installed), and runs `wrk` against
both routes for `--seconds` s each, in `--rounds` runs taken in turn (bench/queries.py `in_rounds`).
The events of many repairs are appended per call (the views read repair ids from the events, not
the stream) so that building the history takes minutes, not hours.

Usage: python bench/statistics_api.py [--repairs N] [--seconds S] [--connections C] [--rounds R]. Needs `wrk`.
Results also go to bench/results/statistics_api.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import uvicorn

from bus.store import EventStore
from contracts import Envelope, natural_id
from contracts.failures import FailureDetected
from contracts.repairs import HealProposed, HealRejected, HealRequested, HealValidated, RepairApplied, RepairCompleted
from contracts.values import FailureClass, ValidationEvidence
from projections.api import ApiDeps, create_api
from projections.db import ViewDB
from projections.runner import ProjectionRunner
from projections.statistics import StatisticsView

sys.path.insert(0, str(Path(__file__).resolve().parent))
from queries import in_rounds

CLASSES = [c for c in FailureClass if c not in (FailureClass.ENVIRONMENT, FailureClass.PRODUCT_REGRESSION)]
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
PATCH = "--- a/tests/test_x.py\n+++ b/tests/test_x.py\n@@ -1 +1 @@\n-a\n+b\n"


def repair_events(n: int) -> list[Any]:
    project, category = f"p{n % 10}", CLASSES[n % len(CLASSES)]
    fp = f"fp{n}"
    rid = natural_id("repair", project, fp)
    c1, c2 = natural_id("c", rid, 1), natural_id("c", rid, 2)
    test = f"tests/test_{n}.py::test_x"
    events: list[Any] = [
        FailureDetected(project=project, test_id=test, run_id=f"r{n}", fingerprint=fp, category=category),
        HealRequested(repair_id=rid, project=project, test_id=test, fingerprint=fp, category=category),
        HealProposed(repair_id=rid, candidate_id=c1, strategy="renamed_symbol", rank=1, confidence=0.8, patch=PATCH),
        HealProposed(repair_id=rid, candidate_id=c2, strategy="import_path", rank=2, confidence=0.6, patch=PATCH),
        HealRejected(repair_id=rid, candidate_id=c1, reason="rerun 1 of 3 did not pass"),
        HealValidated(repair_id=rid, candidate_id=c2, evidence=ValidationEvidence(reruns=3, passes=3)),
        RepairCompleted(repair_id=rid, candidate_id=c2, project=project, test_id=test, category=category,
                        strategy="import_path", confidence=0.6, patch=PATCH),
    ]
    if n % 5:
        events.append(RepairApplied(repair_id=rid))
    if n % 50 == 1:
        events.append(FailureDetected(project=project, test_id=test, run_id=f"r{n}b", fingerprint=fp,
                                      category=category))
    return events


def build(store: EventStore, repairs: int, per_append: int = 500) -> int:
    stream, version, t = uuid.uuid4(), 0, 0
    for start in range(0, repairs, per_append):
        events = []
        for n in range(start, min(start + per_append, repairs)):
            for e in repair_events(n):
                t += 1
                events.append(Envelope(data=e, occurred_at=T0 + dt.timedelta(seconds=t)))
        store.append(stream, version, events)
        version += len(events)
    return version


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repairs", type=int, default=100_000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="wrk runs per route, taken in turn (median reported)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("needs wrk (apt-get install wrk)")
    with tempfile.TemporaryDirectory() as tmp:
        store = EventStore({"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": f"{tmp}/events.sqlite"})
        db = ViewDB.sqlite(Path(tmp) / "views.sqlite")
        started = time.monotonic()
        events = build(store, args.repairs)
        built = time.monotonic() - started
        started = time.monotonic()
        ProjectionRunner(store, db, [StatisticsView()], batch=5000).catch_up()
        folded = time.monotonic() - started
        print(f"{args.repairs} repairs, {events} events: appended in {built:.1f} s, folded in {folded:.1f} s")

        async def refuse(_: Envelope[Any]) -> tuple[str, str]:
            raise RuntimeError("the benchmark publishes nothing")

        async def ready() -> dict[str, str]:
            return {"store": "ok"}

        deps = ApiDeps(read_events=store.read, load_stream=store.load, list_services=list, publish=refuse,
                       ready=ready, asyncapi=dict, max_body_bytes=1 << 20, views=db)
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(create_api(deps), host="127.0.0.1", port=port, log_level="warning",
                                               access_log=False, lifespan="off"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        base = f"http://127.0.0.1:{port}"
        stats = json.loads(subprocess.run(["curl", "-s", f"{base}/statistics"], capture_output=True,
                                          check=True).stdout)
        assert stats["repairs"]["repairs"] == args.repairs, stats["repairs"]
        figures = in_rounds(base, ["/health", "/statistics"], args.connections, args.seconds, args.rounds,
                            pid=os.getpid())
        baseline, measured = figures["/health"], figures["/statistics"]
        server.should_exit = True
        thread.join(timeout=10)
        store.close()
        db.close()
    result = {"repairs": args.repairs, "events": events, "fold_s": round(folded, 1),
              "statistics": measured, "baseline_health": baseline}
    print(f"GET /statistics  {measured['rps']:>9.0f} req/s  p99 {measured['p99_ms']:.1f} ms  "
          f"non-2xx {measured['non_2xx']:.0f}")
    print(f"GET /health      {baseline['rps']:>9.0f} req/s  p99 {baseline['p99_ms']:.1f} ms  (baseline)")
    out = Path(__file__).parent / "results" / "statistics_api.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
