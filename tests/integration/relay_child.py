"""A relay process for the crash test in test_relay.py: it relays a store until the store is drained.

    python tests/integration/relay_child.py REDIS_URL STORE_ENV_JSON BATCH

It prints "ready" once its imports are done and the store is open, so that the parent's SIGKILL
lands in the relaying rather than in start-up, and exits 0 when the relay position has reached the
end of the store.
"""

from __future__ import annotations

import json
import sys

import anyio
from redis.asyncio import Redis

from bus.relay import Relay
from bus.store import EventStore


async def main(redis_url: str, store_env: dict[str, str], batch: int) -> None:
    store = EventStore(store_env)
    client = Redis.from_url(redis_url)
    try:
        relay = Relay(store, client, maxlen=1_000_000, batch=batch)
        end = store.max_position()
        print("ready", flush=True)
        while await relay.position() < end:
            await relay.relay_once()
    finally:
        await client.aclose()
        store.close()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]))
