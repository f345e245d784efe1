"""Logging: readable lines by default, one JSON object per line with CARS_LOG_JSON=1, never a secret.

`configure` puts a `RedactingFilter` on the one handler every logger writes through (CARS's own,
FastStream's, uvicorn's, eventsourcing's), so whatever a library logs is redacted too. It removes:

- passwords in URLs (`redis://:pw@host`, `postgresql://user:pw@host/db` keep the user, lose the password);
- `Authorization` header values and `Bearer ...` tokens;
- `password=...`, `token: ...`, `client_secret=...` pairs in text (libpq conninfo, query strings);
- the literal values of the secret settings in effect (CARS_API_TOKEN, POSTGRES_PASSWORD, the
  password in REDIS_URL, every webhook's HMAC secret and URL: a Slack webhook URL is itself the
  secret), wherever they appear;
- `extra` fields whose name contains password, secret, token or authorization (the whole value),
  and secrets inside the other `extra` values (strings, and dicts and lists of them).

The message, `extra` values and the formatted traceback are all redacted before any formatter sees them.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "color_message"}
_SECRET_HINTS = ("password", "token", "secret", "authorization")
MASK = "***"

# scheme://user:password@ -> scheme://user:***@ (the user may be empty: redis://:pw@host)
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*):(?P<pw>[^@/\s]+)@")
# Authorization: Bearer abc / "authorization": "Basic abc" / authorization=abc
_AUTH_HEADER = re.compile(
    r"(?P<head>\bauthorization[\"']?\s*[:=]\s*[\"']?)(?:(?P<scheme>bearer|basic|token|digest)\s+)?[^\s\"',;}]+",
    re.IGNORECASE,
)
_BEARER = re.compile(r"(?P<head>\bbearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
# password=secret, api_token: abc, "client_secret": "abc"
_KEY_VALUE = re.compile(
    r"(?P<head>\b[\w-]*(?:password|passwd|secret|token)[\w-]*[\"']?\s*[:=]\s*[\"']?)(?P<value>[^\s\"',;&}]+)",
    re.IGNORECASE,
)
# Settings whose values are secrets: each value is removed wherever it appears.
SECRET_SETTINGS = ("CARS_API_TOKEN", "POSTGRES_PASSWORD")
# Shorter values are not redacted literally: "a" would blank every "a" in every line.
MIN_LITERAL = 4


def secrets_from_env(env: Mapping[str, str] | None = None) -> list[str]:
    """The literal secret values configured in `env` (os.environ by default)."""
    env = os.environ if env is None else env
    found = [env.get(k, "") for k in SECRET_SETTINGS]
    for key in ("REDIS_URL",):
        url = env.get(key, "")
        try:
            found.append(urlsplit(url).password or "")
        except ValueError:
            continue
    found += _webhook_secrets(env)
    return [s for s in found if len(s) >= MIN_LITERAL]


def _webhook_secrets(env: Mapping[str, str]) -> list[str]:
    from actors.notifier.config import WebhookConfigError, parse_targets

    try:
        targets = parse_targets(env)
    except (WebhookConfigError, OSError):  # reported by Settings at start-up; nothing to redact here
        return []
    return [s for t in targets for s in (t.secret or "", t.url)]


class Redactor:
    """Removes secrets from text and from structured values."""

    def __init__(self, literals: Iterable[str] = ()) -> None:
        # Longest first, so a secret containing another is removed whole.
        self.literals = sorted({s for s in literals if len(s) >= MIN_LITERAL}, key=len, reverse=True)

    def text(self, value: str) -> str:
        for literal in self.literals:
            value = value.replace(literal, MASK)
        value = _URL_PASSWORD.sub(lambda m: f"{m['head']}:{MASK}@", value)
        value = _AUTH_HEADER.sub(lambda m: f"{m['head']}{m['scheme'] + ' ' if m['scheme'] else ''}{MASK}", value)
        value = _BEARER.sub(lambda m: f"{m['head']}{MASK}", value)
        return _KEY_VALUE.sub(lambda m: f"{m['head']}{MASK}", value)

    def value(self, key: str, value: Any) -> Any:
        if is_secret_key(key):
            return MASK
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {k: self.value(str(k), v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value("", v) for v in value]
        if isinstance(value, bytes | bytearray):
            return self.text(value.decode("utf-8", errors="replace"))
        if value is None or isinstance(value, bool | int | float):
            return value
        return self.text(str(value))


def is_secret_key(key: str) -> bool:
    lowered = key.lower()
    return any(h in lowered for h in _SECRET_HINTS)


class RedactingFilter(logging.Filter):
    """Redacts a record in place: its message (args merged in), its `extra` fields and its traceback."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redactor = redactor or Redactor(secrets_from_env())
        self._tracebacks = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        r = self.redactor
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep what there is, redacted
            message = f"{record.msg} {record.args}"
        record.msg, record.args = r.text(message), None
        for key in [k for k in record.__dict__ if k not in _STANDARD]:
            setattr(record, key, r.value(key, record.__dict__[key]))
        if record.exc_info and not record.exc_text:
            record.exc_text = self._tracebacks.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = r.text(record.exc_text)
        if record.stack_info:
            record.stack_info = r.text(record.stack_info)
        return True


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    out = {}
    for key, value in record.__dict__.items():
        if key in _STANDARD:
            continue
        out[key] = MASK if is_secret_key(key) else value
    return out


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"), "level": record.levelname,
            "logger": record.name, "msg": record.getMessage(), **_extras(record),
        }
        if record.exc_info or record.exc_text:
            doc["exc"] = record.exc_text or self.formatException(record.exc_info)  # type: ignore[arg-type]
        return json.dumps(doc, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = _extras(record)
        if extras:
            line += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        return line


def configure(level: str = "INFO", as_json: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    text = TextFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    handler.setFormatter(JsonFormatter() if as_json else text)
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # FastStream logs every message at INFO; keep that for DEBUG runs only.
    logging.getLogger("faststream").setLevel(max(logging.getLevelName(level), logging.WARNING))
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
