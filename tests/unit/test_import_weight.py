"""What the processes that serve no HTTP import: `cars repair` (bus.repair_session) and `cars worker`
(bus.runtime without the API) start faster without FastAPI, whose import was ~0.5 s of each
`cars repair` (a heal's start-up, before its first test run). Run in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, sys
import bus.repair_session, bus.runtime
print(json.dumps(sorted(m for m in ("fastapi", "starlette", "projections.api") if m in sys.modules)))
"""


def test_the_runtime_and_cars_repair_import_no_http_framework() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=120)
    assert json.loads(out.stdout) == []


def test_the_api_still_has_its_metrics_route() -> None:
    from projections.api import METRICS_ROUTE

    assert METRICS_ROUTE["path"] == "/metrics"
