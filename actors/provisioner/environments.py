"""Pure decisions about one environment's lifecycle (its stream id is the environment id).

    environment.request -> environment.requested -> environment.provisioned | environment.failed
    environment.release -> environment.released;  TTL reaper -> environment.expired
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from attrs import evolve, frozen

from actors.errors import Rejected
from contracts import Envelope
from contracts.environments import (
    EnvironmentExpired,
    EnvironmentFailed,
    EnvironmentProvisioned,
    EnvironmentReleased,
    EnvironmentRequested,
    RequestEnvironment,
)

#: The built-in templates and the backing services each provides. (The registry's versioned
#: templates replace this table when they arrive; the names stay.)
TEMPLATE_SERVICES: Mapping[str, tuple[str, ...]] = {
    "python": (), "python-postgres": ("postgres",), "python-redis": ("redis",), "python-mysql": ("mysql",),
    "python-mongodb": ("mongodb",), "full-stack": ("postgres", "redis"),
}
DEFAULT_TTL_S = 1800


class EnvStatus(enum.Enum):
    NONE = "none"
    REQUESTED = "requested"
    PROVISIONED = "provisioned"
    FAILED = "failed"
    RELEASED = "released"
    EXPIRED = "expired"


LIVE = frozenset({EnvStatus.REQUESTED, EnvStatus.PROVISIONED})


class UnknownTemplate(Rejected):
    pass


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


def services_of(template: str) -> tuple[str, ...]:
    try:
        return TEMPLATE_SERVICES[template]
    except KeyError:
        known = ", ".join(sorted(TEMPLATE_SERVICES))
        raise UnknownTemplate(f"unknown environment template {template!r}; known: {known}") from None


def request(state: EnvState, cmd: RequestEnvironment, env_id: uuid.UUID, backend: str) -> list[Any]:
    if state.status is not EnvStatus.NONE:
        return []  # the same request again: the environment exists (or existed)
    services_of(cmd.template)
    return [EnvironmentRequested(
        environment_id=env_id, template=cmd.template, template_version=cmd.template_version, backend=backend,
        ttl_s=cmd.ttl_s or DEFAULT_TTL_S, repo_path=cmd.repo_path, purpose=cmd.purpose,
    )]


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
    "DEFAULT_TTL_S", "LIVE", "TEMPLATE_SERVICES", "EnvState", "EnvStatus", "UnknownEnvironment", "UnknownTemplate",
    "expired", "failed", "fold", "provisioned", "release", "request", "services_of",
]
