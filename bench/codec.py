"""Micro-benchmark of the envelope codec (issue 5: ingest and replay both spend most of their time here).

Per-call times, each beside baselines measured in the same run on the same bytes:
- `run.reported` with 200 results (bench/common.py's producer message): `contracts.loads`;
- the stored events of the replay mix (bench/replay.py's templates: 7 events of a repair's life, 2
  heartbeats, 1 run.recorded), read back as the store does: `contracts.codec.loads_stored`.
Baselines: the cattrs path alone (`decode_slow` over the stdlib parser: what every decode cost before
the fast path), and `json.loads` of the same bytes (nothing validated or built).
Encoding (`dumps`) of the same envelopes is timed too, beside what it did before the generated code
(`json.dumps` of the envelope with `data` from the cattrs converter).

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

import replay  # noqa: E402
from common import run_reported  # noqa: E402
from replay import template_events  # noqa: E402

from contracts import Envelope, dumps, loads  # noqa: E402
from contracts.codec import _envelope_dict, _parse, converter, decode_slow, loads_stored  # noqa: E402


def replay_mix() -> list[bytes]:
    """The ten stored events of bench/replay.py's mix (a repair's life, 2 heartbeats, a run.recorded),
    with its placeholders replaced, as the store holds them (dumps, UTF-8)."""
    life, heartbeat, run = template_events()
    now = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    events = [*life, heartbeat, heartbeat, run]
    texts = [dumps(Envelope(data=e, occurred_at=now, correlation_id="bench")) for e in events]
    fresh = {replay.RID: str(uuid.uuid4()), replay.C1: str(uuid.uuid4()), replay.C2: str(uuid.uuid4()),
             replay.TEST: "test_7", replay.PROJECT: "proj-7", "svc-INST": "svc-3"}
    for placeholder, value in fresh.items():
        texts = [t.replace(placeholder, value) for t in texts]
    return [t.encode() for t in texts]


def dumps_cattrs(envelope: Envelope[Any]) -> str:
    """`dumps` as it was: the converter's `unstructure`, and `json.dumps` building its encoder each call."""
    entry = envelope.entry
    encoded = _envelope_dict(envelope, entry, converter.unstructure(envelope.data, entry.cls))
    return json.dumps(encoded, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


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
    assert all(dumps(e) == dumps_cattrs(e) for e in [*envelopes, run_envelope])
    r = args.repeat
    figures = {
        "run_reported_200_loads_us": per_call(lambda: loads(run), 200, r),
        "run_reported_200_cattrs_path_us": per_call(lambda: decode_slow(_parse(run)), 100, r),
        "run_reported_200_json_loads_us": per_call(lambda: json.loads(run), 200, r),
        "run_reported_200_dumps_us": per_call(lambda: dumps(run_envelope), 200, r),
        "run_reported_200_dumps_cattrs_us": per_call(lambda: dumps_cattrs(run_envelope), 100, r),
        "stored_event_loads_us": per_call(mix(lambda s: loads_stored(s, stream_id=sid, stream_version=3)), 2000, r)
        / len(stored),
        "stored_event_cattrs_path_us": per_call(mix(lambda s: decode_slow(
            {**_parse(s), "stream_id": sid, "stream_version": 3})), 500, r) / len(stored),
        "stored_event_json_loads_us": per_call(mix(json.loads), 2000, r) / len(stored),
        "stored_event_dumps_us": per_call(lambda: [dumps(e) for e in envelopes], 1000, r) / len(stored),
        "stored_event_dumps_cattrs_us": per_call(lambda: [dumps_cattrs(e) for e in envelopes], 500, r) / len(stored),
        "stored_event_bytes": sum(map(len, stored)) / len(stored),
    }
    for name, value in figures.items():
        print(f"{name:36s} {value:10.2f}")
    for what in ("run_reported_200", "stored_event"):
        speedup = figures[f"{what}_cattrs_path_us"] / figures[f"{what}_loads_us"]
        print(f"{what + ' decode speed-up':36s} {speedup:10.1f}x")
        speedup = figures[f"{what}_dumps_cattrs_us"] / figures[f"{what}_dumps_us"]
        print(f"{what + ' encode speed-up':36s} {speedup:10.1f}x")


if __name__ == "__main__":
    main()
