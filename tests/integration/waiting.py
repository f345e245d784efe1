"""Waiting, in async tests, for something a running consumer, relay or API does."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio
import pytest


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 15.0) -> None:
    """Until `check()` is true; fails the test, saying `what` it waited for, after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting until {what}")
        await anyio.sleep(0.02)
