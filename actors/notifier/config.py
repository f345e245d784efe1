"""Webhook targets of the notifier, from the environment.

Two sources, both optional (a target list may come from either or both; names must be unique):

- `CARS_WEBHOOKS`: a JSON array of targets;
- `CARS_WEBHOOKS_FILE`: a TOML file with one `[[webhook]]` table per target.

A target::

    {"name": "ops", "url": "https://hooks.example/cars", "format": "json",
     "events": ["repair.completed", "failure.unrepairable"], "secret_env": "OPS_HOOK_SECRET"}

- `name` (required): a stable identifier. Delivery ids derive from it, so renaming a target sends its
  notifications again, and changing its URL does not.
- `url` (required): http or https.
- `format`: `json` (default) or `slack` (a Slack incoming-webhook body).
- `events`: which of `repair.completed`, `failure.unrepairable`, `environment.failed` to send
  (default: all three).
- `secret_env` / `secret_file`: where the HMAC secret is, by reference (the name of an environment
  variable, or a file whose content is the secret); never the secret itself. Required for `json`
  targets; optional for `slack` (Slack's webhook URL is the secret there).

Any problem is a `WebhookConfigError` naming the source, the target and the key.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from attrs import field, frozen

from contracts import ContractError, structure

#: The public summaries a webhook can carry (all three are published on `cars.results`).
EVENTS = ("repair.completed", "failure.unrepairable", "environment.failed")
FORMATS = ("json", "slack")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class WebhookConfigError(ValueError):
    """The webhook configuration cannot be used; the message says where and why."""


@frozen(kw_only=True)
class WebhookSpec:
    """One target as written in the configuration (before its secret is looked up)."""

    name: str
    url: str
    format: str = "json"
    events: tuple[str, ...] = EVENTS
    secret_env: str | None = None
    secret_file: str | None = None


@frozen(kw_only=True)
class WebhookTarget:
    name: str
    url: str
    format: str
    events: frozenset[str]
    secret: str | None = field(default=None, repr=False)  # never in logs or `cars config`

    def wants(self, event_type: str) -> bool:
        return event_type in self.events


@frozen(kw_only=True)
class NotifierSettings:
    targets: tuple[WebhookTarget, ...] = ()
    timeout_s: float = 5.0  # one HTTP attempt
    attempts: int = 3  # HTTP attempts before a delivery goes to the retry queue
    backoff_s: float = 0.5  # first wait between attempts; doubles, with jitter
    breaker_failures: int = 5  # consecutive failed attempts that open a target's circuit
    breaker_reset_s: float = 30.0  # an open circuit lets one trial through after this long
    retry_s: float = 10.0  # how often the retry queue is looked at


def parse_targets(env: Mapping[str, str]) -> tuple[WebhookTarget, ...]:
    """Every configured target, secrets resolved. WebhookConfigError for anything unusable."""
    specs: list[tuple[str, WebhookSpec]] = []
    raw = env.get("CARS_WEBHOOKS", "").strip()
    if raw:
        try:
            doc = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise WebhookConfigError(f"CARS_WEBHOOKS is not JSON: {exc}") from None
        if not isinstance(doc, list):
            raise WebhookConfigError("CARS_WEBHOOKS must be a JSON array of targets")
        specs += _specs(doc, "CARS_WEBHOOKS")
    path = env.get("CARS_WEBHOOKS_FILE", "").strip()
    if path:
        specs += _specs(_read_toml(Path(path)), f"CARS_WEBHOOKS_FILE {path}")
    seen: dict[str, str] = {}
    targets = []
    for where, spec in specs:
        if spec.name in seen:
            raise WebhookConfigError(f"{where}: webhook name {spec.name!r} is used twice (also in {seen[spec.name]})")
        seen[spec.name] = where
        targets.append(_resolve(spec, where, env))
    return tuple(targets)


def _read_toml(path: Path) -> list[object]:
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise WebhookConfigError(f"CARS_WEBHOOKS_FILE {path}: cannot read it: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise WebhookConfigError(f"CARS_WEBHOOKS_FILE {path}: not valid TOML: {exc}") from None
    extra = sorted(set(doc) - {"webhook"})
    if extra:
        raise WebhookConfigError(f"CARS_WEBHOOKS_FILE {path}: unknown key(s) {', '.join(extra)}; "
                                 "use [[webhook]] tables")
    tables = doc.get("webhook", [])
    if not isinstance(tables, list):
        raise WebhookConfigError(f"CARS_WEBHOOKS_FILE {path}: `webhook` must be an array of tables ([[webhook]])")
    return tables


def _specs(items: list[object], source: str) -> list[tuple[str, WebhookSpec]]:
    out = []
    for i, item in enumerate(items):
        where = f"{source}: webhook {i}"
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            where += f" ({item['name']})"
        try:
            out.append((where, structure(item, WebhookSpec, root=f"$[{i}]")))
        except ContractError as exc:
            raise WebhookConfigError(f"{where}: " + "; ".join(exc.errors)) from None
    return out


def _resolve(spec: WebhookSpec, where: str, env: Mapping[str, str]) -> WebhookTarget:
    if not _NAME.match(spec.name):
        raise WebhookConfigError(f"{where}: name {spec.name!r} must be 1-64 letters, digits, '.', '_' or '-'")
    url = urlsplit(spec.url)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise WebhookConfigError(f"{where}: url {spec.url!r} must be an http:// or https:// URL with a host")
    if spec.format not in FORMATS:
        raise WebhookConfigError(f"{where}: format {spec.format!r}: use {' or '.join(FORMATS)}")
    unknown = [e for e in spec.events if e not in EVENTS]
    if unknown or not spec.events:
        raise WebhookConfigError(f"{where}: events {', '.join(unknown) or '(none)'} not supported; "
                                 f"choose from {', '.join(EVENTS)}")
    if spec.secret_env and spec.secret_file:
        raise WebhookConfigError(f"{where}: give secret_env or secret_file, not both")
    secret: str | None = None
    if spec.secret_env:
        secret = env.get(spec.secret_env) or None
        if secret is None:
            raise WebhookConfigError(f"{where}: secret_env {spec.secret_env} is not set (or empty)")
    elif spec.secret_file:
        try:
            secret = Path(spec.secret_file).read_text(encoding="utf-8").strip() or None
        except OSError as exc:
            raise WebhookConfigError(f"{where}: secret_file {spec.secret_file}: {exc.strerror}") from None
        if secret is None:
            raise WebhookConfigError(f"{where}: secret_file {spec.secret_file} is empty")
    elif spec.format == "json":
        raise WebhookConfigError(f"{where}: a json target needs secret_env or secret_file (its bodies are signed)")
    return WebhookTarget(name=spec.name, url=spec.url, format=spec.format, events=frozenset(spec.events),
                         secret=secret)
