"""HMAC-SHA256 signatures of webhook bodies, and how a receiver checks them.

Every request carries:

- `X-CARS-Delivery`: the delivery id, the same on every retry of one (event, target): deduplicate on it;
- `X-CARS-Event`: the event type (`repair.completed`, ...);
- `X-CARS-Timestamp`: when this attempt was signed, in Unix seconds;
- `X-CARS-Signature`: `v1=` + hex HMAC-SHA256 over `<timestamp>.<raw body bytes>` with the target's secret.

A receiver recomputes the HMAC over the raw body it received (before parsing it), compares in
constant time, and refuses a timestamp more than a few minutes away from its clock (a replayed
request). `verify` below does exactly that; it is what the tests' receiver runs.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

DELIVERY_HEADER = "X-CARS-Delivery"
EVENT_HEADER = "X-CARS-Event"
TIMESTAMP_HEADER = "X-CARS-Timestamp"
SIGNATURE_HEADER = "X-CARS-Signature"
SCHEME = "v1"
TOLERANCE_S = 300


class SignatureError(ValueError):
    """A request whose signature does not check out; the message says why."""


def signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"{SCHEME}={mac.hexdigest()}"


def signed_headers(secret: str | None, timestamp: int, body: bytes) -> dict[str, str]:
    if secret is None:
        return {}
    return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: signature(secret, timestamp, body)}


def verify(secret: str, headers: Mapping[str, str], body: bytes, *, now: float,
           tolerance_s: float = TOLERANCE_S) -> None:
    """Check a received webhook; SignatureError when it is unsigned, stale, or signed with another secret.

    `headers` must look names up case-insensitively (as every HTTP library's header mapping does).
    """
    stamp, sent = headers.get(TIMESTAMP_HEADER), headers.get(SIGNATURE_HEADER)
    if not stamp or not sent:
        raise SignatureError(f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER}")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise SignatureError(f"{TIMESTAMP_HEADER} is not an integer") from None
    if abs(now - timestamp) > tolerance_s:
        raise SignatureError(f"{TIMESTAMP_HEADER} is more than {tolerance_s:g} s away from now")
    if not hmac.compare_digest(signature(secret, timestamp, body).encode(), sent.encode()):
        raise SignatureError("signature does not match the body")
