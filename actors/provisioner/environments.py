"""Pure decisions about one environment's lifecycle (its stream id is the environment id).

    environment.request -> environment.requested -> environment.provisioned | environment.failed
    environment.release -> environment.released;  TTL reaper -> environment.expired
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from attrs import evolve, frozen

from actors.errors import Rejected
from actors.registry import templates
from actors.registry.templates import TemplateState
from contracts import Envelope
from contracts.environments import (
    EnvironmentExpired,
    EnvironmentFailed,
    EnvironmentProvisioned,
    EnvironmentReleased,
    EnvironmentRequested,
    RequestEnvironment,
)

#: The TTL of a request that failed before its template was known.
DEFAULT_TTL_S = 1800


class EnvStatus(enum.Enum):
    NONE = "none"
    REQUESTED = "requested"
    PROVISIONED = "provisioned"
    FAILED = "failed"
    RELEASED = "released"
    EXPIRED = "expired"


LIVE = frozenset({EnvStatus.REQUESTED, EnvStatus.PROVISIONED})


class UnknownEnvironment(Rejected):
    pass


@frozen(kw_only=True)
class EnvState:
    status: EnvStatus = EnvStatus.NONE
    requested: EnvironmentRequested | None = None
    provisioned: EnvironmentProvisioned | None = None


def fold(history: Sequence[Envelope[Any]]) -> EnvState:
    state = EnvState()
    for env in history:
        e = env.data
        if isinstance(e, EnvironmentRequested):
            state = EnvState(status=EnvStatus.REQUESTED, requested=e)
        elif isinstance(e, EnvironmentProvisioned):
            state = evolve(state, status=EnvStatus.PROVISIONED, provisioned=e)
        elif isinstance(e, EnvironmentFailed):
            state = evolve(state, status=EnvStatus.FAILED)
        elif isinstance(e, EnvironmentReleased):
            state = evolve(state, status=EnvStatus.RELEASED)
        elif isinstance(e, EnvironmentExpired):
            state = evolve(state, status=EnvStatus.EXPIRED)
    return state


def request(
    state: EnvState, cmd: RequestEnvironment, env_id: uuid.UUID, *, template: TemplateState, default_backend: str,
    backends: Collection[str],
) -> list[Any]:
    """Record the request with its template resolved (`template` is that template's registry state).

    The version is the one asked for, else the latest that is not deprecated; the backend is the one
    asked for, else the template's, else `default_backend`. A request that cannot be served (unknown
    template, version or backend; a deprecated version) is recorded and failed at once with the reason,
    so whoever waits for the environment hears why.
    """
    if state.status is not EnvStatus.NONE:
        return []  # the same request again: the environment exists (or existed)
    try:
        spec = templates.resolve(template, cmd.template, cmd.template_version)
    except templates.UnknownTemplate as exc:
        refused = EnvironmentRequested(
            environment_id=env_id, template=cmd.template, template_version=cmd.template_version,
            backend=cmd.backend or default_backend, ttl_s=cmd.ttl_s or DEFAULT_TTL_S, repo_path=cmd.repo_path,
            purpose=cmd.purpose,
        )
        return [refused, EnvironmentFailed(environment_id=env_id, reason=str(exc))]
    backend = cmd.backend or spec.backend or default_backend
    requested = EnvironmentRequested(
        environment_id=env_id, template=spec.name, template_version=spec.version, backend=backend,
        ttl_s=cmd.ttl_s or spec.default_ttl_s, repo_path=cmd.repo_path, purpose=cmd.purpose,
        services=tuple(s.name for s in spec.services),
    )
    if backend not in backends:
        reason = f"unknown environment backend {backend!r}; known: {', '.join(backends)}"
        return [requested, EnvironmentFailed(environment_id=env_id, reason=reason)]
    return [requested]


def provisioned(state: EnvState, env_id: uuid.UUID, backend: str, workspace: str, variables: Mapping[str, str],
                expires_at: dt.datetime) -> list[Any]:
    if state.status is not EnvStatus.REQUESTED:
        return []
    return [EnvironmentProvisioned(environment_id=env_id, backend=backend, workspace=workspace,
                                   service_urls=dict(variables), expires_at=expires_at)]


def failed(state: EnvState, env_id: uuid.UUID, reason: str) -> list[Any]:
    if state.status is not EnvStatus.REQUESTED:
        return []
    return [EnvironmentFailed(environment_id=env_id, reason=reason[:8000] or "failed")]


def release(state: EnvState, env_id: uuid.UUID, reason: str = "released") -> list[Any]:
    if state.status is EnvStatus.NONE:
        raise UnknownEnvironment(f"no environment {env_id}")
    if state.status not in LIVE:
        return []
    return [EnvironmentReleased(environment_id=env_id, reason=reason)]


def expired(state: EnvState, env_id: uuid.UUID, now: dt.datetime) -> list[Any]:
    if state.status not in LIVE:
        return []
    return [EnvironmentExpired(environment_id=env_id, expired_at=now)]


__all__ = [
    "DEFAULT_TTL_S", "LIVE", "EnvState", "EnvStatus", "UnknownEnvironment", "expired", "failed", "fold",
    "provisioned", "release", "request",
]
