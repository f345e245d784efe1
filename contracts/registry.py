"""The registry: CARS services (processes) and environment templates."""

from __future__ import annotations

import datetime as dt

from attrs import field, frozen, validators

from contracts.catalog import Area, Kind, message
from contracts.limits import MAX_ID, MAX_TEXT, bounded, max_items, non_empty
from contracts.values import TemplateSpec


@message("service.register", kind=Kind.COMMAND, area=Area.REGISTRY)
@frozen(kw_only=True)
class RegisterService:
    """A CARS process (or any service) announces itself. `instance` is its unique consumer name."""

    instance: str = field(validator=non_empty(MAX_ID))
    role: str = field(validator=non_empty(MAX_ID))
    version: str = field(default="unknown", validator=non_empty(64))
    actors: tuple[str, ...] = field(default=(), validator=max_items(64))
    host: str = field(default="unknown", validator=non_empty(MAX_ID))
    pid: int | None = None
    started_at: dt.datetime | None = None


@message("service.heartbeat", kind=Kind.COMMAND, area=Area.REGISTRY)
@frozen(kw_only=True)
class Heartbeat:
    instance: str = field(validator=non_empty(MAX_ID))


@message("service.deregister", kind=Kind.COMMAND, area=Area.REGISTRY)
@frozen(kw_only=True)
class DeregisterService:
    instance: str = field(validator=non_empty(MAX_ID))
    reason: str = field(default="shutdown", validator=bounded(MAX_TEXT))


@message("service.registered", kind=Kind.EVENT, area=Area.REGISTRY)
@frozen(kw_only=True)
class ServiceRegistered:
    instance: str = field(validator=non_empty(MAX_ID))
    role: str = field(validator=non_empty(MAX_ID))
    version: str = field(validator=non_empty(64))
    actors: tuple[str, ...] = ()
    host: str = field(validator=non_empty(MAX_ID))
    pid: int | None = None
    started_at: dt.datetime


@message("service.heartbeat_recorded", kind=Kind.EVENT, area=Area.REGISTRY)
@frozen(kw_only=True)
class HeartbeatRecorded:
    instance: str = field(validator=non_empty(MAX_ID))
    at: dt.datetime


@message("service.lost", kind=Kind.EVENT, area=Area.REGISTRY)
@frozen(kw_only=True)
class ServiceLost:
    """The sweep saw no heartbeat for longer than the timeout."""

    instance: str = field(validator=non_empty(MAX_ID))
    last_seen_at: dt.datetime
    timeout_s: float = field(validator=validators.gt(0.0))


@message("service.deregistered", kind=Kind.EVENT, area=Area.REGISTRY)
@frozen(kw_only=True)
class ServiceDeregistered:
    instance: str = field(validator=non_empty(MAX_ID))
    reason: str = field(default="shutdown", validator=bounded(MAX_TEXT))


@message("template.publish", kind=Kind.COMMAND, area=Area.REGISTRY)
@frozen(kw_only=True)
class PublishTemplate:
    spec: TemplateSpec


@message("template.deprecate", kind=Kind.COMMAND, area=Area.REGISTRY)
@frozen(kw_only=True)
class DeprecateTemplate:
    name: str = field(validator=non_empty(63))
    version: str = field(validator=non_empty(64))
    reason: str = field(default="", validator=bounded(MAX_TEXT))


@message("template.published", kind=Kind.EVENT, area=Area.REGISTRY)
@frozen(kw_only=True)
class TemplatePublished:
    spec: TemplateSpec


@message("template.deprecated", kind=Kind.EVENT, area=Area.REGISTRY)
@frozen(kw_only=True)
class TemplateDeprecated:
    name: str = field(validator=non_empty(63))
    version: str = field(validator=non_empty(64))
    reason: str = field(default="", validator=bounded(MAX_TEXT))
