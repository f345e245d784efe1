"""The `cars` command line as a user runs it: help, schemas, configuration, publishing, history, replay
and dead letters, checked with `redis-cli` and plain JSON."""

from __future__ import annotations

import datetime as dt
import json
import re
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import typer.main

from tests.e2e.conftest import Cars, Platform, RedisCli, eventually, free_port, running_platform

README = Path(__file__).parents[2] / "README.md"

REGISTER = {"type": "service.register", "data": {"instance": "cli-bot", "role": "ci"}}
# The README's run.reported example (Produce with redis-cli).
RUN_REPORTED = {
    "type": "run.reported",
    "data": {
        "project": "shop", "run_id": "ci-481", "commit": "9f2c1e0",
        "results": [
            {"test_id": "tests/test_cart.py::test_total", "outcome": "failed", "duration_s": 0.12,
             "evidence": {"exception_type": "AttributeError", "message": "module cart has no attribute total_price"}},
            {"test_id": "tests/test_cart.py::test_empty", "outcome": "passed"},
        ],
    },
}


# ----------------------------------------------------------------------------- --help


def _commands() -> list[tuple[tuple[str, ...], Any]]:
    """Every command and subcommand of `cars` (click objects, as typer builds them), by the words that invoke it."""
    from bus.cli import app

    found: list[tuple[tuple[str, ...], Any]] = []

    def walk(path: tuple[str, ...], command: Any) -> None:
        found.append((path, command))
        for name, sub in (getattr(command, "commands", None) or {}).items():
            walk((*path, name), sub)

    walk((), typer.main.get_command(app))
    return found


# What the README's "Command line" table promises of each command (options, arguments, words).
DOCUMENTED = {
    (): ["up", "worker", "publish", "events", "replay", "schema", "dlq", "config"],
    ("up",): ["--host", "--port", "Ctrl-C"],
    ("worker",): ["--actors", "registry"],
    ("publish",): ["source", "stdin"],
    ("events",): ["--after", "--type", "--follow", "--json", "--limit"],
    ("replay",): ["--view", "--check"],
    ("schema",): ["message_type", "--list", "--out"],
    ("config",): [],
    ("dlq",): ["list", "retry"],
    ("dlq", "list"): ["--count", "--json"],
    ("dlq", "retry"): ["entry_id"],
    ("audit",): ["aggregate_id", "--format", "--at-version", "table", "csv"],
    ("export",): ["--since", "--until", "--type", "--format", "jsonl", "--out"],
    ("quarantine", "export"): ["--format", "pytest", "conftest", "--project", "--out"],
}


def test_every_command_is_in_the_readme_command_table() -> None:
    # Given the commands `cars` really has
    paths = {path for path, _ in _commands()}
    # Then the documented ones are all there
    assert set(DOCUMENTED) <= paths
    # And the README's command table names every one of them
    table = README.read_text().split("## Command line", 1)[1].split("\n## ", 1)[0]
    undocumented = [" ".join(p) for p in sorted(paths - {()}) if f"`cars {' '.join(p)}" not in table]
    assert not undocumented, f"README's command table lacks: {undocumented}"


@pytest.mark.parametrize(("path", "command"), _commands(), ids=[" ".join(p) or "cars" for p, _ in _commands()])
def test_help_of_every_command_exits_0_and_names_its_options(
    cars: Cars, path: tuple[str, ...], command: Any,
) -> None:
    # When a user asks a command for help
    done = cars.run(*path, "--help")

    # Then it answers on stdout and exits 0
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert f"Usage: cars {' '.join(path)}".rstrip() in " ".join(text.split())
    # And it names every option and argument the command has, and what the README promises
    expected = set(DOCUMENTED.get(path, []))
    options = [p for p in command.params if p.param_type_name == "option"]
    for param in command.params:
        expected.update(param.opts if param in options else [param.name or ""])
    missing = sorted(word for word in expected if word and word not in text)
    assert not missing, f"`cars {' '.join(path)} --help` does not mention {missing}:\n{text}"
    # And every option has a description beside it
    assert all((p.help or "").strip() for p in options), [p.name for p in options if not p.help]


def test_an_unknown_command_fails_with_a_usage_error(cars: Cars) -> None:
    done = cars.run("explode")
    assert done.returncode == 2
    assert "No such command" in done.stderr


# ----------------------------------------------------------------------------- schema


def test_schema_prints_a_valid_json_schema_for_every_message_type(cars: Cars, tmp_path: Path) -> None:
    # When a user prints every schema, and lists the types
    schemas = json.loads(cars.ok("schema"))
    listed = [line.split() for line in cars.ok("schema", "--list").splitlines()]

    # Then there is one schema per listed type, and the README's streams are where the types go
    assert sorted(schemas) == sorted(tag for tag, *_ in listed)
    assert len(schemas) > 30
    kinds = {tag: (kind, stream) for tag, _, kind, stream in listed}
    assert kinds["run.reported"] == ("command", "cars.ingest")
    assert kinds["service.register"] == ("command", "cars.commands")
    assert kinds["service.registered"] == ("event", "cars.events.registry")
    assert {stream for kind, stream in kinds.values() if kind == "event"} <= {
        f"cars.events.{area}" for area in ("runs", "failures", "repairs", "environments", "registry", "notifications")
    }
    # And each is a valid draft 2020-12 JSON Schema of its type's envelope
    for tag, schema in schemas.items():
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["properties"]["type"] == {"const": tag}
        assert "data" in schema["required"]
    # And the README's examples validate against them, while a typo does not
    validate = jsonschema.Draft202012Validator
    assert validate(schemas["run.reported"]).is_valid(RUN_REPORTED)
    assert validate(schemas["service.register"]).is_valid(REGISTER)
    typo = {"type": "service.register", "data": {"instance": "x", "rol": "ci"}}
    assert not validate(schemas["service.register"]).is_valid(typo)

    # And one type alone, or --out, print the same schemas
    assert json.loads(cars.ok("schema", "service.register")) == schemas["service.register"]
    out = tmp_path / "schemas"
    assert cars.ok("schema", "--out", str(out)).strip() == f"wrote {len(schemas)} schemas to {out}"
    assert {p.name for p in out.iterdir()} == {f"{tag}.schema.json" for tag in schemas}
    assert json.loads((out / "run.reported.schema.json").read_text()) == schemas["run.reported"]


def test_schema_of_an_unknown_type_fails(cars: Cars) -> None:
    done = cars.run("schema", "service.explode")
    assert done.returncode != 0
    assert "unknown type 'service.explode'" in done.stderr and done.stdout == ""


# ----------------------------------------------------------------------------- config


def _readme_variables() -> list[str]:
    section = README.read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    names = [name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_*]+)`", row.split("|")[1])]
    assert len(names) > 15, names
    return names


def test_config_lists_every_environment_variable_and_the_values_in_effect(cars: Cars) -> None:
    # Given a user's environment
    env = cars.with_env(CARS_HTTP_PORT="9191", CARS_CONSUMER="me-1")

    # When they run `cars config`
    out = env.ok("config")

    # Then every variable of the README's table is listed with its meaning ...
    for name in _readme_variables():
        # POSTGRES_PORT is shown as `POSTGRES_HOST / _PORT / ...`, OTEL_SERVICE_NAME as part of `OTEL_*`
        shown = "_" + name.split("_", 1)[1] if name.startswith("POSTGRES_") and name != "POSTGRES_HOST" else name
        shown = "OTEL_*" if name.startswith("OTEL_") and name != "OTEL_TRACES_EXPORTER" else shown
        assert shown in out, f"`cars config` does not list {name}:\n{out}"
    assert "TCP port of the embedded Redis" in out
    # ... and the values in effect: an embedded bus (no REDIS_URL), the API port and consumer given
    effect = out.strip().splitlines()[-1]
    assert effect.startswith("in effect:")
    assert f"home={cars.home.resolve()}" in effect and "bus=embedded" in effect
    assert "api=127.0.0.1:9191" in effect and "consumer=me-1" in effect and "store=sqlite" in effect
    assert "bus=redis://example:6379/0" in cars.with_env(REDIS_URL="redis://example:6379/0").ok("config")


def test_config_rejects_a_bad_value_naming_the_variable(cars: Cars) -> None:
    done = cars.with_env(CARS_HTTP_PORT="eighty").run("config")
    assert done.returncode != 0
    assert "CARS_HTTP_PORT='eighty' is not an integer" in done.stderr


# ----------------------------------------------------------------------------- publish


def _source(tmp_path: Path, how: str, text: str) -> tuple[str, str | None]:
    """(the argument, the stdin) to give `cars publish` this text as a file or on stdin."""
    if how == "-":
        return "-", text
    path = tmp_path / "messages.json"
    path.write_text(text)
    return str(path), None


@pytest.mark.parametrize("how", ["file", "-"])
def test_publish_validates_and_publishes_a_message(
    cars_on_redis: Cars, bus: RedisCli, tmp_path: Path, how: str,
) -> None:
    # Given a message without the optional envelope fields, in a file or on stdin
    arg, stdin = _source(tmp_path, how, json.dumps(REGISTER))

    # When it is published
    out = cars_on_redis.ok("publish", arg, input=stdin)

    # Then it is on cars.commands (redis-cli XRANGE) under the id the command printed
    match = re.fullmatch(r"published service\.register to cars\.commands as (\d+-\d+)", out.strip())
    assert match, out
    [(entry_id, fields)] = bus.xrange("cars.commands")
    assert entry_id == match.group(1)
    # ... as a complete envelope, with the fields CARS fills in
    message = json.loads(fields["message"])
    assert (message["type"], message["version"], message["data"]["instance"]) == ("service.register", 1, "cli-bot")
    assert uuid.UUID(message["id"]) and message["correlation_id"] == message["id"]
    assert dt.datetime.fromisoformat(message["occurred_at"]).tzinfo is not None
    # And nothing went anywhere else
    assert bus.xlen("cars.ingest") == 0


@pytest.mark.parametrize("how", ["file", "-"])
def test_publish_rejects_an_invalid_message_with_its_paths_and_publishes_nothing(
    cars_on_redis: Cars, bus: RedisCli, tmp_path: Path, how: str,
) -> None:
    # Given an array of a valid message and an invalid one (a wrong type and a typo)
    bad = {"type": "service.register", "data": {"instance": "x", "role": 1, "rol": "ci"}}
    arg, stdin = _source(tmp_path, how, json.dumps([REGISTER, bad]))

    # When it is published
    done = cars_on_redis.run("publish", arg, input=stdin)

    # Then the command fails, naming each problem with its JSON path
    assert done.returncode != 0
    assert "nothing published" in done.stderr
    assert "message 1: expected a string, got int @ $.data.role" in done.stderr
    assert "message 1: extra fields found (rol) @ $.data" in done.stderr
    assert "message 0" not in done.stderr and done.stdout == ""
    # And not even the valid message was sent
    assert bus.xlen("cars.commands") == 0


def test_publish_routes_json_lines_to_the_stream_of_each_type(cars_on_redis: Cars, bus: RedisCli) -> None:
    # Given JSON lines: the README's test results and a registration
    lines = f"{json.dumps(RUN_REPORTED)}\n\n{json.dumps(REGISTER)}\n"

    # When they are published from stdin
    out = cars_on_redis.ok("publish", "-", input=lines).splitlines()

    # Then the results went to cars.ingest and the command to cars.commands
    assert [line.rsplit(" as ", 1)[0] for line in out] == [
        "published run.reported to cars.ingest", "published service.register to cars.commands",
    ]
    [(_, ingested)] = bus.xrange("cars.ingest")
    assert json.loads(ingested["message"])["data"]["run_id"] == "ci-481"
    [(_, command)] = bus.xrange("cars.commands")
    assert json.loads(command["message"])["data"]["instance"] == "cli-bot"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"type":"service.deregistered","data":{"instance":"x"}}', "is an event; only CARS records events"),
        ("{nope", "not JSON"),
    ],
    ids=["an-event", "not-json"],
)
def test_publish_refuses_what_is_not_a_command(cars_on_redis: Cars, bus: RedisCli, text: str, problem: str) -> None:
    done = cars_on_redis.run("publish", "-", input=text)
    assert done.returncode != 0
    assert problem in done.stderr
    assert bus.xlen("cars.commands") == 0 and bus.xlen("cars.ingest") == 0


def test_commands_that_need_the_bus_say_how_to_get_one(cars: Cars) -> None:
    # Given no REDIS_URL and no `cars up` running with this CARS_HOME
    for args in (("dlq", "list"), ("publish", "-")):
        # When a command needs the bus
        done = cars.run(*args, input=json.dumps(REGISTER))
        # Then it fails and says what is missing
        assert done.returncode == 1, (args, done.stderr)
        assert "REDIS_URL is unset" in done.stderr and "cars up" in done.stderr, (args, done.stderr)


def test_commands_report_an_unreachable_redis_in_one_line(cars: Cars) -> None:
    # Given a REDIS_URL where nothing listens
    down = cars.with_env(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    for args in (("dlq", "list"), ("publish", "-")):
        # When a command needs the bus
        done = down.run(*args, input=json.dumps(REGISTER))
        # Then it fails with one line that says so, not a traceback
        assert done.returncode == 1, (args, done.stderr)
        assert "Redis unreachable" in done.stderr and "Traceback" not in done.stderr, (args, done.stderr[-500:])


def test_events_without_a_store_says_so(cars: Cars) -> None:
    done = cars.run("events")
    assert done.returncode != 0
    assert "no event store" in done.stderr


# ----------------------------------------------------------------------------- history: events and replay


CI_BOT_REGISTER = {"type": "service.register", "data": {"instance": "ci-bot-1", "role": "ci"}}
CI_BOT_HEARTBEAT = {"type": "service.heartbeat", "data": {"instance": "ci-bot-1"}}


class HistoryContract:
    """`cars events` and `cars replay` over the history a real `cars up` recorded, on one kind of store."""

    @pytest.fixture
    def store_cars(self, cars_on_redis: Cars) -> Cars:
        raise NotImplementedError

    def tamper(self, cars: Cars, sql: str) -> None:
        """Change the live views behind CARS's back."""
        raise NotImplementedError

    @pytest.fixture
    def history(self, store_cars: Cars, bus: RedisCli) -> Iterator[Cars]:
        """A `cars up` that recorded a registration and a heartbeat of ci-bot-1, then was stopped."""
        with running_platform(store_cars) as platform:
            bus.xadd("cars.commands", "message", json.dumps(CI_BOT_REGISTER))
            platform.wait_for_service("ci-bot-1")
            bus.xadd("cars.commands", "message", json.dumps(CI_BOT_HEARTBEAT))
            eventually(lambda: platform.get("/events", type="service.heartbeat_recorded").json()["events"],
                       "the heartbeat is recorded", details=platform.process.describe)
            assert platform.process.interrupt() == 0, platform.process.describe()
        yield store_cars

    def test_events_prints_the_history_and_replay_checks_the_views_against_it(self, history: Cars) -> None:
        # When the user prints the history as JSON lines
        events = [json.loads(line) for line in history.ok("events", "--json").splitlines()]

        # Then it is every event in notification-log order, as wire envelopes
        positions = [e["position"] for e in events]
        assert positions == list(range(1, len(events) + 1)), positions
        ci_bot = [e["type"] for e in events if e["data"].get("instance") == "ci-bot-1"]
        assert ci_bot == ["service.registered", "service.heartbeat_recorded"]
        platforms = [e for e in events if e["type"] == "service.registered" and e["data"]["role"] == "platform"]
        assert len(platforms) == 1
        # And the readable form shows the same events, one line each, position first
        lines = history.ok("events").splitlines()
        assert [int(line.split()[0]) for line in lines] == positions
        assert [line.split()[3] for line in lines] == [e["type"] for e in events]
        assert '"instance":"ci-bot-1"' in lines[positions.index(_position_of(events, "service.heartbeat_recorded"))]
        # And --type, --after and --limit select from it
        registered = _position_of(events, "service.registered", "ci-bot-1")
        only = history.ok("events", "--json", "--type", "service.heartbeat_recorded").splitlines()
        assert [json.loads(line)["type"] for line in only] == ["service.heartbeat_recorded"]
        later = [json.loads(line)["position"] for line in history.ok("events", "--json", "--after", str(registered))
                 .splitlines()]
        assert later == [p for p in positions if p > registered]
        assert len(history.ok("events", "--limit", "1").splitlines()) == 1
        # But an unknown type is refused
        done = history.run("events", "--type", "service.explode")
        assert done.returncode != 0 and "unknown type(s) service.explode" in done.stderr

        # When the views the `cars up` left behind are checked against a rebuild from the history
        done = history.run("replay", "--check")
        # Then they match
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.startswith("replay check: every view matches its rebuild")
        assert re.search(r"^services @ \d+: identical$", done.stdout, re.M), done.stdout

        # Given a view changed behind CARS's back
        self.tamper(history, "UPDATE cars_v_services SET role = 'tampered' WHERE instance = 'ci-bot-1'")
        # When it is checked
        done = history.run("replay", "--check")
        # Then the check fails, naming the row and the column that differ
        assert done.returncode == 1, done.stdout + done.stderr
        assert "services @" in done.stdout and "1 changed" in done.stdout
        assert "changed instance='ci-bot-1': role: live 'tampered', rebuilt 'ci'" in done.stdout

        # When the view is rebuilt from position 0
        rebuilt = history.ok("replay", "--view", "services")
        # Then it matches the history again
        assert re.fullmatch(r"rebuilt services up to position \d+", rebuilt.strip()), rebuilt
        assert history.run("replay", "--check").returncode == 0
        # And an unknown view is refused
        done = history.run("replay", "--view", "nope")
        assert done.returncode != 0 and "unknown view(s) nope" in done.stderr


def _position_of(events: list[dict[str, Any]], type_: str, instance: str = "ci-bot-1") -> int:
    [position] = [e["position"] for e in events if e["type"] == type_ and e["data"].get("instance") == instance]
    return int(position)


class TestHistorySQLite(HistoryContract):
    @pytest.fixture
    def store_cars(self, cars_on_redis: Cars) -> Cars:
        return cars_on_redis  # CARS_STORE unset: SQLite under CARS_HOME

    def tamper(self, cars: Cars, sql: str) -> None:
        with sqlite3.connect(cars.home / "views.sqlite") as conn:
            assert conn.execute(sql).rowcount == 1


@pytest.mark.postgres
class TestHistoryPostgres(HistoryContract):
    @pytest.fixture
    def store_cars(self, cars_on_redis: Cars, postgres_env: dict[str, str]) -> Cars:
        pg = {k: v for k, v in postgres_env.items() if k.startswith("POSTGRES_")}
        return cars_on_redis.with_env(CARS_STORE="postgres", **pg)

    def tamper(self, cars: Cars, sql: str) -> None:
        import psycopg
        from psycopg import sql as pgsql

        from bus.store import postgres_conninfo

        env = {k: v for k, v in cars.env.items() if k.startswith("POSTGRES_")}
        with psycopg.connect(postgres_conninfo(env), autocommit=True) as conn:
            conn.execute(pgsql.SQL("SET search_path TO {}").format(pgsql.Identifier(env["POSTGRES_SCHEMA"])))
            assert conn.execute(sql).rowcount == 1  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- dlq retry


def test_dlq_retry_puts_a_dead_letter_back_on_its_stream(
    platform: Platform, bus: RedisCli, cars_on_redis: Cars,
) -> None:
    # Given a dead letter of a valid command that kept failing for a reason since cleared
    message = '{"type":"service.register","data":{"instance":"retried-bot","role":"ci"}}'
    dlq_id = bus.xadd(
        "cars.dlq", "message", message, "reason", "failed 5 deliveries; last error: OperationalError: locked",
        "stream", "cars.commands", "group", "registry", "original_id", "1-1", "deliveries", "5",
        "failed_at", "2026-11-23T10:00:00+00:00",
    )

    # When the operator retries it
    out = cars_on_redis.ok("dlq", "retry", dlq_id)

    # Then it is back on cars.commands, as it was, and no longer in cars.dlq
    match = re.fullmatch(rf"requeued {dlq_id} as (\d+-\d+)", out.strip())
    assert match, out
    assert (match.group(1), {"message": message}) in bus.xrange("cars.commands")
    assert dlq_id not in {i for i, _ in bus.xrange("cars.dlq")}
    # And CARS processes it this time
    platform.wait_for_service("retried-bot")
    # And it cannot be retried twice
    again = cars_on_redis.run("dlq", "retry", dlq_id)
    assert again.returncode == 1 and f"no dead letter with id {dlq_id}" in again.stderr

    # Given a real dead letter: poison XADDed with redis-cli, dead-lettered once (by whichever group saw it first)
    bus.xadd("cars.commands", "message", "definitely not json")

    def registry_letters() -> list[tuple[str, dict[str, str]]]:
        return [(i, f) for i, f in bus.xrange("cars.dlq") if f["message"] == "definitely not json"]

    [(first_id, first)] = eventually(registry_letters, "the poison is dead-lettered")
    # When it is retried
    requeued = cars_on_redis.ok("dlq", "retry", first_id).strip().rsplit(" ", 1)[1]
    # Then it is on cars.commands again, and goes round: dead-lettered anew, pointing at the requeued entry
    assert (requeued, {"message": "definitely not json"}) in bus.xrange("cars.commands")
    [(second_id, second)] = eventually(
        lambda: [e for e in registry_letters() if e[1]["original_id"] == requeued],
        "the requeued poison is dead-lettered again",
    )
    assert second["message"] == "definitely not json" and second_id != first_id
    assert first["original_id"] != requeued
    # And the letter that was retried is gone
    assert first_id not in {i for i, _ in bus.xrange("cars.dlq")}


def test_dlq_retry_of_something_that_is_not_an_entry_id_fails(cars_on_redis: Cars, bus: RedisCli) -> None:
    done = cars_on_redis.run("dlq", "retry", "not-an-id")
    assert done.returncode == 1
    assert "is not a stream entry id" in done.stderr
