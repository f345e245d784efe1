"""One typed settings object, read from the environment once at start-up (twelve-factor)."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path

from attrs import field, frozen

from actors.notifier.config import NotifierSettings, WebhookConfigError, parse_targets


class SettingsError(ValueError):
    """A configuration variable has a value CARS cannot use."""


def _int(env: Mapping[str, str], key: str, default: int, minimum: int = 0) -> int:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{key}={raw!r} is not an integer") from None
    if value < minimum:
        raise SettingsError(f"{key}={value} is below the minimum of {minimum}")
    return value


def _float(env: Mapping[str, str], key: str, default: float, minimum: float = 0.0) -> float:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{key}={raw!r} is not a number") from None
    if value < minimum:
        raise SettingsError(f"{key}={value} is below the minimum of {minimum}")
    return value


# Every variable CARS reads, with its meaning; the README table and `cars config` come from this.
VARIABLES: dict[str, str] = {
    "CARS_HOME": "folder for local state: SQLite stores, embedded Redis (default ./.cars)",
    "REDIS_URL": "the Redis bus; unset: CARS starts an embedded redis-server under CARS_HOME",
    "CARS_EMBEDDED_REDIS_PORT": "TCP port of the embedded Redis on 127.0.0.1 (default 6380)",
    "CARS_STORE": "event store: sqlite (default) or postgres (then the POSTGRES_* variables apply)",
    "POSTGRES_HOST / _PORT / _USER / _PASSWORD / _DBNAME / _SCHEMA": "PostgreSQL store (eventsourcing's keys)",
    "CARS_HTTP_HOST": "address of the HTTP API (default 127.0.0.1)",
    "CARS_HTTP_PORT": "port of the HTTP API (default 8080)",
    "CARS_CONSUMER": "consumer name of this process in every group (default <hostname>-<pid>)",
    "CARS_RECLAIM_IDLE_MS": "a pending message idle this long is claimed by another consumer (default 30000)",
    "CARS_MAX_DELIVERIES": "deliveries before a failing message goes to cars.dlq (default 5)",
    "CARS_MAX_MESSAGE_BYTES": "largest accepted message on the bus or over HTTP (default 4194304)",
    "CARS_STREAM_MAXLEN": "approximate cap on each stream's length (default 100000)",
    "CARS_HEARTBEAT_S": "seconds between service heartbeats (default 10)",
    "CARS_SERVICE_TIMEOUT_S": "a service silent this long is recorded as lost (default 35)",
    "CARS_RELAY_BATCH": "events the relay publishes per round trip (default 500)",
    "CARS_POLL_MS": "how often the relay and projections look for new events when idle (default 50)",
    "CARS_VALIDATION_MEMORY_MB": "address space per process of a validation test run, in MiB (default 4096)",
    "CARS_ENV_BACKEND": "environment backend when neither the request nor its template names one: local (default) "
                        "or kubernetes",
    "CARS_LOG_LEVEL": "DEBUG, INFO (default), WARNING or ERROR",
    "CARS_LOG_JSON": "1 for JSON log lines",
    "CARS_METRICS_PORT": "also serve this process's own Prometheus counters on this port (default: off; "
                         "GET /metrics of the API serves them too)",
    "OTEL_*": "standard OpenTelemetry SDK variables (OTEL_TRACES_EXPORTER=console|otlp|none, ...)",
    "CARS_API_TOKEN": "bearer token required by every POST of the HTTP API (at least 16 characters; unset: "
                      "no token, allowed on a loopback host only)",
    "CARS_CORS_ORIGINS": "comma-separated browser origins allowed to call the API cross-origin (default: none)",
    "CARS_WEBHOOKS": "JSON array of webhook targets of the notifier (see README, Notifications)",
    "CARS_WEBHOOKS_FILE": "TOML file of webhook targets ([[webhook]] tables), in addition to CARS_WEBHOOKS",
    "CARS_NOTIFY_TIMEOUT_S": "timeout of one webhook request (default 5)",
    "CARS_NOTIFY_ATTEMPTS": "webhook attempts before a delivery goes to the retry queue (default 3)",
    "CARS_NOTIFY_BACKOFF_S": "first wait between webhook attempts, doubled each time, with jitter (default 0.5)",
    "CARS_NOTIFY_BREAKER_FAILURES": "consecutive failed attempts that open a target's circuit (default 5)",
    "CARS_NOTIFY_BREAKER_RESET_S": "seconds an open circuit waits before letting a trial through (default 30)",
    "CARS_NOTIFY_RETRY_S": "how often queued webhook deliveries are retried (default 10)",
}

MIN_TOKEN_CHARS = 16


ENV_BACKENDS = ("local", "kubernetes")


def _env_backend(env: Mapping[str, str]) -> str:
    value = env.get("CARS_ENV_BACKEND", "").strip().lower() or "local"
    if value not in ENV_BACKENDS:
        raise SettingsError(f"CARS_ENV_BACKEND={value!r}: use {' or '.join(ENV_BACKENDS)}")
    return value


@frozen(kw_only=True)
class Settings:
    home: Path
    redis_url: str | None
    embedded_redis_port: int
    store: str  # "sqlite" | "postgres"
    postgres: dict[str, str]
    http_host: str
    http_port: int
    consumer: str
    reclaim_idle_ms: int
    max_deliveries: int
    max_message_bytes: int
    stream_maxlen: int
    heartbeat_s: float
    service_timeout_s: float
    relay_batch: int
    poll_ms: int
    log_level: str
    log_json: bool
    validation_memory_mb: int = 4096
    api_token: str | None = field(default=None, repr=False)
    cors_origins: tuple[str, ...] = ()
    notifier: NotifierSettings = field(factory=NotifierSettings)
    metrics_port: int | None = None
    env_backend: str = "local"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        store = env.get("CARS_STORE", "").strip().lower()
        if not store:
            store = "postgres" if env.get("PERSISTENCE_MODULE") == "eventsourcing.postgres" else "sqlite"
        if store not in ("sqlite", "postgres"):
            raise SettingsError(f"CARS_STORE={store!r}: use sqlite or postgres")
        level = env.get("CARS_LOG_LEVEL", "INFO").upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise SettingsError(f"CARS_LOG_LEVEL={level!r}: use DEBUG, INFO, WARNING or ERROR")
        return cls(
            home=Path(env.get("CARS_HOME") or ".cars").resolve(),
            redis_url=env.get("REDIS_URL") or None,
            embedded_redis_port=_int(env, "CARS_EMBEDDED_REDIS_PORT", 6380, minimum=1),
            store=store,
            postgres={k: v for k, v in env.items() if k.startswith("POSTGRES_")},
            http_host=env.get("CARS_HTTP_HOST", "127.0.0.1"),
            http_port=_int(env, "CARS_HTTP_PORT", 8080, minimum=0),
            consumer=env.get("CARS_CONSUMER") or f"{socket.gethostname()}-{os.getpid()}",
            reclaim_idle_ms=_int(env, "CARS_RECLAIM_IDLE_MS", 30_000, minimum=10),
            max_deliveries=_int(env, "CARS_MAX_DELIVERIES", 5, minimum=1),
            max_message_bytes=_int(env, "CARS_MAX_MESSAGE_BYTES", 4 * 1024 * 1024, minimum=1024),
            stream_maxlen=_int(env, "CARS_STREAM_MAXLEN", 100_000, minimum=100),
            heartbeat_s=_float(env, "CARS_HEARTBEAT_S", 10.0, minimum=0.05),
            service_timeout_s=_float(env, "CARS_SERVICE_TIMEOUT_S", 35.0, minimum=0.1),
            relay_batch=_int(env, "CARS_RELAY_BATCH", 500, minimum=1),
            poll_ms=_int(env, "CARS_POLL_MS", 50, minimum=1),
            log_level=level,
            log_json=env.get("CARS_LOG_JSON", "") in ("1", "true", "yes"),
            validation_memory_mb=_int(env, "CARS_VALIDATION_MEMORY_MB", 4096, minimum=64),
            api_token=_api_token(env),
            cors_origins=tuple(o.strip() for o in env.get("CARS_CORS_ORIGINS", "").split(",") if o.strip()),
            notifier=_notifier(env),
            metrics_port=_int(env, "CARS_METRICS_PORT", -1, minimum=0) if env.get("CARS_METRICS_PORT") else None,
            env_backend=_env_backend(env),
        )

    def store_env(self) -> dict[str, str]:
        """The eventsourcing environment of the event store."""
        if self.store == "postgres":
            env = {"PERSISTENCE_MODULE": "eventsourcing.postgres", **self.postgres}
            missing = [k for k in ("POSTGRES_DBNAME", "POSTGRES_HOST", "POSTGRES_USER") if k not in env]
            if missing:
                raise SettingsError(f"CARS_STORE=postgres needs {', '.join(missing)}")
            env.setdefault("POSTGRES_PORT", "5432")
            env.setdefault("POSTGRES_PASSWORD", "")
            return env
        return {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": str(self.home / "events.sqlite"),
            "SQLITE_LOCK_TIMEOUT": "30",
        }


def _api_token(env: Mapping[str, str]) -> str | None:
    token = env.get("CARS_API_TOKEN", "").strip() or None
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        raise SettingsError(
            f"CARS_API_TOKEN is {len(token)} characters long; use at least {MIN_TOKEN_CHARS} "
            "(for example: python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return token


def _notifier(env: Mapping[str, str]) -> NotifierSettings:
    try:
        targets = parse_targets(env)
    except WebhookConfigError as exc:
        raise SettingsError(str(exc)) from None
    return NotifierSettings(
        targets=targets,
        timeout_s=_float(env, "CARS_NOTIFY_TIMEOUT_S", 5.0, minimum=0.05),
        attempts=_int(env, "CARS_NOTIFY_ATTEMPTS", 3, minimum=1),
        backoff_s=_float(env, "CARS_NOTIFY_BACKOFF_S", 0.5, minimum=0.0),
        breaker_failures=_int(env, "CARS_NOTIFY_BREAKER_FAILURES", 5, minimum=1),
        breaker_reset_s=_float(env, "CARS_NOTIFY_BREAKER_RESET_S", 30.0, minimum=0.05),
        retry_s=_float(env, "CARS_NOTIFY_RETRY_S", 10.0, minimum=0.05),
    )
