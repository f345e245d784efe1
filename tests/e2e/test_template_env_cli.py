"""`cars template` and `cars env` as a user runs them, against a real `cars up` (real Redis, SQLite store,
local environment backend)."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

from tests.e2e.conftest import Cars, Platform, eventually

TEMPLATE_TOML = """\
name = "team-cache"
version = "1.0.0"
description = "Python with a Redis cache"
default_ttl_s = 600

[quota]
cpu = "2"
memory = "2Gi"
pods = 3

[[services]]
name = "cache"
kind = "redis"
image = "redis"
version = "7.4-alpine"
port = 6379
resources = { cpu = "250m", memory = "256Mi" }
"""


# Every command's --help is run by tests/e2e/test_cli.py::test_help_of_every_command_exits_0_and_names_its_options.


def test_env_create_help_names_every_option(cars: Cars) -> None:
    text = cars.ok("env", "create", "--help")
    for option in ("--template", "--version", "--backend", "--repo", "--ttl", "--wait", "--timeout"):
        assert option in text


def test_a_bad_template_file_is_refused_before_anything_is_sent_with_field_paths(cars: Cars, tmp_path: Path) -> None:
    # Given no bus at all (nothing could be sent), and files that break the rules
    duplicated = tmp_path / "dup.toml"
    duplicated.write_text(TEMPLATE_TOML + TEMPLATE_TOML[TEMPLATE_TOML.index("[[services]]"):])
    wrong_types = tmp_path / "bad.json"
    wrong_types.write_text(json.dumps({"name": "team-cache", "version": "one", "default_ttl_s": "long"}))
    not_toml = tmp_path / "broken.toml"
    not_toml.write_text("name = = 'x'")
    # When each is published
    dup = cars.run("template", "publish", str(duplicated))
    bad = cars.run("template", "publish", str(wrong_types))
    broken = cars.run("template", "publish", str(not_toml))
    missing = cars.run("template", "publish", str(tmp_path / "nope.toml"))
    # Then each is refused with the problem and its path, and nothing is said about the bus
    assert dup.returncode == 2
    assert "service name 'cache' is used twice (also by services[0]) @ $.services[1].name" in dup.stderr
    assert bad.returncode == 2
    assert "expected an integer, got str @ $.default_ttl_s" in bad.stderr
    assert broken.returncode == 2 and "not valid TOML or JSON" in broken.stderr
    assert missing.returncode == 2 and "no such file" in missing.stderr
    assert all("Traceback" not in d.stderr for d in (dup, bad, broken, missing))


def test_reading_views_before_cars_up_ever_ran_says_so(cars: Cars) -> None:
    for args in (("template", "list"), ("env", "list")):
        done = cars.run(*args)
        assert done.returncode == 2 and "no views at" in done.stderr, done.stderr


def test_env_release_refuses_a_malformed_id(cars: Cars) -> None:
    done = cars.run("env", "release", "not-an-id")
    assert done.returncode == 2 and "'not-an-id' is not an environment id" in done.stderr


def test_templates_and_environments_end_to_end(platform: Platform, cars_on_redis: Cars, tmp_path: Path) -> None:
    cars = cars_on_redis
    # Given a running CARS: the built-in templates are listed
    eventually(lambda: "python-postgres" in cars.ok("template", "list"), "the built-in templates are listed",
               details=platform.process.describe)
    listed = {row["name"]: row for row in json.loads(cars.ok("template", "list", "--json"))}
    assert listed["full-stack"]["services"] == ["postgres", "redis"] and listed["full-stack"]["latest"] == "1.0.0"
    shown = cars.ok("template", "show", "python-postgres")
    assert "postgres: postgres postgres:16.4-alpine port 5432" in shown

    # When a team publishes its own template from TOML
    spec = tmp_path / "team.toml"
    spec.write_text(TEMPLATE_TOML)
    assert "template team-cache 1.0.0 sent to cars.commands" in cars.ok("template", "publish", str(spec))
    eventually(lambda: cars.run("template", "show", "team-cache").returncode == 0, "the template is shown",
               details=platform.process.describe)
    # Then publishing the same again changes nothing, and another body under 1.0.0 is refused
    assert "already published with this body: nothing to do" in cars.ok("template", "publish", str(spec))
    spec.write_text(TEMPLATE_TOML.replace("7.4-alpine", "7.2-alpine"))
    changed = cars.run("template", "publish", str(spec))
    assert changed.returncode == 1 and "already published with a different body" in changed.stderr
    # And the HTTP API shows it too
    assert platform.get("/templates/team-cache").json()["latest"] == "1.0.0"

    # When an environment is created from it and waited for
    out = cars.ok("env", "create", "--template", "team-cache", "--ttl", "300", "--wait", "--timeout", "60")
    env_id = re.search(r"environment ([0-9a-f-]{36}) requested", out)
    assert env_id is not None, out
    env = env_id.group(1)
    # Then it is provisioned with its Redis
    assert "provisioned: team-cache 1.0.0 on local" in out
    assert re.search(r"REDIS_URL=redis://127\.0\.0\.1:\d+/0", out), out
    # And `cars env list` and GET /environments show it live
    eventually(lambda: env in cars.ok("env", "list"), "the environment is listed", details=platform.process.describe)
    row = next(r for r in json.loads(cars.ok("env", "list", "--json")) if r["environment_id"] == env)
    assert (row["template"], row["version"], row["backend"], row["status"], row["services"]) == (
        "team-cache", "1.0.0", "local", "provisioned", ["cache"])
    assert [r["environment_id"] for r in platform.get("/environments", live="true").json()["environments"]] == [env]

    # When a version that does not exist is asked for
    bad = cars.run("env", "create", "--template", "team-cache", "--version", "9.9.9", "--wait", "--timeout", "60")
    # Then the request fails with the reason
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "has no version 9.9.9; published: 1.0.0" in bad.stderr

    # When the environment is released
    assert f"release of {env} sent" in cars.ok("env", "release", env)
    # Then it is no longer live, and --all shows it released
    eventually(lambda: env not in cars.ok("env", "list"), "the environment leaves the live list",
               details=platform.process.describe)
    ended = {r["environment_id"]: r["status"] for r in json.loads(cars.ok("env", "list", "--all", "--json"))}
    assert ended[env] == "released"
    assert str(uuid.UUID(env)) == env
