"""Ephemeral validation environments."""

from __future__ import annotations

import datetime as dt
import uuid

from attrs import field, frozen, validators

from contracts.catalog import Area, Kind, message
from contracts.limits import MAX_ID, MAX_TEXT, bounded, non_empty

_opt_id = validators.optional(non_empty(MAX_ID))
_ttl = [validators.ge(30), validators.le(7 * 24 * 3600)]


@message("environment.request", kind=Kind.COMMAND, area=Area.ENVIRONMENTS)
@frozen(kw_only=True)
class RequestEnvironment:
    """Ask for an environment built from a template (latest non-deprecated version by default)."""

    environment_id: uuid.UUID | None = None
    template: str = field(default="python", validator=non_empty(63))
    template_version: str | None = field(default=None, validator=_opt_id)
    backend: str | None = field(default=None, validator=_opt_id)
    ttl_s: int | None = field(default=None, validator=validators.optional(_ttl))
    repo_path: str | None = field(default=None, validator=_opt_id)
    purpose: str = field(default="manual", validator=non_empty(MAX_ID))


@message("environment.release", kind=Kind.COMMAND, area=Area.ENVIRONMENTS)
@frozen(kw_only=True)
class ReleaseEnvironment:
    environment_id: uuid.UUID


@message("environment.requested", kind=Kind.EVENT, area=Area.ENVIRONMENTS)
@frozen(kw_only=True)
class EnvironmentRequested:
    environment_id: uuid.UUID
    template: str = field(validator=non_empty(63))
    template_version: str | None = field(default=None, validator=_opt_id)
    backend: str = field(validator=non_empty(MAX_ID))
    ttl_s: int = field(validator=_ttl)
    repo_path: str | None = field(default=None, validator=_opt_id)
    purpose: str = field(default="manual", validator=non_empty(MAX_ID))
    services: tuple[str, ...] = ()  # the names of the template's services


@message("environment.provisioned", kind=Kind.EVENT, area=Area.ENVIRONMENTS)
@frozen(kw_only=True)
class EnvironmentProvisioned:
    environment_id: uuid.UUID
    backend: str = field(validator=non_empty(MAX_ID))
    workspace: str = field(validator=non_empty(MAX_ID))
    service_urls: dict[str, str] = field(factory=dict)
    expires_at: dt.datetime


@message("environment.failed", kind=Kind.EVENT, area=Area.ENVIRONMENTS, summary=True)
@frozen(kw_only=True)
class EnvironmentFailed:
    environment_id: uuid.UUID
    reason: str = field(validator=non_empty(MAX_TEXT))


@message("environment.released", kind=Kind.EVENT, area=Area.ENVIRONMENTS)
@frozen(kw_only=True)
class EnvironmentReleased:
    environment_id: uuid.UUID
    reason: str = field(default="released", validator=bounded(MAX_TEXT))


@message("environment.expired", kind=Kind.EVENT, area=Area.ENVIRONMENTS)
@frozen(kw_only=True)
class EnvironmentExpired:
    """The TTL reaper tore the environment down."""

    environment_id: uuid.UUID
    expired_at: dt.datetime
