"""Pure decisions about services: fold a service's history, decide what a command changes."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from collections.abc import Sequence
from typing import Any

from attrs import evolve, frozen

from actors.errors import Rejected
from contracts import Envelope, natural_id
from contracts.registry import (
    DeregisterService,
    Heartbeat,
    HeartbeatRecorded,
    RegisterService,
    ServiceDeregistered,
    ServiceLost,
    ServiceRegistered,
)

COMMANDS = frozenset({"service.register", "service.heartbeat", "service.deregister"})


class UnknownService(Rejected):
    """A heartbeat or deregistration for an instance that never registered."""


class Status(enum.Enum):
    UNKNOWN = "unknown"
    ALIVE = "alive"
    LOST = "lost"
    DEREGISTERED = "deregistered"


@frozen(kw_only=True)
class ServiceState:
    status: Status = Status.UNKNOWN
    started_at: dt.datetime | None = None
    last_seen_at: dt.datetime | None = None


def service_id(instance: str) -> uuid.UUID:
    return natural_id("service", instance)


def fold(history: Sequence[Envelope[Any]]) -> ServiceState:
    state = ServiceState()
    for env in history:
        event = env.data
        if isinstance(event, ServiceRegistered):
            state = ServiceState(status=Status.ALIVE, started_at=event.started_at, last_seen_at=env.occurred_at)
        elif isinstance(event, HeartbeatRecorded):
            state = evolve(state, status=Status.ALIVE, last_seen_at=event.at)
        elif isinstance(event, ServiceLost):
            state = evolve(state, status=Status.LOST)
        elif isinstance(event, ServiceDeregistered):
            state = evolve(state, status=Status.DEREGISTERED)
    return state


def decide(state: ServiceState, command: Any, now: dt.datetime) -> list[Any]:
    """What a service command changes, given the service's state."""
    if isinstance(command, RegisterService):
        started_at = command.started_at or now
        if state.status is Status.ALIVE and state.started_at == started_at:
            return []  # the same process registering again: nothing changed
        return [ServiceRegistered(
            instance=command.instance, role=command.role, version=command.version, actors=command.actors,
            host=command.host, pid=command.pid, started_at=started_at,
        )]
    if isinstance(command, Heartbeat):
        if state.status is Status.UNKNOWN:
            raise UnknownService(f"heartbeat from {command.instance!r}, which never registered")
        if state.status is Status.DEREGISTERED:
            return []  # a late heartbeat after a clean shutdown
        return [HeartbeatRecorded(instance=command.instance, at=now)]
    if isinstance(command, DeregisterService):
        if state.status is Status.UNKNOWN:
            raise UnknownService(f"deregistration of {command.instance!r}, which never registered")
        if state.status is Status.DEREGISTERED:
            return []
        return [ServiceDeregistered(instance=command.instance, reason=command.reason)]
    raise TypeError(f"not a service command: {type(command).__name__}")


def sweep(state: ServiceState, instance: str, now: dt.datetime, timeout_s: float) -> list[Any]:
    """ServiceLost when an alive service has been silent for longer than `timeout_s`."""
    if state.status is not Status.ALIVE or state.last_seen_at is None:
        return []
    if (now - state.last_seen_at).total_seconds() <= timeout_s:
        return []
    return [ServiceLost(instance=instance, last_seen_at=state.last_seen_at, timeout_s=timeout_s)]
