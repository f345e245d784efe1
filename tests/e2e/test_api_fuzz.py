"""Schemathesis against a real `cars up` on loopback: no generated request gets a 5xx.

Every operation of the OpenAPI document is called with requests generated from its schema, valid and
invalid ones (bounded examples, a fixed seed). The coverage phase (systematic boundary values) is left
out: over ~2,400 requests it took 150 s on the shared 2-core machine, too long for CI. Commands that
are accepted go onto the bus of the platform under test, whose actors process or dead-letter them; the
test also checks it is still alive.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import COMMAND_TIMEOUT_S, Platform

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
EXAMPLES_PER_OPERATION = 10


def test_no_generated_request_gets_a_server_error(platform: Platform, tmp_path: Path) -> None:
    # Given a ready `cars up` (the `platform` fixture) and its OpenAPI document
    url = f"http://127.0.0.1:{platform.http_port}/openapi.json"

    # When schemathesis calls every operation with generated requests, checking for 5xx
    done = subprocess.run(
        [str(SCHEMATHESIS), "run", url, "--checks", "not_a_server_error", "--max-examples",
         str(EXAMPLES_PER_OPERATION), "--workers", "1", "--seed", "20261123", "--request-timeout", "10",
         "--phases", "examples,fuzzing", "--no-color"],
        capture_output=True, text=True, timeout=4 * COMMAND_TIMEOUT_S, stdin=subprocess.DEVNULL,
        cwd=tmp_path,  # schemathesis keeps a .schemathesis/ folder in its working directory
    )

    # Then it finds none, and the platform is still up and ready
    assert done.returncode == 0, f"{done.stdout[-8000:]}\n{done.stderr[-2000:]}"
    assert re.search(r"\b[1-9][0-9]* passed\b", done.stdout), done.stdout[-3000:]  # requests were made
    platform.process.assert_running()
    assert platform.get("/ready").status_code == 200
