"""`just bench`: every figure of issue 5 beside its same-run baseline, in one run of at most ~15 minutes.

Writes bench/results/latest.json (flat keys, numbers), prints a table (figure, CARS, baseline, ratio,
target, met?) and draws bench/results/latest.png (needs the `bench` extra: matplotlib).

The defaults are the issue's sizes (a 1,000,000-event rebuild, a 10-minute soak, ...). They fit 15
minutes because the soak runs beside figures 1 (PostgreSQL), 3 and 4 (bench/README.md, "Sizes"); a
smaller size says so in the output and in the JSON (`scale_notes`).

Usage: python bench/run_all.py [--runs N] [--pg-runs N] [--latency-seconds S] [--soak-minutes M]
       [--replay-events N] [--repairs N] [--wrk-seconds S] [--skip FIG,...]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import heal_time  # noqa: E402
import ingest  # noqa: E402
import memory  # noqa: E402
import queries  # noqa: E402
import replay  # noqa: E402
from common import RESULTS  # noqa: E402

Row = tuple[str, float | None, float | None, float | None, str, bool | None]


def step(name: str, errors: dict[str, str], fn: Callable[[], Any]) -> Any:
    """Run one figure; a failure is recorded and printed, and the other figures still run."""
    t0 = time.monotonic()
    print(f"[bench] {name} ...", file=sys.stderr, flush=True)
    try:
        result = fn()
    except Exception as exc:
        errors[name] = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
        result = None
    print(f"[bench] {name} done in {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
    return result


def flatten(sq: dict[str, Any] | None, pg: dict[str, Any] | None, rp: dict[str, Any] | None,
            qs: dict[str, Any] | None, heal: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if sq:
        i = sq["ingest"]
        out.update({
            "ingest_runs": i["runs"], "ingest_msgs_per_s": i["msgs_per_s"],
            "ingest_baseline_msgs_per_s": i["baseline_msgs_per_s"], "ingest_ratio_sqlite": i["ratio"],
            "ingest_results_per_s": i["results_per_s"], "ingest_baseline_results_per_s": i["baseline_results_per_s"],
            "ingest_stored_detected": i["stored_detected"],
            "idle_rss_mb": sq["idle_rss_mb"], "after_ingest_rss_mb": sq["after_ingest_rss_mb"],
        })
        if "latency" in sq:
            lat = sq["latency"]
            out.update({
                "latency_offered_runs_per_s": lat["offered_runs_per_s"], "latency_p50_ms": lat["p50_ms"],
                "latency_p99_ms": lat["p99_ms"], "latency_baseline_p50_ms": lat["baseline_p50_ms"],
                "latency_baseline_p99_ms": lat["baseline_p99_ms"],
                "latency_completed_runs_per_s": lat["completed_runs_per_s"], "latency_samples": lat["samples"],
            })
        if "latency_steady" in sq:
            lat = sq["latency_steady"]
            out.update({
                "latency_steady_offered_runs_per_s": lat["offered_runs_per_s"],
                "latency_steady_p50_ms": lat["p50_ms"], "latency_steady_p99_ms": lat["p99_ms"],
                "latency_steady_baseline_p99_ms": lat["baseline_p99_ms"],
            })
        for k in ("soak_minutes", "soak_rss_start_mb", "soak_rss_end_mb", "soak_rss_max_mb", "soak_rss_growth_pct",
                  "soak_drain_s", "import_floor_mb"):
            if k in sq:
                out[k] = sq[k]
    if pg:
        out.update({
            "ingest_pg_processes": pg["processes"], "ingest_pg_msgs_per_s": pg["msgs_per_s"],
            "ingest_pg_baseline_msgs_per_s": pg["baseline_msgs_per_s"], "ingest_ratio_postgres": pg["ratio"],
            "ingest_pg_stored_detected": pg["stored_detected"],
        })
    if rp:
        out.update({
            "replay_events": rp["events"], "replay_events_per_s": rp["events_per_s"], "replay_ratio": rp["ratio"],
            "replay_raw_events_per_s": rp["raw_events_per_s"],
            "replay_decoded_events_per_s": rp["decoded_events_per_s"],
            "replay_recorder_events_per_s": rp["recorder_events_per_s"], "rebuild_cpu_s": rp["rebuild_cpu_s"],
        })
    if qs:
        out["queries_repairs"] = qs["repairs"]
        out["health_rps"] = qs["health"]["rps"]
        out["health_p99_ms"] = qs["health"]["p99_ms"]
        for route, key in (("/statistics", "statistics"), ("/repairs", "repairs"), ("/services", "services")):
            if route in qs:  # only what was measured: /statistics appears once CARS serves it
                out[f"{key}_rps"] = qs[route]["rps"]
                out[f"{key}_p99_ms"] = qs[route]["p99_ms"]
                out[f"{key}_response_bytes"] = qs[route]["response_bytes"]
                out[f"{key}_single_request_s"] = qs[route]["single_request_s"]
    if heal and heal.get("available"):
        for k in ("median_s_per_healed_case", "median_s_per_case", "cases", "healed", "age_hours", "timed_cases",
                  "rerun_share", "cars_share", "median_rerun_s", "median_cars_s", "median_cars_before_s",
                  "median_cars_between_s", "median_cars_after_s", "median_plain_s", "median_x_plain"):
            if heal.get(k) is not None:
                out[f"heal_{k}"] = heal[k]
    return out


def rows(f: dict[str, Any]) -> list[Row]:
    def g(k: str) -> float | None:
        v = f.get(k)
        return float(v) if isinstance(v, int | float) else None

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    def met(value: float | None, ok: Callable[[float], bool]) -> bool | None:
        return None if value is None or math.isnan(value) else ok(value)

    out: list[Row] = []
    r = g("ingest_ratio_sqlite")
    out.append(("1 ingest msgs/s, SQLite, 1 process", g("ingest_msgs_per_s"), g("ingest_baseline_msgs_per_s"), r,
                "ratio >= 0.35", met(r, lambda x: x >= 0.35)))
    out.append(("1 ingest test results/s, SQLite, 1 process", g("ingest_results_per_s"),
                g("ingest_baseline_results_per_s"), r, "-", None))
    out.append(("1 ingest msgs/s, PostgreSQL, 2 processes", g("ingest_pg_msgs_per_s"),
                g("ingest_pg_baseline_msgs_per_s"), g("ingest_ratio_postgres"), "-", None))
    p99 = g("latency_p99_ms")
    out.append((f"2 latency p50 ms @ {f.get('latency_offered_runs_per_s', '?')} runs/s offered",
                g("latency_p50_ms"), g("latency_baseline_p50_ms"), None, "-", None))
    out.append((f"2 latency p99 ms @ {f.get('latency_offered_runs_per_s', '?')} runs/s offered", p99,
                g("latency_baseline_p99_ms"), None, "p99 < 50", met(p99, lambda x: x < 50)))
    if "latency_steady_p99_ms" in f:
        out.append((f"2 latency p99 ms @ {f['latency_steady_offered_runs_per_s']:g} runs/s offered",
                    g("latency_steady_p99_ms"), g("latency_steady_baseline_p99_ms"), None, "(extra)", None))
    rate = g("replay_events_per_s")
    out.append((f"3 replay events/s ({f.get('replay_events', '?')} events) vs raw log read", rate,
                g("replay_raw_events_per_s"), g("replay_ratio"), ">= 100,000 ev/s", met(rate, lambda x: x >= 100_000)))
    out.append(("3 replay events/s vs read + decode only", rate, g("replay_decoded_events_per_s"),
                ratio(rate, g("replay_decoded_events_per_s")), "(extra)", None))
    for key, label in (("statistics", "/statistics"), ("repairs", "/repairs"), ("services", "/services")):
        if f"{key}_rps" not in f:
            if key == "statistics":
                out.append(("4 GET /statistics req/s (not served by this CARS)", None, g("health_rps"), None,
                            ">= 2,000 req/s, p99 < 25 ms", None))
            continue
        rps, p99q = g(f"{key}_rps"), g(f"{key}_p99_ms")
        target = ">= 2,000 req/s, p99 < 25 ms" if key == "statistics" else "-"
        ok = met(rps, lambda x: x >= 2000) if key == "statistics" else None
        if ok is not None and p99q is not None:
            ok = ok and p99q < 25
        size_mb = (g(f"{key}_response_bytes") or 0) / 1e6
        one = g(f"{key}_single_request_s") or float("nan")
        out.append((f"4 GET {label} req/s ({f.get('queries_repairs', '?')} repairs, {size_mb:.1f} MB, "
                    f"p99 {p99q or float('nan'):.0f} ms, 1 req alone {one:.2f} s)",
                    rps, g("health_rps"), ratio(rps, g("health_rps")), target, ok))
    idle = g("idle_rss_mb")
    out.append(("5 RSS MB idle (baseline: imports only)", idle, g("import_floor_mb"), None, "< 200 MB",
                met(idle, lambda x: x < 200)))
    out.append(("5 RSS MB after ingest", g("after_ingest_rss_mb"), idle, ratio(g("after_ingest_rss_mb"), idle), "-",
                None))
    growth = g("soak_rss_growth_pct")
    out.append((f"5 RSS growth % over a {f.get('soak_minutes', '?')}-min soak", growth, None, None, "<= 10 % (10 min)",
                met(growth, lambda x: x <= 10)))
    heal_s, plain_s = g("heal_median_s_per_healed_case"), g("heal_median_plain_s")
    out.append(("6 heal: median s per healed case (last heal-bench; baseline: one plain run of its failing tests)",
                heal_s, plain_s, ratio(heal_s, plain_s), "-", None))
    out.append(("6 heal: share of heal time in test reruns (rest: CARS itself)", g("heal_rerun_share"),
                None, None, "-", None))
    out.append(("6 heal: share of heal time in CARS itself", g("heal_cars_share"), None, None, "-", None))
    return out


def fmt(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}"


def print_table(table: list[Row]) -> None:
    head = ("figure", "CARS", "baseline", "ratio", "target", "met?")
    lines = [head] + [(a, fmt(b), fmt(c), fmt(d), e, {True: "yes", False: "NO", None: "-"}[m])
                      for a, b, c, d, e, m in table]
    widths = [max(len(str(x[i])) for x in lines) for i in range(6)]
    for k, line in enumerate(lines):
        print("  ".join(str(c).ljust(w) if i in (0, 4) else str(c).rjust(w)
                        for i, (c, w) in enumerate(zip(line, widths, strict=True))))
        if k == 0:
            print("  ".join("-" * w for w in widths))


def chart(table: list[Row], path: Path) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "no chart: matplotlib is missing (pip install -e '.[bench]')"
    pairs = [(a, b, c) for a, b, c, *_ in table if b is not None and c is not None]
    fig, axes = plt.subplots(len(pairs), 1, figsize=(9, 1.1 * len(pairs) + 1))
    for ax, (label, cars, base) in zip(axes if len(pairs) > 1 else [axes], pairs, strict=True):
        bars = ax.barh(["baseline", "CARS"], [base, cars], color=["#9aa5b1", "#2b6cb0"])
        ax.bar_label(bars, labels=[fmt(base), fmt(cars)], fontsize=7, padding=2)
        better = "lower is better" if "latency" in label or "RSS" in label else "higher is better"
        ax.set_title(f"{label}  ({better})", fontsize=8, loc="left")
        ax.tick_params(labelsize=7)
        ax.set_xscale("log" if max(cars, base) / max(min(cars, base), 1e-9) > 30 else "linear")
    fig.suptitle("CARS beside its same-run baselines (bench/results/latest.json)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"chart: {path}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=1000, help="figure 1 on SQLite: run reports")
    ap.add_argument("--pg-runs", type=int, default=500, help="figure 1 on PostgreSQL: run reports")
    ap.add_argument("--latency-rate", type=float, default=100.0)
    ap.add_argument("--latency-seconds", type=float, default=20.0)
    ap.add_argument("--steady-rate", type=float, default=10.0, help="also measure latency at this lower rate")
    ap.add_argument("--steady-seconds", type=float, default=20.0)
    ap.add_argument("--soak-minutes", type=float, default=10.0,
                    help="figure 5: the soak runs this long, beside figures 1 (PostgreSQL), 3 and 4")
    ap.add_argument("--replay-events", type=int, default=1_000_000)
    ap.add_argument("--repairs", type=int, default=100_000)
    ap.add_argument("--wrk-seconds", type=float, default=15.0)
    ap.add_argument("--skip", default="", help="comma-separated: sqlite,postgres,replay,queries,store_relay")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    t_start = time.monotonic()
    errors: dict[str, str] = {}
    notes = []
    notes.append(f"figure 2: {args.latency_rate:g} runs/s offered for {args.latency_seconds:g} s "
                 f"({int(args.latency_rate * args.latency_seconds)} runs); when CARS completes fewer runs/s than "
                 "offered (see latency.completed_runs_per_s), the latency includes the queue that builds up")
    if args.soak_minutes < 10:
        notes.append(f"figure 5: soak of {args.soak_minutes:g} min, not 10 (the default)")
    if args.replay_events < 1_000_000:
        notes.append(f"figure 3: {args.replay_events:,} events, not 1,000,000 (the default)")
    if args.repairs < 100_000:
        notes.append(f"figure 4: {args.repairs:,} repairs, not 100,000 (building the views takes minutes per "
                     "100k events here)")

    others: dict[str, Any] = {}

    def the_other_figures() -> None:
        """PostgreSQL ingest, replay, queries, store/relay: each with a process and a store of its own."""
        if "postgres" not in skip:
            others["pg"] = step("figure 1 on PostgreSQL", errors, lambda: ingest.run_postgres(args.pg_runs, 50, 2, 900))
            if others["pg"] is None and "figure 1 on PostgreSQL" not in errors:
                notes.append("figure 1 on PostgreSQL: skipped, POSTGRES_HOST is unset")
        if "replay" not in skip:
            import tempfile

            def run_replay() -> dict[str, Any]:
                with tempfile.TemporaryDirectory(prefix="bench-replay-") as d:
                    return replay.measure(Path(d), args.replay_events)

            others["rp"] = step("figure 3 replay", errors, run_replay)
        if "queries" not in skip:
            others["qs"] = step("figure 4 queries", errors,
                                lambda: queries.measure(args.repairs, 32, args.wrk_seconds))
        if "store_relay" not in skip:
            step("store append and relay", errors, lambda: subprocess.run(
                [sys.executable, str(HERE / "store_relay.py")], check=True, stdout=sys.stderr))

    def sqlite() -> dict[str, Any]:
        def after(cars: Any, url: str) -> dict[str, Any]:
            extra: dict[str, Any] = {}
            if args.steady_seconds > 0:
                extra["latency_steady"] = ingest.measure_latency(url, args.steady_rate, args.steady_seconds, "st")
            if args.soak_minutes <= 0:
                the_other_figures()
                return extra
            # The soak keeps this process busy (bounded) while the other figures run, each in processes of
            # their own: 10 minutes of soak would not fit the 15 minutes otherwise.
            import tempfile

            with tempfile.TemporaryDirectory(prefix="bench-soak-") as d:
                out = Path(d) / "soak.json"
                print(f"[bench] figure 5 soak: {args.soak_minutes:g} min, beside the other figures", file=sys.stderr)
                proc = memory.start_soak(cars, url, args.soak_minutes, 2, out)
                try:
                    the_other_figures()
                    extra.update(step("figure 5 soak (rest of it)", errors, lambda: memory.finish_soak(
                        proc, out, args.soak_minutes * 60 + 900)) or {})
                finally:
                    if proc.poll() is None:
                        proc.kill()
            return extra

        out = ingest.run_sqlite(args.runs, 50, args.latency_rate, args.latency_seconds, 900, between=after)
        out["import_floor_mb"] = memory.import_floor_mb()
        return out

    sq = step("figures 1, 2, 5 on SQLite (and, during the soak, the others)", errors, sqlite) \
        if "sqlite" not in skip else None
    if sq is None:
        the_other_figures()
    pg, rp, qs = others.get("pg"), others.get("rp"), others.get("qs")
    if qs is not None and not qs.get("statistics_served"):
        notes.append("figure 4: GET /statistics is not served by this CARS yet; statistics_rps is not reported")
    heal = heal_time.read(RESULTS / "heal.json")
    if not heal.get("available"):
        notes.append(f"figure 6: {heal['why']}")
    else:
        split = (f"the rerun share is over the {heal['timed_cases']} timed healed case(s)" if heal["timed_cases"]
                 else "that file predates the timing of test reruns: no rerun share")
        notes.append(f"figure 6: read from {heal['file']} ({heal['age_hours']:.1f} h old, {heal['cases']} case(s), "
                     f"{heal['healed']} healed, load average {heal['load_avg']}); {split}")

    figures = flatten(sq, pg, rp, qs, heal)
    figures["total_s"] = time.monotonic() - t_start
    doc = {**figures, "scale_notes": notes, "errors": errors, "machine": {
        "cpus": __import__("os").cpu_count(), "python": platform.python_version(),
        "load_avg_at_end": list(__import__("os").getloadavg())},
        "details": {"sqlite": sq, "postgres": pg, "replay": rp, "queries": qs, "heal": heal}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    table = rows(figures)
    print()
    print_table(table)
    print()
    for n in notes:
        print(f"note: {n}")
    for name, err in errors.items():
        print(f"ERROR in {name}: {err}")
    print(chart(table, RESULTS / "latest.png"))
    print(f"results: {RESULTS / 'latest.json'} ({figures['total_s']:.0f} s in all)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
