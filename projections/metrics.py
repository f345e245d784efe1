"""The metrics that come from the store and the views, for `GET /metrics` (Prometheus text format).

The route (`projections.metrics_route`) serves what `ApiDeps.metrics` renders: the composition
root combines this process's bus counters, the streams' state read from Redis at scrape time
(`bus.metrics`), and the families below, read from the views and the store at scrape time:

- `cars_heal_candidates{class, strategy, verdict}`: every candidate the healer proposed, by failure
  class, strategy and verdict (`validated`, `rejected`, `pending`), from the heals view;
- `cars_repairs{class, status}`: repairs by failure class and status, from the heals view;
- `cars_environments_active{backend, state}`: environments requested or provisioned and not yet
  failed, released or expired (`ActiveEnvironments`, a fold of the environment events).

Like every module in projections/, this one imports `contracts` only, never `bus`.
"""

from __future__ import annotations

import threading
from typing import Any

import anyio.to_thread
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from contracts.environments import (
    EnvironmentExpired,
    EnvironmentFailed,
    EnvironmentProvisioned,
    EnvironmentReleased,
    EnvironmentRequested,
)
from projections.db import ViewDB
from projections.views import LIVE_PREFIX, EventLog


def heal_families(db: ViewDB, prefix: str = LIVE_PREFIX) -> list[Metric]:
    """Heal outcomes by failure class and strategy, and repairs by class and status (blocking)."""
    candidates = GaugeMetricFamily("cars_heal_candidates", "Repair candidates by failure class, strategy and "
                                   "verdict (validated, rejected, pending).", labels=["class", "strategy", "verdict"])
    repairs = GaugeMetricFamily("cars_repairs", "Repairs by failure class and status.", labels=["class", "status"])
    with db.transaction(readonly=True) as tx:
        tx.execute(f"SELECT category, strategy, COALESCE(verdict, 'pending') AS verdict, COUNT(*) AS n "
                   f"FROM {prefix}heal_candidates GROUP BY category, strategy, COALESCE(verdict, 'pending') "
                   "ORDER BY category, strategy, verdict")
        for row in tx.fetchall():
            candidates.add_metric([row["category"], row["strategy"], row["verdict"]], int(row["n"]))
        tx.execute(f"SELECT category, status, COUNT(*) AS n FROM {prefix}repairs GROUP BY category, status "
                   "ORDER BY category, status")
        for row in tx.fetchall():
            repairs.add_metric([row["category"], row["status"]], int(row["n"]))
    return [candidates, repairs]


ENVIRONMENT_TYPES = ("environment.requested", "environment.provisioned", "environment.failed",
                     "environment.released", "environment.expired")


class ActiveEnvironments:
    """Environments that are requested or provisioned now, folded from the environment events.

    Each call to `families` reads only the events recorded since the previous one. (A stand-in for
    an environments view: when one exists, count its live rows instead.)
    """

    def __init__(self, log: EventLog, batch: int = 1000) -> None:
        self.log = log
        self.batch = batch
        self.position = 0
        self.live: dict[str, tuple[str, str]] = {}  # environment id -> (backend, state)
        self._lock = threading.Lock()  # two scrapes at once must not fold the same events twice

    def catch_up(self) -> dict[tuple[str, str], int]:
        """(backend, state) -> how many environments are in it now (blocking)."""
        with self._lock:
            while batch := self.log.read(after=self.position, limit=self.batch, types=ENVIRONMENT_TYPES):
                for recorded in batch:
                    self._apply(recorded.envelope.data)
                self.position = batch[-1].position
            counts: dict[tuple[str, str], int] = {}
            for key in self.live.values():
                counts[key] = counts.get(key, 0) + 1
            return counts

    def _apply(self, event: Any) -> None:
        env_id = str(event.environment_id)
        if isinstance(event, EnvironmentRequested):
            self.live[env_id] = (event.backend, "requested")
        elif isinstance(event, EnvironmentProvisioned) and env_id in self.live:
            self.live[env_id] = (self.live[env_id][0], "provisioned")
        elif isinstance(event, EnvironmentFailed | EnvironmentReleased | EnvironmentExpired):
            self.live.pop(env_id, None)

    def families(self) -> list[Metric]:
        family = GaugeMetricFamily("cars_environments_active", "Environments requested or provisioned and not "
                                   "yet released, expired or failed.", labels=["backend", "state"])
        for (backend, state), n in sorted(self.catch_up().items()):
            family.add_metric([backend, state], n)
        return [family]


async def view_families(db: ViewDB, environments: ActiveEnvironments) -> list[Metric]:
    """Every family read from the views and the store, off the event loop."""
    heals = await anyio.to_thread.run_sync(heal_families, db)
    envs = await anyio.to_thread.run_sync(environments.families)
    return heals + envs


__all__ = ["ActiveEnvironments", "heal_families", "view_families"]
