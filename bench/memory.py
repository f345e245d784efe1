"""Figure 5: RSS of `cars up` idle, after the ingest benchmark, and across a bounded mixed soak.

The idle and after-ingest readings come from the same process as figures 1 and 2 (see ingest.py).
The soak first waits until every consumer group has worked off what the earlier figures queued (up to
5 minutes; how long it took and what was still behind are reported), then keeps that process busy
for `--soak-minutes` on loopback with a bounded loop; every
second it XADDs `--soak-rate` run reports (new runs, 20 projects), one heartbeat command, and reads
`GET /services`, `GET /repairs` and `GET /events?limit=100`. RSS is sampled every 5 s; growth is the
last sample against the first one (taken after a 10 % warm-up), in percent.

Baseline, same run: the RSS of a bare Python interpreter that imports everything `cars up` imports
and starts nothing (the floor no CARS change can go under).

Usage: python bench/memory.py [--soak-minutes M] (runs ingest.py's SQLite setup with a small N first)
       python bench/memory.py --against REDIS_URL --pid PID --base-url URL --out FILE [--soak-minutes M]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import redis  # noqa: E402
from common import Cars, rss_mb, run_reported, write_result  # noqa: E402

from bus import streams  # noqa: E402


def import_floor_mb() -> float:
    """RSS of a Python process that imports the runtime and does nothing else."""
    code = "import bus.runtime, bus.cli, sys; sys.stdout.write('ok'); sys.stdout.flush(); sys.stdin.read()"
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            cwd=HERE.parent)
    try:
        assert proc.stdout is not None
        proc.stdout.read(2)
        return rss_mb(proc.pid)
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=10)


def backlog(client: redis.Redis) -> int:
    """Entries read but not acknowledged, or not yet read, over every consumer group of every CARS stream."""
    total = 0
    for key in client.scan_iter(match="cars.*", _type="stream"):
        for group in client.xinfo_groups(key):
            total += int(group.get("pending") or 0) + int(group.get("lag") or 0)
    return total


def wait_drained(client: redis.Redis, timeout_s: float) -> tuple[float, int]:
    """Wait until every group has caught up with the work the earlier figures queued (the healer's share
    of thousands of failures takes a while); (seconds waited, entries still behind at the end)."""
    start = time.monotonic()
    while (left := backlog(client)) and time.monotonic() - start < timeout_s:
        time.sleep(1.0)
    return time.monotonic() - start, left


def soak(cars: Cars | Running, url: str, minutes: float, rate: int, drain_timeout_s: float = 300.0) -> dict[str, Any]:
    """The soak starts once the process has worked off what the earlier figures left queued: it measures
    the steady state, not a backlog being worked off (which fills the process's bounded caches)."""
    client = redis.Redis.from_url(url)
    drained_s, behind = wait_drained(client, drain_timeout_s)
    drained_rss = cars.rss_mb()
    samples: list[tuple[float, float]] = []
    seconds = minutes * 60
    warmup = seconds * 0.1
    start = time.monotonic()
    i = 0
    next_sample = start + warmup
    http_errors = 0
    while (now := time.monotonic()) - start < seconds:
        pipe = client.pipeline(transaction=False)
        for _ in range(rate):
            pipe.xadd(streams.INGEST, {streams.MESSAGE_FIELD: run_reported(f"soak-p{i % 20}", f"soak-r{i}")})
            i += 1
        beat = json.dumps({"type": "service.heartbeat", "data": {"instance": "soak-bot"}})
        pipe.xadd(streams.COMMANDS, {streams.MESSAGE_FIELD: beat})
        pipe.execute()
        for path in ("/services", "/repairs", "/events?limit=100"):
            try:
                with urllib.request.urlopen(cars.base_url + path, timeout=30) as resp:
                    resp.read()
            except (OSError, urllib.error.URLError):
                http_errors += 1
        if now >= next_sample:
            samples.append((now - start, cars.rss_mb()))
            next_sample += 5
        time.sleep(max(0.0, 1.0 - (time.monotonic() - now)))
    samples.append((time.monotonic() - start, cars.rss_mb()))
    client.close()
    first, last = samples[0][1], samples[-1][1]
    return {
        "soak_minutes": minutes, "soak_drain_s": drained_s, "soak_behind_at_start": behind,
        "soak_rss_after_drain_mb": drained_rss, "soak_runs": i, "soak_rate_runs_per_s": rate,
        "soak_http_errors": http_errors,
        "soak_rss_start_mb": first, "soak_rss_end_mb": last, "soak_rss_max_mb": max(s[1] for s in samples),
        "soak_rss_growth_pct": (last - first) / first * 100, "soak_samples": samples,
    }


class Running:
    """A CARS process this script did not start: its pid (for RSS) and its HTTP base URL."""

    def __init__(self, pid: int, base_url: str) -> None:
        self.pid = pid
        self.base_url = base_url

    def rss_mb(self) -> float:
        return rss_mb(self.pid)


def start_soak(cars: Cars, url: str, minutes: float, rate: int, out: Path) -> subprocess.Popen[bytes]:
    """The soak of `cars` in a process of its own (`--against`), so that what the caller runs meanwhile
    (the other figures) does not slow its once-a-second loop; `finish_soak` collects the result."""
    return subprocess.Popen([
        sys.executable, str(Path(__file__)), "--against", url, "--pid", str(cars.proc.pid),
        "--base-url", cars.base_url, "--soak-minutes", str(minutes), "--soak-rate", str(rate), "--out", str(out),
    ], stdout=sys.stderr)


def finish_soak(proc: subprocess.Popen[bytes], out: Path, timeout_s: float) -> dict[str, Any]:
    """Wait for a `start_soak` process and read what it measured."""
    if proc.wait(timeout=timeout_s) != 0:
        raise RuntimeError(f"the soak process exited with {proc.returncode}")
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def between(minutes: float, rate: int) -> Any:
    """The hook ingest.run_sqlite calls with the process it measured."""
    def run(cars: Cars, url: str) -> dict[str, Any]:
        return soak(cars, url, minutes, rate) if minutes > 0 else {}
    return run


def main() -> None:
    import ingest

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--soak-minutes", type=float, default=2.0)
    ap.add_argument("--soak-rate", type=int, default=2, help="run reports per second during the soak")
    ap.add_argument("--runs", type=int, default=100, help="ingest runs before the soak")
    ap.add_argument("--against", metavar="REDIS_URL", help="soak a CARS already running on this bus (with --pid, "
                    "--base-url and --out; `just bench` runs its soak so, beside the other figures)")
    ap.add_argument("--pid", type=int, help="with --against: the pid of that CARS process")
    ap.add_argument("--base-url", help="with --against: its HTTP API, e.g. http://127.0.0.1:8080")
    ap.add_argument("--out", type=Path, help="with --against: write the result (JSON) here")
    args = ap.parse_args()
    if args.against:
        if args.pid is None or args.base_url is None or args.out is None:
            ap.error("--against needs --pid, --base-url and --out")
        got = soak(Running(args.pid, args.base_url), args.against, args.soak_minutes, args.soak_rate)
        args.out.write_text(json.dumps(got))
        return
    result = ingest.run_sqlite(args.runs, 20, 0, 0, 600, between=between(args.soak_minutes, args.soak_rate))
    result["import_floor_mb"] = import_floor_mb()
    with contextlib.suppress(KeyError):
        del result["ingest"]
    write_result("memory", result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
