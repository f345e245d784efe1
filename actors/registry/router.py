"""The registry actor's subscribers and its missed-heartbeat sweep."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
from attrs import frozen

from actors.ports import Aggregates, Clock, Tick
from actors.registry import services
from contracts import Envelope, natural_id

log = logging.getLogger(__name__)

ROLE = "registry"
ACCEPTS = services.COMMANDS


@frozen(kw_only=True)
class RegistryDeps:
    aggregates: Aggregates
    clock: Clock
    alive_instances: Callable[[], Awaitable[list[str]]]  # from the services view
    service_timeout_s: float


async def handle(deps: RegistryDeps, envelope: Envelope[Any]) -> None:
    """Apply one service command to its service's stream."""
    command = envelope.data
    stream_id = services.service_id(command.instance)
    now = deps.clock()
    await deps.aggregates.execute(
        stream_id, envelope, lambda history: services.decide(services.fold(history), command, now)
    )


async def sweep_once(deps: RegistryDeps) -> int:
    """Record service.lost for every alive service that stopped heartbeating. Returns how many."""
    lost = 0
    now = deps.clock()
    for instance in await deps.alive_instances():
        try:
            lost += await _sweep_instance(deps, instance, now)
        except Exception:
            # One unreadable service must not stop the sweep of every service after it.
            log.exception("sweeping %s failed; the next sweep tries again", instance)
    return lost


async def _sweep_instance(deps: RegistryDeps, instance: str, now: dt.datetime) -> int:
    stream_id = services.service_id(instance)
    state = services.fold(await deps.aggregates.history(stream_id))
    if not services.sweep(state, instance, now, deps.service_timeout_s):
        return 0
    # The same silence gives the same tick id in every sweeping process: one service.lost.
    tick = Tick(id=natural_id("service-sweep", instance, state.last_seen_at))

    def decide(history: Sequence[Envelope[Any]]) -> list[Any]:
        return services.sweep(services.fold(history), instance, deps.clock(), deps.service_timeout_s)

    return int(bool(await deps.aggregates.execute(stream_id, tick, decide)))


async def run_sweeps(deps: RegistryDeps, every_s: float) -> None:
    """Sweep forever; a failed sweep is logged and tried again next time."""
    while True:
        try:
            n = await sweep_once(deps)
            if n:
                log.info("services lost", extra={"count": n})
        except Exception:
            log.exception("service sweep failed; retrying in %.1fs", every_s)
        await anyio.sleep(every_s)
