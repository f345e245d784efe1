"""Guards of the HTTP API: bearer token on writes, request-size limit, cross-origin writes, CORS.

- **Token.** When a token is configured (`CARS_API_TOKEN`), every request that can change something
  (any method but GET, HEAD and OPTIONS; today: every POST) needs `Authorization: Bearer <token>`,
  compared in constant time (`hmac.compare_digest`). Otherwise: 401 with the API's error body and
  `WWW-Authenticate: Bearer`. Reads stay open.
- **Size.** A request body over the limit is refused with 413, before the route runs when it declares
  its length, and as soon as the count passes the limit when it is chunked: for every route, including
  ones that read their body through FastAPI rather than the API's own reader.
- **Cross-origin writes.** A browser always sends `Origin` on a cross-origin POST, even one it sends
  without asking (a "simple" request, no CORS preflight). A write whose `Origin` is neither this API's
  own nor a listed one is refused with 403, so that a web page cannot make a browser on the same machine
  post commands (CSRF) to an API that runs without a token on loopback.
- **CORS** is off unless origins are listed (`CARS_CORS_ORIGINS`); then those origins, and only they,
  may call the API from a browser (GET and POST, with the `Authorization` header).
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# (status, error, errors) -> the API's error response.
Respond = Callable[[int, str, Sequence[str]], Response]
# (declared size or None, limit) -> the exception the API turns into its 413 answer.
TooLarge = Callable[[int | None, int], Exception]


def is_loopback(host: str) -> bool:
    """True when `host` only listens on this machine (127.0.0.0/8, ::1, localhost)."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # any other name may resolve to anything: treat it as exposed


def exposed_without_token(host: str, token: str | None) -> str | None:
    """Why serving on `host` without a token is refused, or None when it is allowed."""
    if token or is_loopback(host):
        return None
    return (f"refusing to serve the API on {host}, which is not a loopback address, without a token: "
            "set CARS_API_TOKEN (at least 16 characters) so that only holders of it can POST, "
            "or serve on 127.0.0.1")


def bearer_matches(header: str | None, token: str) -> bool:
    """`Authorization: Bearer <token>`, the token compared in constant time."""
    if not header:
        return False
    scheme, _, given = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


class _BodyTooLarge(Exception):
    pass


class ApiGuard:
    """ASGI middleware applying the token, cross-origin and size rules above."""

    def __init__(self, app: ASGIApp, *, token: str | None, max_body_bytes: int, allowed_origins: Sequence[str],
                 respond: Respond, too_large: TooLarge) -> None:
        self.app = app
        self.token = token
        self.limit = max_body_bytes
        self.allowed_origins = frozenset(allowed_origins)
        self.respond = respond
        self.too_large = too_large

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = self._refusal(scope["method"], headers)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self.app(scope, self._counting(receive), send)

    def _refusal(self, method: str, headers: dict[str, str]) -> Response | None:
        if method not in READ_METHODS:
            if self.token is not None and not bearer_matches(headers.get("authorization"), self.token):
                response = self.respond(401, "unauthorized", [
                    "this endpoint needs `Authorization: Bearer <CARS_API_TOKEN>` @ $.headers.authorization"])
                response.headers["WWW-Authenticate"] = 'Bearer realm="cars"'
                return response
            origin = headers.get("origin")
            if origin is not None and not self._origin_allowed(origin, headers.get("host", "")):
                return self.respond(403, "cross-origin request refused", [
                    f"origin {origin} may not send commands; list it in CARS_CORS_ORIGINS @ $.headers.origin"])
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            exc: Any = self.too_large(int(declared), self.limit)
            return self.respond(413, exc.error, exc.errors)
        return None

    def _origin_allowed(self, origin: str, host: str) -> bool:
        if origin in self.allowed_origins or "*" in self.allowed_origins:
            return True
        return urlsplit(origin).netloc.lower() == host.lower()  # same origin: the dashboard's own page

    def _counting(self, receive: Receive) -> Receive:
        """`receive`, raising the API's 413 error once a chunked body passes the limit."""
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise self.too_large(None, self.limit)
            return message

        return counted


def install(app: FastAPI, *, token: str | None, max_body_bytes: int, cors_origins: Sequence[str],
            respond: Respond, too_large: TooLarge) -> None:
    """Add the guard (and CORS, when origins are listed, outside it so that preflights are answered)."""
    app.add_middleware(ApiGuard, token=token, max_body_bytes=max_body_bytes, allowed_origins=tuple(cors_origins),
                       respond=respond, too_large=too_large)
    if cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type", "Last-Event-ID"])


def document(schema: dict[str, Any]) -> None:
    """Declare the bearer scheme in the OpenAPI document, on every operation that needs it (called when
    the server has a token: the document describes the server as it runs)."""
    schema.setdefault("components", {}).setdefault("securitySchemes", {})["bearer"] = {
        "type": "http", "scheme": "bearer",
        "description": "CARS_API_TOKEN; required on every write when the server has one.",
    }
    for operations in schema.get("paths", {}).values():
        for method, operation in operations.items():
            if method.upper() not in READ_METHODS and isinstance(operation, dict):
                operation["security"] = [{"bearer": []}]
                operation.setdefault("responses", {}).setdefault(
                    "401", {"description": "A token is configured and this request does not carry it."})
