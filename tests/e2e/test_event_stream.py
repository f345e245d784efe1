"""GET /events/stream on a real `cars up`: a connected client must not hold up Ctrl-C."""

from __future__ import annotations

import threading

import httpx

from tests.e2e.conftest import TIMEOUT_S, Platform, eventually


def test_ctrl_c_ends_a_connected_event_stream_and_cars_up_exits_0(platform: Platform) -> None:
    # Given a client following the event stream of a running `cars up` from the start of the log
    lines: list[str] = []
    ended: list[str] = []

    def follow() -> None:
        url = f"http://127.0.0.1:{platform.http_port}/events/stream"
        try:
            with httpx.stream("GET", url, params={"after": 0}, timeout=httpx.Timeout(5.0, read=None)) as response:
                lines.extend(response.iter_lines())
            ended.append("cleanly")
        except httpx.HTTPError as exc:
            ended.append(f"with {exc!r}")

    client = threading.Thread(target=follow, daemon=True)
    client.start()
    eventually(lambda: any(line.startswith("data:") and "service.registered" in line for line in lines),
               "the stream delivered the platform's own service.registered", details=platform.process.describe)

    # When the user presses Ctrl-C
    code = platform.process.interrupt()

    # Then `cars up` exits 0, the stream ended as a complete response, and no request was cut off
    assert code == 0, platform.process.describe()
    client.join(TIMEOUT_S)
    assert ended == ["cleanly"], platform.process.describe()
    output = platform.process.output()
    assert "Exception in ASGI application" not in output
    assert "timeout graceful shutdown exceeded" not in output
