"""The HTTP API of CARS: read-only queries over the store and its views, plus the command edge.

`create_api(deps)` builds the FastAPI app. Per DESIGN.md, projections/ never imports `bus`: the
composition root passes every capability in `ApiDeps` (reading the store, listing services, publishing
to the bus, readiness checks, the AsyncAPI document). Blocking callables run in worker threads.

Routes are declared in one place, `ROUTES`, and all of them appear in the OpenAPI document
(`/openapi.json`, `/docs`). Every 4xx/5xx body has one shape, `{"error": str, "errors": [str]}`,
where `errors` are `problem @ $.path` lines as `contracts` reports them (STYLE rule 10).

Inbound messages:

- `POST /ingest` takes `run.reported` only (test results).
- `POST /commands` takes every command type. `run.reported` is accepted there too and goes to the
  same stream as through `/ingest` (the answer names the stream), so a producer that only knows
  `/commands` still works.
- Events are refused on both: only CARS records events.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Annotated, Any, TypeVar

import anyio
import anyio.to_thread
import attrs
from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import contracts
from contracts import ContractError, Entry, Envelope, Kind
from contracts.limits import MAX_TEXT
from contracts.repairs import ApproveRepair, RejectRepair
from contracts.runs import RunReported
from contracts.schema import envelope_schema
from projections import environment_routes, security
from projections.db import MAX_IDLE, ViewDB
from projections.metrics_route import ROUTE as METRICS_ROUTE

log = logging.getLogger(__name__)

MAX_PAGE = 1000
T = TypeVar("T")
INGEST_TAG = contracts.by_class(RunReported).tag


@attrs.frozen(kw_only=True)
class ApiDeps:
    """Everything the API needs from the outside world, built by the composition root."""

    # (after, limit, types) -> items with `.position` and `.envelope`, in notification-log order. Blocking.
    read_events: Callable[[int, int, Sequence[str]], Sequence[Any]]
    # All events of one aggregate, oldest first; empty when it has none. Blocking.
    load_stream: Callable[[uuid.UUID], Sequence[Envelope[Any]]]
    # Rows of the services view. Blocking.
    list_services: Callable[[], list[dict[str, Any]]]
    # Put a command on its stream; returns (stream, entry id). Raises ValueError for an event.
    publish: Callable[[Envelope[Any]], Awaitable[tuple[str, str]]]
    # component -> "ok" or what is wrong with it.
    ready: Callable[[], Awaitable[dict[str, str]]]
    # The AsyncAPI document of the bus.
    asyncapi: Callable[[], dict[str, Any]]
    # Largest accepted request body (CARS_MAX_MESSAGE_BYTES).
    max_body_bytes: int
    # (body, project, run_id, commit, repo_path) -> RunReported from JUnit XML or the plugin's JSON.
    # Raises ValueError with a reason for a report it cannot read. Blocking.
    parse_report: Callable[[bytes, str, str, str | None, str | None], Any] | None = None
    # Rows of the heals view: (project, status) filters -> repairs; repair id -> its candidates. Blocking.
    list_repairs: Callable[[str | None, str | None], list[dict[str, Any]]] | None = None
    repair_candidates: Callable[[str], list[dict[str, Any]]] | None = None
    # The Prometheus text exposition of this process and the bus, read now (projections.metrics).
    metrics: Callable[[], Awaitable[bytes]] | None = None
    # The templates view: every template's summary; one template with all its versions (None: unknown). Blocking.
    list_templates: Callable[[], list[dict[str, Any]]] | None = None
    template_versions: Callable[[str], dict[str, Any] | None] | None = None
    # Rows of the environments view: (status, live only) -> environments. Blocking.
    list_environments: Callable[[str | None, bool], list[dict[str, Any]]] | None = None
    # A readiness check slower than this counts as a failure: a probe must answer.
    ready_timeout_s: float = 5.0
    # CARS_API_TOKEN: when set, every write needs it as a bearer token (projections/security.py).
    api_token: str | None = attrs.field(default=None, repr=False)
    # CARS_CORS_ORIGINS: browser origins allowed cross-origin; empty: CORS off.
    cors_origins: tuple[str, ...] = ()
    # The newest position in the notification log (0 when empty): where a live event stream starts. Blocking.
    max_position: Callable[[], int] | None = None
    # True once the process shuts down: long-lived responses (GET /events/stream) end, so the server can stop.
    stopping: Callable[[], bool] = lambda: False
    # GET /events/stream: seconds between store polls when nothing is new, and between heartbeat comments.
    stream_poll_s: float = 0.25
    stream_heartbeat_s: float = 15.0
    # The view database: the query routes of projections/api_views.py read the views in it. Blocking.
    views: ViewDB | None = None
    # (after entry id or "-", count) -> (dead letters of cars.dlq oldest first, as dicts; total in the DLQ).
    dead_letters: Callable[[str, int], Awaitable[tuple[list[dict[str, Any]], int]]] | None = None
    # The state of an aggregate after the given events (its first N), by the actors' own folds. Blocking.
    fold_aggregate: Callable[[Sequence[Envelope[Any]]], dict[str, Any]] | None = None


# ----------------------------------------------------------------------------- errors


class ApiError(Exception):
    """Root of the errors the API answers with; each subclass is one HTTP status."""

    status = 500

    def __init__(self, error: str, errors: Sequence[str] = ()) -> None:
        super().__init__(error)
        self.error = error
        self.errors = list(errors)


class BadRequest(ApiError):
    status = 400


class NotFound(ApiError):
    status = 404


class PayloadTooLarge(ApiError):
    status = 413


class BusUnavailable(ApiError):
    status = 503


# ----------------------------------------------------------------------------- response shapes


class ErrorBody(BaseModel):
    """Every error answer: a summary and `problem @ $.path` lines."""

    error: str = Field(examples=["invalid message"])
    errors: list[str] = Field(default_factory=list, examples=[["expected a string, got int @ $.data.run_id"]])


class Health(BaseModel):
    status: str = Field(examples=["ok"])


class Readiness(BaseModel):
    status: str = Field(description='"ok" when every component is, else "unavailable"', examples=["ok"])
    components: dict[str, str] = Field(
        description='component -> "ok" or what is wrong with it', examples=[{"redis": "ok", "store": "ok"}]
    )


class ServiceList(BaseModel):
    services: list[dict[str, Any]] = Field(description="Rows of the services view.")


class StoredEnvelope(BaseModel):
    """A recorded event in its wire form (the envelope every message travels in)."""

    # Fields are kept as the codec wrote them (strings, not re-parsed), and unknown envelope keys of a
    # newer codec pass through instead of being dropped.
    model_config = ConfigDict(extra="allow")

    type: str
    version: int
    id: str
    occurred_at: str
    correlation_id: str
    causation_id: str | None = None
    stream_id: str | None = None
    stream_version: int | None = None
    data: dict[str, Any]


class PositionedEnvelope(StoredEnvelope):
    position: int = Field(description="Position in the notification log: a total order of all events.")


class EventsPage(BaseModel):
    events: list[PositionedEnvelope]
    next_after: int = Field(description="Pass as `after` to get the next page (the last position seen).")


class AuditTrail(BaseModel):
    aggregate_id: uuid.UUID
    events: list[StoredEnvelope] = Field(description="The aggregate's history up to `version`, oldest first.")
    version: int = Field(description="The aggregate's version shown: the number of its events (or `at_version`).")
    latest_version: int | None = Field(default=None, description="The aggregate's current version.")
    state: dict[str, Any] | None = Field(
        default=None, description="The aggregate's state after these events, folded as the actors fold it.")


class Accepted(BaseModel):
    id: uuid.UUID = Field(description="The message id (filled in when the producer left it out).")
    type: str
    correlation_id: str = Field(description="Follow the conversation with this id.")
    stream: str = Field(description="The stream the message was added to.")
    entry_id: str = Field(description="The Redis stream entry id.")


# ----------------------------------------------------------------------------- helpers


async def _deps(request: Request) -> ApiDeps:
    # async: FastAPI would call a plain function in a worker thread, a thread hop on every request.
    deps: ApiDeps = request.app.state.deps
    return deps


Deps = Annotated[ApiDeps, Depends(_deps)]


def _known_tags() -> list[str]:
    return [e.tag for e in contracts.entries()]


def _body_too_large(size: int | None, limit: int) -> PayloadTooLarge:
    what = f"{size} bytes" if size is not None else f"more than {limit} bytes"
    return PayloadTooLarge(
        "message too large", [f"message is {what}; the limit is {limit} (CARS_MAX_MESSAGE_BYTES) @ $"]
    )


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused before it is parsed (or even fully read) when it is over `limit`."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _body_too_large(int(declared), limit)
    body = bytearray()
    async for chunk in request.stream():  # chunked uploads carry no length: count as we go
        body += chunk
        if len(body) > limit:
            raise _body_too_large(None, limit)
    return bytes(body)


def _check_route(obj: Any, accepts: Callable[[Entry], bool], endpoint: str) -> None:
    """Refuse events and types this endpoint does not take, before validating the whole message."""
    # Peeking at `type` (and nothing else) gives a precise answer for an event or a wrong endpoint
    # even when the rest of the message would not validate.
    tag = obj.get("type") if isinstance(obj, dict) else None
    entry = contracts.by_tag(tag) if isinstance(tag, str) else None
    if entry is None:
        return  # decode() reports a missing or unknown type, with the known list
    if entry.kind is Kind.EVENT:
        raise BadRequest(
            "events are recorded by CARS only",
            [f"{tag} is an event; producers send commands (see GET /asyncapi) @ $.type"],
        )
    if not accepts(entry):
        other = "/ingest" if entry.tag == INGEST_TAG else "/commands"
        raise BadRequest(
            "wrong endpoint", [f"{tag} is not accepted by {endpoint}; POST it to {other} @ $.type"]
        )


async def _accept(request: Request, deps: ApiDeps, accepts: Callable[[Entry], bool]) -> Accepted:
    raw = await _read_body(request, deps.max_body_bytes)
    try:
        obj = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest("invalid message", [f"not valid JSON: {exc} @ $"]) from None
    _check_route(obj, accepts, request.url.path)
    try:
        envelope = contracts.decode(obj)
    except ContractError as exc:
        raise BadRequest("invalid message", exc.errors) from None
    try:
        stream, entry_id = await deps.publish(envelope)
    except ValueError as exc:  # publish refuses events; _check_route should have caught them already
        raise BadRequest("invalid message", [f"{exc} @ $.type"]) from None
    except Exception as exc:
        # The message is valid; the bus did not take it. Tell the producer to retry rather than 500.
        log.exception("publishing %s %s failed", envelope.type, envelope.id)
        raise BusUnavailable("the bus did not accept the message; retry later") from exc
    return Accepted(
        id=envelope.id, type=envelope.type, correlation_id=envelope.correlation_id, stream=stream,
        entry_id=entry_id,
    )


def wanted_types(types: Sequence[str] | None) -> list[str]:
    """The `type` query values without repeats; BadRequest naming every unknown one."""
    wanted = list(dict.fromkeys(types or ()))
    known = _known_tags()
    unknown = [t for t in wanted if t not in known]
    if unknown:
        listing = ", ".join(known)
        raise BadRequest(
            "unknown message type",
            [f"unknown message type {t!r}; known types: {listing} @ $.query.type" for t in unknown],
        )
    return wanted


def encode_json(obj: Any) -> bytes:
    """`obj` as compact JSON, as FastAPI's JSONResponse writes it (for routes that encode in a worker thread)."""
    return json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


async def read_views(request: Request, read: Callable[[], T]) -> T:
    """`read()` (blocking) in a worker thread, with at most as many view reads at once as the view database
    keeps connections open (`projections.db.MAX_IDLE`): more threads only contend for the interpreter,
    and every one past that opened and closed a connection of its own per request."""
    limiter: anyio.CapacityLimiter = request.app.state.view_readers
    return await anyio.to_thread.run_sync(read, limiter=limiter)


def positioned(item: Any) -> dict[str, Any]:
    """A store item as the API shows it: its envelope plus its position in the notification log."""
    return {"position": item.position, **contracts.encode(item.envelope)}


# ----------------------------------------------------------------------------- endpoints


async def health() -> Health:
    """Liveness: the process answers. Touches nothing else."""
    return Health(status="ok")


async def ready(deps: Deps) -> JSONResponse:
    """Readiness: every component answers. 503 (same body) when one does not."""
    try:
        with anyio.fail_after(deps.ready_timeout_s):
            components = dict(await deps.ready())
    except TimeoutError:
        components = {"checks": f"timed out after {deps.ready_timeout_s:g} s"}
    except Exception as exc:
        log.exception("readiness check failed")
        components = {"checks": f"failed: {type(exc).__name__}"}
    ok = bool(components) and all(v == "ok" for v in components.values())
    body = Readiness(status="ok" if ok else "unavailable", components=components)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


async def services(request: Request, deps: Deps) -> ServiceList:
    """Registered services and their last heartbeat (the services view)."""
    rows = await read_views(request, deps.list_services)
    return ServiceList(services=list(rows))


async def events(
    deps: Deps,
    after: Annotated[int, Query(ge=0, description="Return events after this position.")] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="At most this many events.")] = 100,
    types: Annotated[
        list[str] | None,
        Query(alias="type", description="Only these message types (repeatable); see GET /asyncapi for all."),
    ] = None,
) -> EventsPage:
    """A page of the event log in store order. Follow `next_after` to read on."""
    wanted = wanted_types(types)
    items = await anyio.to_thread.run_sync(deps.read_events, after, limit, wanted)
    page = [positioned(item) for item in items]
    return EventsPage.model_validate(
        {"events": page, "next_after": page[-1]["position"] if page else after}
    )


async def audit(
    deps: Deps, aggregate_id: Annotated[uuid.UUID, Path(description="The aggregate (stream) id.")],
    at_version: Annotated[int | None, Query(ge=1, description="Show the aggregate as it was after its first N "
                                            "events [default: now].")] = None,
) -> AuditTrail:
    """The history of one aggregate, oldest first, and its state: now, or as it was at `at_version`."""
    history = await anyio.to_thread.run_sync(deps.load_stream, aggregate_id)
    if not history:
        raise NotFound("not found", [f"no events for aggregate {aggregate_id} @ $.path.aggregate_id"])
    latest = len(history)
    if at_version is not None and at_version > latest:
        raise NotFound("not found", [f"aggregate {aggregate_id} has {latest} event(s), no version {at_version} "
                                     "@ $.query.at_version"])
    shown = history[:at_version] if at_version is not None else history
    fold = deps.fold_aggregate
    state = await anyio.to_thread.run_sync(fold, shown) if fold is not None else None
    return AuditTrail.model_validate({
        "aggregate_id": aggregate_id,
        "events": [contracts.encode(e) for e in shown],
        "version": len(shown), "latest_version": latest, "state": state,
    })


async def ingest(request: Request, deps: Deps) -> Accepted:
    """Report a test run: a `run.reported` envelope. It is put on the ingest stream for the monitor.

    `id`, `occurred_at` and `correlation_id` may be left out; the answer carries the ones CARS chose.
    """
    return await _accept(request, deps, lambda e: e.tag == INGEST_TAG)


async def commands(request: Request, deps: Deps) -> Accepted:
    """Send any command (`heal.request`, `repair.approve`, ...) to the actor that owns it.

    `run.reported` is accepted too and goes where `POST /ingest` puts it. Events are refused.
    """
    return await _accept(request, deps, lambda e: e.kind is Kind.COMMAND)


async def runs(
    request: Request, deps: Deps,
    project: Annotated[str, Query(min_length=1, max_length=512, description="The project the run belongs to.")],
    run_id: Annotated[str | None, Query(max_length=512, description="The run's id [default: a new one].")] = None,
    commit: Annotated[str | None, Query(max_length=512, description="The commit that was tested.")] = None,
    repo_path: Annotated[str | None, Query(max_length=512, description="The project's folder on the CARS host, "
                                           "so CARS can propose repairs.")] = None,
) -> Accepted:
    """Report a test run as JUnit XML (pytest, Surefire, jest-junit, gotestsum) or the CARS pytest
    plugin's JSON. It is converted to one `run.reported` and put on the ingest stream."""
    if deps.parse_report is None:
        raise NotFound("not found", ["this process does not parse reports @ $.path"])
    raw = await _read_body(request, deps.max_body_bytes)
    rid = run_id or f"run-{uuid.uuid4().hex[:12]}"
    parse = deps.parse_report
    try:
        run = await anyio.to_thread.run_sync(lambda: parse(raw, project, rid, commit, repo_path))
    except ValueError as exc:
        raise BadRequest("invalid report", [f"{exc} @ $"]) from None
    envelope = Envelope(data=run, correlation_id=rid)
    try:
        stream, entry_id = await deps.publish(envelope)
    except Exception as exc:
        log.exception("publishing run %s failed", rid)
        raise BusUnavailable("the bus did not accept the message; retry later") from exc
    return Accepted(id=envelope.id, type=envelope.type, correlation_id=rid, stream=stream, entry_id=entry_id)


async def approve_repair(
    deps: Deps, repair_id: Annotated[uuid.UUID, Path(description="The repair id.")],
    by: Annotated[str, Query(min_length=1, max_length=512, description="Who approves.")] = "api",
) -> Accepted:
    """Approve a validated repair: sends `repair.approve`; CARS then applies the patch."""
    with _contract_params():
        command = ApproveRepair(repair_id=repair_id, by=by)
    return await _send_repair_command(deps, Envelope(data=command))


async def reject_repair(
    deps: Deps, repair_id: Annotated[uuid.UUID, Path(description="The repair id.")],
    reason: Annotated[str, Query(min_length=1, max_length=MAX_TEXT, description="Why it is refused.")],
    by: Annotated[str, Query(min_length=1, max_length=512, description="Who rejects.")] = "api",
) -> Accepted:
    """Refuse a validated repair: sends `repair.reject`; CARS records it and never applies the patch."""
    with _contract_params():
        command = RejectRepair(repair_id=repair_id, reason=reason, by=by)
    return await _send_repair_command(deps, Envelope(data=command))


@contextlib.contextmanager
def _contract_params() -> Iterator[None]:
    """A query parameter the command's contract refuses (e.g. `by` of only blanks or control characters,
    which its length bounds let through) is a 422 like any invalid parameter, not a 500."""
    try:
        yield
    except ValueError as exc:
        raise RequestValidationError([{"loc": ("query",), "msg": str(exc), "type": "value_error"}]) from None


async def _send_repair_command(deps: ApiDeps, envelope: Envelope[Any]) -> Accepted:
    try:
        stream, entry_id = await deps.publish(envelope)
    except Exception as exc:
        log.exception("publishing %s of %s failed", envelope.type, envelope.data.repair_id)
        raise BusUnavailable("the bus did not accept the message; retry later") from exc
    return Accepted(id=envelope.id, type=envelope.type, correlation_id=envelope.correlation_id, stream=stream,
                    entry_id=entry_id)


async def asyncapi(deps: Deps) -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document of the bus: streams, entry layout and every message schema."""
    return deps.asyncapi()


# ----------------------------------------------------------------------------- the routes, in one place


def _body_doc(tags: list[str]) -> dict[str, Any]:
    refs = {tag: f"#/components/schemas/{tag}" for tag in tags}
    if len(tags) == 1:
        schema: dict[str, Any] = {"$ref": refs[tags[0]]}
    else:
        schema = {
            "oneOf": [{"$ref": ref} for ref in refs.values()],
            "discriminator": {"propertyName": "type", "mapping": refs},
        }
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


_BAD_PARAMS = {422: _error("A query or path parameter is invalid.")}
_SEND_ERRORS = {
    400: _error("Not JSON, not a valid message, an event, or a type this endpoint does not take."),
    413: _error("The body is over CARS_MAX_MESSAGE_BYTES; it was not read."),
    503: _error("The bus did not accept the message; retry later."),
}
_COMMAND_TAGS = [e.tag for e in contracts.entries() if e.kind is Kind.COMMAND]

ROUTES: list[dict[str, Any]] = [
    {"path": "/health", "endpoint": health, "methods": ["GET"], "tags": ["operations"],
     "summary": "Liveness"},
    {"path": "/ready", "endpoint": ready, "methods": ["GET"], "tags": ["operations"], "summary": "Readiness",
     "response_model": Readiness,
     "responses": {503: {"model": Readiness, "description": "A component is not ready."}}},
    {"path": "/services", "endpoint": services, "methods": ["GET"], "tags": ["queries"],
     "summary": "Registered services"},
    {"path": "/events", "endpoint": events, "methods": ["GET"], "tags": ["queries"],
     "summary": "Read the event log",
     "responses": {400: _error("A `type` is not a known message type."), **_BAD_PARAMS}},
    {"path": "/audit/{aggregate_id}", "endpoint": audit, "methods": ["GET"], "tags": ["queries"],
     "summary": "Audit one aggregate, now or at a version",
     "responses": {404: _error("The aggregate has no events, or fewer than at_version."), **_BAD_PARAMS}},
    {"path": "/ingest", "endpoint": ingest, "methods": ["POST"], "tags": ["commands"],
     "summary": "Report a test run", "status_code": 202, "responses": _SEND_ERRORS,
     "openapi_extra": _body_doc([INGEST_TAG])},
    {"path": "/commands", "endpoint": commands, "methods": ["POST"], "tags": ["commands"],
     "summary": "Send a command", "status_code": 202, "responses": _SEND_ERRORS,
     "openapi_extra": _body_doc(_COMMAND_TAGS)},
    {"path": "/runs", "endpoint": runs, "methods": ["POST"], "tags": ["commands"],
     "summary": "Report a test run as JUnit XML or CARS plugin JSON", "status_code": 202,
     "responses": {**_SEND_ERRORS, **_BAD_PARAMS},
     "openapi_extra": {"requestBody": {"required": True, "content": {
         "application/xml": {"schema": {"type": "string"}}, "application/json": {"schema": {"type": "object"}}}}}},
    {"path": "/repairs/{repair_id}/approve", "endpoint": approve_repair, "methods": ["POST"], "tags": ["commands"],
     "summary": "Approve a validated repair", "status_code": 202,
     "responses": {503: _SEND_ERRORS[503], **_BAD_PARAMS}},
    {"path": "/repairs/{repair_id}/reject", "endpoint": reject_repair, "methods": ["POST"], "tags": ["commands"],
     "summary": "Reject a validated repair", "status_code": 202,
     "responses": {503: _SEND_ERRORS[503], **_BAD_PARAMS}},
    {"path": "/asyncapi", "endpoint": asyncapi, "methods": ["GET"], "tags": ["specification"],
     "summary": "AsyncAPI document of the bus"},
    METRICS_ROUTE,
]
ROUTES += environment_routes.routes()

TAGS = [
    {"name": "operations", "description": "Liveness and readiness probes."},
    {"name": "queries", "description": "Read-only views of the event store."},
    {"name": "commands", "description": "Put messages on the bus. Only commands: CARS records the events."},
    {"name": "specification", "description": "Machine-readable descriptions of the wire format."},
]


# ----------------------------------------------------------------------------- error translation


def _error_response(status: int, error: str, errors: Sequence[str] = ()) -> JSONResponse:
    return JSONResponse(ErrorBody(error=error, errors=list(errors)).model_dump(), status_code=status)


async def _on_api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return _error_response(exc.status, exc.error, exc.errors)


async def _on_invalid_params(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    lines = [f"{e['msg']} @ $." + ".".join(str(p) for p in e["loc"]) for e in exc.errors()]
    return _error_response(422, "invalid request", lines)


async def _on_http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return _error_response(exc.status_code, str(exc.detail).lower(), [])


class _InternalErrors:
    """Turns an unexpected exception into a generic 500: logged here, never shown to the client."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception:
            incident = uuid.uuid4().hex[:12]
            log.exception("unhandled error in %s %s (incident %s)", scope["method"], scope["path"], incident)
            if started:  # too late for a clean answer; the server drops the connection
                raise
            await _error_response(500, f"internal error (incident {incident}); see the CARS log")(
                scope, receive, send
            )


# ----------------------------------------------------------------------------- the app


def _message_schemas() -> dict[str, Any]:
    """Every envelope schema, with its nested `$defs` lifted into OpenAPI components."""
    schemas: dict[str, Any] = {}
    for entry in contracts.entries():
        schema = envelope_schema(entry)
        for name, definition in schema.pop("$defs", {}).items():
            nested = _components_refs(definition)
            if schemas.setdefault(name, nested) != nested:
                raise RuntimeError(f"two message types define different nested schemas named {name!r}")
        schema.pop("$schema", None)
        schema.pop("$id", None)  # an $id would make `#` mean this schema instead of the document
        schemas[entry.tag] = _components_refs(schema)
    return schemas


def _components_refs(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            k: ("#/components/schemas/" + v.removeprefix("#/$defs/"))
            if k == "$ref" and isinstance(v, str) and v.startswith("#/$defs/") else _components_refs(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_components_refs(v) for v in node]
    return node


def _add_operator_routes(app: FastAPI) -> None:
    """The live event stream and the dashboard. Their modules build on this one (`Deps`, the errors),
    so they are imported when an app is built rather than at the top of this module."""
    from projections import dashboard, event_stream

    for route in [*event_stream.ROUTES, *dashboard.ROUTES]:
        app.add_api_route(**route)


def _untraced(scope: Any) -> bool:
    """Reads and probes make no span: only a request that can put a message on the bus does."""
    return scope.get("method") in security.READ_METHODS


def _telemetry() -> dict[str, Any]:
    """FastAPI's own OpenTelemetry (0.16x; older versions have none): a span per write request, so that a
    client's `traceparent` header is continued by the command it sends, but no spans for reads, which
    take part in no trace (at 32 connections, a span per GET halved the requests served: issue 5,
    figure 4), no spans for FastAPI's inner steps, and no OpenTelemetry metrics (GET /metrics serves
    CARS's own)."""
    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    return {"telemetry": {"exclude": _untraced, "operation_spans": False, "metrics": False}}


def create_api(deps: ApiDeps) -> FastAPI:
    """The CARS HTTP API over `deps`."""
    app = FastAPI(
        **_telemetry(),
        title="CARS",
        summary="Continuous Auto-Repair Service: query the event history, send commands.",
        description=__doc__,
        version="1",
        openapi_tags=TAGS,
    )
    app.state.deps = deps
    app.state.view_readers = anyio.CapacityLimiter(MAX_IDLE)
    for route in ROUTES:
        app.add_api_route(**route)
    _add_operator_routes(app)
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(RequestValidationError, _on_invalid_params)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_middleware(_InternalErrors)
    security.install(app, token=deps.api_token, max_body_bytes=deps.max_body_bytes, cors_origins=deps.cors_origins,
                     respond=_error_response, too_large=_body_too_large)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, summary=app.summary, description=app.description,
                routes=app.routes, tags=app.openapi_tags,
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for name, message_schema in _message_schemas().items():
                if name in components:
                    raise RuntimeError(f"OpenAPI schema name {name!r} is used twice")
                components[name] = message_schema
            if deps.api_token:
                security.document(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


# The operator surface's query routes live in their own module and are appended here, to the one list.
from projections.api_views import ROUTES as _VIEW_ROUTES  # noqa: E402  (it imports this module)

ROUTES += _VIEW_ROUTES
