"""The registry actor's subscribers, its missed-heartbeat sweep, and the built-in templates."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
from attrs import frozen

from actors.ports import Aggregates, Clock, Tick
from actors.registry import services, templates
from actors.registry.builtin_templates import builtin_templates
from contracts import Envelope, natural_id

log = logging.getLogger(__name__)

ROLE = "registry"
ACCEPTS = services.COMMANDS | templates.COMMANDS


@frozen(kw_only=True)
class RegistryDeps:
    aggregates: Aggregates
    clock: Clock
    alive_instances: Callable[[], Awaitable[list[str]]]  # from the services view
    service_timeout_s: float


async def handle(deps: RegistryDeps, envelope: Envelope[Any]) -> None:
    """Apply one service command to its service's stream, or one template command to its template's."""
    command = envelope.data
    if envelope.type in templates.COMMANDS:
        await deps.aggregates.execute(
            templates.stream_of(command), envelope, lambda h: templates.decide(templates.fold(h), command))
        return
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


async def publish_builtin_templates(aggregates: Aggregates) -> int:
    """Publish every built-in template that is not published yet. Returns how many were.

    Safe in any number of processes at once: the cause id is derived from the template and version (a
    second process finds it handled), and the same body of a published version is a no-op anyway.
    A built-in whose version exists with another body is logged and skipped: that is a release
    mistake (change a built-in only with a new version), and must not stop the platform.
    """
    published = 0
    for spec in builtin_templates():
        tick = Tick(id=natural_id("builtin-template", spec.name, spec.version))
        try:
            published += len(await aggregates.execute(
                templates.template_id(spec.name), tick, lambda h, s=spec: templates.publish(templates.fold(h), s)))
        except templates.TemplateError as exc:
            log.error("built-in template %s %s not published: %s", spec.name, spec.version, exc)
    return published
