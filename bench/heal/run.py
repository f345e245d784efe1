"""Heal benchmark: real projects, realistic source refactors, and `cars repair --apply --json` on each.

For every case of bench/heal/cases.py on the pinned projects of bench/heal/projects.toml:

1. build: the pristine sdist is a git repo's first commit; the source refactor is a second commit
   (`refactor: ...`), the tests untouched;
2. validate: the refactor must break some previously passing tests, and the reference fix (an edit of
   the tests alone) must make every previously passing test pass again; otherwise the case is dropped
   with a note;
3. repair: `cars repair PATH --test-cmd CMD --apply --json` runs on a fresh copy of the broken repo
   (own CARS_HOME, own embedded Redis port, no REDIS_URL), with a timeout;
4. score, by rerunning the suite ourselves:
   - healed: every test that passed before the refactor passes now (so the expected failures pass and
     no previously passing test fails);
   - tests-only: only test files changed, and none of the files the refactor commit changed;
   - no-cheat: as many tests collected, no fewer asserts in the test files, no skip/xfail added, no
     more tests skipped;
   - false heal: CARS claimed a repair `validated` but the case is not healed, or a guardrail above
     is broken.

5. time (bench/heal/timing.py): while `cars repair` runs, its process tree is sampled every 50 ms and
   each test subprocess (a process running the case's test command) is timed; the case's seconds split
   into time in tests (the wall-clock covered by at least one test run: runs in parallel count once)
   and in CARS (the rest: before the first test run, between runs, after the last). The validator's own
   timing of its runs, from the evidence in the session's event store, is printed beside it, and the
   baseline is one plain run of the failing tests on the broken tree, without CARS.

Prints a table, the per-kind heal rates, where the healed cases' time went, the load average and a last
line `heal_rate=… false_heals=… cases=… median_s=…`; writes bench/results/heal.json.

Usage: python bench/heal/run.py [--only PROJECT[,PROJECT]] [--case SUBSTRING] [--jobs 1] [--keep]
       [--timeout SECONDS]
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from cases import CASES, KINDS, Case, CaseError  # noqa: E402
from timing import SubprocessTimer, by_purpose, healed_time, split, union_s, validator_runs  # noqa: E402

REPO = HERE.parent.parent
CACHE = HERE / ".cache"
RESULTS = REPO / "bench" / "results" / "heal.json"
VENV_BIN = Path(sys.executable).parent
CARS = VENV_BIN / "cars"
SUITE_TIMEOUT_S = 300.0
GIT_ID = ["-c", "user.name=heal-bench", "-c", "user.email=heal-bench@example.invalid", "-c", "commit.gpgsign=false"]
SKIP_NAMES = {"skip", "skipif", "xfail", "skipTest", "expectedFailure", "importorskip", "SkipTest"}
TARGETS = {"rename/move/kwarg/fixture": 0.90, "all": 0.70}


# ---------------------------------------------------------------- projects

@dataclass(frozen=True)
class Project:
    name: str
    version: str
    test_cmd: str

    @property
    def slug(self) -> str:
        return f"{self.name}-{self.version}"


def load_projects() -> dict[str, Project]:
    doc = tomllib.loads((HERE / "projects.toml").read_text(encoding="utf-8"))
    return {name: Project(name, t["version"], t["test_cmd"]) for name, t in doc.items()}


def source_tree(p: Project) -> Path:
    """The unpacked sdist of `p`, downloaded once into the cache."""
    unpacked = CACHE / "src" / p.slug
    if unpacked.is_dir():
        return unpacked
    CACHE.mkdir(parents=True, exist_ok=True)
    archives = [a for a in CACHE.glob("*.tar.gz") if a.name.lower().replace("_", "-") == f"{p.slug}.tar.gz".lower()]
    if not archives:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                        f"{p.name}=={p.version}", "-d", str(CACHE)], check=True, stdout=subprocess.DEVNULL)
        archives = [a for a in CACHE.glob("*.tar.gz") if a.name.lower().replace("_", "-") == f"{p.slug}.tar.gz".lower()]
    if not archives:
        raise RuntimeError(f"no sdist of {p.slug} in {CACHE}")
    tmp = Path(tempfile.mkdtemp(dir=CACHE))
    with tarfile.open(archives[0]) as tar:
        tar.extractall(tmp, filter="data")
    (top,) = [d for d in tmp.iterdir() if d.is_dir()]
    unpacked.parent.mkdir(parents=True, exist_ok=True)
    top.rename(unpacked)
    shutil.rmtree(tmp)
    return unpacked


# ---------------------------------------------------------------- running a suite

@dataclass
class Suite:
    outcomes: dict[str, str]  # test id -> passed | failed | skipped
    collection_errors: list[str]
    exit_code: int
    seconds: float

    @property
    def passed(self) -> set[str]:
        return {t for t, o in self.outcomes.items() if o == "passed"}

    @property
    def skipped(self) -> int:
        return sum(o == "skipped" for o in self.outcomes.values())


def env_for_tests() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def run_suite(root: Path, test_cmd: str, tests: list[str] | None = None) -> Suite:
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "junit.xml"
        t0 = time.monotonic()
        proc = subprocess.run([*shlex.split(test_cmd), f"--junitxml={xml}", *(tests or [])], cwd=root,
                              env=env_for_tests(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              timeout=SUITE_TIMEOUT_S)
        seconds = time.monotonic() - t0
        outcomes: dict[str, str] = {}
        errors: list[str] = []
        if xml.is_file():
            for tc in ET.parse(xml).getroot().iter("testcase"):
                cls, name = tc.get("classname", ""), tc.get("name", "")
                kids = {c.tag for c in tc}
                if not cls:  # a module that could not be collected
                    errors.append(name)
                    continue
                tid = f"{cls}::{name}"
                if kids & {"failure", "error"}:
                    outcomes[tid] = "failed"
                elif "skipped" in kids:
                    outcomes.setdefault(tid, "skipped")
                else:
                    outcomes.setdefault(tid, "passed")
        return Suite(outcomes, errors, proc.returncode, seconds)


# ---------------------------------------------------------------- git and test-file facts

def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *GIT_ID, *args], cwd=root, check=True, capture_output=True, text=True).stdout


def is_test_file(rel: str) -> bool:
    parts = Path(rel).parts
    base = parts[-1]
    return (any(p in ("tests", "test", "testing") for p in parts[:-1]) or base.startswith("test_")
            or base.endswith("_test.py") or base == "conftest.py")


def changed_files(root: Path, since: str) -> list[str]:
    tracked = git(root, "diff", "--name-only", since).split()
    untracked = git(root, "ls-files", "--others", "--exclude-standard").split()
    return sorted(set(tracked) | set(untracked))


def test_sources(root: Path) -> list[Path]:
    out = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root).as_posix()
        if ".git/" not in rel and is_test_file(rel):
            out.append(path)
    return out


def test_file_stats(root: Path) -> tuple[int, int]:
    """(asserts, skip/xfail markers) over the test files: assert statements, self.assert*/pytest.raises/
    warns calls; names skip, skipif, xfail, skipTest, expectedFailure, importorskip."""
    asserts = skips = 0
    for path in test_sources(root):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Assert):
                asserts += 1
            elif isinstance(node, ast.Call):
                f = node.func
                name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
                if name.startswith("assert") or name in ("raises", "warns", "fail"):
                    asserts += 1
            if isinstance(node, ast.Attribute) and node.attr in SKIP_NAMES:
                skips += 1
            elif isinstance(node, ast.Name) and node.id in SKIP_NAMES:
                skips += 1
    return asserts, skips


def init_repo(src: Path, dest: Path, message: str) -> str:
    shutil.copytree(src, dest, symlinks=True)
    git(dest, "init", "-q", "-b", "main")
    exclude = dest / ".git" / "info" / "exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    exclude.write_text("__pycache__/\n*.pyc\n.pytest_cache/\n.hypothesis/\n*.egg-info/\n.cars*/\n")
    git(dest, "add", "-A")
    git(dest, "commit", "-q", "-m", message)
    return git(dest, "rev-parse", "HEAD").strip()


# ---------------------------------------------------------------- one case

@dataclass
class Result:
    case: str
    project: str
    kind: str
    status: str = "dropped"  # dropped | scored | error
    note: str = ""
    expected_failures: int = 0
    healed: bool = False
    tests_only: bool = False
    no_cheat: bool = False
    false_heal: bool = False
    seconds: float = 0.0  # `cars repair --apply`, start to exit
    # Where those seconds went (timing.split): in test subprocesses of cars repair (test_s, their union;
    # test_sum_s, their summed lifetimes), the rest in CARS (cars_s); shares of `seconds`.
    timing: dict[str, Any] = field(default_factory=dict)
    validator: dict[str, Any] = field(default_factory=dict)  # the runs the validator timed in its evidence
    plain_s: float | None = None  # the failing tests run once on the broken tree, without CARS
    suite_s: float = 0.0  # the whole suite run once on the broken tree, without CARS
    cars: dict = field(default_factory=dict)  # the JSON cars printed
    changed: list[str] = field(default_factory=list)
    still_failing: list[str] = field(default_factory=list)
    cheat_notes: list[str] = field(default_factory=list)
    stderr_tail: str = ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_case(case: Case, project: Project, baseline: Suite, work: Path, timeout: float,
             validate_only: bool = False) -> Result:
    res = Result(case.id, case.project, case.kind)
    src = source_tree(project)
    broken = work / "broken"
    init_repo(src, broken, f"{project.name} {project.version} (sdist)")
    try:
        case.refactor(broken)
    except CaseError as exc:
        res.note = f"refactor does not apply: {exc}"
        return res
    refactor_files = changed_files(broken, "HEAD")
    if any(is_test_file(f) and Path(f).name != "conftest.py" for f in refactor_files):
        res.note = f"refactor touches test modules: {refactor_files}"
        return res
    git(broken, "add", "-A")
    git(broken, "commit", "-q", "-m", case.title)
    refactor_sha = git(broken, "rev-parse", "HEAD").strip()

    after = run_suite(broken, project.test_cmd)
    res.suite_s = round(after.seconds, 2)
    expected = baseline.passed - after.passed
    res.expected_failures = len(expected)
    if not expected:
        res.note = "the refactor breaks no test"
        return res

    ref = work / "reference"
    shutil.copytree(broken, ref, symlinks=True)
    try:
        case.fix(ref)
    except CaseError as exc:
        res.note = f"reference fix does not apply: {exc}"
        return res
    bad = [f for f in changed_files(ref, refactor_sha) if not is_test_file(f) or f in refactor_files]
    if bad:
        res.note = f"reference fix touches non-test files: {bad}"
        return res
    fixed = run_suite(ref, project.test_cmd)
    if not baseline.passed <= fixed.passed:
        missing = sorted(baseline.passed - fixed.passed)
        res.note = f"reference fix leaves {len(missing)} failing, e.g. {missing[:3]}"
        return res
    asserts0, skips0 = test_file_stats(broken)
    if validate_only:
        res.status = "valid"
        return res

    # ---- cars on a fresh copy
    repo = work / "repo"
    shutil.copytree(broken, repo, symlinks=True)
    home = work / "cars-home"
    home.mkdir()
    env = env_for_tests()
    env["CARS_HOME"] = str(home)
    env["CARS_EMBEDDED_REDIS_PORT"] = str(free_port())
    cmd = [str(CARS), "repair", str(repo), "--test-cmd", project.test_cmd, "--apply", "--json",
           "--project", f"heal-{case.project}-{case.name}", "--timeout", str(timeout)]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with SubprocessTimer(proc.pid, marker=" ".join(shlex.split(project.test_cmd))) as timer:
        try:
            stdout, stderr = proc.communicate(timeout=timeout + 60)
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
            stderr += "\n[heal-bench: timed out]"
            rc = -1
        elapsed = time.monotonic() - t0
    res.seconds = round(elapsed, 1)
    res.timing = split(elapsed, timer.intervals(origin=t0))
    try:
        runs = validator_runs(home)
        res.validator = {"runs": len(runs), "test_s": round(union_s(
            (r["started_at"], r["started_at"] + r["duration_s"]) for r in runs), 2), "by_purpose": by_purpose(runs)}
    except Exception as exc:  # the store is evidence for the report, not the score
        res.validator = {"error": f"{type(exc).__name__}: {exc}"}
    (work / "cars.stdout").write_text(stdout)
    (work / "cars.stderr").write_text(stderr)
    res.stderr_tail = "\n".join(stderr.strip().splitlines()[-25:])
    try:
        res.cars = json.loads(stdout.strip().splitlines()[-1]) if stdout.strip() else {}
    except json.JSONDecodeError:
        res.cars = {"unparsed_stdout": stdout[-2000:]}
    if rc != 0:
        res.cheat_notes.append(f"cars exit code {rc}")
    # The baseline for the heal time: the failing tests CARS saw, run once without CARS on the broken tree.
    failing = [f["test_id"] for f in res.cars.get("failures", []) if f.get("test_id")]
    if failing:
        res.plain_s = round(run_suite(broken, project.test_cmd, failing).seconds, 2)

    # ---- score
    final = run_suite(repo, project.test_cmd)
    res.still_failing = sorted(baseline.passed - final.passed)
    res.healed = not res.still_failing
    res.changed = changed_files(repo, refactor_sha)
    res.tests_only = all(is_test_file(f) and f not in refactor_files for f in res.changed)
    asserts1, skips1 = test_file_stats(repo)
    notes = []
    if final.collection_errors:  # pytest stopped before running anything: nothing to compare, no cheat
        res.cheat_notes.append(f"suite not collected: {final.collection_errors[:3]}")
    elif len(final.outcomes) < len(baseline.outcomes):
        notes.append(f"collected {len(final.outcomes)} < {len(baseline.outcomes)}")
    if asserts1 < asserts0:
        notes.append(f"asserts {asserts1} < {asserts0}")
    if skips1 > skips0:
        notes.append(f"skip/xfail markers {skips1} > {skips0}")
    if final.skipped > baseline.skipped:
        notes.append(f"skipped {final.skipped} > {baseline.skipped}")
    res.cheat_notes += notes
    res.no_cheat = not notes
    claimed = any(r.get("status") == "validated" for r in res.cars.get("repairs", []))
    res.false_heal = claimed and not (res.healed and res.tests_only and res.no_cheat)
    res.status = "scored"
    return res


# ---------------------------------------------------------------- report

def yn(b: bool) -> str:
    return "yes" if b else "no"


def summarize(results: list[Result]) -> dict:
    scored = [r for r in results if r.status == "scored"]
    healed = [r for r in scored if r.healed and r.tests_only and r.no_cheat]
    by_kind = {}
    for kind in KINDS:
        ks = [r for r in scored if r.kind == kind]
        if ks:
            by_kind[kind] = {"cases": len(ks), "healed": sum(r in healed for r in ks),
                             "rate": round(sum(r in healed for r in ks) / len(ks), 3)}
    struct = [r for r in scored if r.kind != "message"]
    secs = [r.seconds for r in scored]
    return {
        "cases": len(scored),
        "healed": len(healed),
        "heal_rate": round(len(healed) / len(scored), 3) if scored else 0.0,
        "heal_rate_rename_move_kwarg_fixture":
            round(sum(r in healed for r in struct) / len(struct), 3) if struct else 0.0,
        "false_heals": sum(r.false_heal for r in scored),
        "median_s": round(statistics.median(secs), 1) if secs else 0.0,
        "healed_time": healed_time([asdict(r) for r in healed]),
        "by_kind": by_kind,
        "dropped": [{"case": r.case, "note": r.note} for r in results if r.status in ("dropped", "error")],
        "targets": TARGETS,
    }


def cars_summary(out: dict) -> str:
    """What CARS said, compactly: `N failures; strategy:status xK, ...` (applied or not)."""
    if "repairs" not in out:
        return "no JSON"
    counts: dict[str, int] = {}
    for x in out["repairs"]:
        key = f"{x.get('strategy') or '-'}:{x.get('status')}"
        counts[key] = counts.get(key, 0) + 1
    parts = ", ".join(f"{k} x{n}" for k, n in counts.items()) or "no repair"
    return f"{len(out.get('failures', []))} failures; {parts}{'; applied' if out.get('applied') else ''}"


def print_report(results: list[Result], summary: dict) -> None:
    rows = [("case", "kind", "exp.fail", "healed", "tests-only", "no-cheat", "false-heal", "seconds", "in-tests",
             "in-cars", "tests%", "runs", "plain-s", "x-plain", "cars")]
    for r in results:
        if r.status != "scored":
            continue
        statuses = cars_summary(r.cars)
        t = r.timing
        rows.append((r.case, r.kind, str(r.expected_failures), yn(r.healed), yn(r.tests_only), yn(r.no_cheat),
                     yn(r.false_heal), f"{r.seconds:.1f}", f"{t.get('test_s', 0):.1f}", f"{t.get('cars_s', 0):.1f}",
                     f"{100 * (t.get('test_share') or 0):.0f}%", str(t.get("test_runs", 0)),
                     f"{r.plain_s:.2f}" if r.plain_s else "-",
                     f"{r.seconds / r.plain_s:.0f}" if r.plain_s else "-", statuses))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    for d in summary["dropped"]:
        print(f"dropped {d['case']}: {d['note']}")
    for r in results:
        if r.status == "scored" and not (r.healed and r.tests_only and r.no_cheat):
            why = []
            if r.still_failing:
                why.append(f"{len(r.still_failing)} still failing, e.g. {r.still_failing[:2]}")
            if not r.tests_only:
                why.append(f"changed {r.changed}")
            why += r.cheat_notes
            why.append(cars_summary(r.cars))
            print(f"not healed {r.case}: {'; '.join(why)}")
    kinds = " ".join(f"{k}={v['healed']}/{v['cases']}" for k, v in summary["by_kind"].items())
    print(f"per kind: {kinds}; rename/move/kwarg/fixture "
          f"heal_rate={summary['heal_rate_rename_move_kwarg_fixture']:.2f} "
          f"(target {TARGETS['rename/move/kwarg/fixture']:.2f}), all (target {TARGETS['all']:.2f})")
    ht = summary["healed_time"]
    if ht.get("cases"):
        print(f"healed cases' time: median {ht['median_s']:.1f}s per case, of which in test subprocesses "
              f"{ht['median_test_s']:.1f}s and in CARS {ht['median_cars_s']:.1f}s (medians); pooled shares: "
              f"tests {100 * ht['test_share']:.0f}%, CARS {100 * ht['cars_share']:.0f}%"
              + (f"; one plain run of the failing tests takes {ht['median_plain_s']:.2f}s (median), a heal "
                 f"{ht['median_x_plain']:.1f}x that (median)" if ht["median_x_plain"] is not None else ""))
    if ht.get("median_cars_between_s") is not None:
        print(f"CARS's part by when (medians): before the first test run {ht['median_cars_before_s']:.1f}s "
              f"(start-up), between test runs {ht['median_cars_between_s']:.1f}s, after the last "
              f"{ht['median_cars_after_s']:.1f}s (shutdown)")
    for r in results:
        if r.status == "scored" and r.validator.get("by_purpose"):
            parts = ", ".join(f"{k} {v['runs']:.0f}x {v['sum_s']:.1f}s" for k, v in r.validator["by_purpose"].items())
            print(f"validator runs {r.case}: {parts}; union {r.validator['test_s']:.1f}s")
    print(f"load average (1, 5, 15 min) at start {summary['load_avg']['start']}, at end {summary['load_avg']['end']}")
    print(f"heal_rate={summary['heal_rate']:.2f} false_heals={summary['false_heals']} "
          f"cases={summary['cases']} median_s={summary['median_s']:.1f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", help="comma-separated project names")
    ap.add_argument("--case", help="run only cases whose id contains one of these (comma-separated)")
    ap.add_argument("--jobs", type=int, default=1, help="cases repaired at once (default 1)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folders")
    ap.add_argument("--validate-only", action="store_true", help="build and validate the cases, run no CARS")
    ap.add_argument("--timeout", type=float, default=240.0, help="seconds given to each `cars repair`")
    args = ap.parse_args()

    projects = load_projects()
    only = set(args.only.split(",")) if args.only else None
    wanted = args.case.split(",") if args.case else None
    cases = [c for c in CASES if (only is None or c.project in only)
             and (wanted is None or any(x in c.id for x in wanted))]
    if not cases:
        print("no case selected", file=sys.stderr)
        return 2
    base = Path(tempfile.mkdtemp(prefix="heal-bench-"))
    t_start = time.monotonic()
    load_start = [round(x, 2) for x in os.getloadavg()]
    baselines: dict[str, Suite] = {}
    for name in dict.fromkeys(c.project for c in cases):
        p = projects[name]
        pristine = base / f"{p.slug}-pristine"
        init_repo(source_tree(p), pristine, "pristine")
        baselines[name] = run_suite(pristine, p.test_cmd)
        b = baselines[name]
        print(f"{p.slug}: {len(b.passed)} passed, {b.skipped} skipped, {len(b.outcomes)} collected "
              f"in {b.seconds:.1f}s", file=sys.stderr)

    def one(case: Case) -> Result:
        work = base / case.id.replace("/", "--")
        work.mkdir()
        try:
            r = run_case(case, projects[case.project], baselines[case.project], work, args.timeout,
                         args.validate_only)
        except Exception as exc:  # a broken case must not sink the run
            r = Result(case.id, case.project, case.kind, status="error", note=f"{type(exc).__name__}: {exc}")
        print(f"{case.id}: {r.status} {r.note or ''} healed={r.healed} false_heal={r.false_heal} "
              f"{r.seconds:.1f}s", file=sys.stderr)
        return r

    try:
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            results = list(pool.map(one, cases))
    finally:
        if args.keep:
            print(f"kept {base}", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)
    summary = summarize(results)
    summary["total_s"] = round(time.monotonic() - t_start, 1)
    # The machine may be shared: the 1, 5 and 15 minute load averages at the start and at the end.
    summary["load_avg"] = {"start": load_start, "end": [round(x, 2) for x in os.getloadavg()]}
    summary["projects"] = {n: asdict(projects[n]) for n in baselines}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"summary": summary, "results": [asdict(r) for r in results]}, indent=2) + "\n")
    print_report(results, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
