"""The `cars` command line."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any, NoReturn

import anyio
import typer
from redis.exceptions import RedisError

from bus import env_cli, template_cli
from bus.settings import VARIABLES, Settings, SettingsError

app = typer.Typer(
    name="cars",
    help=(
        "CARS, the Continuous Auto-Repair Service. CI systems publish test results onto Redis Streams; "
        "CARS classifies failures, proposes repairs to test code, validates them, and records every "
        "decision as an event. Configuration comes from environment variables: see `cars config`."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
dlq_app = typer.Typer(help="Inspect and retry dead letters (messages CARS could not process).", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")
app.add_typer(template_cli.app, name="template")
app.add_typer(env_cli.app, name="env")


def _settings(**overrides: str) -> Settings:
    import os

    try:
        return Settings.from_env({**os.environ, **{k: v for k, v in overrides.items() if v}})
    except SettingsError as exc:
        _fail(f"configuration: {exc}")


def _fail(message: str, code: int = 2) -> NoReturn:
    typer.secho(f"cars: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _setup_logging(settings: Settings) -> None:
    from bus import logs

    logs.configure(settings.log_level, settings.log_json)


@app.command()
def up(
    host: Annotated[
        str | None, typer.Option(help="Address of the HTTP API [default: CARS_HTTP_HOST or 127.0.0.1]")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port of the HTTP API [default: CARS_HTTP_PORT or 8080]")] = None,
    actors: Annotated[str, typer.Option(
        help="Actors to run in this process: comma-separated, `all`, or `none` (only the API, the relay and "
             "the projections, with the actors in `cars worker` processes)")] = "all",
) -> None:
    """Run the whole platform in one process: every actor, the relay, the projections and the HTTP API.

    Without REDIS_URL an embedded redis-server is started on 127.0.0.1:CARS_EMBEDDED_REDIS_PORT (6380),
    keeping its data under CARS_HOME. Ctrl-C shuts down gracefully.
    """
    from bus import heap, runtime

    try:
        names = [] if actors.strip() == "none" else runtime.parse_actors(actors)
    except ValueError as exc:
        _fail(str(exc))
    settings = _settings(CARS_HTTP_HOST=host or "", CARS_HTTP_PORT=str(port) if port is not None else "")
    from projections.security import exposed_without_token

    if refusal := exposed_without_token(settings.http_host, settings.api_token):
        _fail(refusal)
    _setup_logging(settings)

    store_where = settings.store_env().get("SQLITE_DBNAME") or settings.postgres.get("POSTGRES_HOST", "")

    def ready(platform: runtime.Platform) -> None:
        heap.settle()  # everything is started: what exists now lives as long as the process
        bus = platform.settings.redis_url or f"redis://127.0.0.1:{settings.embedded_redis_port}/0 (embedded)"
        typer.echo(
            f"CARS {runtime.cars_version()} is up\n"
            f"  API      http://{settings.http_host}:{platform.http_port}  (docs at /docs)\n"
            f"  bus      {bus}\n"
            f"  store    {settings.store}: {store_where}\n"
            f"  consumer {settings.consumer}\n"
            "Press Ctrl-C to stop.",
            err=True,
        )

    _run(runtime.run_until_signal(
        settings, actors=names, role="platform", api=True, relay=True, projections=True,
        on_ready=ready,
    ))


@app.command()
def worker(
    actors: Annotated[str, typer.Option(help="Comma-separated actors to run, or `all`. Known: registry")] = "all",
) -> None:
    """Run actors only, for scale-out: start more workers to add consumers to each group.

    Each process has a unique consumer name (CARS_CONSUMER, default <hostname>-<pid>). Needs REDIS_URL,
    or a `cars up` running with the same CARS_HOME (its embedded Redis is used).
    """
    from bus import heap, runtime
    from bus.embedded import running_bus_url

    settings = _settings()
    _setup_logging(settings)
    try:
        names = runtime.parse_actors(actors)
        url = running_bus_url(settings)
    except (ValueError, RuntimeError) as exc:
        _fail(str(exc))
    settings = _settings(REDIS_URL=url)
    _run(runtime.run_until_signal(settings, actors=names, role="worker", api=False, relay=False, projections=False,
                                  on_ready=lambda _: heap.settle()))


@app.command()
def probe() -> None:
    """Exit 0 when this container's CARS process (`cars worker` or `cars up`) is alive, else 1.

    For liveness and readiness probes of workers, which have no HTTP port: a live process keeps its
    presence key in Redis fresh (every CARS_HEARTBEAT_S). The process is the one named by CARS_CONSUMER
    when set, else a `<hostname>-<pid>` process running here.
    """
    import os

    from bus.embedded import running_bus_url
    from bus.probe import ProbeFailed
    from bus.probe import probe as probe_presence

    settings = _settings()
    try:
        alive = probe_presence(running_bus_url(settings), os.environ)
    except (ProbeFailed, RuntimeError) as exc:
        _fail(str(exc), code=1)
    typer.echo(f"alive: {alive}")


def loop_options() -> dict[str, Any]:
    """The event loop of a long-running process: uvloop where it is installed (a dependency on Linux and
    macOS; it serves the HTTP API about twice as fast as asyncio's own loop), else asyncio's."""
    import importlib.util

    return {"use_uvloop": True} if importlib.util.find_spec("uvloop") is not None else {}


def _run(coro: Any) -> None:
    from bus.embedded import EmbeddedRedisError

    try:
        anyio.run(lambda: coro, backend_options=loop_options())
    except KeyboardInterrupt:
        pass
    except (EmbeddedRedisError, SettingsError, RuntimeError, OSError, RedisError) as exc:
        _fail(str(exc), code=1)


def _read_messages(source: str) -> list[Any]:
    if source == "-":
        text = sys.stdin.read()
    else:
        path = Path(source)
        if not path.is_file():
            _fail(f"{source}: no such file")
        text = path.read_text(encoding="utf-8")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        try:  # JSON lines
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            _fail(f"{source}: not JSON (one object, an array of objects, or one object per line): {exc}")
    return doc if isinstance(doc, list) else [doc]


@app.command()
def publish(
    source: Annotated[
        str, typer.Argument(help="A JSON file with one message, an array of them, or JSON lines; - for stdin")
    ],
) -> None:
    """Validate messages and publish each to the stream for its type (cars.ingest or cars.commands).

    Every message is checked before any is sent: on an error nothing is published and the problems
    are listed with their JSON paths. `id`, `occurred_at` and `correlation_id` may be left out.
    """
    from bus import streams
    from contracts import ContractError, decode

    settings = _settings()
    messages = _read_messages(source)
    envelopes = []
    problems: list[str] = []
    for i, raw in enumerate(messages):
        try:
            env = decode(raw)
            streams.inbound_stream(env.entry)
            envelopes.append(env)
        except ContractError as exc:
            problems += [f"message {i}: {e}" for e in exc.errors]
        except ValueError as exc:
            problems.append(f"message {i}: {exc}")
    if problems:
        _fail("nothing published:\n  " + "\n  ".join(problems))

    for env, (stream, entry_id) in zip(envelopes, _send(settings, envelopes), strict=True):
        typer.echo(f"published {env.type} to {stream} as {entry_id}")


def _send(settings: Settings, envelopes: list[Any]) -> list[tuple[str, str]]:
    """Put commands (or run.reported) on their inbound streams of the running bus: (stream, entry id) each.
    A missing or unreachable bus ends the command with one line."""
    from redis.asyncio import Redis

    from bus import wire
    from bus.embedded import running_bus_url

    async def go() -> list[tuple[str, str]]:
        client = Redis.from_url(running_bus_url(settings))
        try:
            return [await wire.publish_inbound(client, env, maxlen=settings.stream_maxlen) for env in envelopes]
        finally:
            await client.aclose()

    try:
        return anyio.run(go)
    except RuntimeError as exc:
        _fail(str(exc), code=1)
    except (OSError, RedisError) as exc:
        _fail(f"Redis unreachable: {exc}", code=1)


def _open_store(settings: Settings) -> Any:
    from bus.store import EventStore

    if settings.store == "sqlite" and not (settings.home / "events.sqlite").exists():
        _fail(f"no event store at {settings.home / 'events.sqlite'} (set CARS_HOME, or run `cars up` first)")
    return EventStore(settings.store_env())


@app.command()
def events(
    after: Annotated[int, typer.Option(help="Show events after this position")] = 0,
    limit: Annotated[int, typer.Option(help="At most this many events (without --follow)")] = 100,
    type_: Annotated[list[str] | None, typer.Option("--type", help="Only this type (repeatable)")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new events as they are stored")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line")] = False,
) -> None:
    """Print the event history from the store, oldest first."""
    import contracts

    settings = _settings()
    store = _open_store(settings)
    types = type_ or []
    unknown = [t for t in types if contracts.by_tag(t) is None]
    if unknown:
        _fail(f"unknown type(s) {', '.join(unknown)}; see `cars schema --list`")
    try:
        while True:
            batch = store.read(after=after, limit=limit if not follow else 500, types=types)
            for rec in batch:
                env = rec.envelope
                if as_json:
                    typer.echo(json.dumps({"position": rec.position, **contracts.encode(env)}))
                else:
                    data = json.dumps(contracts.unstructure(env.data), separators=(",", ":"))
                    typer.echo(f"{rec.position:>8}  {env.occurred_at:%Y-%m-%d %H:%M:%S}  {env.type:<28} {data[:160]}")
                after = rec.position
            if not follow:
                break
            if not batch:
                time.sleep(settings.poll_ms / 1000 * 4)
    except KeyboardInterrupt:
        pass
    finally:
        store.close()


@app.command()
def replay(
    view: Annotated[list[str] | None, typer.Option(help="Rebuild only this view (repeatable)")] = None,
    check: Annotated[
        bool, typer.Option(help="Rebuild into a scratch copy and compare with the live views; exit 1 if they differ")
    ] = False,
) -> None:
    """Rebuild query views from position 0 of the event history (events are never changed).

    With --check nothing live is touched: every view is rebuilt into scratch tables and compared
    with the live one. Without it, stop `cars up` first: the views are dropped and refilled.
    """
    from projections import replay as rp
    from projections.db import ViewDB
    from projections.views import default_views

    settings = _settings()
    store = _open_store(settings)
    db = ViewDB.from_store_env(settings.store_env(), settings.home)
    views = default_views()
    try:
        if check:
            report = rp.check(store, db, views)
            typer.echo(report.render())
            if not report.ok:
                raise typer.Exit(1)
            return
        try:
            positions = rp.rebuild(store, db, views, names=view)
        except ValueError as exc:
            _fail(str(exc))
        for name, pos in positions.items():
            typer.echo(f"rebuilt {name} up to position {pos}")
    finally:
        db.close()
        store.close()


@app.command()
def schema(
    message_type: Annotated[str | None, typer.Argument(help="One message type, e.g. run.reported")] = None,
    out: Annotated[Path | None, typer.Option(help="Write one <type>.schema.json per message into this folder")] = None,
    list_: Annotated[bool, typer.Option("--list", help="List message types with their kind and stream")] = False,
) -> None:
    """Print the JSON Schema (draft 2020-12) of every message type, or of one."""
    import contracts
    from bus import streams
    from contracts.schema import all_schemas

    schemas = all_schemas()
    if list_:
        for e in contracts.entries():
            where = streams.inbound_stream(e) if e.kind.value == "command" else streams.events_stream(e.area)
            typer.echo(f"{e.tag:<28} v{e.version}  {e.kind.value:<8} {where}")
        return
    if message_type is not None:
        if message_type not in schemas:
            _fail(f"unknown type {message_type!r}; `cars schema --list` shows them")
        schemas = {message_type: schemas[message_type]}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        for tag, doc in schemas.items():
            (out / f"{tag}.schema.json").write_text(json.dumps(doc, indent=2) + "\n")
        typer.echo(f"wrote {len(schemas)} schemas to {out}")
        return
    typer.echo(json.dumps(schemas if message_type is None else schemas[message_type], indent=2))


@app.command()
def config() -> None:
    """List every environment variable CARS reads, and the values in effect now."""
    settings = _settings()
    for key, meaning in VARIABLES.items():
        typer.echo(f"{key:<32} {meaning}")
    typer.echo("")
    typer.echo(f"in effect: home={settings.home} store={settings.store} bus={settings.redis_url or 'embedded'} "
               f"api={settings.http_host}:{settings.http_port} consumer={settings.consumer}")


def _dlq_client(settings: Settings) -> Any:
    from redis.asyncio import Redis

    from bus.embedded import running_bus_url

    try:
        return Redis.from_url(running_bus_url(settings))
    except RuntimeError as exc:
        _fail(str(exc), code=1)


@dlq_app.command("list")
def dlq_list(
    count: Annotated[int, typer.Option(help="At most this many")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line")] = False,
) -> None:
    """List dead letters, oldest first, with the reason each failed."""
    from bus.dlq import dlq_size, list_dead_letters

    settings = _settings()

    async def go() -> None:
        client = _dlq_client(settings)
        try:
            letters = await list_dead_letters(client, count=count)
            total = await dlq_size(client)
        finally:
            await client.aclose()
        for d in letters:
            if as_json:
                typer.echo(json.dumps(d.as_dict()))
            else:
                typer.echo(f"{d.id}  {d.stream}/{d.group}  deliveries={d.deliveries}  {d.reason[:200]}")
        if not as_json:
            typer.echo(f"{total} dead letter(s)", err=True)

    try:
        anyio.run(go)
    except (OSError, RedisError) as exc:
        _fail(f"Redis unreachable: {exc}", code=1)


@dlq_app.command("retry")
def dlq_retry(
    entry_id: Annotated[str, typer.Argument(help="The dead letter's id, as `cars dlq list` shows it")],
) -> None:
    """Put a dead letter back on the stream it came from, and remove it from the DLQ."""
    from bus.dlq import DeadLetterNotFound, retry_dead_letter

    settings = _settings()

    async def go() -> str:
        client = _dlq_client(settings)
        try:
            return await retry_dead_letter(client, entry_id, maxlen=settings.stream_maxlen)
        finally:
            await client.aclose()

    try:
        new_id = anyio.run(go)
    except DeadLetterNotFound as exc:
        _fail(str(exc), code=1)
    except (OSError, RedisError) as exc:
        _fail(f"Redis unreachable: {exc}", code=1)
    typer.echo(f"requeued {entry_id} as {new_id}")


@app.command()
def repair(
    path: Annotated[Path, typer.Argument(help="The project folder (its tests are run there)")],
    test_cmd: Annotated[str | None, typer.Option(
        help="How to run the tests [default: [tool.cars] test_cmd, else `python -m pytest -q`]")] = None,
    apply: Annotated[bool, typer.Option(
        "--apply", help="Write every validated repair into the project (recorded as approved by `cars repair`)",
    )] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print exactly one JSON object on stdout")] = False,
    project: Annotated[str | None, typer.Option(help="Project name [default: the folder's name]")] = None,
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds")] = 1800.0,
) -> None:
    """Run the tests at PATH and the whole repair loop on their failures, then print a summary.

    Everything goes through the bus and the event store: the run is published as `run.reported`,
    and the monitor, healer, validator and provisioner of a running `cars up` do the work (or of a
    platform started in this process when none is running). Progress goes to stderr. The exit code
    is 0 whenever the loop ran, whatever it healed.
    """
    from bus import repair_session

    root = path.resolve()
    if not root.is_dir():
        _fail(f"{path}: not a folder")
    settings = _settings()
    from bus import logs

    # The platform's INFO lines would drown the progress lines; CARS_LOG_LEVEL=DEBUG still shows them.
    logs.configure("WARNING" if settings.log_level == "INFO" else settings.log_level, settings.log_json)

    def progress(line: str) -> None:
        typer.echo(line, err=True)

    async def go() -> repair_session.SessionResult:
        return await repair_session.repair(settings, root, test_cmd=test_cmd, project=project, apply=apply,
                                           timeout_s=timeout, progress=progress)

    try:
        result = anyio.run(go)
    except KeyboardInterrupt:
        _fail("interrupted", code=130)
    except _loop_errors() as exc:
        _fail(str(exc), code=1)
    if as_json:
        typer.echo(json.dumps(result.to_json()))
        return
    typer.echo(f"run {result.run_id}: {result.results} results, {len(result.failures)} failures")
    if result.storm:
        typer.echo(f"infrastructure storm: {result.storm}")
    for r in result.repairs:
        how = f"{r.strategy} ({r.confidence:.2f})" if r.strategy else "-"
        applied = ", applied" if r.applied else ""
        typer.echo(f"  {r.status:<9} {r.test_id}  [{r.category}]  {how}{applied}  {r.detail}")
    if result.timed_out:
        typer.echo(f"timed out after {timeout:g}s; the loop goes on in the background if a platform runs")


def _loop_errors() -> tuple[type[BaseException], ...]:
    """Errors that end `cars repair` with a message instead of a traceback."""
    from actors.errors import ActorError
    from bus.embedded import EmbeddedRedisError

    return (ActorError, EmbeddedRedisError, OSError)


@app.command()
def report(
    file: Annotated[Path, typer.Argument(help="JUnit XML (pytest, Surefire, jest-junit, gotestsum) or the "
                                               "CARS pytest plugin's JSON; - for stdin")],
    project: Annotated[str, typer.Option(help="The project the run belongs to")],
    repo: Annotated[Path | None, typer.Option(help="The project's folder, so CARS can propose repairs")] = None,
    commit: Annotated[str | None, typer.Option(help="The commit that was tested")] = None,
    run_id: Annotated[str | None, typer.Option(help="The run's id [default: a new one]")] = None,
) -> None:
    """Publish a test report as one `run.reported` on cars.ingest (validated first)."""
    import uuid

    from actors.errors import Rejected
    from actors.monitor.ingest import parse_report
    from contracts import Envelope

    settings = _settings()
    data = sys.stdin.buffer.read() if str(file) == "-" else (file.read_bytes() if file.is_file() else None)
    if data is None:
        _fail(f"{file}: no such file")
    rid = run_id or f"run-{uuid.uuid4().hex[:12]}"
    try:
        run = parse_report(data, project=project, run_id=rid, commit=commit,
                           repo_path=str(repo.resolve()) if repo else None)
    except Rejected as exc:
        _fail(f"{file}: {exc}")

    [(stream, entry_id)] = _send(settings, [Envelope(data=run, correlation_id=rid)])
    failed = sum(1 for r in run.results if r.outcome.value in ("failed", "error"))
    typer.echo(f"published run {rid} ({len(run.results)} results, {failed} failing) to {stream} as {entry_id}")


@app.command()
def approve(
    repair_id: Annotated[str, typer.Argument(help="The repair's id (GET /repairs, or `cars repair` output)")],
    by: Annotated[str, typer.Option(help="Who approves (recorded in the event)")] = "cli",
) -> None:
    """Approve a validated repair: CARS then writes its patch into the project (`repair.applied`)."""
    import uuid

    from contracts import Envelope
    from contracts.repairs import ApproveRepair

    try:
        rid = uuid.UUID(repair_id)
    except ValueError:
        _fail(f"{repair_id!r} is not a repair id (a UUID)")
    settings = _settings()

    [(stream, entry_id)] = _send(settings, [Envelope(data=ApproveRepair(repair_id=rid, by=by))])
    typer.echo(f"approval of {rid} sent to {stream} as {entry_id}")


# Commands in modules of their own (they use the helpers above, so they are registered last).
from bus import cli_history, cli_quarantine  # noqa: E402

app.command()(cli_history.audit)
app.command()(cli_history.export)
app.add_typer(cli_quarantine.app, name="quarantine")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
