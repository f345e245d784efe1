# CARS tasks. `just --list` shows them. Every recipe uses the project's own .venv.

set shell := ["bash", "-euo", "pipefail", "-c"]

venv := justfile_directory() / ".venv"
py := venv / "bin/python"

# Show the recipes
default:
    @just --list

# Create .venv and install CARS with its dev tools (idempotent: reinstalls only when pyproject.toml changed)
setup:
    #!/usr/bin/env bash
    set -euo pipefail
    [ -x "{{py}}" ] || python3 -m venv "{{venv}}"
    stamp="{{venv}}/.cars-installed"
    want=$(sha256sum pyproject.toml | cut -d' ' -f1)
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        "{{py}}" -m pip install -q --upgrade pip
        "{{py}}" -m pip install -q -e '.[dev]'
        echo "$want" > "$stamp"
    fi

# Run the whole platform (actors, relay, projections, HTTP API on 127.0.0.1:8080)
up *ARGS: setup
    {{venv}}/bin/cars up {{ARGS}}

# Run actors only, for scale-out (e.g. `just worker --actors registry`)
worker *ARGS: setup
    {{venv}}/bin/cars worker {{ARGS}}

# The whole test suite: unit, integration and end-to-end
test *ARGS: setup
    {{venv}}/bin/pytest -q -p no:cacheprovider tests {{ARGS}}

# Pure unit tests (no I/O)
test-unit *ARGS: setup
    {{venv}}/bin/pytest -q tests/unit {{ARGS}}

# Integration tests: real Redis, real SQLite/PostgreSQL, real subprocesses
test-integration *ARGS: setup
    {{venv}}/bin/pytest -q tests/integration {{ARGS}}

# End-to-end tests: the `cars` CLI driven as a user would
test-e2e *ARGS: setup
    {{venv}}/bin/pytest -q tests/e2e {{ARGS}}

# Benchmarks: each figure printed beside a baseline measured in the same run (bench/README.md; options: --help)
bench *ARGS: setup
    {{py}} -c "import matplotlib" 2>/dev/null || {{py}} -m pip install -q -e '.[dev,bench]'
    {{py}} bench/run_all.py {{ARGS}}

# Lint and type-check
lint: setup
    {{venv}}/bin/ruff check contracts bus actors projections tests bench
    {{venv}}/bin/mypy

# Heal benchmark: real projects broken by source refactors, healed by `cars repair` (e.g. `just heal-bench --only tinydb`)
heal-bench *ARGS: setup
    {{py}} bench/heal/run.py {{ARGS}}

# GET /statistics under wrk at N repairs beside GET /health (default 100,000 repairs; building them takes minutes)
stats-bench *ARGS: setup
    {{py}} bench/statistics_api.py {{ARGS}}
