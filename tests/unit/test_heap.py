"""`bus.heap.settle`: what a started `cars up` / `cars worker` does to the garbage collector. Run in a
subprocess of its own, so that the test session's collector is left as it is."""

from __future__ import annotations

import json
import subprocess
import sys

from bus import heap

PROBE = """
import gc, json
from bus import heap
before = gc.get_freeze_count()
heap.settle()
print(json.dumps({"before": before, "frozen": gc.get_freeze_count(), "thresholds": gc.get_threshold()}))
"""


def test_settle_freezes_what_start_up_made_and_raises_the_thresholds() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60)
    got = json.loads(out.stdout)
    assert got["before"] == 0
    assert got["frozen"] > 1_000  # the imports' objects, at least
    assert tuple(got["thresholds"]) == heap.THRESHOLDS
    assert heap.THRESHOLDS[0] > 700 and heap.THRESHOLDS[2] > 10  # rarer than CPython's defaults
