"""The validator actor: proves or refutes each candidate repair in an ephemeral environment.

Best candidate first. For a candidate it asks the provisioner for an environment (a sandbox copy of
the repository with the template's services); when `environment.provisioned` arrives it applies the
patch there, reruns the test, checks for regressions, the guardrails and the mutation check, records
`heal.validated` or `heal.rejected`, releases the environment, and moves on to the next candidate
until one is validated (then `repair.completed`) or none is left (`heal.abandoned`).

Environments are tied to candidates through their `purpose`: `validate:<repair_id>:<candidate_id>`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import anyio
import anyio.to_thread
from attrs import frozen

from actors.errors import Rejected
from actors.healer import repairs
from actors.ports import Aggregates, Clock
from actors.projectconfig import load_project_config
from actors.provisioner import environments as envs
from actors.validator.job_runner import JobBackend, job_runner
from actors.validator.mutation import Runner
from actors.validator.validate import Verdict
from contracts import Envelope, natural_id
from contracts.environments import (
    EnvironmentFailed,
    EnvironmentProvisioned,
    ReleaseEnvironment,
    RequestEnvironment,
)
from contracts.repairs import HealProposed
from contracts.values import ValidationEvidence

log = logging.getLogger(__name__)

ROLE = "validator"
EVENTS = frozenset({"heal.proposed", "environment.provisioned", "environment.failed"})
PURPOSE = "validate"
ENV_TTL_S = 3600


class Validate(Protocol):
    """`actors.validator.validate.validate_candidate` (blocking)."""

    def __call__(self, workspace: Path, *, patch: str, test_id: str, test_cmd: str, reruns: int,
                 env: Mapping[str, str], quarantine: bool, memory_mb: int | None,
                 runner: Runner = ...) -> Verdict: ...


@frozen(kw_only=True)
class ValidatorDeps:
    aggregates: Aggregates
    clock: Clock
    publish: Callable[[Envelope[Any]], Awaitable[Any]]  # commands to cars.commands
    validate: Validate  # blocking
    memory_mb: int | None = None  # per process of a validation run (RLIMIT_AS); None: no limit
    jobs: JobBackend | None = None  # runs the tests of environments whose backend is kubernetes


def purpose(repair_id: uuid.UUID, candidate_id: uuid.UUID) -> str:
    return f"{PURPOSE}:{repair_id}:{candidate_id}"


def parse_purpose(text: str) -> tuple[uuid.UUID, uuid.UUID] | None:
    kind, _, rest = text.partition(":")
    rid, _, cid = rest.partition(":")
    if kind != PURPOSE:
        return None
    try:
        return uuid.UUID(rid), uuid.UUID(cid)
    except ValueError:
        return None


async def handle(deps: ValidatorDeps, envelope: Envelope[Any]) -> None:
    data = envelope.data
    if isinstance(data, HealProposed):
        if data.rank == 1:
            await _start_next(deps, data.repair_id, envelope.correlation_id)
    elif isinstance(data, EnvironmentProvisioned | EnvironmentFailed):
        await _on_environment(deps, envelope, data)


async def _start_next(deps: ValidatorDeps, rid: uuid.UUID, correlation_id: str) -> None:
    """Ask for an environment for the best candidate not judged yet (if any)."""
    state = repairs.fold(await deps.aggregates.history(rid))
    candidate = state.next_candidate()
    if candidate is None or state.request is None:
        return
    template = "python"
    if state.request.repo_path:
        template = (await anyio.to_thread.run_sync(load_project_config, state.request.repo_path)).template
    cid = candidate.candidate_id
    env_id = natural_id("validation-environment", cid)
    # A fixed message id: asking twice (a redelivery) is recognised by the provisioner as one request.
    await deps.publish(Envelope(
        id=natural_id("request-environment", cid), correlation_id=correlation_id,
        data=RequestEnvironment(environment_id=env_id, template=template, repo_path=state.request.repo_path,
                                ttl_s=ENV_TTL_S, purpose=purpose(rid, cid)),
    ))


async def _on_environment(
    deps: ValidatorDeps, envelope: Envelope[Any], event: EnvironmentProvisioned | EnvironmentFailed
) -> None:
    env_id = event.environment_id
    env_state = envs.fold(await deps.aggregates.history(env_id))
    ids = parse_purpose(env_state.requested.purpose) if env_state.requested else None
    if ids is None:
        return  # an environment somebody else asked for
    rid, cid = ids
    state = repairs.fold(await deps.aggregates.history(rid))
    candidate = state.candidate(cid)
    if candidate is None or candidate.verdict is not None or state.request is None:
        await _release(deps, env_id, envelope.correlation_id)
        return
    stale = False
    if isinstance(event, EnvironmentFailed):
        ok, reason, evidence = False, f"the environment could not be provisioned: {event.reason}", ValidationEvidence()
    else:
        request, proposal = state.request, candidate.proposal
        test_cmd = request.test_cmd
        if not test_cmd:
            test_cmd = (await anyio.to_thread.run_sync(load_project_config, event.workspace)).test_cmd
        # Tests of a kubernetes environment run in its namespace (its service URLs resolve only there);
        # a local environment's run here, as before.
        extra: dict[str, Runner] = {}
        if event.backend == "kubernetes":
            if deps.jobs is None:
                await _release(deps, env_id, envelope.correlation_id)
                raise Rejected(f"environment {env_id} is on kubernetes, but this validator has no kubernetes "
                               "backend to run its tests with")
            extra["runner"] = job_runner(deps.jobs, env_id)
        verdict = await anyio.to_thread.run_sync(lambda: deps.validate(
            Path(event.workspace), patch=proposal.patch, test_id=request.test_id, test_cmd=test_cmd,
            reruns=3, env=event.service_urls, quarantine=proposal.quarantine, memory_mb=deps.memory_mb,
            **extra,
        ))
        ok, reason, evidence, stale = verdict.ok, verdict.reason, verdict.evidence, verdict.stale
    await deps.aggregates.execute(rid, envelope, lambda h: repairs.record_verdict(
        repairs.fold(h), cid, ok=ok, reason=reason, evidence=evidence, environment_id=env_id, stale=stale))
    await _release(deps, env_id, envelope.correlation_id)
    await _start_next(deps, rid, envelope.correlation_id)


async def _release(deps: ValidatorDeps, env_id: uuid.UUID, correlation_id: str) -> None:
    await deps.publish(Envelope(id=natural_id("release-environment", env_id), correlation_id=correlation_id,
                                data=ReleaseEnvironment(environment_id=env_id)))


__all__ = ["EVENTS", "ROLE", "Validate", "ValidatorDeps", "handle", "parse_purpose", "purpose"]
