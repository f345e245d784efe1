"""The wire format in both directions, with nothing but `redis-cli` and plain JSON on the producer's side
(README, "Talking to CARS without CARS code"), against the test Redis (REDIS_URL)."""

from __future__ import annotations

import json
import socket
import uuid

from tests.e2e.conftest import Cars, Platform, RedisCli, eventually


def test_a_command_xadded_by_redis_cli_is_consumed_and_its_event_is_read_back_with_xread(
    platform: Platform, bus: RedisCli,
) -> None:
    # Given `cars up` on REDIS_URL, and a producer that sets the optional envelope fields itself
    command_id, correlation = str(uuid.uuid4()), "nightly-build-481"
    command = {
        "type": "service.register", "version": 1, "id": command_id, "occurred_at": "2026-11-23T10:00:00+00:00",
        "correlation_id": correlation, "data": {"instance": "ci-bot-7", "role": "ci", "actors": ["pytest"]},
    }

    # When it XADDs the envelope with redis-cli
    bus.xadd("cars.commands", "message", json.dumps(command))

    # Then CARS consumed it: the service is listed
    row = platform.wait_for_service("ci-bot-7")
    assert (row["role"], row["actors"]) == ("ci", ["pytest"])
    # And the event CARS published is read with XREAD and parsed with plain json
    def relayed() -> list[dict[str, str]]:
        return [f for _, f in bus.xread("cars.events.registry")
                if json.loads(f["message"])["data"].get("instance") == "ci-bot-7"]

    [fields] = eventually(relayed, "ci-bot-7's event is on cars.events.registry", details=platform.process.describe)
    event = json.loads(fields["message"])
    assert event["type"] == "service.registered"
    # ... carrying the producer's ids forward: same correlation, caused by the command
    assert (event["correlation_id"], event["causation_id"]) == (correlation, command_id)
    assert event["id"] != command_id and uuid.UUID(event["id"])
    assert event["data"]["role"] == "ci" and event["data"]["actors"] == ["pytest"]
    assert int(fields["position"]) >= 1


def test_a_worker_consumes_commands_xadded_by_redis_cli(cars_on_redis: Cars, bus: RedisCli) -> None:
    # Given `cars worker --actors registry` on REDIS_URL with its own store in CARS_HOME
    worker = cars_on_redis.start("worker", "--actors", "registry")
    instance = f"{socket.gethostname()}-{worker.pid}"

    def recorded(name: str) -> dict[str, object] | None:
        worker.assert_running()
        if not (cars_on_redis.home / "events.sqlite").exists():
            return None
        done = cars_on_redis.run("events", "--json", "--type", "service.registered")
        assert done.returncode == 0, done.stderr
        found = [e for e in map(json.loads, done.stdout.splitlines()) if e["data"]["instance"] == name]
        return found[0] if found else None

    # (it registers itself, through its own registry actor)
    own = eventually(lambda: recorded(instance), "the worker has recorded its own registration", 60.0,
                     details=worker.describe)
    assert own["data"]["role"] == "worker" and own["data"]["actors"] == ["registry"]  # type: ignore[index]

    # When a CI bot registers with redis-cli
    bus.xadd("cars.commands", "message", '{"type":"service.register","data":{"instance":"ci-bot-2","role":"ci"}}')

    # Then the worker records it in the store
    event = eventually(lambda: recorded("ci-bot-2"), "the worker has recorded ci-bot-2", details=worker.describe)
    assert event["data"]["role"] == "ci"  # type: ignore[index]
    # And it read through the registry consumer group, under its unique consumer name
    consumers = bus.json("XINFO", "CONSUMERS", "cars.commands", "registry")
    assert instance in {c["name"] for c in consumers}, consumers
    # And Ctrl-C stops it cleanly
    assert worker.interrupt() == 0, worker.describe()


def test_malformed_messages_are_dead_lettered_with_a_reason_and_the_stream_keeps_flowing(
    platform: Platform, bus: RedisCli, cars_on_redis: Cars,
) -> None:
    # Given `cars up` on REDIS_URL
    # When producers XADD messages that can never be processed ...
    poison = {
        bus.xadd("cars.commands", "message", '{"type": "service.register", "data": {'): "not valid JSON",
        bus.xadd("cars.commands", "message", '{"type":"service.explode","data":{}}'): "service.explode",
        bus.xadd("cars.commands", "message",
                 '{"type":"service.register","data":{"instance":"x","role":"ci","rol":"typo"}}'): "rol",
        bus.xadd("cars.commands", "payload", '{"type":"service.register"}'): "no 'message' field",
    }
    # ... followed by a valid one
    bus.xadd("cars.commands", "message", '{"type":"service.register","data":{"instance":"after-poison","role":"ci"}}')

    # Then the valid one is still processed: the stream keeps flowing
    platform.wait_for_service("after-poison")
    # And every poison message is dead-lettered in cars.dlq exactly once (redis-cli XRANGE), by whichever
    # of the groups reading cars.commands saw it first
    def poison_letters() -> dict[str, tuple[str, dict[str, str]]]:
        letters = {f["original_id"]: (i, f) for i, f in bus.xrange("cars.dlq")}
        return letters if len(letters) == len(poison) else {}

    by_origin = eventually(poison_letters, "every poison message is dead-lettered",
                           details=platform.process.describe)
    assert set(by_origin) == set(poison)
    assert len(bus.xrange("cars.dlq")) == len(poison)  # once each, not once per group
    # ... saying where and why each failed
    for original_id, needle in poison.items():
        _, fields = by_origin[original_id]
        assert fields["stream"] == "cars.commands"
        assert fields["reason"].startswith("invalid message"), fields
        assert needle.lower() in fields["reason"].lower(), fields
        assert fields["deliveries"] == "1"
    # ... keeping the original text, even when it is not JSON
    [(_, not_json)] = [v for k, v in by_origin.items() if poison[k] == "not valid JSON"]
    assert not_json["message"] == '{"type": "service.register", "data": {'
    # And only poison is dead-lettered, by any group: the valid message is not
    letters = bus.xrange("cars.dlq")
    assert {f["original_id"] for _, f in letters} == set(poison), letters
    # And nothing is left pending in the registry's group: poison is acknowledged, not retried forever
    [group] = [g for g in bus.json("XINFO", "GROUPS", "cars.commands") if g["name"] == "registry"]
    assert group["pending"] == 0, group

    # And `cars dlq list` shows every dead letter, oldest first, with its origin and reason
    listed = cars_on_redis.run("dlq", "list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert [line.split()[0] for line in lines] == [dlq_id for dlq_id, _ in letters]
    for dlq_id, _ in by_origin.values():
        [line] = [line for line in lines if line.startswith(dlq_id)]
        assert "cars.commands/" in line and "deliveries=1" in line and "invalid message" in line, line
    assert f"{len(letters)} dead letter(s)" in listed.stderr
    # ... and as JSON lines
    as_json = [json.loads(line) for line in cars_on_redis.ok("dlq", "list", "--json").splitlines()]
    assert [(d["id"], d["original_id"], d["group"], d["reason"], d["message"]) for d in as_json] == [
        (dlq_id, f["original_id"], f["group"], f["reason"], f["message"]) for dlq_id, f in letters
    ]
