"""`cars probe`, the liveness/readiness check of worker containers, and the Dockerfile's HEALTHCHECK,
run as a container runtime runs them against real CARS processes."""

from __future__ import annotations

import os
import socket
import subprocess

import redis

from bus import streams
from bus.probe import presence_keys
from tests.e2e.conftest import COMMAND_TIMEOUT_S, Cars, Platform, eventually, free_port
from tests.unit.test_deploy_manifests import healthcheck_command


def test_probe_passes_while_a_worker_runs_and_fails_once_it_stopped(cars_on_redis: Cars) -> None:
    # Given `cars worker` with the default consumer name <hostname>-<pid>
    worker = cars_on_redis.start("worker", "--actors", "registry")
    instance = f"{socket.gethostname()}-{worker.pid}"

    def probed() -> str | None:
        worker.assert_running()
        done = cars_on_redis.run("probe")
        return done.stdout if done.returncode == 0 else None

    # When a probe runs beside it (another process, as a container's exec probe is)
    # Then it passes, naming the worker
    out = eventually(probed, "cars probe passes", 60.0, details=worker.describe)
    assert out.strip() == f"alive: {instance} (registry)"
    # And with CARS_CONSUMER it checks exactly that process (as the Kubernetes pods set it)
    assert cars_on_redis.with_env(CARS_CONSUMER=instance).run("probe").returncode == 0
    other = cars_on_redis.with_env(CARS_CONSUMER="another-pod").run("probe")
    assert other.returncode == 1 and "cars:presence:another-pod is missing" in other.stderr

    # When the worker stops, the probe fails
    assert worker.interrupt() == 0, worker.describe()
    done = cars_on_redis.run("probe")
    assert done.returncode == 1 and "no live CARS process" in done.stderr


def test_probe_fails_when_redis_does_not_answer(cars: Cars) -> None:
    done = cars.with_env(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0").run("probe")
    assert done.returncode == 1 and "Redis unreachable" in done.stderr


def test_probe_counts_only_live_processes_of_this_host(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        dead = subprocess.Popen(["true"])
        dead.wait()
        for name in (f"web-{os.getpid()}", f"web-2-{os.getpid()}", f"web-{dead.pid}", f"db-{os.getpid()}"):
            client.set(streams.PRESENCE_PREFIX + name, "{}", ex=60)
        # Only <hostname>-<pid> of a live process: not another host whose name extends ours, nor a dead pid
        assert presence_keys(client, {}, hostname="web") == [f"{streams.PRESENCE_PREFIX}web-{os.getpid()}"]
        assert presence_keys(client, {}, hostname="cache") == []
    finally:
        client.close()


def test_the_dockerfile_healthcheck_passes_against_the_api_and_fails_without_it(platform: Platform) -> None:
    # The HEALTHCHECK command of deploy/Dockerfile, run as Docker runs it (exec form, the image's env)
    command = healthcheck_command()
    env = {**os.environ, "CARS_HTTP_PORT": str(platform.http_port)}
    assert subprocess.run(command, env=env, timeout=COMMAND_TIMEOUT_S, check=False).returncode == 0
    env["CARS_HTTP_PORT"] = str(free_port())
    assert subprocess.run(command, env=env, timeout=COMMAND_TIMEOUT_S, check=False,
                          capture_output=True).returncode != 0
