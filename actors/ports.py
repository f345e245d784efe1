"""The small interfaces actors get from the bus (passed in, never imported from bus/)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from attrs import frozen

from contracts import Envelope

Clock = Callable[[], dt.datetime]


class Cause(Protocol):
    """What caused a decision: a message envelope, or a `Tick` for timed work such as sweeps."""

    @property
    def id(self) -> uuid.UUID: ...

    @property
    def correlation_id(self) -> str: ...


@frozen(kw_only=True)
class Tick:
    """A timed cause. Give it an id derived from what it is about, so that two processes doing the
    same timed work produce the same causation and the second one is a no-op."""

    id: uuid.UUID
    correlation_id: str = ""


class Decide(Protocol):
    def __call__(self, history: Sequence[Envelope[Any]]) -> Sequence[Any]: ...


class Aggregates(Protocol):
    """Runs a decision against one aggregate's history and appends what it decides."""

    async def execute(self, stream_id: uuid.UUID, cause: Cause, decide: Decide) -> list[int]:
        """Load the stream, skip if `cause` was already handled, append `decide(history)`.

        Returns the notification positions of what was appended (empty when nothing was).
        """
        ...

    async def history(self, stream_id: uuid.UUID) -> list[Envelope[Any]]: ...
