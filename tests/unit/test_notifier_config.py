"""Webhook configuration: what is accepted, and the errors for what is not (each names where and why)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from actors.notifier.bodies import json_body
from actors.notifier.config import EVENTS, WebhookConfigError, parse_targets
from bus.settings import Settings, SettingsError

SECRET_ENV = {"OPS_SECRET": "ops-secret-value"}


def hooks(*targets: dict[str, Any], **env: str) -> dict[str, str]:
    return {"CARS_WEBHOOKS": json.dumps(list(targets)), **SECRET_ENV, **env}


def test_a_json_and_a_slack_target_from_the_environment() -> None:
    targets = parse_targets(hooks(
        {"name": "ops", "url": "https://hooks.example/cars", "secret_env": "OPS_SECRET"},
        {"name": "chat", "url": "https://hooks.slack.example/T/B/x", "format": "slack",
         "events": ["failure.unrepairable"]},
    ))
    ops, chat = targets
    assert (ops.name, ops.format, ops.events, ops.secret) == ("ops", "json", frozenset(EVENTS), "ops-secret-value")
    assert (chat.format, chat.events, chat.secret) == ("slack", frozenset({"failure.unrepairable"}), None)
    assert "ops-secret-value" not in repr(ops)


def test_targets_from_a_toml_file_add_to_the_environment_ones(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("file-secret\n")
    path = tmp_path / "webhooks.toml"
    path.write_text(f'[[webhook]]\nname = "audit"\nurl = "http://127.0.0.1:9/h"\nsecret_file = "{secret}"\n'
                    'events = ["repair.completed"]\n')
    targets = parse_targets({**hooks({"name": "ops", "url": "https://h.example/", "secret_env": "OPS_SECRET"}),
                             "CARS_WEBHOOKS_FILE": str(path)})
    assert [(t.name, t.secret) for t in targets] == [("ops", "ops-secret-value"), ("audit", "file-secret")]


@pytest.mark.parametrize(("env", "message"), [
    ({"CARS_WEBHOOKS": "[{"}, "CARS_WEBHOOKS is not JSON"),
    ({"CARS_WEBHOOKS": '{"name": "x"}'}, "must be a JSON array"),
    (hooks({"name": "ops", "url": "https://h.example/", "secret_env": "OPS_SECRET", "colour": "red"}),
     "webhook 0 (ops): extra fields found (colour)"),
    (hooks({"url": "https://h.example/", "secret_env": "OPS_SECRET"}), "name"),
    (hooks({"name": "ops", "url": "ftp://h.example/", "secret_env": "OPS_SECRET"}), "must be an http:// or https://"),
    (hooks({"name": "ops", "url": "https://h.example/", "format": "xml", "secret_env": "OPS_SECRET"}),
     "format 'xml': use json or slack"),
    (hooks({"name": "ops", "url": "https://h.example/", "events": ["run.reported"], "secret_env": "OPS_SECRET"}),
     "events run.reported not supported"),
    (hooks({"name": "ops", "url": "https://h.example/"}), "a json target needs secret_env or secret_file"),
    (hooks({"name": "ops", "url": "https://h.example/", "secret_env": "MISSING"}), "secret_env MISSING is not set"),
    (hooks({"name": "ops", "url": "https://h.example/", "secret_file": "/nonexistent/s"}),
     "secret_file /nonexistent/s"),
    (hooks({"name": "ops", "url": "https://h.example/", "secret_env": "OPS_SECRET"},
           {"name": "ops", "url": "https://other.example/", "secret_env": "OPS_SECRET"}), "name 'ops' is used twice"),
    (hooks({"name": "has space", "url": "https://h.example/", "secret_env": "OPS_SECRET"}), "must be 1-64 letters"),
    ({"CARS_WEBHOOKS_FILE": "/nonexistent/webhooks.toml"}, "cannot read it"),
])
def test_bad_configuration_is_a_clear_error(env: dict[str, str], message: str) -> None:
    with pytest.raises(WebhookConfigError) as caught:
        parse_targets(env)
    assert message in str(caught.value)


def test_bad_configuration_stops_settings_with_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "webhooks.toml"
    path.write_text('[[hook]]\nname = "x"\n')
    with pytest.raises(SettingsError, match=r"unknown key\(s\) hook; use \[\[webhook\]\] tables"):
        Settings.from_env({"CARS_WEBHOOKS_FILE": str(path)})
    with pytest.raises(SettingsError, match="CARS_NOTIFY_ATTEMPTS=0 is below the minimum of 1"):
        Settings.from_env({"CARS_NOTIFY_ATTEMPTS": "0"})


def test_the_defaults_when_nothing_is_configured() -> None:
    settings = Settings.from_env({}).notifier
    assert settings.targets == ()
    assert (settings.timeout_s, settings.attempts, settings.breaker_failures, settings.breaker_reset_s) == (
        5.0, 3, 5, 30.0)


def test_the_json_body_carries_the_envelope_as_on_the_results_topic() -> None:
    import uuid

    import contracts
    from contracts import Envelope
    from contracts.environments import EnvironmentFailed

    event = Envelope(data=EnvironmentFailed(environment_id=uuid.uuid4(), reason="no disk"))
    did = uuid.uuid4()
    assert json_body(event, did, "ops") == {"delivery_id": str(did), "target": "ops", "type": "environment.failed",
                                            "event": contracts.encode(event)}
