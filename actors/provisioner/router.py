"""The environment provisioner actor: `environment.request` / `environment.release`, and the TTL reaper.

The template comes from the registry's history of it; the backend (an `actors.provisioner.backends.Backend`,
chosen per request, per template, or by default) does the work. Every step is recorded on the environment's
stream, so a crash between creating and recording is repaired by the redelivery (creation is
idempotent per environment id).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any

import anyio
from attrs import frozen

from actors.ports import Aggregates, Clock, Tick
from actors.provisioner import environments as envs
from actors.provisioner.backends import Backend, LazyBackends
from actors.provisioner.errors import EnvironmentUnavailable, ProvisionError
from actors.registry import templates
from contracts import Envelope, natural_id
from contracts.environments import EnvironmentRequested, ReleaseEnvironment, RequestEnvironment

log = logging.getLogger(__name__)

ROLE = "provisioner"
COMMANDS = frozenset({"environment.request", "environment.release"})


@frozen(kw_only=True)
class ProvisionerDeps:
    aggregates: Aggregates
    clock: Clock
    backends: Mapping[str, Backend]  # by name; a `LazyBackends` builds each when first asked for
    default_backend: str = "local"


async def handle(deps: ProvisionerDeps, envelope: Envelope[Any]) -> None:
    data = envelope.data
    if isinstance(data, RequestEnvironment):
        await _request(deps, envelope, data)
    elif isinstance(data, ReleaseEnvironment):
        await _release(deps, envelope, data.environment_id)


async def _release(deps: ProvisionerDeps, envelope: Envelope[Any], env_id: uuid.UUID) -> None:
    state = envs.fold(await deps.aggregates.history(env_id))
    if state.status is envs.EnvStatus.NONE:
        envs.release(state, env_id)  # raises UnknownEnvironment: dead-lettered with the reason
    if state.requested is not None and state.status in envs.LIVE:
        try:
            backend = deps.backends[state.requested.backend]
        except EnvironmentUnavailable as exc:
            # Nothing was ever made by a backend that cannot be built here.
            log.warning("releasing %s: %s", env_id, exc)
        else:
            await backend.release(env_id)
    await deps.aggregates.execute(env_id, envelope, lambda h: envs.release(envs.fold(h), env_id))


def labels_of(req: EnvironmentRequested) -> dict[str, str]:
    """What a backend may label the environment with (values unsanitised: a backend fits them to its rules)."""
    labels = {"environment-id": str(req.environment_id), "template": req.template,
              "template-version": req.template_version or "", "purpose": req.purpose}
    _kind, _, rest = req.purpose.partition(":")
    served = rest.partition(":")[0]
    try:  # a validation environment's purpose is `validate:<repair id>:<candidate id>`
        labels["repair-id"] = str(uuid.UUID(served))
    except ValueError:
        pass
    return labels


async def _request(deps: ProvisionerDeps, envelope: Envelope[Any], cmd: RequestEnvironment) -> None:
    env_id = cmd.environment_id or natural_id("environment", envelope.id)
    template = templates.fold(await deps.aggregates.history(templates.template_id(cmd.template)))
    await deps.aggregates.execute(env_id, envelope, lambda h: envs.request(
        envs.fold(h), cmd, env_id, template=template, default_backend=deps.default_backend,
        backends=list(deps.backends)))
    state = envs.fold(await deps.aggregates.history(env_id))
    if state.status is not envs.EnvStatus.REQUESTED or state.requested is None:
        return  # provisioned, failed or gone already
    req = state.requested
    cause = Tick(id=natural_id("environment-created", env_id), correlation_id=envelope.correlation_id)
    try:
        # The version was pinned when the request was recorded; it is served even if deprecated since.
        template = templates.fold(await deps.aggregates.history(templates.template_id(req.template)))
        spec = template.versions.get(req.template_version or "")
        if spec is None:
            raise ProvisionError(f"template {req.template!r} version {req.template_version} is not in the registry")
        backend = deps.backends[req.backend]
        made = await backend.create(env_id, template=spec, repo_path=req.repo_path, ttl_s=req.ttl_s,
                                    labels=labels_of(req))
    except ProvisionError as exc:
        reason = f"{type(exc).__name__}: {exc}"
        await deps.aggregates.execute(env_id, cause, lambda h: envs.failed(envs.fold(h), env_id, reason))
        return
    variables = {**made.service_urls, **made.env}
    await deps.aggregates.execute(env_id, cause, lambda h: envs.provisioned(
        envs.fold(h), env_id, req.backend, made.workspace, variables, made.expires_at))


def _reapable(deps: ProvisionerDeps) -> list[Backend]:
    """The backends to reap: every one built so far, and the default (orphans of an earlier process)."""
    if not isinstance(deps.backends, LazyBackends):
        return list(deps.backends.values())
    try:
        deps.backends[deps.default_backend]
    except EnvironmentUnavailable as exc:
        log.warning("the default backend cannot be reaped: %s", exc)
    return deps.backends.built()


async def reap_once(deps: ProvisionerDeps) -> int:
    """Release every expired (or orphaned) environment of every backend and record it. Returns how many."""
    now = deps.clock()
    count = 0
    for backend in _reapable(deps):
        try:
            reaped = await backend.reap(now)
        except Exception:
            # One backend that cannot be reached must not stop the others being reaped.
            log.exception("reaping the %s backend failed; the next round tries again", backend.name)
            continue
        for env_id in reaped:
            tick = Tick(id=natural_id("environment-expired", env_id))
            await deps.aggregates.execute(env_id, tick, lambda h, e=env_id: envs.expired(envs.fold(h), e, now))
        count += len(reaped)
    return count


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
