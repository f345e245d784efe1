"""Logs never carry secrets: passwords in URLs, tokens, Authorization headers, secret `extra` fields.

Pure: records go through the real filter and formatters into an in-memory stream.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from bus.logs import JsonFormatter, RedactingFilter, Redactor, TextFormatter, secrets_from_env

API_TOKEN = "s3cr3t-api-token-value"
PG_PASSWORD = "pg-Pa55word!"
REDIS_PASSWORD = "redis-pw-42"


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, io.StringIO, io.StringIO]]:
    """A logger writing through the filter to a text stream and a JSON stream."""
    env = {"CARS_API_TOKEN": API_TOKEN, "POSTGRES_PASSWORD": PG_PASSWORD,
           "REDIS_URL": f"redis://:{REDIS_PASSWORD}@10.0.0.5:6379/0"}
    redacting = RedactingFilter(Redactor(secrets_from_env(env)))
    text, js = io.StringIO(), io.StringIO()
    handlers = []
    for stream, formatter in ((text, TextFormatter("%(levelname)s %(message)s")), (js, JsonFormatter())):
        handler = logging.StreamHandler(stream)
        handler.setFormatter(formatter)
        handler.addFilter(redacting)
        handlers.append(handler)
    logger = logging.getLogger("cars.test.redaction")
    logger.handlers[:] = handlers
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    yield logger, text, js
    logger.handlers[:] = []


def json_lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


@pytest.mark.parametrize(("line", "kept", "gone"), [
    ("connecting to redis://:hunter22@cache:6379/0", "redis://:***@cache:6379/0", "hunter22"),
    ("store at postgresql://cars:hunter22@db:5432/cars", "postgresql://cars:***@db:5432/cars", "hunter22"),
    ("rediss://default:hunter22@cache:6380", "rediss://default:***@cache:6380", "hunter22"),
    ("headers {'Authorization': 'Bearer abc.def.ghi'}", "'Authorization': 'Bearer ***'", "abc.def.ghi"),
    ("Authorization: Basic dXNlcjpwYXNz", "Authorization: Basic ***", "dXNlcjpwYXNz"),
    ("sent bearer eyJhbGciOi.x.y to the API", "bearer ***", "eyJhbGciOi"),
    ("conninfo host=db user=cars password=hunter22 dbname=cars", "password=*** dbname=cars", "hunter22"),
    ("GET /hook?token=abc123&x=1", "token=***&x=1", "abc123"),
    ('{"client_secret": "abc123", "name": "n"}', '"client_secret": "***"', "abc123"),
])
def test_secrets_in_text_are_masked_and_the_rest_kept(line: str, kept: str, gone: str) -> None:
    # Given a line a library might log, When it is redacted
    out = Redactor().text(line)
    # Then the secret is gone and the context around it stays readable
    assert gone not in out
    assert kept in out


def test_text_without_secrets_is_left_alone() -> None:
    line = "relay: published 12 events to cars.events.repairs at redis://cache:6379/0; token bucket ok"
    assert Redactor(["hunter22"]).text(line) == line


def test_messages_args_extras_and_tracebacks_are_redacted_in_text_and_json(
    logged: tuple[logging.Logger, io.StringIO, io.StringIO],
) -> None:
    logger, text, js = logged
    # Given secrets in the message arguments, in extra fields (named and unnamed), and in an exception
    try:
        raise ConnectionError(f"Error connecting to postgresql://cars:{PG_PASSWORD}@db/cars")
    except ConnectionError:
        logger.exception(
            "bus at %s, api token %s", f"redis://:{REDIS_PASSWORD}@10.0.0.5:6379/0", API_TOKEN,
            extra={"api_token": API_TOKEN, "db_password": "x-" + PG_PASSWORD, "client_secret": "abcd1234",
                   "headers": {"Authorization": f"Bearer {API_TOKEN}", "accept": "json"},
                   "urls": [f"redis://:{REDIS_PASSWORD}@h/0"], "stream": "cars.ingest"},
        )
    # When both formatters write it
    written = text.getvalue() + js.getvalue()
    # Then no secret appears anywhere
    for secret in (API_TOKEN, PG_PASSWORD, REDIS_PASSWORD, "abcd1234"):
        assert secret not in written
    # And the JSON line keeps its shape, with masks where the secrets were
    [doc] = json_lines(js)
    assert doc["msg"] == "bus at redis://:***@10.0.0.5:6379/0, api token ***"
    assert doc["api_token"] == doc["db_password"] == doc["client_secret"] == "***"
    assert doc["headers"] == {"Authorization": "***", "accept": "json"}
    assert doc["urls"] == ["redis://:***@h/0"]
    assert doc["stream"] == "cars.ingest"
    assert "ConnectionError: Error connecting to postgresql://cars:***@db/cars" in str(doc["exc"])
    assert doc["level"] == "ERROR" and doc["logger"] == "cars.test.redaction"
    # And the text line has the traceback too, redacted
    assert "Error connecting to postgresql://cars:***@db/cars" in text.getvalue()


def test_the_configured_secrets_come_from_the_settings() -> None:
    env = {"CARS_API_TOKEN": API_TOKEN, "POSTGRES_PASSWORD": "abc",  # too short to mask literally
           "REDIS_URL": f"redis://u:{REDIS_PASSWORD}@h:1/0"}
    assert sorted(secrets_from_env(env)) == sorted([API_TOKEN, REDIS_PASSWORD])
    assert secrets_from_env({"REDIS_URL": "redis://h:1/0"}) == []


def test_webhook_secrets_and_urls_are_redacted_literally() -> None:
    # Given a Slack target (its URL is the secret) and a JSON target with an HMAC secret by reference
    hook = "https://hooks.slack.com/services/T000/B000/XXXXsecretXXXX"
    env = {"CARS_WEBHOOKS": json.dumps([
        {"name": "chat", "url": hook, "format": "slack"},
        {"name": "ops", "url": "https://ops.example/cars", "secret_env": "OPS_SECRET"},
    ]), "OPS_SECRET": "hmac-key-123456"}
    redactor = Redactor(secrets_from_env(env))
    # When an HTTP error naming the URL, and the secret, are logged
    line = redactor.text(f"404, message='Not Found', url='{hook}'; signing with hmac-key-123456")
    # Then neither is in the line
    assert line == "404, message='Not Found', url='***'; signing with ***"
    # And a broken webhook configuration does not stop logging (Settings reports it)
    assert secrets_from_env({"CARS_WEBHOOKS": "[not json"}) == []


def test_a_record_with_a_broken_format_string_is_still_logged_redacted(
    logged: tuple[logging.Logger, io.StringIO, io.StringIO],
) -> None:
    logger, _, js = logged
    logger.warning("token %s and %s", API_TOKEN)  # one argument short
    [doc] = json_lines(js)
    assert API_TOKEN not in json.dumps(doc)
    assert "token" in str(doc["msg"])
