"""Micro-benchmark of the envelope codec (issue 5: ingest and replay both spend most of their time here).

Per-call times, each beside baselines measured in the same run on the same bytes:
- `run.reported` with 200 results (bench/common.py's producer message): `contracts.loads`;
- the stored events of the replay mix (bench/replay.py's templates: 7 events of a repair's life, 2
  heartbeats, 1 run.recorded), read back as the store does: `contracts.codec.loads_stored`.
Baselines: the cattrs path alone (`decode_slow` over the stdlib parser: what every decode cost before
the fast path), and `json.loads` of the same bytes (nothing validated or built).
Encoding (`dumps`) of the same envelopes is timed too.

Usage: python bench/codec.py [--repeat N]   (prints the best of N rounds, in microseconds per message)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from common import run_reported  # noqa: E402

from contracts import Envelope, dumps, loads  # noqa: E402
from contracts.codec import _parse, decode_slow, loads_stored  # noqa: E402
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

PATCH = ("--- a/tests/test_x.py\n+++ b/tests/test_x.py\n@@ -1 +1 @@\n"
         "-from shop import total\n+from shop import total_price\n")


def replay_mix() -> list[bytes]:
    """The ten stored events of bench/replay.py's mix, as the store holds them (dumps, UTF-8)."""
    now = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    rid, c1, c2 = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    test = "tests/test_x.py::test_7"
    evidence = ValidationEvidence(reruns=3, passes=3)
    events: list[Any] = [
        HealRequested(repair_id=rid, project="proj-7", test_id=test, fingerprint="fp-test_7",
                      category=FailureClass.RENAMED_SYMBOL, reason="module shop has no attribute total"),
        HealProposed(repair_id=rid, candidate_id=c1, strategy="renamed_symbol", rank=1, confidence=0.9, patch=PATCH,
                     files=("tests/test_x.py",)),
        HealProposed(repair_id=rid, candidate_id=c2, strategy="import_path", rank=2, confidence=0.5, patch=PATCH,
                     files=("tests/test_x.py",)),
        HealRejected(repair_id=rid, candidate_id=c2, reason="the healed test still fails"),
        HealValidated(repair_id=rid, candidate_id=c1, evidence=evidence),
        RepairCompleted(repair_id=rid, candidate_id=c1, project="proj-7", test_id=test,
                        category=FailureClass.RENAMED_SYMBOL, strategy="renamed_symbol", confidence=0.9, patch=PATCH,
                        evidence=evidence),
        RepairApplied(repair_id=rid, files=("tests/test_x.py",)),
        HeartbeatRecorded(instance="svc-3", at=now),
        HeartbeatRecorded(instance="svc-4", at=now),
        RunRecorded(project="proj-7", run_id="run-test_7", total=200, passed=196, failed=4, failed_tests=(test,)),
    ]
    return [dumps(Envelope(data=e, occurred_at=now, correlation_id="bench")).encode() for e in events]


def per_call(fn: Callable[[], Any], calls: int, repeat: int) -> float:
    """Best of `repeat` rounds of `calls` calls, in CPU microseconds per call (the box is shared)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        for _ in range(calls):
            fn()
        best = min(best, (time.process_time() - t0) / calls)
    return best * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    run = run_reported("shop", "ci-1")
    stored = replay_mix()
    sid = uuid.uuid4()
    assert loads(run).data == decode_slow(_parse(run)).data  # (occurred_at is left to the decoder: now)
    assert all(loads_stored(s, stream_id=sid, stream_version=3)
               == decode_slow({**_parse(s), "stream_id": sid, "stream_version": 3}) for s in stored)

    def mix(decode_one: Callable[[bytes], Any]) -> Callable[[], None]:
        def go() -> None:
            for s in stored:
                decode_one(s)
        return go

    envelopes = [loads(s) for s in stored]
    run_envelope = loads(run)
    r = args.repeat
    figures = {
        "run_reported_200_loads_us": per_call(lambda: loads(run), 200, r),
        "run_reported_200_cattrs_path_us": per_call(lambda: decode_slow(_parse(run)), 100, r),
        "run_reported_200_json_loads_us": per_call(lambda: json.loads(run), 200, r),
        "run_reported_200_dumps_us": per_call(lambda: dumps(run_envelope), 200, r),
        "stored_event_loads_us": per_call(mix(lambda s: loads_stored(s, stream_id=sid, stream_version=3)), 2000, r)
        / len(stored),
        "stored_event_cattrs_path_us": per_call(mix(lambda s: decode_slow(
            {**_parse(s), "stream_id": sid, "stream_version": 3})), 500, r) / len(stored),
        "stored_event_json_loads_us": per_call(mix(json.loads), 2000, r) / len(stored),
        "stored_event_dumps_us": per_call(lambda: [dumps(e) for e in envelopes], 2000, r) / len(stored),
        "stored_event_bytes": sum(map(len, stored)) / len(stored),
    }
    for name, value in figures.items():
        print(f"{name:36s} {value:10.2f}")
    for what in ("run_reported_200", "stored_event"):
        speedup = figures[f"{what}_cattrs_path_us"] / figures[f"{what}_loads_us"]
        print(f"{what + ' speed-up':36s} {speedup:10.1f}x")


if __name__ == "__main__":
    main()
