"""`cars up` as the README's Quick start runs it: no REDIS_URL, so an embedded Redis, and `redis-cli`
as the only client of the bus."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import (
    Cars,
    Platform,
    RedisCli,
    eventually,
    free_port,
    pid_alive,
    port_answers,
    running_platform,
)

# The README's "Produce with redis-cli" example, byte for byte.
README_REGISTER = '{"type":"service.register","data":{"instance":"ci-bot-1","role":"ci"}}'
W3C_TRACEPARENT = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")


@pytest.fixture
def embedded(cars: Cars) -> Iterator[Platform]:
    """A ready `cars up` with no REDIS_URL: its own redis-server on a free port."""
    assert "REDIS_URL" not in cars.env
    with running_platform(cars, embedded_port=free_port()) as platform:
        yield platform


@pytest.fixture
def cli(embedded: Platform, redis_cli_binary: str) -> RedisCli:
    """`redis-cli -p <embedded port>`, as the README says to talk to the bus."""
    return RedisCli(redis_cli_binary, ["-p", str(embedded.redis_port)])


def registered_events(cli: RedisCli, instance: str) -> list[tuple[str, dict[str, str]]]:
    """`service.registered` entries of `instance` on cars.events.registry, read with XREAD."""
    return [
        (entry_id, fields) for entry_id, fields in cli.xread("cars.events.registry")
        if json.loads(fields["message"])["type"] == "service.registered"
        and json.loads(fields["message"])["data"]["instance"] == instance
    ]


def own_instance(platform: Platform) -> str:
    return f"{socket.gethostname()}-{platform.process.pid}"


def test_cars_up_lists_itself_and_a_service_registered_with_redis_cli(
    cars: Cars, embedded: Platform, cli: RedisCli,
) -> None:
    # Given `cars up` started with no REDIS_URL
    # When it is ready
    ready = embedded.get("/ready")

    # Then both of its components answer
    assert ready.json() == {"status": "ok", "components": {"redis": "ok", "store": "ok"}}
    # And it lists itself in the services view: the platform role, running its actors
    row = embedded.wait_for_service(own_instance(embedded))
    assert row["role"] == "platform"
    assert "registry" in row["actors"]
    assert (row["host"], row["pid"]) == (socket.gethostname(), embedded.process.pid)
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", row["version"]), row
    # And its embedded Redis is a real server on CARS_EMBEDDED_REDIS_PORT, keeping its data in CARS_HOME
    assert cli("PING") == "PONG"
    assert "redis_mode:standalone" in cli("INFO", "server")
    assert (cars.home / "redis").is_dir() and (cars.home / "events.sqlite").is_file()

    # When a CI bot registers exactly as the README shows, with redis-cli
    entry_id = cli.xadd("cars.commands", "message", README_REGISTER)
    assert re.fullmatch(r"\d+-\d+", entry_id), entry_id

    # Then GET /services lists it, with the defaults of the fields it left out
    row = embedded.wait_for_service("ci-bot-1")
    assert (row["role"], row["version"], row["host"], row["actors"]) == ("ci", "unknown", "unknown", [])

    # And the relay has put one service.registered on cars.events.registry, readable with plain XREAD + JSON
    [(_, fields)] = eventually(
        lambda: registered_events(cli, "ci-bot-1"), "service.registered of ci-bot-1 is on cars.events.registry",
        details=embedded.process.describe,
    )
    event = json.loads(fields["message"])
    assert event["type"] == "service.registered" and event["version"] == 1
    assert event["data"]["instance"] == "ci-bot-1" and event["data"]["role"] == "ci"
    # ... caused by the command, whose id CARS filled in (the command started the conversation)
    assert event["causation_id"] and event["causation_id"] == event["correlation_id"]
    # ... with its position in the notification log, the same that GET /events gives it
    history = embedded.get("/events", type="service.registered").json()["events"]
    assert {e["id"]: e["position"] for e in history}[event["id"]] == int(fields["position"])
    # ... and the relay's W3C trace context beside the message (README: "Stream entries")
    assert W3C_TRACEPARENT.fullmatch(fields["traceparent"]), fields
    assert set(fields) <= {"message", "traceparent", "tracestate", "position"}
    # And the command was acknowledged by the registry's consumer group: nothing left pending
    [group] = [g for g in cli.json("XINFO", "GROUPS", "cars.commands") if g["name"] == "registry"]
    assert group["pending"] == 0, group

    # And the operator queries answer from the running platform's views, store and bus:
    # the registration's aggregate as it was after its first event
    audit = embedded.get(f"/audit/{event['stream_id']}", at_version="1").json()
    assert audit["version"] == 1 and audit["state"]["kind"] == "service"
    assert audit["state"]["state"]["status"] == "alive"
    # a message that is not JSON, dead-lettered with its reason
    cli.xadd("cars.commands", "message", "definitely not json")
    letters = eventually(lambda: embedded.get("/dlq").json()["dead_letters"], "GET /dlq lists the dead letter",
                         details=embedded.process.describe)
    assert letters[0]["message"] == "definitely not json" and "JSON" in letters[0]["reason"]
    # and statistics of a platform that has repaired nothing yet
    assert embedded.get("/statistics").json()["repairs"]["repairs"] == 0


def test_ctrl_c_stops_cars_up_and_its_embedded_redis(embedded: Platform, cli: RedisCli) -> None:
    # Given a ready `cars up` and the pid of the redis-server it embeds
    match = re.search(r"process_id:(\d+)", cli("INFO", "server"))
    assert match, "INFO server names no process_id"
    redis_pid = int(match.group(1))
    assert redis_pid != embedded.process.pid and pid_alive(redis_pid)
    assert embedded.redis_port is not None

    # When the user presses Ctrl-C
    code = embedded.process.interrupt()

    # Then `cars up` exits 0 after a graceful shutdown
    assert code == 0, embedded.process.describe()
    assert "shutting down" in embedded.process.output()
    # And its Redis is gone: the port no longer answers and the redis-server process has ended
    assert not cli.answers()
    assert not port_answers(embedded.redis_port)
    eventually(lambda: not pid_alive(redis_pid), f"redis-server (pid {redis_pid}) has exited", 5.0)
    # And so is the HTTP API
    assert not port_answers(embedded.http_port)


def test_a_restart_keeps_the_bus_and_the_history_and_relays_nothing_twice(
    cars: Cars, redis_cli_binary: str,
) -> None:
    # Given a `cars up` (quick to reclaim what a stopped process left pending) with a registered CI bot
    redis_port = free_port()
    cars = cars.with_env(CARS_RECLAIM_IDLE_MS="300")
    cli = RedisCli(redis_cli_binary, ["-p", str(redis_port)])
    with running_platform(cars, embedded_port=redis_port) as first:
        cli.xadd("cars.commands", "message", README_REGISTER)
        first.wait_for_service("ci-bot-1")
        eventually(lambda: registered_events(cli, "ci-bot-1"), "ci-bot-1's event is relayed")
        old_instance = own_instance(first)
        first.wait_for_service(old_instance)
        # When it is stopped with Ctrl-C
        assert first.process.interrupt() == 0, first.process.describe()

    # And started again with the same CARS_HOME and port
    with running_platform(cars, embedded_port=redis_port) as second:
        # Then the services registered before the restart are still known
        assert second.wait_for_service("ci-bot-1")["role"] == "ci"
        # And the stopped platform is recorded as deregistered (it said goodbye on Ctrl-C), the new one alive
        second.wait_for_service(old_instance, status="deregistered")
        second.wait_for_service(own_instance(second))
        # And the relay did not publish the old history a second time (exactly once per position)
        eventually(lambda: registered_events(cli, own_instance(second)), "the new platform's event is relayed")
        assert len(registered_events(cli, "ci-bot-1")) == 1
        positions = [int(f["position"]) for _, f in cli.xread("cars.events.registry")]
        assert positions == sorted(set(positions)), positions


def test_a_traceparent_sent_with_redis_cli_is_continued_by_cars_up(cars: Cars, redis_cli_binary: str) -> None:
    # Given `cars up` printing its spans (OTEL console exporter, flushed every 100 ms)
    cars = cars.with_env(OTEL_TRACES_EXPORTER="console", OTEL_BSP_SCHEDULE_DELAY="100")
    redis_port = free_port()
    with running_platform(cars, embedded_port=redis_port) as platform:
        cli = RedisCli(redis_cli_binary, ["-p", str(redis_port)])
        trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"

        # When a producer outside Python XADDs a command with a W3C traceparent beside it
        cli.xadd(
            "cars.commands", "message", '{"type":"service.register","data":{"instance":"traced-bot","role":"ci"}}',
            "traceparent", f"00-{trace_id}-{parent_id}-01",
        )
        platform.wait_for_service("traced-bot")

        # Then CARS processes it in that trace, as a child of the producer's span
        def continued() -> bool:
            spans = _console_spans(platform.process.output())
            return any(s["context"]["trace_id"] == f"0x{trace_id}" and s.get("parent_id") == f"0x{parent_id}"
                       for s in spans)

        eventually(continued, f"a span of trace {trace_id} with parent {parent_id} is printed",
                   details=platform.process.describe)


def _console_spans(text: str) -> list[dict[str, Any]]:
    """The JSON span objects the OpenTelemetry console exporter printed, among log lines."""
    decoder = json.JSONDecoder()
    spans: list[dict[str, Any]] = []
    i = text.find("{\n")
    while i != -1:
        try:
            obj, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError:
            end = i + 1
        else:
            if isinstance(obj, dict) and "context" in obj:
                spans.append(obj)
        i = text.find("{\n", end)
    return spans
