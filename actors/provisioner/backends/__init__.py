"""Environment backends: where an environment's sandbox and services run.

Every backend has the same asynchronous shape, `Backend`. The provisioner chooses one per request (its
`backend` field), else per template (`TemplateSpec.backend`), else the default (CARS_ENV_BACKEND).

- `local` (`backends.local`): a sandbox copy of the repo and service processes on this machine.
- `kubernetes` (`backends.kubernetes`): one namespace per environment.

`LazyBackends` builds a backend the first time it is asked for, so a process that never uses
Kubernetes never imports its client or reads a cluster configuration.
"""

from __future__ import annotations

import builtins
import datetime as dt
import logging
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Protocol

from attrs import field, frozen

from actors.provisioner.errors import EnvironmentUnavailable
from contracts.values import TemplateSpec

log = logging.getLogger(__name__)


@frozen(kw_only=True)
class Provisioned:
    """A ready environment: where the workspace is, how to reach its services, and when it expires."""

    workspace: str  # a folder on this machine (local), or where the runner mounts the repo (kubernetes)
    service_urls: dict[str, str] = field(factory=dict)  # REDIS_URL, DATABASE_URL, ...
    env: dict[str, str] = field(factory=dict)  # every variable a test run needs, the URLs included
    expires_at: dt.datetime


@frozen(kw_only=True)
class LiveEnvironment:
    """One environment a backend holds now."""

    env_id: uuid.UUID
    workspace: str
    expires_at: dt.datetime


class ProvisionedEnvironment(Protocol):
    """What `Backend.create` returns, read-only: `Provisioned`, or a backend's own class of the same shape."""

    @property
    def workspace(self) -> str: ...

    @property
    def service_urls(self) -> Mapping[str, str]: ...

    @property
    def env(self) -> Mapping[str, str]: ...

    @property
    def expires_at(self) -> dt.datetime: ...


class HeldEnvironment(Protocol):
    """What `Backend.list` returns per environment: `LiveEnvironment`, or a backend's own richer class."""

    @property
    def env_id(self) -> uuid.UUID: ...

    @property
    def expires_at(self) -> dt.datetime | None: ...


class Backend(Protocol):
    """What the provisioner needs from a backend. Every method is idempotent per environment id."""

    name: str

    async def create(
        self, env_id: uuid.UUID, *, template: TemplateSpec, repo_path: str | None, ttl_s: int,
        labels: Mapping[str, str],
    ) -> ProvisionedEnvironment:
        """Create the environment (or return it as it is, if it exists and is healthy).

        Raises `ProvisionError` (or a subclass) for a request that cannot succeed: the provisioner
        records `environment.failed`. Any other error is treated as transient and retried.
        """
        ...

    async def release(self, env_id: uuid.UUID) -> bool:
        """Tear the environment down. True if there was something to release."""
        ...

    async def reap(self, now: dt.datetime) -> builtins.list[uuid.UUID]:
        """Release every environment expired at `now` (and any orphan); the ids released."""
        ...

    async def list(self) -> Sequence[HeldEnvironment]:
        """Every environment this backend holds now, whichever process created it."""
        ...


class UnknownBackend(EnvironmentUnavailable):
    """A request named a backend that does not exist."""


class BackendNotConfigured(EnvironmentUnavailable):
    """The backend exists but could not be built here (its library or its configuration is missing)."""


class LazyBackends(Mapping[str, Backend]):
    """Backends by name, each built by its factory the first time it is looked up.

    Looking up an unknown name raises `UnknownBackend`; a factory that fails raises
    `BackendNotConfigured` with its reason (and is tried again at the next lookup: the configuration
    may be fixed without a restart). Both are `ProvisionError`s, so a request becomes
    `environment.failed` with the reason.
    """

    def __init__(self, factories: Mapping[str, Callable[[], Backend]], default: str) -> None:
        if default not in factories:
            raise ValueError(f"default backend {default!r} is not one of {', '.join(factories)}")
        self._factories = dict(factories)
        self._built: dict[str, Backend] = {}
        self.default = default

    def __getitem__(self, name: str) -> Backend:
        built = self._built.get(name)
        if built is not None:
            return built
        factory = self._factories.get(name)
        if factory is None:
            raise UnknownBackend(f"unknown environment backend {name!r}; known: {', '.join(self._factories)}")
        try:
            backend = factory()
        except EnvironmentUnavailable:
            raise
        except Exception as exc:
            raise BackendNotConfigured(f"the {name} backend is not available here: {type(exc).__name__}: {exc}"
                                       ) from exc
        self._built[name] = backend
        return backend

    def __contains__(self, name: object) -> bool:
        return name in self._factories

    def __iter__(self) -> Iterator[str]:
        return iter(self._factories)

    def __len__(self) -> int:
        return len(self._factories)

    def built(self) -> builtins.list[Backend]:
        """The backends built so far (the reaper looks only at these and the default)."""
        return builtins.list(self._built.values())


__all__ = [
    "Backend", "BackendNotConfigured", "HeldEnvironment", "LazyBackends", "LiveEnvironment", "Provisioned",
    "ProvisionedEnvironment", "UnknownBackend",
]
