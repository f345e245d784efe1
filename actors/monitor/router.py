"""The monitor actor's subscribers: `run.reported` from the ingest stream, `monitoring.start/stop`
from the command stream. Each decodes nothing itself (the consumer did), calls the pure decisions
in `decide`/`history`, and appends through `Aggregates`; the relay publishes what was appended."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from attrs import field, frozen

from actors.errors import Rejected
from actors.monitor import decide
from actors.monitor import history as watching
from actors.ports import Aggregates, Clock, Tick
from contracts import Envelope, natural_id
from contracts.runs import RunReported, StartMonitoring, StopMonitoring

ROLE = "monitor"
INGEST_ACCEPTS = frozenset({"run.reported"})  # on the ingest stream
COMMAND_ACCEPTS = frozenset({"monitoring.start", "monitoring.stop"})  # on the command stream
ACCEPTS = INGEST_ACCEPTS | COMMAND_ACCEPTS


class NotForMonitor(Rejected):
    """A message type the monitor does not handle reached it."""


class Monitorings:
    """The active monitorings this process knows of, by project.

    `handle` keeps it current for the commands this process consumes; `schedule.run_monitoring`
    loads it from the store at start and re-checks the store before each run, because another
    process of the group may have consumed a stop.
    """

    def __init__(self) -> None:
        self._active: dict[str, decide.Monitoring] = {}

    def update(self, project: str, state: decide.Monitoring | None) -> None:
        if state is not None and state.active:
            self._active[project] = state
        else:
            self._active.pop(project, None)

    def active(self) -> list[decide.Monitoring]:
        return sorted(self._active.values(), key=lambda m: m.project)


@frozen(kw_only=True)
class MonitorDeps:
    aggregates: Aggregates
    clock: Clock
    report: Callable[[RunReported], Awaitable[None]]  # puts a run.reported on the ingest stream
    config: decide.MonitorConfig = decide.MonitorConfig()  # noqa: RUF009  (frozen, so sharing it is safe)
    monitorings: Monitorings = field(factory=Monitorings)
    watches: watching.WatchFolds = field(factory=watching.WatchFolds)  # the watches folded so far


async def handle(deps: MonitorDeps, envelope: Envelope[Any]) -> None:
    """Apply one run report or monitoring command."""
    message = envelope.data
    if isinstance(message, RunReported):
        await _run_reported(deps, envelope, message)
    elif isinstance(message, StartMonitoring | StopMonitoring):
        stream_id = decide.monitoring_id(message.project)
        await deps.aggregates.execute(
            stream_id, envelope,
            lambda history: decide.decide_monitoring(decide.fold_monitoring(history), message),
        )
        deps.monitorings.update(message.project, decide.fold_monitoring(await deps.aggregates.history(stream_id)))
    else:
        raise NotForMonitor(f"the monitor does not handle {envelope.type!r}")


def watch_cause(envelope: Envelope[Any], run: RunReported) -> Tick:
    """The cause of a run's events on its project's watch stream.

    The watch is a second stream, so it gets a cause of its own: derived from the run, not the
    message, so a run reported twice under two message ids is recorded once; and distinct from the
    message id, so its events' ids (derived from the cause) never equal the run stream's.
    """
    return Tick(id=natural_id("monitor-watch", run.project, run.run_id), correlation_id=envelope.correlation_id)


async def _run_reported(deps: MonitorDeps, envelope: Envelope[Any], run: RunReported) -> None:
    config = deps.config
    flakiness = config.flakiness
    flaky: frozenset[str] = frozenset()
    assessed = decide.assess(run, config)
    if assessed.storm is None:
        tick = watch_cause(envelope, run)
        watch_id = watching.watch_id(run.project)

        def record(history: Sequence[Envelope[Any]]) -> list[Any]:
            return watching.record_run(deps.watches.fold(watch_id, history, flakiness), run, flakiness,
                                       assessed.attempts)

        await deps.aggregates.execute(watch_id, tick, record)
        # Read back rather than reuse: after a crash between the two appends, the redelivery finds the
        # watch already recorded (no-op above) and must still see this run's verdicts.
        flaky = deps.watches.fold(watch_id, await deps.aggregates.history(watch_id), flakiness).flaky_tests()

    def decide_run(history: Sequence[Envelope[Any]]) -> list[Any]:
        state = decide.RunState(recorded=decide.fold_run(history), flaky=flaky)
        return decide.decide_run(state, run, config, assessed)

    await deps.aggregates.execute(decide.run_stream_id(run.project, run.run_id), envelope, decide_run)
