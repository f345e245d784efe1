"""Validate one repair candidate in a sandbox: apply it, check the guardrails, rerun, look for
regressions, and check that the healed test would notice a bug (the mutation check).

Blocking (it runs the project's tests in subprocesses): async callers use `anyio.to_thread.run_sync`.
The sandbox is left as it was found unless `keep_applied=True`, so several candidates can be tried in one
environment.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
from attrs import frozen

from actors.errors import Rejected
from actors.patching import PatchError, apply_patch, patch_files
from actors.testrun import TestRun, run_tests
from actors.validator.guardrails import NON_TEST_FILE, SKIP_ADDED, FileChange, check_collected, check_guardrails
from actors.validator.mutation import Runner, check_mutation
from actors.workspace import Workspace, split_test_id
from contracts.limits import MAX_TEXT
from contracts.values import (
    MAX_TIMED_RUNS,
    GuardrailViolation,
    MutationVerdict,
    Outcome,
    TestResult,
    TimedRun,
    ValidationEvidence,
)

# A mutant may loop forever; its run gets this many times the slowest rerun (at least MIN_MUTANT_TIMEOUT_S).
MUTANT_TIMEOUT_FACTOR = 5.0
MIN_MUTANT_TIMEOUT_S = 15.0


@frozen(kw_only=True)
class Verdict:
    """Whether a candidate is good, why, and the measurements behind it."""

    ok: bool
    reason: str
    evidence: ValidationEvidence
    stale: bool = False  # the patch does not apply to the current files: out of date, not wrong


def validate_candidate(
    workspace: str | Path,
    *,
    patch: str,
    test_id: str,
    test_cmd: str,
    reruns: int = 3,
    timeout_s: float = 600.0,
    quarantine: bool = False,
    require_mutation_kill: bool = True,
    env: Mapping[str, str] | None = None,
    keep_applied: bool = False,
    memory_mb: int | None = None,
    runner: Runner = run_tests,
) -> Verdict:
    """Validate `patch` as a repair of the failing test `test_id` in the sandbox `workspace`.

    Rejected when the patch does not apply, breaks a guardrail, fails any of `reruns` reruns, breaks a
    test of the affected modules that passed before, or (when `require_mutation_kill`) the healed test
    still passes with a bug seeded into the code it exercises. With `quarantine=True` (a flaky test
    being labelled, not healed) adding skip/xfail is the point, a skipped rerun counts as a pass, and
    there is no mutation check.

    Every test run here is project code run by CARS: it gets `env` over CARS's environment without its
    secrets (`actors.testrun.scrubbed_environ`), and each process at most `memory_mb` of address space.
    """
    started = time.monotonic()
    runner = functools.partial(runner, memory_mb=memory_mb, inherit_env=False)
    ws = Workspace(workspace)
    check = _Check(ws=ws, test_id=test_id, test_cmd=test_cmd, env=env, timeout_s=timeout_s, runner=runner)
    try:
        files = patch_files(patch)
        before = {f: _read(ws, f) for f in files}
    except Rejected as exc:
        return check.verdict(False, f"the patch does not apply: {exc}", started)
    try:
        apply_patch(ws.root, patch, check_only=True)
    except PatchError as exc:
        # Patches are made from the files as they were when proposed: the files changed since.
        return attrs.evolve(check.verdict(False, f"the patch does not apply: {exc}", started), stale=True)
    if not files:
        return check.verdict(False, "the patch changes no file", started)

    modules_before = _test_modules(ws, test_id, files)
    baseline = check.run(modules_before, purpose="baseline")
    check.collected_before = baseline.collected if baseline.collected >= 0 else None
    passed_before = {r.test_id for r in baseline.results if r.outcome is Outcome.PASSED}

    apply_patch(ws.root, patch)
    try:
        return check.after_patch(
            before=before, after={f: _read(ws, f) for f in files}, modules_before=modules_before,
            passed_before=passed_before, reruns=reruns, quarantine=quarantine,
            require_mutation_kill=require_mutation_kill, started=started,
        )
    finally:
        if not keep_applied:
            _restore(ws, before)


@attrs.define(kw_only=True)
class _Check:
    """The state of one validation as it goes: what has been measured so far."""

    ws: Workspace
    test_id: str
    test_cmd: str
    env: Mapping[str, str] | None
    timeout_s: float
    runner: Runner
    collected_before: int | None = None
    collected_after: int | None = None
    reruns: int = 0
    passes: int = 0
    regressions: tuple[str, ...] = ()
    guardrails: tuple[GuardrailViolation, ...] = ()
    mutation: MutationVerdict = MutationVerdict.NOT_APPLICABLE
    mutation_detail: str = ""
    log_tail: str = ""
    timed: list[TimedRun] = attrs.Factory(list)

    def run(self, tests: Sequence[str], *, purpose: str, timeout_s: float | None = None) -> TestRun:
        run = self.timed_runner(purpose)(
            self.ws.root, self.test_cmd, tests=list(tests), env=self.env, timeout_s=timeout_s or self.timeout_s
        )
        self.log_tail = run.log_tail
        return run

    def timed_runner(self, purpose: str) -> Runner:
        """`self.runner`, recording when each test subprocess started and how long it ran (the run's own
        `duration_s`: the subprocess, not the reading of its report) as a `TimedRun` of `purpose`."""
        def run(*args: Any, **kwargs: Any) -> TestRun:
            started_at = time.time()
            result = self.runner(*args, **kwargs)
            if len(self.timed) < MAX_TIMED_RUNS:
                self.timed.append(TimedRun(purpose=purpose, started_at=started_at, duration_s=result.duration_s))
            return result

        return run

    def after_patch(
        self, *, before: Mapping[str, bytes | None], after: Mapping[str, bytes | None], modules_before: list[str],
        passed_before: set[str], reruns: int, quarantine: bool, require_mutation_kill: bool, started: float,
    ) -> Verdict:
        changes = [FileChange(path=f, before=_text(before[f]), after=_text(after[f])) for f in before]
        violations = check_guardrails(changes, is_test_file=self.ws.is_test_file)
        if quarantine:
            # Labelling a flaky test as such is what a quarantine does: a skip, or an entry in the
            # quarantine list (not a test file, but no code either: only non-Python files may change).
            allowed = {SKIP_ADDED}
            if all(not c.path.endswith(".py") for c in changes):
                allowed.add(NON_TEST_FILE)
            violations = tuple(v for v in violations if v.rule not in allowed)
        self.guardrails = violations
        if violations:
            # No need to run anything: no amount of green makes up for these.
            return self.verdict(False, "guardrails: " + "; ".join(f"{v.rule}: {v.detail}" for v in violations),
                                started)

        slowest = 0.0
        for _ in range(reruns):
            run = self.run([self.test_id], purpose="rerun")
            self.reruns += 1
            slowest = max(slowest, run.duration_s)
            if not _passed(run, self.test_id, allow_skip=quarantine):
                return self.verdict(
                    False, f"rerun {self.reruns} of {reruns} did not pass: {_failure_summary(run, self.test_id)}",
                    started,
                )
            self.passes += 1

        modules_after = [m for m in modules_before if self.ws.exists(m)]
        after_run = self.run(modules_after, purpose="regressions") if modules_after else None
        if after_run is not None:
            self.collected_after = after_run.collected if after_run.collected >= 0 else None
            broken = {r.test_id for r in after_run.failed()}
            self.regressions = tuple(sorted(t for t in passed_before & broken if not _matches(t, self.test_id)))
        elif self.collected_before is not None:
            self.collected_after = 0  # every affected module is gone
        self.guardrails = tuple(check_collected(self.collected_before, self.collected_after))
        if self.guardrails:
            return self.verdict(False, f"guardrails: {self.guardrails[0].rule}: {self.guardrails[0].detail}",
                                started)
        if self.regressions:
            return self.verdict(False, f"{len(self.regressions)} regression(s): " + ", ".join(self.regressions),
                                started)

        if not quarantine:
            mutant_timeout = min(self.timeout_s, max(MIN_MUTANT_TIMEOUT_S, MUTANT_TIMEOUT_FACTOR * slowest))
            result = check_mutation(
                self.ws.root, test_id=self.test_id, test_cmd=self.test_cmd, timeout_s=mutant_timeout,
                env=self.env, runner=self.timed_runner("mutation"),
            )
            self.mutation, self.mutation_detail = result.verdict, result.detail
            if result.verdict is MutationVerdict.FAILED and require_mutation_kill:
                return self.verdict(False, f"mutation check failed: {result.detail}", started)
        return self.verdict(True, f"{self.passes}/{reruns} reruns passed, no regressions, no guardrail broken"
                            + ("" if quarantine else f", mutation check {self.mutation.value}"), started)

    def verdict(self, ok: bool, reason: str, started: float) -> Verdict:
        evidence = ValidationEvidence(
            reruns=self.reruns, passes=self.passes, regressions=self.regressions, guardrails=self.guardrails,
            mutation=self.mutation, mutation_detail=_clip(self.mutation_detail, MAX_TEXT),
            collected_before=self.collected_before, collected_after=self.collected_after,
            log_tail=_clip(self.log_tail, 4 * MAX_TEXT, tail=True), duration_s=time.monotonic() - started,
            runs=tuple(self.timed),
        )
        return Verdict(ok=ok, reason=_clip(reason, MAX_TEXT), evidence=evidence)


def _read(ws: Workspace, rel: str) -> bytes | None:
    path = ws.resolve(rel)
    return path.read_bytes() if path.is_file() else None


def _text(data: bytes | None) -> str | None:
    return None if data is None else data.decode("utf-8", "replace")


def _restore(ws: Workspace, before: Mapping[str, bytes | None]) -> None:
    """Put every file the patch touched back as it was (deleting the ones it created)."""
    for rel, data in before.items():
        path = ws.resolve(rel)
        if data is None:
            path.unlink(missing_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)


def _test_modules(ws: Workspace, test_id: str, files: Sequence[str]) -> list[str]:
    """The test modules to run before and after: the failing test's and every test module the patch
    changes (conftest.py files are not modules of tests; the failing test's module covers them)."""
    test_file, _ = split_test_id(test_id)
    modules = [test_file, *files]
    return [
        m for m in dict.fromkeys(modules)
        if m.endswith(".py") and Path(m).name != "conftest.py" and ws.is_test_file(m) and ws.exists(m)
    ]


def _matches(result_id: str, test_id: str) -> bool:
    """Whether a reported id is (a parametrization of) `test_id`. Ids are relative to pytest's rootdir,
    which may lie below the workspace root, so one may be a path suffix of the other."""
    if "::" not in test_id:
        # A whole module failed (a collection error such as an ImportError): every test in it counts.
        file = result_id.split("::", 1)[0]
        return file == test_id or test_id.endswith("/" + file) or file.endswith("/" + test_id)
    base = result_id.split("[", 1)[0] if "[" not in test_id else result_id
    return base == test_id or test_id.endswith("/" + base) or base.endswith("/" + test_id)


def _mine(run: TestRun, test_id: str) -> list[TestResult]:
    return [r for r in run.results if _matches(r.test_id, test_id)]


def _passed(run: TestRun, test_id: str, *, allow_skip: bool) -> bool:
    ok = {Outcome.PASSED, Outcome.SKIPPED} if allow_skip else {Outcome.PASSED}
    mine = _mine(run, test_id)
    return bool(mine) and not run.timed_out and all(r.outcome in ok for r in mine)


def _failure_summary(run: TestRun, test_id: str) -> str:
    if run.timed_out:
        return "timed out"
    mine = _mine(run, test_id)
    if not mine:
        return f"the test was not run (exit code {run.exit_code})"
    bad = next((r for r in mine if r.outcome is not Outcome.PASSED), mine[0])
    message = bad.evidence.message if bad.evidence and bad.evidence.message else ""
    return f"{bad.outcome.value}" + (f": {message}" if message else "")


def _clip(text: str, limit: int, *, tail: bool = False) -> str:
    if len(text) <= limit:
        return text
    return text[-limit:] if tail else text[: limit - 1] + "…"


__all__ = ["Verdict", "validate_candidate"]
