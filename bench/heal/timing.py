"""Where a heal's time goes: in the project's test subprocesses that CARS runs, or in CARS itself.

Two sources, each used for what it sees:

- `SubprocessTimer` watches the process tree of `cars repair` and records how long each test subprocess
  (a descendant whose command line contains the test command) lived. It sees every test run: the session's own runs
  (the first run, and the run after the repairs are applied) and every validation run. Sampled: each
  lifetime is known to within one tick (50 ms) at either end.
- `validator_runs` reads the runs the validator timed itself from the evidence of every `heal.validated`
  and `heal.rejected` in the session's event store (baseline, rerun, regressions, mutation), exactly.

`split` turns a case's total and its run intervals into the figures the benchmark reports. Runs may
overlap (candidates validated in parallel), so the time "in tests" is the wall-clock covered by at least
one run (their union), never more than the total; the plain sum of their durations is reported beside it.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

Interval = tuple[float, float]  # (start, end), seconds on one clock

TICK_S = 0.05


def union_s(intervals: Iterable[Interval]) -> float:
    """Seconds covered by at least one of `intervals`."""
    total = 0.0
    end = float("-inf")
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def sum_s(intervals: Iterable[Interval]) -> float:
    return sum(b - a for a, b in intervals)


def split(total_s: float, intervals: Sequence[Interval]) -> dict[str, Any]:
    """The split of `total_s` seconds, with `intervals` measured from the start of the case (0): in test
    subprocesses (their union, clipped to the total) and in CARS (the rest), with shares of the total.
    CARS's part is split again by when it happened: before the first test run (`cars_before_s`: start-up,
    imports), after the last (`cars_after_s`: shutting down), and between runs (`cars_between_s`:
    classifying, proposing, provisioning, the bus and the store, starting the platform)."""
    clipped = [(max(a, 0.0), min(b, total_s)) for a, b in intervals if b > 0 and a < total_s]
    in_tests = union_s(clipped)
    before = min((a for a, _ in clipped), default=total_s)
    after = total_s - max((b for _, b in clipped), default=total_s)
    cars = total_s - in_tests
    return {
        "test_runs": len(intervals),
        "test_s": round(in_tests, 2),
        "test_sum_s": round(sum_s(intervals), 2),
        "cars_s": round(cars, 2),
        "cars_before_s": round(before, 2),
        "cars_between_s": round(max(cars - before - after, 0.0), 2),
        "cars_after_s": round(after, 2),
        "test_share": round(in_tests / total_s, 3) if total_s > 0 else None,
        "cars_share": round(1 - in_tests / total_s, 3) if total_s > 0 else None,
    }


def healed_time(healed: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Where the healed cases' time went, from their result records (bench/results/heal.json): the
    median seconds per case and in tests and in CARS; the pooled shares (all their seconds in test
    subprocesses over all their seconds) and the median per-case share; and the heal time as a multiple
    of one plain run of the case's failing tests. Records without timing (older files) are left out;
    with none, only `cases: 0`."""
    timed = [r for r in healed if r.get("timing")]
    if not timed:
        return {"cases": 0}
    total = sum(r["seconds"] for r in timed)
    in_tests = sum(r["timing"]["test_s"] for r in timed)
    plain = [r for r in timed if r.get("plain_s")]
    return {
        "cases": len(timed),
        "median_s": round(statistics.median(r["seconds"] for r in timed), 1),
        "median_test_s": round(statistics.median(r["timing"]["test_s"] for r in timed), 1),
        "median_cars_s": round(statistics.median(r["timing"]["cars_s"] for r in timed), 1),
        **{f"median_{part}_s": _median(r["timing"].get(f"{part}_s") for r in timed)
           for part in ("cars_before", "cars_between", "cars_after")},
        "test_share": round(in_tests / total, 3) if total > 0 else None,
        "cars_share": round(1 - in_tests / total, 3) if total > 0 else None,
        "median_test_share": round(statistics.median(r["timing"]["test_share"] or 0.0 for r in timed), 3),
        "median_plain_s": round(statistics.median(r["plain_s"] for r in plain), 2) if plain else None,
        "median_x_plain": round(statistics.median(r["seconds"] / r["plain_s"] for r in plain), 1) if plain else None,
    }


def _median(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(statistics.median(known), 1) if known else None


# ---------------------------------------------------------------- sampling the process tree

def _parents() -> dict[int, int]:
    """pid -> parent pid of every process visible in /proc."""
    out: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue  # it ended meanwhile
        # `pid (comm) state ppid ...`; comm may hold spaces and parentheses, so split after the last ')'
        out[int(name)] = int(stat[stat.rfind(b")") + 2:].split()[1])
    return out


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


class SubprocessTimer:
    """Samples the descendants of `root` every `tick_s` seconds, in a thread, and keeps the lifetime
    (first seen, last seen + one tick) of each whose command line contains `marker`, on the
    `time.monotonic()` clock. A process nested in another watched one (a worker of pytest-xdist) is
    watched too; `union_s` counts overlapping time once."""

    def __init__(self, root: int, *, marker: str = "pytest", tick_s: float = TICK_S) -> None:
        self.root, self.marker, self.tick_s = root, marker, tick_s
        self._seen: dict[int, list[float]] = {}  # pid -> [first, last]
        self._cmd: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="subprocess-timer", daemon=True)

    def __enter__(self) -> SubprocessTimer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.tick_s)

    def sample(self) -> None:
        now = time.monotonic()
        parents = _parents()
        children: dict[int, list[int]] = {}
        for pid, ppid in parents.items():
            children.setdefault(ppid, []).append(pid)
        todo, tree = [self.root], []
        while todo:
            pid = todo.pop()
            for kid in children.get(pid, ()):
                tree.append(kid)
                todo.append(kid)
        for pid in tree:
            if pid not in self._cmd:
                self._cmd[pid] = _cmdline(pid)  # read once: a pid is not reused within one case
            if self.marker in self._cmd[pid]:
                self._seen.setdefault(pid, [now, now])[1] = now

    def intervals(self, origin: float = 0.0) -> list[Interval]:
        """The lifetimes seen, in seconds since `origin` (a `time.monotonic()` reading)."""
        return [(first - origin, last + self.tick_s - origin) for first, last in self._seen.values()]


# ---------------------------------------------------------------- what the validator recorded

def validator_runs(cars_home: Path) -> list[dict[str, Any]]:
    """The test runs the validator timed, from the evidence in the SQLite event store of `cars_home`:
    one dict per run (purpose, started_at on the epoch clock, duration_s, candidate_id)."""
    from bus.settings import Settings
    from bus.store import EventStore

    store = EventStore(Settings.from_env({"CARS_HOME": str(cars_home)}).store_env())
    try:
        runs: list[dict[str, Any]] = []
        after = 0
        while batch := store.read(after, limit=500, types=("heal.validated", "heal.rejected")):
            for rec in batch:
                data = rec.envelope.data
                runs += [{"purpose": r.purpose, "started_at": r.started_at, "duration_s": r.duration_s,
                          "candidate_id": str(data.candidate_id)} for r in data.evidence.runs]
            after = batch[-1].position
        return runs
    finally:
        store.close()


def by_purpose(runs: Iterable[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per purpose: how many runs and their summed seconds."""
    out: dict[str, dict[str, float]] = {}
    for r in runs:
        row = out.setdefault(r["purpose"], {"runs": 0, "sum_s": 0.0})
        row["runs"] += 1
        row["sum_s"] = round(row["sum_s"] + r["duration_s"], 2)
    return out
