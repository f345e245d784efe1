"""The registry's pure decisions (actors/registry/services.py): Given a service's history, When a
command arrives or a sweep runs at `now`, Then these events.

No store and no clock: each history is a list of envelopes recorded the way `bus.aggregates` records
them (the decision's events, stamped with the time they were decided).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.errors import Rejected
from actors.registry.services import (
    COMMANDS,
    ServiceState,
    Status,
    UnknownService,
    decide,
    fold,
    service_id,
    sweep,
)
from contracts import Envelope, natural_id
from contracts.registry import (
    DeprecateTemplate,
    DeregisterService,
    Heartbeat,
    HeartbeatRecorded,
    RegisterService,
    ServiceDeregistered,
    ServiceLost,
    ServiceRegistered,
)

T0 = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)
TIMEOUT_S = 35.0
INSTANCE = "box-1-4242"
TICK = dt.timedelta(microseconds=1)  # the clock's resolution


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def register(started_at: float | None = -1.0, **fields: Any) -> RegisterService:
    values: dict[str, Any] = {
        "instance": INSTANCE, "role": "worker", "version": "1.2.3", "actors": ("registry",), "host": "box-1",
        "pid": 4242, "started_at": None if started_at is None else at(started_at), **fields,
    }
    return RegisterService(**values)


def recorded(events: Sequence[Any], now: dt.datetime) -> list[Envelope[Any]]:
    """`events` as the store holds them after a decision at `now`."""
    return [Envelope(data=e, occurred_at=now) for e in events]


def handled(history: list[Envelope[Any]], command: Any, seconds: float) -> tuple[list[Any], list[Envelope[Any]]]:
    """Decide `command` at `seconds` on `history`: (what was decided, the history after it)."""
    now = at(seconds)
    events = decide(fold(history), command, now)
    return events, history + recorded(events, now)


def swept(history: list[Envelope[Any]], seconds: float, timeout_s: float = TIMEOUT_S,
          ) -> tuple[list[Any], list[Envelope[Any]]]:
    """Sweep at `seconds` on `history`: (what was decided, the history after it)."""
    now = at(seconds)
    events = sweep(fold(history), INSTANCE, now, timeout_s)
    return events, history + recorded(events, now)


def given_history(*steps: tuple[Any, float]) -> list[Envelope[Any]]:
    """The history after each (command, seconds) step was handled, in order."""
    history: list[Envelope[Any]] = []
    for command, seconds in steps:
        _, history = handled(history, command, seconds)
    return history


def alive_since(seconds: float = 0.0) -> list[Envelope[Any]]:
    """A service registered at `seconds` (started a second earlier) and not heard from since."""
    return given_history((register(started_at=seconds - 1), seconds))


# -- register ------------------------------------------------------------------------------------------

def test_a_new_service_registers_with_what_it_announced() -> None:
    # Given no history
    # When the service registers at t=0
    events, history = handled([], register(started_at=-1), 0)
    # Then it is registered with every announced detail, and is alive, last seen when it registered
    assert events == [ServiceRegistered(
        instance=INSTANCE, role="worker", version="1.2.3", actors=("registry",), host="box-1", pid=4242,
        started_at=at(-1),
    )]
    assert fold(history) == ServiceState(status=Status.ALIVE, started_at=at(-1), last_seen_at=at(0))


def test_a_registration_without_a_start_time_starts_now() -> None:
    # Given no history
    # When a service registers without saying when it started
    events, history = handled([], register(started_at=None), 7)
    # Then its start time is the time of the registration
    [event] = events
    assert event.started_at == at(7)
    assert fold(history).started_at == at(7)


def test_the_same_process_registering_again_changes_nothing() -> None:
    # Given a service registered at t=0 that has heartbeated since
    history = given_history((register(started_at=-1), 0), (Heartbeat(instance=INSTANCE), 10))
    # When the same process (same start time) registers again
    events, after = handled(history, register(started_at=-1), 20)
    # Then nothing is recorded, and it is still last seen at its heartbeat
    assert events == []
    assert fold(after).last_seen_at == at(10)


def test_a_restarted_process_registers_anew() -> None:
    # Given a service registered at t=0
    history = alive_since(0)
    # When a process with the same instance name but a later start time registers
    events, after = handled(history, register(started_at=50, version="1.2.4", pid=7), 51)
    # Then the new registration is recorded and the service is alive as of then
    assert [(type(e), e.started_at, e.version, e.pid) for e in events] == [(ServiceRegistered, at(50), "1.2.4", 7)]
    assert fold(after) == ServiceState(status=Status.ALIVE, started_at=at(50), last_seen_at=at(51))


@pytest.mark.parametrize("ended", ["deregistered", "lost"])
def test_a_service_that_ended_is_revived_by_registering_again_even_as_the_same_process(ended: str) -> None:
    # Given a service that deregistered, or was lost after a missed heartbeat
    history = alive_since(0)
    if ended == "deregistered":
        _, history = handled(history, DeregisterService(instance=INSTANCE), 5)
    else:
        _, history = swept(history, TIMEOUT_S + 1)
    assert fold(history).status is Status(ended)
    # When the same process (same start time) registers again
    events, after = handled(history, register(started_at=-1), 100)
    # Then it is registered again, alive and last seen now
    assert [type(e) for e in events] == [ServiceRegistered]
    assert fold(after) == ServiceState(status=Status.ALIVE, started_at=at(-1), last_seen_at=at(100))


# -- heartbeat -----------------------------------------------------------------------------------------

def test_a_heartbeat_records_when_it_arrived() -> None:
    # Given a service registered at t=0
    history = alive_since(0)
    # When it heartbeats at t=10
    events, after = handled(history, Heartbeat(instance=INSTANCE), 10)
    # Then the heartbeat is recorded at t=10, and the service is alive, last seen then
    assert events == [HeartbeatRecorded(instance=INSTANCE, at=at(10))]
    assert fold(after) == ServiceState(status=Status.ALIVE, started_at=at(-1), last_seen_at=at(10))


def test_a_heartbeat_from_an_instance_that_never_registered_is_rejected() -> None:
    # Given no history for the instance
    # When it heartbeats
    # Then the command is rejected (dead-lettered by the consumer, not retried) and names the instance
    with pytest.raises(UnknownService, match=f"heartbeat from '{INSTANCE}', which never registered"):
        decide(ServiceState(), Heartbeat(instance=INSTANCE), at(0))
    assert issubclass(UnknownService, Rejected)


def test_a_late_heartbeat_after_deregistration_is_ignored() -> None:
    # Given a service that deregistered at t=5
    history = given_history((register(), 0), (DeregisterService(instance=INSTANCE), 5))
    # When a heartbeat that was in flight arrives at t=6
    events, after = handled(history, Heartbeat(instance=INSTANCE), 6)
    # Then nothing is recorded: it stays deregistered, last seen when it registered
    assert events == []
    assert fold(after) == ServiceState(status=Status.DEREGISTERED, started_at=at(-1), last_seen_at=at(0))


def test_a_heartbeat_revives_a_lost_service() -> None:
    # Given a service that was lost
    _, history = swept(alive_since(0), TIMEOUT_S + 1)
    assert fold(history).status is Status.LOST
    # When it heartbeats again
    events, after = handled(history, Heartbeat(instance=INSTANCE), 60)
    # Then the heartbeat is recorded and it is alive again, last seen then
    assert events == [HeartbeatRecorded(instance=INSTANCE, at=at(60))]
    assert fold(after) == ServiceState(status=Status.ALIVE, started_at=at(-1), last_seen_at=at(60))


# -- deregister ----------------------------------------------------------------------------------------

def test_deregistration_records_the_reason() -> None:
    # Given a service that heartbeated at t=10
    history = given_history((register(), 0), (Heartbeat(instance=INSTANCE), 10))
    # When it deregisters
    events, after = handled(history, DeregisterService(instance=INSTANCE, reason="scaled down"), 20)
    # Then the deregistration is recorded with its reason; last seen does not move
    assert events == [ServiceDeregistered(instance=INSTANCE, reason="scaled down")]
    assert fold(after) == ServiceState(status=Status.DEREGISTERED, started_at=at(-1), last_seen_at=at(10))


def test_deregistering_twice_records_it_once() -> None:
    # Given a service that deregistered
    history = given_history((register(), 0), (DeregisterService(instance=INSTANCE), 5))
    # When it deregisters again (a second shutdown hook, another reason)
    events, after = handled(history, DeregisterService(instance=INSTANCE, reason="again"), 6)
    # Then nothing more is recorded
    assert events == []
    assert [e.data for e in after if isinstance(e.data, ServiceDeregistered)] == [
        ServiceDeregistered(instance=INSTANCE, reason="shutdown")
    ]


def test_deregistering_an_instance_that_never_registered_is_rejected() -> None:
    # Given no history; When the instance deregisters; Then the command is rejected, naming it
    with pytest.raises(UnknownService, match=f"deregistration of '{INSTANCE}', which never registered"):
        decide(ServiceState(), DeregisterService(instance=INSTANCE), at(0))


def test_a_lost_service_can_deregister() -> None:
    # Given a service that was lost
    _, history = swept(alive_since(0), TIMEOUT_S + 1)
    # When its deregistration arrives after all
    events, after = handled(history, DeregisterService(instance=INSTANCE), 40)
    # Then it is recorded, and the service is deregistered
    assert events == [ServiceDeregistered(instance=INSTANCE)]
    assert fold(after).status is Status.DEREGISTERED


def test_decide_takes_only_service_commands() -> None:
    # Given a registered service
    state = fold(alive_since(0))
    # When it is handed an event, or another registry command
    # Then it refuses with TypeError naming the type (a wiring error, not bad input)
    registered = ServiceRegistered(instance=INSTANCE, role="w", version="1", host="h", started_at=at(0))
    with pytest.raises(TypeError, match="not a service command: ServiceRegistered"):
        decide(state, registered, at(1))
    with pytest.raises(TypeError, match="not a service command: DeprecateTemplate"):
        decide(state, DeprecateTemplate(name="py311", version="1"), at(1))
    # And the router accepts exactly the three commands decide takes
    assert COMMANDS == {"service.register", "service.heartbeat", "service.deregister"}


# -- sweep ---------------------------------------------------------------------------------------------

def test_a_missed_heartbeat_is_recorded_as_lost_exactly_once() -> None:
    # Given a service that last heartbeated at t=10
    history = given_history((register(), 0), (Heartbeat(instance=INSTANCE), 10))
    # When a sweep runs after the timeout has passed
    events, history = swept(history, 10 + TIMEOUT_S + 1)
    # Then the service is lost, with when it was last seen and the timeout that applied
    assert events == [ServiceLost(instance=INSTANCE, last_seen_at=at(10), timeout_s=TIMEOUT_S)]
    assert fold(history) == ServiceState(status=Status.LOST, started_at=at(-1), last_seen_at=at(10))
    # And later sweeps, however late, record nothing more
    for later in (10 + TIMEOUT_S + 2, 10 + 10 * TIMEOUT_S, 10 + 1000 * TIMEOUT_S):
        more, history = swept(history, later)
        assert more == [], later
    assert sum(isinstance(e.data, ServiceLost) for e in history) == 1


def test_a_lost_service_is_lost_again_only_after_it_heartbeats_again() -> None:
    # Given a service lost at t=36, that heartbeats again at t=100
    _, history = swept(alive_since(0), TIMEOUT_S + 1)
    _, history = handled(history, Heartbeat(instance=INSTANCE), 100)
    # When sweeps run up to the timeout after that heartbeat
    # Then nothing is recorded
    for seconds in (101, 100 + TIMEOUT_S / 2, 100 + TIMEOUT_S):
        events, history = swept(history, seconds)
        assert events == [], seconds
    # When it stays silent past the timeout
    events, history = swept(history, 100 + TIMEOUT_S + 1)
    # Then it is lost a second time, last seen at the new heartbeat
    assert events == [ServiceLost(instance=INSTANCE, last_seen_at=at(100), timeout_s=TIMEOUT_S)]
    assert [e.data.last_seen_at for e in history if isinstance(e.data, ServiceLost)] == [at(0), at(100)]


def test_a_service_that_never_heartbeated_is_lost_counting_from_its_registration() -> None:
    # Given a service registered at t=0, never heard from since
    history = alive_since(0)
    # When a sweep runs after the timeout
    events, _ = swept(history, TIMEOUT_S + 1)
    # Then it is lost, last seen when its registration was recorded
    assert events == [ServiceLost(instance=INSTANCE, last_seen_at=at(0), timeout_s=TIMEOUT_S)]


@pytest.mark.parametrize(
    ("silence", "lost"),
    [
        pytest.param(dt.timedelta(0), False, id="just-seen"),
        pytest.param(dt.timedelta(seconds=TIMEOUT_S) - TICK, False, id="a-microsecond-before-the-timeout"),
        pytest.param(dt.timedelta(seconds=TIMEOUT_S), False, id="exactly-the-timeout"),
        pytest.param(dt.timedelta(seconds=TIMEOUT_S) + TICK, True, id="a-microsecond-past-the-timeout"),
        pytest.param(-dt.timedelta(seconds=5), False, id="the-sweeper-clock-lags-behind"),
    ],
)
def test_a_service_is_lost_only_when_silent_for_longer_than_the_timeout(silence: dt.timedelta, lost: bool) -> None:
    # Given a service that heartbeated at t=10
    history = given_history((register(), 0), (Heartbeat(instance=INSTANCE), 10))
    # When a sweep runs `silence` after that heartbeat
    events = sweep(fold(history), INSTANCE, at(10) + silence, TIMEOUT_S)
    # Then it is lost only if the silence is strictly longer than the timeout
    assert events == ([ServiceLost(instance=INSTANCE, last_seen_at=at(10), timeout_s=TIMEOUT_S)] if lost else [])


@pytest.mark.parametrize("timeout_s", [0.1, 0.25, 1.5])
def test_fractional_timeouts_have_the_same_boundary(timeout_s: float) -> None:
    # Given a service last seen at t=0, and a sub-second timeout
    state = fold(alive_since(0))
    # When sweeps run at exactly the timeout and one microsecond later
    at_timeout = sweep(state, INSTANCE, at(0) + dt.timedelta(seconds=timeout_s), timeout_s)
    past = sweep(state, INSTANCE, at(0) + dt.timedelta(seconds=timeout_s) + TICK, timeout_s)
    # Then only the later one finds it lost
    assert at_timeout == []
    assert past == [ServiceLost(instance=INSTANCE, last_seen_at=at(0), timeout_s=timeout_s)]


def test_a_sweep_after_deregistration_does_nothing() -> None:
    # Given a service that deregistered cleanly
    history = given_history((register(), 0), (DeregisterService(instance=INSTANCE), 5))
    # When sweeps run long after the timeout
    for seconds in (TIMEOUT_S + 1, 1000 * TIMEOUT_S):
        events, history = swept(history, seconds)
        # Then nothing is recorded
        assert events == [], seconds
    assert fold(history).status is Status.DEREGISTERED


def test_a_sweep_of_an_instance_that_never_registered_does_nothing() -> None:
    # Given no history; When a sweep runs; Then nothing is recorded
    assert sweep(ServiceState(), INSTANCE, at(1000), TIMEOUT_S) == []


# -- identity ------------------------------------------------------------------------------------------

def test_each_instance_has_one_stable_stream() -> None:
    # Given two instance names; When their stream ids are derived
    # Then the same name always gives the same id (every registry process agrees), others differ
    assert service_id(INSTANCE) == service_id(INSTANCE) == natural_id("service", INSTANCE)
    assert service_id(INSTANCE) != service_id(INSTANCE + "x")


# -- any sequence of commands and sweeps ---------------------------------------------------------------

steps = st.lists(
    st.tuples(
        st.sampled_from(["register", "restart", "heartbeat", "deregister", "sweep"]),
        st.floats(min_value=0.0, max_value=3 * TIMEOUT_S, allow_nan=False),  # seconds since the last step
    ),
    max_size=30,
)


@settings(max_examples=100, deadline=None)
@given(steps=steps)
def test_any_history_keeps_the_registry_invariants(steps: list[tuple[str, float]]) -> None:
    # Given any sequence of registrations, restarts, heartbeats, deregistrations and sweeps over time
    history: list[Envelope[Any]] = []
    seconds = 0.0
    started = -1.0
    for kind, gap in steps:
        seconds += gap
        before = fold(history)
        if kind == "sweep":
            events, history = swept(history, seconds)
            # Then a sweep finds a service lost exactly when it is alive and silent beyond the timeout
            silent = before.last_seen_at is not None and (at(seconds) - before.last_seen_at).total_seconds()
            assert bool(events) == (before.status is Status.ALIVE and silent > TIMEOUT_S)
            continue
        if kind == "restart":
            started = seconds
        command = {
            "register": register(started_at=started), "restart": register(started_at=started),
            "heartbeat": Heartbeat(instance=INSTANCE), "deregister": DeregisterService(instance=INSTANCE),
        }[kind]
        try:
            events, history = handled(history, command, seconds)
        except UnknownService:
            # Then only an instance with no history at all is rejected
            assert before.status is Status.UNKNOWN and kind in ("heartbeat", "deregister")
            continue
        # Then every command leaves a service that registered with a known start and last-seen time
        after = fold(history)
        assert after.status is not Status.UNKNOWN
        assert after.last_seen_at is not None and after.last_seen_at <= at(seconds)
    # And the recorded history follows the lifecycle: each event is allowed only in these states
    allowed = {
        ServiceRegistered: {"none", "alive", "lost", "deregistered"},
        HeartbeatRecorded: {"alive", "lost"},  # never before registering, never after deregistering
        ServiceLost: {"alive"},  # at most once per silence
        ServiceDeregistered: {"alive", "lost"},  # at most once per registration
    }
    becomes = {ServiceRegistered: "alive", HeartbeatRecorded: "alive", ServiceLost: "lost",
               ServiceDeregistered: "deregistered"}
    status = "none"
    for event in (e.data for e in history):
        assert status in allowed[type(event)], (status, event)
        status = becomes[type(event)]
    assert status == (fold(history).status.value if history else "none")
