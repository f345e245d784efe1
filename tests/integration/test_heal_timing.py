"""The heal benchmark's two clocks of test reruns (bench/heal/timing.py), against real processes and a
real event store: the process-tree sampler, and the runs the validator recorded in its evidence."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from bus.settings import Settings
from bus.store import EventStore
from contracts import Envelope
from contracts.repairs import HealRejected, HealValidated
from contracts.values import TimedRun, ValidationEvidence
from tests.unit.test_heal_timing import load

timing = load("heal_timing", Path(__file__).resolve().parents[2] / "bench" / "heal" / "timing.py")

# A parent that runs, as its children: two "pytest" processes side by side (0.8 s and 0.4 s), then one
# more (0.5 s), and beside them all a process that is not a test run (1.5 s), which must not count.
PARENT = """
import subprocess, sys
def child(seconds, *tag):
    return subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds})", *tag])
other = child(1.5, "not-a-test")
a, b = child(0.8, "pytest", "-q"), child(0.4, "pytest", "-q")
a.wait(); b.wait()
child(0.5, "pytest", "-q").wait()
other.wait()
"""


def test_the_sampler_times_each_test_subprocess_of_the_tree() -> None:
    # Given a process tree running three test subprocesses, two of them at once
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", PARENT])
    # When it is watched until it ends
    with timing.SubprocessTimer(proc.pid) as timer:
        proc.wait()
    elapsed = time.monotonic() - t0
    intervals = timer.intervals(origin=t0)
    # Then each test subprocess is one interval, within a tick or two (plus interpreter start) of its sleep
    assert len(intervals) == 3
    lengths = sorted(b - a for a, b in intervals)
    for got, slept in zip(lengths, [0.4, 0.5, 0.8], strict=True):
        assert slept - 2 * timing.TICK_S <= got <= slept + 0.6, lengths
    # And the time in tests is their union: the parallel pair once, then the third, less than the sum
    got = timing.split(elapsed, intervals)
    assert got["test_s"] < got["test_sum_s"]
    assert 1.3 - 2 * timing.TICK_S <= got["test_s"] <= 1.3 + 1.0, got
    assert got["cars_s"] == pytest.approx(elapsed - got["test_s"], abs=0.01)
    # And the parent's own start-up, before its first test child, is CARS's time "before"
    assert 0.0 < got["cars_before_s"] < 1.0


def test_a_process_outside_the_tree_is_not_counted() -> None:
    # Given a test-named process that is not a descendant of the watched one
    outsider = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1)", "pytest"])
    watched = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5)"])
    try:
        with timing.SubprocessTimer(watched.pid) as timer:
            watched.wait()
    finally:
        outsider.wait()
    assert timer.intervals() == []


def test_the_validator_runs_are_read_from_the_evidence_in_the_store(tmp_path: Path) -> None:
    # Given a session's store holding a validated and a rejected candidate, with timed runs, and an old
    # rejection without any
    store = EventStore(Settings.from_env({"CARS_HOME": str(tmp_path)}).store_env())
    repair, ok, bad = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    runs = (TimedRun(purpose="baseline", started_at=100.0, duration_s=1.0),
            TimedRun(purpose="rerun", started_at=101.5, duration_s=0.5),
            TimedRun(purpose="mutation", started_at=102.0, duration_s=0.25))
    try:
        store.append(repair, 0, [
            Envelope(data=HealRejected(repair_id=repair, candidate_id=uuid.uuid4(), reason="old")),
            Envelope(data=HealRejected(repair_id=repair, candidate_id=bad, reason="rerun failed",
                                       evidence=ValidationEvidence(runs=runs[:1]))),
            Envelope(data=HealValidated(repair_id=repair, candidate_id=ok, evidence=ValidationEvidence(runs=runs))),
        ])
    finally:
        store.close()
    # When the benchmark reads them back
    got = timing.validator_runs(tmp_path)
    # Then every timed run is there, with its candidate, and they sum per purpose
    assert [(r["purpose"], r["candidate_id"]) for r in got] == [
        ("baseline", str(bad)), ("baseline", str(ok)), ("rerun", str(ok)), ("mutation", str(ok))]
    assert timing.by_purpose(got) == {"baseline": {"runs": 2, "sum_s": 2.0}, "rerun": {"runs": 1, "sum_s": 0.5},
                                      "mutation": {"runs": 1, "sum_s": 0.25}}
