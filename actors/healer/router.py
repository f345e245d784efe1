"""The healer actor: proposes candidate repairs for detected failures, and applies validated ones.

Subscribed to `failure.detected`, `heal.rejected` and `repair.completed` (topic streams) and to the commands
`heal.request`, `repair.approve` and `repair.reject`. Strategies read the repository in a worker
thread; the decisions are the pure functions of `actors.healer.repairs`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from attrs import frozen

from actors.errors import Rejected
from actors.healer import ranking, repairs
from actors.healer.apply import Applied, apply_to_repo
from actors.healer.strategies.flaky_quarantine import FlakyQuarantine
from actors.healer.strategy import Proposal, Strategy
from actors.patching import PatchError
from actors.ports import Aggregates, Clock, Tick
from actors.projectconfig import ProjectConfig, load_project_config
from actors.workspace import Workspace
from contracts import Envelope, natural_id
from contracts.failures import FailureDetected, TestQuarantined
from contracts.repairs import ApproveRepair, HealRejected, RejectRepair, RepairCompleted, RequestHeal

log = logging.getLogger(__name__)

ROLE = "healer"
EVENTS = frozenset({"failure.detected", "heal.rejected", "repair.completed", "test.quarantined"})
COMMANDS = frozenset({"heal.request", "repair.approve", "repair.reject"})


@frozen(kw_only=True)
class HealerDeps:
    aggregates: Aggregates
    clock: Clock
    strategies: Sequence[Strategy]
    stats: Callable[[], Awaitable[ranking.Stats]]  # from the heals view


async def handle(deps: HealerDeps, envelope: Envelope[Any]) -> None:
    data = envelope.data
    if isinstance(data, FailureDetected):
        await _open(deps, envelope, data)
    elif isinstance(data, RepairCompleted):
        await _maybe_apply(deps, data.repair_id, envelope)
    elif isinstance(data, HealRejected) and data.stale:
        await _out_of_date(deps, envelope, data.repair_id)
    elif isinstance(data, TestQuarantined) and data.repair_id is not None:
        await _maybe_apply(deps, data.repair_id, envelope)
    elif isinstance(data, ApproveRepair):
        rid = data.repair_id
        await deps.aggregates.execute(rid, envelope, lambda h: repairs.approve(repairs.fold(h), rid, data.by))
        await _maybe_apply(deps, rid, Tick(id=natural_id("apply", envelope.id), correlation_id=envelope.correlation_id))
    elif isinstance(data, RejectRepair):
        rid = data.repair_id
        await deps.aggregates.execute(
            rid, envelope, lambda h: repairs.reject(repairs.fold(h), rid, data.reason, data.by)
        )
    elif isinstance(data, RequestHeal):
        await _request(deps, envelope, data)


async def _open(deps: HealerDeps, envelope: Any, failure: FailureDetected) -> None:
    rid = repairs.repair_id(failure.project, failure.fingerprint)
    state = repairs.fold(await deps.aggregates.history(rid))
    if state.status in repairs.OPEN and not state.out_of_date():
        return  # one open repair per fingerprint: don't even read the repository
    proposals = await _ranked_proposals(deps, failure)
    await deps.aggregates.execute(
        rid, envelope, lambda h: repairs.open_repair(repairs.fold(h), failure, proposals, rid)
    )


async def _out_of_date(deps: HealerDeps, envelope: Envelope[Any], rid: uuid.UUID) -> None:
    """Every candidate was rejected, some because other repairs changed the files since: a new round
    proposed against the files as they are now (`repairs.RepairState.out_of_date`)."""
    state = repairs.fold(await deps.aggregates.history(rid))
    if not state.out_of_date() or state.request is None:
        return
    failure = repairs.failure_of(state.request, run_id="cars")
    proposals = await _ranked_proposals(deps, failure)
    await deps.aggregates.execute(
        rid, envelope, lambda h: repairs.open_repair(repairs.fold(h), failure, proposals, rid)
    )


async def _ranked_proposals(deps: HealerDeps, failure: FailureDetected) -> list[Proposal]:
    if not failure.repo_path or failure.category in repairs.UNREPAIRABLE:
        return []
    found = await anyio.to_thread.run_sync(propose_all, deps.strategies, failure)
    return ranking.rank(found, failure.category, await deps.stats())


async def _request(deps: HealerDeps, envelope: Envelope[Any], command: RequestHeal) -> None:
    """`heal.request`: propose again for a failure CARS has seen, from the evidence it recorded."""
    if command.fingerprint is None:
        raise Rejected("heal.request needs the failure's fingerprint (GET /repairs lists them)")
    rid = repairs.repair_id(command.project, command.fingerprint)
    state = repairs.fold(await deps.aggregates.history(rid))
    if state.request is None:
        raise Rejected(f"no failure with fingerprint {command.fingerprint!r} in project {command.project!r}")
    await _open(deps, envelope, repairs.failure_of(state.request, run_id="heal.request"))


def propose_all(strategies: Sequence[Strategy], failure: FailureDetected) -> list[Proposal]:
    """Every strategy's proposals that edit test files only (blocking: reads the repository)."""
    assert failure.repo_path is not None
    config = load_project_config(failure.repo_path)
    workspace = Workspace(failure.repo_path, test_globs=config.test_paths)
    found: list[Proposal] = []
    for strategy in strategies:
        if isinstance(strategy, FlakyQuarantine) and strategy.quarantine_file != config.quarantine_file:
            strategy = FlakyQuarantine(config.quarantine_file)  # the project's own quarantine list
        if not strategy.applies(failure):
            continue
        try:
            proposals = strategy.propose(failure, workspace)
        except Rejected:
            raise
        except Exception:
            # One broken strategy must not stop the others; the failure is logged with its traceback.
            log.exception("strategy %s failed on %s", strategy.name, failure.test_id)
            continue
        for p in proposals:
            # A quarantine edits the quarantine list, which is not a test file; anything else must.
            if p.quarantine or all(workspace.is_test_file(e.path) for e in p.edits):
                found.append(p)
            else:
                log.warning("strategy %s proposed an edit outside test files; dropped", strategy.name)
    return found


async def _maybe_apply(deps: HealerDeps, rid: uuid.UUID, cause: Any) -> None:
    state = repairs.fold(await deps.aggregates.history(rid))
    chosen = state.validated()
    if state.request is None or chosen is None or not state.request.repo_path:
        return
    repo = state.request.repo_path
    config: ProjectConfig = await anyio.to_thread.run_sync(load_project_config, repo)
    if not repairs.wants_apply(state, config.auto_apply):
        return
    branch = f"cars/repair-{rid.hex[:8]}" if config.git_branch else None
    message = commit_message(state)
    try:
        done: Applied = await anyio.to_thread.run_sync(
            lambda: apply_to_repo(Path(repo), chosen.patch, branch=branch, message=message)
        )
    except PatchError as exc:
        await _conflict(deps, state, rid, str(exc))
        return
    await deps.aggregates.execute(
        rid, cause, lambda h: repairs.applied(repairs.fold(h), rid, done.files, done.branch, done.commit)
    )


async def _conflict(deps: HealerDeps, state: repairs.RepairState, rid: uuid.UUID, error: str) -> None:
    """A validated patch no longer applies: the files changed since (often another repair of the same
    test file was applied first). Record that honestly, then propose again against the current files,
    a bounded number of times."""
    if state.status not in (repairs.RepairStatus.COMPLETED, repairs.RepairStatus.APPROVED):
        log.warning("repair %s cannot be applied (%s) and is %s", rid, error, state.status.value)
        return
    again = state.round < repairs.MAX_ROUNDS and state.request is not None
    reason = f"validated, but the patch no longer applies to the project: {error}" + (
        "; proposing again against the current files" if again else "")
    cause = Tick(id=natural_id("apply-conflict", rid, state.round))
    if not again or state.request is None:
        await deps.aggregates.execute(rid, cause, lambda h: repairs.reject(repairs.fold(h), rid, reason, "cars"))
        return
    failure = repairs.failure_of(state.request, run_id="cars")
    proposals = await _ranked_proposals(deps, failure)

    def decide(history: Sequence[Envelope[Any]]) -> list[Any]:
        # The rejection and the new round in one append: nobody ever sees the repair rejected and idle.
        rejected = repairs.reject(repairs.fold(history), rid, reason, "cars")
        after = repairs.fold([*history, *(Envelope(data=e) for e in rejected)])
        return [*rejected, *repairs.open_repair(after, failure, proposals, rid)]

    await deps.aggregates.execute(rid, cause, decide)


def commit_message(state: repairs.RepairState) -> str:
    """The commit message of an applied repair: what broke, what changed, and the evidence."""
    c, r = state.completed, state.request
    assert r is not None
    if c is None:  # a quarantine
        return f"CARS: quarantine flaky test {r.test_id}\n\n{r.reason}\n\nRepair: {r.repair_id}\n"
    ev = c.evidence
    lines = [
        f"CARS: repair {r.test_id} ({c.category.value}, {c.strategy})", "",
        f"Failure: {r.reason or r.category.value}",
        f"Validated: {ev.passes}/{ev.reruns} reruns passed; regressions: {len(ev.regressions)}; "
        f"guardrails broken: {len(ev.guardrails)}; mutation check: {ev.mutation.value}",
    ]
    if ev.mutation_detail:
        lines.append(f"Mutation: {ev.mutation_detail}")
    if ev.collected_before is not None:
        lines.append(f"Collected tests: {ev.collected_before} -> {ev.collected_after}")
    lines += ["", f"Repair: {c.repair_id}", f"Candidate: {c.candidate_id}", f"Confidence: {c.confidence:.2f}"]
    return "\n".join(lines) + "\n"


__all__ = ["COMMANDS", "EVENTS", "ROLE", "HealerDeps", "commit_message", "handle", "propose_all"]
