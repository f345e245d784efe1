"""The environment provisioner actor: `environment.request` / `environment.release`, and the TTL reaper.

The backend does the blocking work in a worker thread; every step is recorded on the environment's
stream, so a crash between creating and recording is repaired by the redelivery (creation is
idempotent per environment id).
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
import anyio.to_thread
from attrs import frozen

from actors.ports import Aggregates, Clock, Tick
from actors.provisioner import environments as envs
from actors.provisioner.backends.local import LocalBackend
from actors.provisioner.errors import ProvisionError
from contracts import Envelope, natural_id
from contracts.environments import ReleaseEnvironment, RequestEnvironment

log = logging.getLogger(__name__)

ROLE = "provisioner"
COMMANDS = frozenset({"environment.request", "environment.release"})


@frozen(kw_only=True)
class ProvisionerDeps:
    aggregates: Aggregates
    clock: Clock
    backend: LocalBackend


async def handle(deps: ProvisionerDeps, envelope: Envelope[Any]) -> None:
    data = envelope.data
    if isinstance(data, RequestEnvironment):
        await _request(deps, envelope, data)
    elif isinstance(data, ReleaseEnvironment):
        env_id = data.environment_id
        await anyio.to_thread.run_sync(deps.backend.release, env_id)
        await deps.aggregates.execute(env_id, envelope, lambda h: envs.release(envs.fold(h), env_id))


async def _request(deps: ProvisionerDeps, envelope: Envelope[Any], cmd: RequestEnvironment) -> None:
    env_id = cmd.environment_id or natural_id("environment", envelope.id)
    backend = deps.backend.name
    await deps.aggregates.execute(env_id, envelope, lambda h: envs.request(envs.fold(h), cmd, env_id, backend))
    state = envs.fold(await deps.aggregates.history(env_id))
    if state.status is not envs.EnvStatus.REQUESTED or state.requested is None:
        return  # provisioned, failed or gone already
    req = state.requested
    cause = Tick(id=natural_id("environment-created", env_id), correlation_id=envelope.correlation_id)
    try:
        made = await anyio.to_thread.run_sync(
            lambda: deps.backend.create(env_id, req.repo_path, envs.services_of(req.template), req.ttl_s)
        )
    except ProvisionError as exc:
        reason = f"{type(exc).__name__}: {exc}"
        await deps.aggregates.execute(env_id, cause, lambda h: envs.failed(envs.fold(h), env_id, reason))
        return
    variables = {**made.service_urls, **made.env}
    await deps.aggregates.execute(env_id, cause, lambda h: envs.provisioned(
        envs.fold(h), env_id, backend, str(made.workspace), variables, made.expires_at))


async def reap_once(deps: ProvisionerDeps) -> int:
    """Release every expired (or orphaned) environment and record it. Returns how many."""
    now = deps.clock()
    reaped = await anyio.to_thread.run_sync(deps.backend.reap, now)
    for env_id in reaped:
        tick = Tick(id=natural_id("environment-expired", env_id))
        await deps.aggregates.execute(env_id, tick, lambda h, e=env_id: envs.expired(envs.fold(h), e, now))
    return len(reaped)


async def run_reaper(deps: ProvisionerDeps, every_s: float) -> None:
    """Reap forever; a failed round is logged and tried again next time."""
    while True:
        try:
            n = await reap_once(deps)
            if n:
                log.info("environments expired", extra={"count": n})
        except Exception:
            log.exception("environment reaper failed; retrying in %.1fs", every_s)
        await anyio.sleep(every_s)


__all__ = ["COMMANDS", "ROLE", "ProvisionerDeps", "handle", "reap_once", "run_reaper"]
