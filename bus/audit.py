"""The state of any aggregate after some of its events, folded exactly as its actor folds it.

`GET /audit/{id}?at_version=N` and `cars audit ID --at-version N` show an aggregate as it was after
its first N events. Each kind of stream has its owner's fold (the repair's, the environment's, the
service's, the run's, the project's watch and monitoring), chosen by the stream's first event; the
result is that fold's state as JSON. A stream of another kind gets the generic fold: the latest
value of every field its events carried.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import contracts
from actors.healer import repairs
from actors.monitor import decide as monitor_decide
from actors.monitor import history as watch
from actors.provisioner import environments
from actors.registry import services
from contracts import Envelope

_Fold = Callable[[Sequence[Envelope[Any]]], Any]

_REPAIR = frozenset({"heal.requested", "failure.unrepairable", "heal.proposed", "heal.abandoned", "repair.completed"})
_ENVIRONMENT = frozenset({"environment.requested", "environment.provisioned", "environment.failed"})
_SERVICE = frozenset({"service.registered", "service.heartbeat_recorded", "service.lost", "service.deregistered"})
_WATCH = frozenset({"test.outcomes_recorded", "test.flakiness.changed"})
_MONITORING = frozenset({"monitoring.started", "monitoring.stopped"})


def _run(history: Sequence[Envelope[Any]]) -> dict[str, Any]:
    return {"recorded": monitor_decide.fold_run(history)}


def _watch(history: Sequence[Envelope[Any]]) -> Any:
    return watch.fold(history, watch.FlakinessConfig())


def _fold_for(first: str) -> tuple[str, _Fold] | None:
    for kind, tags, fold in (
        ("repair", _REPAIR, repairs.fold), ("environment", _ENVIRONMENT, environments.fold),
        ("service", _SERVICE, services.fold), ("watch", _WATCH, _watch),
        ("monitoring", _MONITORING, monitor_decide.fold_monitoring),
    ):
        if first in tags:
            return kind, fold
    if first.startswith("run."):
        return "run", _run
    return None


def generic_state(history: Sequence[Envelope[Any]]) -> dict[str, Any]:
    """Every field any event carried, at its latest value."""
    fields: dict[str, Any] = {}
    for env in history:
        data = contracts.unstructure(env.data)
        if isinstance(data, dict):
            fields.update(data)
    return fields


def aggregate_state(history: Sequence[Envelope[Any]]) -> dict[str, Any]:
    """`{"kind", "version", "last_event", "last_occurred_at", "state"}` after `history` (oldest first)."""
    if not history:
        return {"kind": "empty", "version": 0, "last_event": None, "last_occurred_at": None, "state": {}}
    chosen = _fold_for(history[0].type)
    if chosen is None:
        kind, state = "generic", generic_state(history)
    else:
        kind, fold = chosen
        state = contracts.converter.unstructure(fold(history))
    last = history[-1]
    return {"kind": kind, "version": len(history), "last_event": last.type,
            "last_occurred_at": last.occurred_at.isoformat(), "state": state}


__all__ = ["aggregate_state", "generic_state"]
