"""`cars probe`: is the CARS process of this container alive? For liveness and readiness probes.

`cars worker` has no HTTP port to probe. Every CARS process (worker or `cars up`) refreshes a presence
key `PRESENCE_PREFIX + consumer` in Redis every CARS_HEARTBEAT_S, with a TTL of three heartbeats, and
deletes it on a clean exit (see `bus.runtime.Platform.mark_present`). A process whose event loop is
stuck, or that lost Redis for longer than the TTL, stops refreshing it, and the probe then fails.

Which process is "this container's": CARS_CONSUMER when it is set (the Kubernetes manifests set it to
the pod name, so the probe's own process reads the same name); otherwise the default consumer name
`<hostname>-<pid>` of a process that runs in this pid namespace, found by the hostname prefix and
checked with kill(pid, 0).
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping

import redis

from bus import streams


class ProbeFailed(RuntimeError):
    """The probed process is not alive (the message says why)."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def presence_keys(client: redis.Redis, env: Mapping[str, str], hostname: str | None = None) -> list[str]:
    """The presence keys that belong to this container's CARS process(es)."""
    consumer = env.get("CARS_CONSUMER")
    if consumer:
        key = streams.PRESENCE_PREFIX + consumer
        return [key] if client.exists(key) else []
    host = hostname or socket.gethostname()
    prefix = streams.PRESENCE_PREFIX + host + "-"
    found = []
    for raw in client.scan_iter(match=prefix.replace("*", r"\*") + "*", count=100):
        key = raw.decode() if isinstance(raw, bytes) else str(raw)
        suffix = key[len(prefix):]
        # `<hostname>-<pid>` exactly: another host named `<hostname>-2` does not count.
        if suffix.isdigit() and _pid_alive(int(suffix)):
            found.append(key)
    return found


def probe(url: str, env: Mapping[str, str], *, timeout_s: float = 3.0) -> str:
    """The consumer name of this container's live CARS process; ProbeFailed when there is none."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        keys = presence_keys(client, env)
        if not keys:
            who = env.get("CARS_CONSUMER") or f"{socket.gethostname()}-<pid>"
            raise ProbeFailed(f"no live CARS process: presence key {streams.PRESENCE_PREFIX}{who} is missing "
                              "(not started yet, stuck, or stopped)")
        value = client.get(keys[0])
    except redis.RedisError as exc:
        raise ProbeFailed(f"Redis unreachable: {exc}") from None
    finally:
        client.close()
    consumer = keys[0][len(streams.PRESENCE_PREFIX):]
    try:
        actors = json.loads(value or b"{}").get("actors", [])
    except ValueError:
        actors = []
    return f"{consumer} ({', '.join(actors) or 'no actors'})"
