"""`cars env create|list|release`: ephemeral environments from templates, by hand."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

app = typer.Typer(help="Ephemeral environments: create one from a template, list them, release one.",
                  no_args_is_help=True)

WAIT_POLL_S = 0.2


def _fail(message: str, code: int = 2) -> NoReturn:
    from bus.cli import _fail as fail

    fail(message, code)


@app.command()
def create(
    template: Annotated[str, typer.Option(help="The template's name (`cars template list`)")] = "python",
    version: Annotated[str | None, typer.Option(help="The template version [default: the latest that is not "
                                                     "deprecated]")] = None,
    backend: Annotated[str | None, typer.Option(help="local or kubernetes [default: the template's, else "
                                                     "CARS_ENV_BACKEND]")] = None,
    repo: Annotated[Path | None, typer.Option(help="A project folder to copy into the environment's workspace")] = None,
    ttl: Annotated[int | None, typer.Option(help="Seconds until the environment expires [default: the "
                                                 "template's]", min=30, max=7 * 24 * 3600)] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until it is provisioned (or failed) and print it")] = False,
    timeout: Annotated[float, typer.Option(help="With --wait: give up after this many seconds")] = 300.0,
) -> None:
    """Ask the provisioner for an environment (`environment.request`); prints its id at once."""
    from bus.cli import _send, _settings
    from contracts import ContractError, Envelope
    from contracts.environments import RequestEnvironment

    if repo is not None and not repo.is_dir():
        _fail(f"{repo}: not a folder")
    settings = _settings()
    env_id = uuid.uuid4()
    try:
        command = RequestEnvironment(
            environment_id=env_id, template=template, template_version=version, backend=backend, ttl_s=ttl,
            repo_path=str(repo.resolve()) if repo else None, purpose="manual",
        )
    except (ContractError, ValueError) as exc:
        _fail(f"invalid request: {exc}")
    [(stream, entry_id)] = _send(settings, [Envelope(data=command)])
    typer.echo(f"environment {env_id} requested on {stream} as {entry_id}")
    if wait:
        _wait(settings, env_id, timeout)


def _wait(settings: Any, env_id: uuid.UUID, timeout_s: float) -> None:
    """Follow the environment's stream in the event store until it is provisioned or failed."""
    from bus.cli import _open_store
    from contracts.environments import EnvironmentFailed, EnvironmentProvisioned, EnvironmentRequested

    deadline = time.monotonic() + timeout_s
    while not (settings.home / "events.sqlite").exists() and settings.store == "sqlite":
        if time.monotonic() > deadline:
            _fail(f"no event store at {settings.home / 'events.sqlite'}: is CARS running on this CARS_HOME?", 1)
        time.sleep(WAIT_POLL_S)
    store = _open_store(settings)
    try:
        while True:
            history = [e.data for e in store.load(env_id)]
            requested = next((e for e in history if isinstance(e, EnvironmentRequested)), None)
            failed = next((e for e in history if isinstance(e, EnvironmentFailed)), None)
            made = next((e for e in history if isinstance(e, EnvironmentProvisioned)), None)
            if failed is not None:
                _fail(f"environment {env_id} failed: {failed.reason}", 1)
            if made is not None and requested is not None:
                typer.echo(f"provisioned: {requested.template} {requested.template_version} on {made.backend}")
                typer.echo(f"  workspace  {made.workspace}")
                typer.echo(f"  expires    {made.expires_at.isoformat()}")
                for key, value in sorted(made.service_urls.items()):
                    typer.echo(f"  {key}={value}")
                return
            if time.monotonic() > deadline:
                _fail(f"environment {env_id} was not provisioned within {timeout_s:g}s "
                      f"({'requested' if requested else 'not even recorded: is the provisioner running?'})", 1)
            time.sleep(WAIT_POLL_S)
    finally:
        store.close()


@app.command("list")
def list_(
    all_: Annotated[bool, typer.Option("--all", help="Also released, expired and failed environments")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """List environments, newest first (the environments view): live ones, or --all."""
    from bus.template_cli import read_view
    from projections.environments import list_environments

    rows = read_view(lambda db: list_environments(db, live=not all_))
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo("no environments" if all_ else "no live environments (--all shows ended ones)")
        return
    typer.echo(f"{'ID':<36}  {'TEMPLATE':<24} {'BACKEND':<10} {'STATUS':<11} {'EXPIRES':<20} SERVICES")
    for r in rows:
        name = f"{r['template']} {r['version'] or ''}".strip()
        expires = (r["expires_at"] or "-")[:19]
        typer.echo(f"{r['environment_id']:<36}  {name:<24} {r['backend']:<10} {r['status']:<11} {expires:<20} "
                   f"{', '.join(r['services']) or '-'}")


@app.command()
def release(env_id: Annotated[str, typer.Argument(help="The environment's id (`cars env list`)")]) -> None:
    """Release an environment now (`environment.release`): its sandbox and services are removed."""
    from bus.cli import _send, _settings
    from contracts import Envelope
    from contracts.environments import ReleaseEnvironment

    try:
        eid = uuid.UUID(env_id)
    except ValueError:
        _fail(f"{env_id!r} is not an environment id (a UUID)")
    settings = _settings()
    [(stream, entry_id)] = _send(settings, [Envelope(data=ReleaseEnvironment(environment_id=eid))])
    typer.echo(f"release of {eid} sent to {stream} as {entry_id}")


__all__ = ["app"]
