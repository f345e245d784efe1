"""Many processes opening the PostgreSQL event store of a fresh database at the same moment (a
deployment's pods starting together) all get a working store."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.postgres

OPEN_STORE = (
    "import json, sys\n"
    "from bus.store import EventStore\n"
    "store = EventStore(json.loads(sys.argv[1]))\n"
    "store.max_position()\n"
    "store.close()\n"
)


def test_processes_opening_a_fresh_store_together_all_succeed(postgres_env: dict[str, str]) -> None:
    import json

    # Given a fresh schema with no tables yet
    # When six processes open the store at once
    children = [subprocess.Popen([sys.executable, "-c", OPEN_STORE, json.dumps(postgres_env)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(6)]
    outcomes = [(c.wait(timeout=90), c.stderr.read() if c.stderr else "") for c in children]
    # Then every one of them works
    assert [code for code, _ in outcomes] == [0] * 6, [err[-600:] for code, err in outcomes if code]
