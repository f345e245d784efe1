"""Every call to the Kubernetes API server goes through one `ApiGuard`: a per-request timeout, retries
with exponential backoff and jitter for transient faults, and a circuit breaker shared by all calls.

Libraries, and why:
- tenacity (`AsyncRetrying`) for the retries: the most used retry library on PyPI, maintained, typed,
  native asyncio support, with the backoff-with-jitter policy built in.
- purgatory (`AsyncCircuitBreakerFactory`) for the breaker: written for asyncio (an `async with`
  context, no threads, no tornado), typed, and it lets us say which errors count as failures. The
  alternatives were aiobreaker (no release since 2021) and pybreaker/circuitbreaker (sync first; their
  async paths are bolted on).

What counts as a transient fault: no connection, a timeout, or the server answering 429 or 5xx. An
answer such as 404, 409 or 403 is the server working; it is neither retried nor counted against the
breaker. When the breaker is open, calls fail at once, without touching the network, with
`BackendUnavailable`; so does a call whose retries ran out. After `breaker_reset_s` one trial call is
let through (half-open): success closes the breaker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
from attrs import frozen
from kubernetes_asyncio.client import ApiException
from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import OpenedState
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from actors.provisioner.errors import BackendUnavailable

T = TypeVar("T")
CIRCUIT = "kube-apiserver"
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


@frozen(kw_only=True)
class CallPolicy:
    """Timeouts, retries and the breaker (seconds). Tests shrink these."""

    request_timeout_s: float = 10.0
    attempts: int = 4
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 8.0
    breaker_threshold: int = 5  # consecutive failed attempts that open the breaker
    breaker_reset_s: float = 30.0  # how long it stays open before one trial call


def is_transient(exc: BaseException) -> bool:
    """A fault worth retrying: the server did not answer, or answered that it is overloaded or broken."""
    if isinstance(exc, OpenedState):
        return False
    if isinstance(exc, ApiException):
        return exc.status in RETRYABLE_STATUS
    return isinstance(exc, aiohttp.ClientError | asyncio.TimeoutError | ConnectionError)


def _answered(exc: BaseException) -> bool:
    """True for an ApiException that is the server working (not a breaker failure)."""
    return isinstance(exc, ApiException) and exc.status not in RETRYABLE_STATUS


class ApiGuard:
    """Runs API calls with the policy above. One per backend instance (the breaker is its state)."""

    def __init__(self, policy: CallPolicy = CallPolicy()) -> None:
        self.policy = policy
        self._breakers = AsyncCircuitBreakerFactory(
            default_threshold=policy.breaker_threshold, default_ttl=policy.breaker_reset_s,
        )
        self.opened = 0  # how often the breaker opened (a metric; tests read it)
        self._breakers.add_listener(self._on_event)

    def _on_event(self, name: str, event_name: str, event: Any) -> None:
        if event_name == "state_changed" and getattr(event, "state", None) == "opened":
            self.opened += 1

    async def state(self) -> str:
        """closed, opened or half-opened."""
        breaker = await self._breakers.get_breaker(CIRCUIT)
        return str(breaker.context.state)

    async def call(self, what: str, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """`await fn(*args, **kwargs)` with a request timeout, retries and the breaker.

        Raises the ApiException of a definite answer (404, 409, 403, ...) as it is, and
        BackendUnavailable when the server cannot be reached.
        """
        kwargs.setdefault("_request_timeout", self.policy.request_timeout_s)
        policy = self.policy
        retrying = AsyncRetrying(
            stop=stop_after_attempt(policy.attempts),
            wait=wait_exponential_jitter(multiplier=policy.backoff_initial_s, max=policy.backoff_max_s,
                                         jitter=policy.backoff_initial_s),
            retry=retry_if_exception(is_transient),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    breaker = await self._breakers.get_breaker(CIRCUIT, exclude=[(ApiException, _answered)])
                    async with breaker:
                        return await fn(*args, **kwargs)
        except OpenedState:
            raise BackendUnavailable(
                f"{what}: the Kubernetes API server failed repeatedly; not calling it for up to "
                f"{policy.breaker_reset_s:g}s (circuit breaker open)"
            ) from None
        except Exception as exc:
            if is_transient(exc):
                detail = f"answered {exc.status} {exc.reason}" if isinstance(exc, ApiException) else (
                    f"cannot be reached: {type(exc).__name__}: {exc}")
                raise BackendUnavailable(f"{what}: the Kubernetes API server {detail} "
                                         f"({policy.attempts} attempts)") from exc
            raise
        raise AssertionError("unreachable: tenacity either returns, or raises")  # pragma: no cover


__all__ = ["CIRCUIT", "ApiGuard", "CallPolicy", "is_transient"]
