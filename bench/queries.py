"""Figure 4: HTTP queries under `wrk`, over a store holding many repairs, beside a same-run baseline.

A store with `--repairs` repairs (heal.requested + repair.completed each, written as in replay.py) is
folded into the views with `cars replay`'s rebuild; then a real `cars up` serves it (its relay
position is set to the end of the store first, so it does not republish history meanwhile) and
`wrk` (Debian's package) drives each route with `--connections` connections for `--duration` s in all,
in `--rounds` runs taken in turn with the other routes and the baseline (the median run is reported):
the machine is shared, and its load moves.

Routes: `GET /statistics` when the running CARS serves it (read from its /openapi.json, so the figure
appears by itself once the route exists; nothing is reported while it does not), `GET /repairs`
and `GET /services`. Baseline, same process and run: `GET /health`, the cheapest route: the floor of
the HTTP stack (uvicorn + FastAPI) on this machine.

Usage: python bench/queries.py [--repairs N] [--connections C] [--duration S] [--rounds R] [--profile DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import redis  # noqa: E402
from common import Cars, private_redis, write_result  # noqa: E402
from replay import generate  # noqa: E402

from bus.store import EventStore  # noqa: E402
from bus.streams import RELAY_POSITION_KEY  # noqa: E402
from projections.db import ViewDB  # noqa: E402
from projections.replay import rebuild  # noqa: E402
from projections.views import default_views  # noqa: E402

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def wrk(url: str, connections: int, duration: float, timeout_s: float = 30.0) -> dict[str, float]:
    """requests/s, p50/p99 in ms, and error counts from one wrk run."""
    exe = shutil.which("wrk")
    if exe is None:
        raise RuntimeError("wrk is not installed (Debian: apt-get install wrk)")
    seconds = max(1, round(duration))  # wrk refuses a fractional duration ("3.33s")
    out = subprocess.run(
        [exe, "-t2", f"-c{connections}", f"-d{seconds}s", f"--timeout={timeout_s:g}s", "--latency", url],
        capture_output=True, text=True, check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    pct = {p: _ms(v, u) for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)}
    total = re.search(r"(\d+) requests in", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    requests = int(total.group(1)) if total else 0
    if requests == 0:  # wrk prints 0us percentiles when nothing completed: no latency was measured
        pct = {}
    return {
        "rps": rps, "p50_ms": pct.get("50", float("nan")), "p99_ms": pct.get("99", float("nan")),
        "requests": requests,
        "socket_errors": sum(int(x) for x in errors.groups()) if errors else 0,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
    }


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNITS[unit]


def served_paths(base_url: str) -> set[str]:
    with urllib.request.urlopen(base_url + "/openapi.json", timeout=30) as resp:
        return set(json.load(resp).get("paths", {}))


def one_request(url: str) -> tuple[int, float]:
    """(response bytes, seconds) of one GET on an otherwise idle server."""
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=300) as resp:
        size = len(resp.read())
    return size, time.perf_counter() - t0


def profiled(pid: int, out: Path | None, duration: float) -> subprocess.Popen[bytes] | None:
    """py-spy sampling `pid` for `duration` s into `out` (collapsed stacks, one per line) while wrk runs, when asked."""
    if out is None:
        return None
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return subprocess.Popen([exe, "record", "--pid", str(pid), "--duration", f"{max(1, int(duration) - 1)}",
                             "--rate", "200", "--format", "raw", "--output", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def cpu_s(pid: int | None) -> float | None:
    """CPU seconds (user + system) the process `pid` has used, from /proc; None without one."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def in_rounds(base_url: str, routes: list[str], connections: int, duration: float, rounds: int,
              pid: int | None = None, profile: Path | None = None) -> dict[str, dict[str, Any]]:
    """Each route for `duration` s in all, in `rounds` wrk runs taken in turn (the first route, the
    baseline, first in each round): a change in the machine's load (it is shared) falls on the baseline
    and the routes alike, not on whichever ran last. Per route: its median run (by requests/s), and every
    run under `runs`. With `profile`, py-spy samples `pid` during the first round."""
    each_s = float(max(2, round(duration / rounds)))
    runs: dict[str, list[dict[str, Any]]] = {route: [] for route in routes}
    for n in range(rounds):
        for route in routes:
            out_file = profile / f"{route.strip('/')}.txt" if profile is not None and n == 0 else None
            spy = profiled(pid, out_file, each_s) if pid is not None else None
            cpu = cpu_s(pid)
            run = wrk(base_url + route, connections, each_s)
            if cpu is not None and run["requests"]:
                # The server's CPU time per answered request: what the machine's load does not change
                # (it includes whatever else the process did meanwhile, e.g. polling its subscribers).
                run["cpu_ms_per_request"] = round(((cpu_s(pid) or cpu) - cpu) * 1000 / run["requests"], 3)
            runs[route].append(run)
            if spy is not None:
                spy.wait(timeout=60)
    return {route: {**sorted(measured, key=lambda r: r["rps"])[len(measured) // 2], "runs": measured}
            for route, measured in runs.items()}


def measure(repairs: int, connections: int, duration: float, profile: Path | None = None, rounds: int = 3,
            command: tuple[str, ...] = ("up",)) -> dict[str, Any]:
    """Each route (and the baseline) for `duration` s in all, split into `rounds` wrk runs taken in turn;
    a route's figures are those of its median run (by requests/s), every run is kept under `runs`."""
    out: dict[str, Any] = {"repairs": repairs, "connections": connections, "duration_s": duration,
                           "command": ["cars", *command]}
    with tempfile.TemporaryDirectory(prefix="bench-queries-") as d, private_redis(Path(d)) as url:
        home = Path(d) / "up"
        home.mkdir()
        env = {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(home / "events.sqlite"),
               "SQLITE_LOCK_TIMEOUT": "30"}
        store = EventStore(env)
        t0 = time.perf_counter()
        events = generate(store, repairs * 2, repairs_only=True)
        db = ViewDB.from_store_env(env, home)
        rebuild(store, db, default_views())
        out["build_s"] = time.perf_counter() - t0
        out["events"] = events
        client = redis.Redis.from_url(url)
        client.set(RELAY_POSITION_KEY, store.max_position())
        client.close()
        db.close()
        store.close()
        with Cars(home, url, name="up", command=command) as cars:
            cars.wait_ready(timeout_s=120)
            paths = served_paths(cars.base_url)
            routes = ["/health", *(r for r in ("/statistics", "/repairs", "/services") if r in paths)]
            out["statistics_served"] = "/statistics" in paths
            out["rounds"] = rounds
            for route in routes[1:]:
                out[route] = dict(zip(("response_bytes", "single_request_s"), one_request(cars.base_url + route),
                                      strict=True))
            for route, figures in in_rounds(cars.base_url, routes, connections, duration, rounds,
                                            cars.proc.pid, profile).items():
                key = "health" if route == "/health" else route
                out[key] = {**figures, **out.get(key, {})}
            out["rss_mb"] = cars.rss_mb()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repairs", type=int, default=100_000)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=3, help="wrk runs per route, taken in turn with the others "
                    "(the median is reported)")
    ap.add_argument("--profile", type=Path, help="Also sample the server with py-spy during each route's wrk run "
                    "(collapsed stacks, flamegraph.pl input, in this folder; sampling costs CPU: the figures drop)")
    args = ap.parse_args()
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    result = measure(args.repairs, args.connections, args.duration, args.profile, args.rounds)
    write_result("queries", result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
