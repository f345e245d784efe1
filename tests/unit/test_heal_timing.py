"""The heal benchmark's split of heal time into test reruns and CARS's own work (bench/heal/timing.py),
and how bench/heal_time.py reads it back from a result file. Pure: no subprocess, no service."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


timing = load("heal_timing", BENCH / "heal" / "timing.py")
heal_time = load("heal_time_figure", BENCH / "heal_time.py")


@pytest.mark.parametrize(("intervals", "expected"), [
    ([], 0.0),
    ([(0.0, 2.0)], 2.0),
    ([(0.0, 2.0), (3.0, 4.0)], 3.0),  # apart: both count
    ([(0.0, 2.0), (1.0, 3.0)], 3.0),  # overlapping: the overlap once
    ([(1.0, 3.0), (0.0, 5.0), (4.0, 6.0)], 6.0),  # nested and unsorted
    ([(0.0, 1.0), (1.0, 2.0)], 2.0),  # touching
])
def test_the_time_in_tests_is_the_union_of_the_runs(intervals: list[tuple[float, float]], expected: float) -> None:
    assert timing.union_s(intervals) == pytest.approx(expected)


def test_parallel_runs_never_make_the_test_time_exceed_the_total() -> None:
    # Given a 10 s heal in which two 4 s validations ran side by side, and a 2 s run later
    got = timing.split(10.0, [(1.0, 5.0), (1.5, 5.5), (7.0, 9.0)])
    # Then the time in tests is their union (6.5 s), their plain sum (10 s) is reported beside it
    assert (got["test_runs"], got["test_s"], got["test_sum_s"], got["cars_s"]) == (3, 6.5, 10.0, 3.5)
    assert (got["test_share"], got["cars_share"]) == (0.65, 0.35)
    # And CARS's 3.5 s are split by when: 1 s before the first run, 1.5 s between runs, 1 s after the last
    assert (got["cars_before_s"], got["cars_between_s"], got["cars_after_s"]) == (1.0, 1.5, 1.0)
    # And sampled intervals that outlast the total are clipped to it: CARS's share is never negative
    clipped = timing.split(2.0, [(0.0, 2.05)])
    assert (clipped["test_s"], clipped["cars_s"], clipped["test_share"]) == (2.0, 0.0, 1.0)
    assert (clipped["cars_before_s"], clipped["cars_between_s"], clipped["cars_after_s"]) == (0.0, 0.0, 0.0)
    # And a case with no test run at all is CARS's time, all of it "before"
    assert timing.split(3.0, [])["cars_before_s"] == 3.0
    # And a zero total has no shares rather than a division by zero
    assert timing.split(0.0, [])["test_share"] is None


def record(seconds: float, test_s: float, plain_s: float | None, **kw: object) -> dict[str, object]:
    return {"status": "scored", "healed": True, "tests_only": True, "no_cheat": True, "seconds": seconds,
            "timing": timing.split(seconds, [(0.0, test_s)]), "plain_s": plain_s, **kw}


def test_the_healed_cases_time_is_pooled_and_median() -> None:
    healed = [record(10.0, 6.0, 1.0), record(30.0, 6.0, 2.0), record(20.0, 10.0, None)]
    got = timing.healed_time(healed)
    assert got["cases"] == 3
    assert (got["median_s"], got["median_test_s"], got["median_cars_s"]) == (20.0, 6.0, 10.0)
    # pooled: 22 s of 60 s in tests; per case 0.6, 0.2, 0.5
    assert (got["test_share"], got["cars_share"], got["median_test_share"]) == (0.367, 0.633, 0.5)
    # the multiple of one plain run, over the cases that have one: 10/1 and 30/2
    assert (got["median_plain_s"], got["median_x_plain"]) == (1.5, 12.5)
    # CARS's part by when, from intervals starting at 0 and ending at test_s: all of it after the last run
    assert (got["median_cars_before_s"], got["median_cars_between_s"], got["median_cars_after_s"]) == (0.0, 0.0, 10.0)


def test_records_written_before_timing_give_no_split() -> None:
    old = {"status": "scored", "healed": True, "tests_only": True, "no_cheat": True, "seconds": 80.0}
    assert timing.healed_time([old]) == {"cases": 0}


def test_the_figure_reads_the_split_from_the_heal_result(tmp_path: Path) -> None:
    # Given a heal result with two healed cases, one unhealed, and one written before timing
    untimed = {"status": "scored", "healed": True, "tests_only": True, "no_cheat": True, "seconds": 50.0}
    unhealed = {**record(99.0, 1.0, 1.0), "healed": False}
    doc = {"summary": {"load_avg": {"start": [1.0, 1.0, 1.0], "end": [2.0, 2.0, 2.0]}},
           "results": [record(10.0, 6.0, 1.0), record(30.0, 6.0, 2.0), unhealed, untimed]}
    path = tmp_path / "heal.json"
    path.write_text(json.dumps(doc))
    # When figure 6 reads it
    got = heal_time.read(path)
    # Then the median per healed case counts every healed case, and the split only the timed ones
    assert (got["cases"], got["healed"], got["median_s_per_healed_case"]) == (4, 3, 30.0)
    assert got["timed_cases"] == 2
    assert (got["rerun_share"], got["cars_share"]) == (0.3, 0.7)
    assert (got["median_rerun_s"], got["median_cars_s"], got["median_x_plain"]) == (6.0, 14.0, 12.5)
    assert got["load_avg"] == doc["summary"]["load_avg"]
    # And a missing file says how to make one
    assert "just heal-bench" in heal_time.read(tmp_path / "none.json")["why"]
