"""Figure 6: heal time, read from the last heal-benchmark result (bench/results/heal.json).

The heal benchmark (`just heal-bench`, bench/heal/run.py) takes 10-20 minutes, so `just bench` does
not run it; it reads what the last run wrote. Reported: the median seconds of `cars repair --apply` per
healed case (and per scored case), how old the file is, and where the healed cases' time went
(bench/heal/timing.py): the share in the test subprocesses CARS ran (`rerun_share`: the wall-clock
covered by at least one, over all their seconds) and in CARS itself (`cars_share`, the rest), the median
seconds of each, and the median plain run of a case's failing tests without CARS (the baseline) with the
heal time as a multiple of it. A file written before the benchmark timed its cases has none of these
(None), never guessed.

Usage: python bench/heal_time.py [--file PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "heal"))

from common import RESULTS  # noqa: E402
from timing import healed_time  # noqa: E402


def read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {"available": False, "why": f"{path} does not exist: run `just heal-bench` (or --case X)"}
    doc = json.loads(path.read_text())
    scored = [r for r in doc.get("results", []) if r.get("status") == "scored"]
    healed = [r for r in scored if r.get("healed") and r.get("tests_only") and r.get("no_cheat")]
    split = healed_time(healed)
    return {
        "available": True, "file": str(path), "age_hours": (time.time() - path.stat().st_mtime) / 3600,
        "cases": len(scored), "healed": len(healed),
        "median_s_per_healed_case": statistics.median(r["seconds"] for r in healed) if healed else None,
        "median_s_per_case": statistics.median(r["seconds"] for r in scored) if scored else None,
        "timed_cases": split["cases"],
        "rerun_share": split.get("test_share"),
        "cars_share": split.get("cars_share"),
        "median_rerun_s": split.get("median_test_s"),
        "median_cars_s": split.get("median_cars_s"),
        "median_cars_before_s": split.get("median_cars_before_s"),
        "median_cars_between_s": split.get("median_cars_between_s"),
        "median_cars_after_s": split.get("median_cars_after_s"),
        "median_plain_s": split.get("median_plain_s"),
        "median_x_plain": split.get("median_x_plain"),
        "load_avg": doc.get("summary", {}).get("load_avg"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--file", type=Path, default=RESULTS / "heal.json")
    print(json.dumps(read(ap.parse_args().file), indent=2))


if __name__ == "__main__":
    main()
