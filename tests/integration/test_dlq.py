"""Poison and malformed messages go to cars.dlq with a reason while the stream keeps flowing, and an
operator can list and retry them with the real `cars dlq` (real Redis, a real SQLite store)."""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from redis.asyncio import Redis

import contracts
from actors.registry import router as registry
from actors.registry.services import service_id
from bus import streams
from bus.consumer import ConsumerConfig, Handler
from bus.dlq import DeadLetter, list_dead_letters
from bus.store import EventStore
from contracts import Envelope
from contracts.registry import Heartbeat, HeartbeatRecorded, RegisterService, ServiceRegistered
from contracts.runs import StopMonitoring
from tests.integration.consumer_child import registry_handler, running_consumer
from tests.integration.waiting import eventually

CARS = Path(sys.executable).with_name("cars")
TIMEOUT_S = 15.0
GROUP = registry.ROLE
DOOMED = "doomed"


def config(**overrides: Any) -> ConsumerConfig:
    values: dict[str, Any] = {
        "consumer": f"test-{uuid.uuid4().hex[:8]}", "reclaim_idle_ms": 200, "max_deliveries": 2,
        "max_message_bytes": 1024, "maxlen": 10_000, "polling_ms": 50,
    }
    return ConsumerConfig(**{**values, **overrides})


class Recording:
    """The real registry handler, except that it raises RuntimeError for the instance `doomed` (a fault
    that never clears). Records which instance each call was about, in order."""

    def __init__(self, inner: Handler) -> None:
        self.inner = inner
        self.calls: list[str] = []

    async def __call__(self, envelope: Envelope[Any]) -> None:
        instance = getattr(envelope.data, "instance", envelope.type)
        self.calls.append(instance)
        if instance == DOOMED:
            raise RuntimeError(f"the store is on fire for {instance}")
        await self.inner(envelope)


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Redis]:
    c = Redis.from_url(redis_url)
    yield c
    await c.aclose()


@pytest.fixture
def store(sqlite_env: dict[str, str]) -> Iterator[EventStore]:
    s = EventStore(sqlite_env)
    yield s
    s.close()


async def xadd(client: Redis, fields: dict[str, str]) -> str:
    entry_id = await client.xadd(streams.COMMANDS, fields)  # type: ignore[arg-type]
    return entry_id.decode()  # type: ignore[no-any-return]


def message(data: Any) -> str:
    return contracts.dumps(Envelope(data=data))


async def events_of(store: EventStore, instance: str, kind: type) -> list[Envelope[Any]]:
    history = await anyio.to_thread.run_sync(store.load, service_id(instance))
    return [e for e in history if isinstance(e.data, kind)]


async def pending_count(client: Redis) -> int:
    return int((await client.xpending(streams.COMMANDS, GROUP))["pending"])


# -- poison and malformed input ---------------------------------------------------------------------

async def test_poison_and_malformed_messages_are_dead_lettered_with_a_reason_while_valid_ones_flow(
    redis_url: str, client: Redis, store: EventStore,
) -> None:
    # Given a registry consumer that retries a failing message once (2 deliveries) and takes 1 KiB at most
    handler = Recording(registry_handler(store))
    actors = tuple(f"actor-{i:02}" * 4 for i in range(30))
    oversized = message(RegisterService(instance="big", role="worker", actors=actors))
    assert len(oversized) > 1024 and contracts.loads(oversized)  # valid, only too large
    empty_instance = json.loads(message(RegisterService(instance="x", role="worker")))
    empty_instance["data"]["instance"] = ""
    unknown_type = {"type": "service.teleport", "version": 1, "data": {"instance": "x"}}
    ghost = f"ghost-{uuid.uuid4().hex[:6]}"
    bad: dict[str, dict[str, str]] = {  # name -> the entry's fields, as any producer could XADD them
        "not JSON": {"message": "this is {not JSON"},
        "no message field": {"payload": '{"type": "service.register"}', "source": "a shell script"},
        "unknown type": {"message": json.dumps(unknown_type)},
        "contract violation": {"message": json.dumps(empty_instance)},
        "oversized": {"message": oversized},
        "unknown instance": {"message": message(Heartbeat(instance=ghost))},
        "always fails": {"message": message(RegisterService(instance=DOOMED, role="worker"))},
    }
    expected_reason = {
        "not JSON": "invalid message: not valid JSON",
        "no message field": "invalid message: stream entry has no 'message' field (fields: payload, source)",
        "unknown type": "invalid message: unknown message type 'service.teleport'",
        "contract violation": "invalid message: instance must not be empty",
        "oversized": f"invalid message: message is {len(oversized)} bytes; the limit is 1024",
        "unknown instance": f"rejected: heartbeat from {ghost!r}, which never registered",
        "always fails": f"failed 2 deliveries; last error: RuntimeError: the store is on fire for {DOOMED}",
    }
    async with running_consumer(redis_url, handler, config()) as consumer:
        # When each bad entry arrives right after a valid service.register (and one command for
        # another actor arrives too) ...
        original_ids: dict[str, str] = {}
        valid = [f"svc-{i}" for i in range(len(bad) + 1)]
        for instance, (name, fields) in zip(valid, [*bad.items(), ("", {})], strict=True):
            await xadd(client, {"message": message(RegisterService(instance=instance, role="worker"))})
            if fields:
                original_ids[name] = await xadd(client, fields)
        await xadd(client, {"message": message(StopMonitoring(project="p"))})

        # ... then every bad one is dead-lettered, every valid one is processed, and nothing is pending
        async def settled() -> bool:
            registered = [await events_of(store, i, ServiceRegistered) for i in valid]
            return (await client.xlen(streams.DLQ) >= len(bad) and all(registered)
                    and await pending_count(client) == 0)

        await eventually(settled, "all bad entries are dead-lettered and all valid ones processed")
        letters = await list_dead_letters(client)

    by_origin: dict[str, DeadLetter] = {d.original_id: d for d in letters}
    assert len(letters) == len(bad) == len(by_origin)
    for name, fields in bad.items():
        letter = by_origin[original_ids[name]]
        assert letter.reason.startswith(expected_reason[name]), (name, letter.reason)
        assert (letter.stream, letter.group) == (streams.COMMANDS, GROUP), name
        assert letter.deliveries == (2 if name == "always fails" else 1), name
        assert letter.failed_at, name
        if "message" in fields:
            assert letter.message == fields["message"], name  # the original text, byte for byte
        else:
            assert json.loads(letter.message) == fields  # nothing the producer sent is lost
    # Each valid service was registered exactly once; the failing one never, and it was tried twice
    for instance in valid:
        assert len(await events_of(store, instance, ServiceRegistered)) == 1, instance
    for instance in (DOOMED, ghost, "big"):
        assert await anyio.to_thread.run_sync(store.load, service_id(instance)) == [], instance
    assert handler.calls.count(DOOMED) == 2
    # The stream kept flowing: the message after the failing one was handled before its retry
    first, retry = (i for i, c in enumerate(handler.calls) if c == DOOMED)
    assert first < handler.calls.index(valid[-1]) < retry
    assert "monitoring.stop" not in handler.calls  # another actor's command: acknowledged, not handled
    assert await pending_count(client) == 0
    assert not await client.exists(streams.errors_key(streams.COMMANDS, GROUP))  # no stale error text
    assert (consumer.dead_lettered, consumer.failures) == (len(bad), 2)


# -- the operator's side: `cars dlq` ------------------------------------------------------------------

async def cars(redis_url: str, home: Path, *args: str) -> tuple[int, str, str]:
    """Run the real `cars` command line; (exit code, stdout, stderr)."""
    env = {**os.environ, "REDIS_URL": redis_url, "CARS_HOME": str(home)}
    done = await anyio.run_process([str(CARS), *args], env=env, check=False)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def test_cars_dlq_lists_dead_letters_and_retry_puts_one_back_on_its_stream(
    redis_url: str, client: Redis, store: EventStore, tmp_path: Path,
) -> None:
    async with running_consumer(redis_url, registry_handler(store), config()):
        # Given a heartbeat that was dead-lettered because its service had not registered yet, and
        # a message that is not JSON
        heartbeat = message(Heartbeat(instance="late"))
        heartbeat_id = await xadd(client, {"message": heartbeat})
        garbage_id = await xadd(client, {"message": "garbage"})

        async def both_dead() -> bool:
            return await client.xlen(streams.DLQ) == 2

        await eventually(both_dead, "both are dead-lettered")

        # When the operator lists them
        code, out, err = await cars(redis_url, tmp_path, "dlq", "list", "--json")

        # Then both are shown, with where they came from and why
        assert code == 0, err
        listed = [json.loads(line) for line in out.splitlines()]
        assert [d["original_id"] for d in listed] == [heartbeat_id, garbage_id]
        assert [d["message"] for d in listed] == [heartbeat, "garbage"]
        assert listed[0]["reason"] == "rejected: heartbeat from 'late', which never registered"
        assert listed[1]["reason"].startswith("invalid message: not valid JSON")
        assert {(d["stream"], d["group"], d["deliveries"]) for d in listed} == {(streams.COMMANDS, GROUP, 1)}
        code, out, err = await cars(redis_url, tmp_path, "dlq", "list")
        assert code == 0 and len(out.splitlines()) == 2 and "2 dead letter(s)" in err

        # When the service registers after all, and the operator retries the heartbeat
        await xadd(client, {"message": message(RegisterService(instance="late", role="worker"))})

        async def late_registered() -> bool:
            return bool(await events_of(store, "late", ServiceRegistered))

        await eventually(late_registered, "the late service is registered")
        dead_id = listed[0]["id"]
        code, out, err = await cars(redis_url, tmp_path, "dlq", "retry", dead_id)

        # Then the same message is back on cars.commands, and no longer in the DLQ ...
        assert code == 0, err
        assert out.startswith(f"requeued {dead_id} as ")
        new_id = out.split()[-1]
        [(_, fields)] = await client.xrange(streams.COMMANDS, min=new_id, max=new_id)
        assert fields[b"message"].decode() == heartbeat
        assert [d.id for d in await list_dead_letters(client)] == [listed[1]["id"]]

        # ... and this time the consumer records it
        async def heartbeat_recorded() -> bool:
            return bool(await events_of(store, "late", HeartbeatRecorded))

        await eventually(heartbeat_recorded, "the retried heartbeat is recorded")
        [recorded] = await events_of(store, "late", HeartbeatRecorded)
        assert recorded.causation_id == str(contracts.loads(heartbeat).id)
        assert await client.xlen(streams.DLQ) == 1

    # When the operator retries an id that is not in the DLQ, or that is no id at all
    # Then the command fails with exit code 1 and says why, and the DLQ is untouched
    code, out, err = await cars(redis_url, tmp_path, "dlq", "retry", "0-1")
    assert (code, out) == (1, "")
    assert err.strip() == "cars: no dead letter with id 0-1 in cars.dlq"
    code, out, err = await cars(redis_url, tmp_path, "dlq", "retry", "not-an-id")
    assert (code, out) == (1, "")
    assert "'not-an-id' is not a stream entry id" in err and "Traceback" not in err
    assert [d.original_id for d in await list_dead_letters(client)] == [garbage_id]

