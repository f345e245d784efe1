"""A consumer SIGKILLed in the middle of a message: another consumer of the group reclaims it, and its
effects are in the store exactly once (real Redis, a real SQLite store, real processes)."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from actors.registry import router as registry
from actors.registry.services import service_id
from bus import streams, wire
from bus.store import EventStore
from contracts import Envelope
from contracts.registry import RegisterService, ServiceRegistered

ROOT = Path(__file__).resolve().parents[2]
CHILD = ROOT / "tests/integration/consumer_child.py"
TIMEOUT_S = 15.0


class Child:
    """tests/integration/consumer_child.py in a process of its own, with its stdout read line by line."""

    def __init__(self, redis_url: str, store_env: dict[str, str], consumer: str, reclaim_idle_ms: int,
                 block: str = "") -> None:
        env = {**os.environ, "CARS_TEST_BLOCK": block}
        self.process = subprocess.Popen(
            [sys.executable, str(CHILD), redis_url, json.dumps(store_env), consumer, str(reclaim_idle_ms)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, prefix: str, timeout_s: float = TIMEOUT_S) -> str:
        """The first line of stdout that starts with `prefix`."""
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=min(left, 0.1))
            except queue.Empty:
                if self.process.poll() is not None:
                    break
                continue
            if line.startswith(prefix):
                return line
        self.stop(signal.SIGKILL)
        assert self.process.stderr is not None
        pytest.fail(f"consumer child never printed {prefix!r}; stderr:\n{self.process.stderr.read()[-3000:]}")

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


@pytest.fixture
def children() -> Iterator[list[Child]]:
    started: list[Child] = []
    yield started
    for child in started:
        child.stop(signal.SIGKILL)


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


def pending(client: redis.Redis) -> dict[str, Any]:
    return client.xpending(streams.COMMANDS, registry.ROLE)  # type: ignore[no-any-return]


def registered(store_env: dict[str, str], instance: str) -> list[Envelope[Any]]:
    store = EventStore(store_env)
    try:
        return [e for e in store.load(service_id(instance)) if isinstance(e.data, ServiceRegistered)]
    finally:
        store.close()


def eventually(check: Callable[[], bool], what: str, timeout_s: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting until {what}")
        time.sleep(0.05)


def publish_register(client: redis.Redis, instance: str) -> tuple[str, Envelope[Any]]:
    """`bus.wire.publish` on a sync client: the same fields a producer writes."""
    envelope = Envelope(data=RegisterService(instance=instance, role="worker", pid=4242))
    entry_id = client.xadd(streams.COMMANDS, wire.entry_fields(envelope), maxlen=10_000)  # type: ignore[arg-type]
    return entry_id.decode(), envelope


@pytest.mark.parametrize(
    ("block", "stored_at_kill"),
    [
        pytest.param("after", 1, id="killed-after-append-before-ack"),
        pytest.param("before", 0, id="killed-before-append"),
    ],
)
def test_a_message_whose_consumer_was_killed_is_reclaimed_and_takes_effect_once(
    redis_url: str, sqlite_env: dict[str, str], client: redis.Redis, children: list[Child],
    block: str, stored_at_kill: int,
) -> None:
    # Given a consumer of the registry group that hangs mid-message (and would reclaim only much later)
    first = Child(redis_url, sqlite_env, "worker-a", reclaim_idle_ms=60_000, block=block)
    children.append(first)
    first.wait_for("ready")
    instance = f"svc-{uuid.uuid4().hex[:8]}"

    # When a service.register arrives, and the consumer is SIGKILLed where it hangs
    entry_id, envelope = publish_register(client, instance)
    marker = first.wait_for("blocked")
    assert marker == f"blocked {block} {envelope.id}"
    assert [p["message_id"].decode() for p in client.xpending_range(
        streams.COMMANDS, registry.ROLE, "-", "+", 10, consumername="worker-a")] == [entry_id]
    assert len(registered(sqlite_env, instance)) == stored_at_kill
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL

    # ... and another consumer of the group starts, reclaiming entries idle for 300 ms
    second = Child(redis_url, sqlite_env, "worker-b", reclaim_idle_ms=300)
    children.append(second)
    second.wait_for("ready")

    # Then the entry is acknowledged ...
    eventually(lambda: pending(client)["pending"] == 0, "the killed consumer's entry is acked")
    # ... and its effect is in the store exactly once, caused by that message
    events = registered(sqlite_env, instance)
    assert len(events) == 1, events
    assert events[0].causation_id == str(envelope.id)
    assert events[0].data.pid == 4242
    store = EventStore(sqlite_env)
    try:
        assert [r.envelope.type for r in store.read(after=0)] == ["service.registered"]
    finally:
        store.close()
    # ... nothing was dead-lettered, and the reclaimer stops cleanly
    assert client.xlen(streams.DLQ) == 0
    assert second.stop() == 0
