"""Sending one notification to one target: timeouts, retries with backoff, a circuit breaker per target.

Libraries, and why:

- retries: `tenacity` (`AsyncRetrying`), the de-facto standard for retry policies in Python, actively
  released; exponential backoff with jitter, a stop condition, and a predicate for what is worth retrying.
- circuit breaker: `purgatory`, an asyncio-native breaker (typed, `async with breaker:`), one breaker per
  target name: it opens after `breaker_failures` consecutive failed attempts, refuses calls without
  touching the network while open, and lets a trial through (half-open) after `breaker_reset_s`; the
  trial's success closes it, its failure opens it again. Its state lives in this process (each notifier
  process protects its own calls). `aiobreaker` was not chosen: no release since 2021. `circuitbreaker`
  only checks the open state in its decorator, not in `call_async`, and `pybreaker`'s async support
  needs tornado.
- HTTP: `httpx`, already used by the project.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
from attrs import frozen
from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import OpenedState
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from actors.errors import ActorError
from actors.notifier import signing
from actors.notifier.bodies import render
from actors.notifier.config import NotifierSettings, WebhookTarget
from contracts import Envelope, natural_id

USER_AGENT = "CARS-notifier/1"


class DeliveryError(ActorError):
    """Root of the notifier's delivery errors: the target did not take the notification."""

    attempts = 0  # HTTP attempts made before giving up (set by `Sender.send`)


class TargetUnreachable(DeliveryError):
    """No HTTP answer: connection refused, DNS, or the timeout."""


class TargetRefused(DeliveryError):
    """The target answered, but not 2xx."""

    def __init__(self, target: str, status: int) -> None:
        super().__init__(f"{target} answered HTTP {status}")
        self.status = status


class CircuitOpen(DeliveryError):
    """The target's circuit is open: nothing was sent."""


@frozen(kw_only=True)
class Delivered:
    status_code: int
    attempts: int


def delivery_id(event_id: uuid.UUID, target: str) -> uuid.UUID:
    """One id per (event, target): the same on every retry and in every process."""
    return natural_id("notification", event_id, target)


def _worth_retrying(exc: BaseException) -> bool:
    if isinstance(exc, TargetUnreachable):
        return True
    # A 4xx other than timeout/too-many-requests will not change in a second; the retry queue keeps it.
    return isinstance(exc, TargetRefused) and (exc.status >= 500 or exc.status in (408, 429))


class Sender:
    """Delivers notifications over HTTP, one breaker per target name."""

    def __init__(self, settings: NotifierSettings, *, wall_clock: Callable[[], float] = time.time,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.settings = settings
        self.wall_clock = wall_clock
        self.transport = transport
        self.breakers = AsyncCircuitBreakerFactory(
            default_threshold=settings.breaker_failures, default_ttl=settings.breaker_reset_s,
        )

    async def circuit(self, target: str) -> str:
        """`closed`, `opened` or `half-opened`."""
        return (await self.breakers.get_breaker(target)).context.state

    async def send(self, target: WebhookTarget, envelope: Envelope[Any], *, attempts: int | None = None) -> Delivered:
        """POST the notification, retrying transient failures with backoff. Raises the last DeliveryError."""
        did = delivery_id(envelope.id, target.name)
        body = render(target.format, envelope, did, target.name)
        retrying = AsyncRetrying(
            stop=stop_after_attempt(attempts or self.settings.attempts),
            wait=wait_exponential_jitter(multiplier=self.settings.backoff_s, max=max(self.settings.backoff_s * 8, 0.01),
                                         jitter=self.settings.backoff_s),
            retry=retry_if_exception(_worth_retrying), reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    status = await self._attempt(target, envelope.type, did, body)
        except CircuitOpen as exc:
            exc.attempts = attempt.retry_state.attempt_number - 1
            raise
        except DeliveryError as exc:
            exc.attempts = attempt.retry_state.attempt_number
            raise
        return Delivered(status_code=status, attempts=attempt.retry_state.attempt_number)

    async def _attempt(self, target: WebhookTarget, event_type: str, did: uuid.UUID, body: bytes) -> int:
        breaker = await self.breakers.get_breaker(target.name)
        try:
            async with breaker:
                return await self._post(target, event_type, did, body)
        except OpenedState:
            raise CircuitOpen(f"{target.name}: circuit open after repeated failures; nothing sent") from None

    async def _post(self, target: WebhookTarget, event_type: str, did: uuid.UUID, body: bytes) -> int:
        headers = {
            "Content-Type": "application/json", "User-Agent": USER_AGENT,
            signing.DELIVERY_HEADER: str(did), signing.EVENT_HEADER: event_type,
            **signing.signed_headers(target.secret, int(self.wall_clock()), body),
        }
        try:
            async with httpx.AsyncClient(timeout=self.settings.timeout_s, transport=self.transport,
                                         follow_redirects=False) as client:
                response = await client.post(target.url, content=body, headers=headers)
        except httpx.TimeoutException:
            raise TargetUnreachable(f"{target.name}: no answer within {self.settings.timeout_s:g} s") from None
        except httpx.HTTPError as exc:
            raise TargetUnreachable(f"{target.name}: {type(exc).__name__}: {exc}") from None
        if not 200 <= response.status_code < 300:
            raise TargetRefused(target.name, response.status_code)
        return response.status_code
