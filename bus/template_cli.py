"""`cars template list|show|publish`: environment templates in the registry."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

app = typer.Typer(help="Environment templates: list them, show one's versions, publish a new version.",
                  no_args_is_help=True)


def _fail(message: str, code: int = 2) -> NoReturn:
    from bus.cli import _fail as fail

    fail(message, code)


def _views(settings: Any) -> Any:
    from projections.db import ViewDB

    if settings.store == "sqlite" and not (settings.home / "views.sqlite").exists():
        _fail(f"no views at {settings.home / 'views.sqlite'} (set CARS_HOME, or run `cars up` first)")
    return ViewDB.from_store_env(settings.store_env(), settings.home)


def read_view(read: Any) -> Any:
    """`read(db)` on the views of the configured store; a view not built yet ends the command with one line."""
    from bus.cli import _settings

    settings = _settings()
    db = _views(settings)
    try:
        return read(db)
    except Exception as exc:  # a missing table: no `cars up` has run its projections on this store yet
        _fail(f"the views could not be read ({type(exc).__name__}: {exc}); has `cars up` run on this store?", 1)
    finally:
        db.close()


def load_spec_file(path: Path) -> Any:
    """A TemplateSpec from a TOML or JSON file; every problem ends the command with its field path."""
    from actors.registry.templates import problems
    from contracts import ContractError, structure
    from contracts.values import TemplateSpec

    if not path.is_file():
        _fail(f"{path}: no such file")
    text = path.read_text(encoding="utf-8")
    doc: Any
    try:
        if path.suffix.lower() == ".toml":
            doc = tomllib.loads(text)
        elif path.suffix.lower() == ".json":
            doc = json.loads(text)
        else:
            try:
                doc = json.loads(text)
            except json.JSONDecodeError:
                doc = tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        _fail(f"{path}: not valid TOML or JSON: {exc}")
    if isinstance(doc, dict) and isinstance(doc.get("template"), dict) and len(doc) == 1:
        doc = doc["template"]  # a TOML file may put everything under [template]
    try:
        spec = structure(doc, TemplateSpec)
    except ContractError as exc:
        _fail(f"{path}: invalid template:\n  " + "\n  ".join(exc.errors))
    found = problems(spec, root="$")
    if found:
        _fail(f"{path}: invalid template:\n  " + "\n  ".join(found))
    return spec


@app.command("list")
def list_(as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False) -> None:
    """List every template with its latest usable version (the templates view)."""
    from projections.templates import list_templates

    rows = read_view(list_templates)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo("no templates (the registry publishes the built-in ones when CARS starts)")
        return
    typer.echo(f"{'NAME':<20} {'LATEST':<10} {'VERSIONS':<18} SERVICES")
    for r in rows:
        versions = ", ".join(v + (" (deprecated)" if v in r["deprecated_versions"] else "") for v in r["versions"])
        typer.echo(f"{r['name']:<20} {r['latest'] or '-':<10} {versions:<18} {', '.join(r['services']) or '-'}")


@app.command()
def show(
    name: Annotated[str, typer.Argument(help="The template's name, e.g. python-postgres")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Show one template: every version with its services, quota and deprecation."""
    from projections.templates import template_versions

    found = read_view(lambda db: template_versions(db, name))
    if found is None:
        _fail(f"no template named {name!r}; `cars template list` shows them", 1)
    if as_json:
        typer.echo(json.dumps(found, indent=2))
        return
    typer.echo(f"{found['name']}  latest: {found['latest'] or '- (every version is deprecated)'}")
    for v in found["versions"]:
        spec = v["spec"]
        flag = f"  DEPRECATED{': ' + v['deprecation_reason'] if v['deprecation_reason'] else ''}" if v["deprecated"] \
            else ""
        typer.echo(f"\n  {v['version']}{flag}  (published {v['published_at']})")
        if spec.get("description"):
            typer.echo(f"    {spec['description']}")
        quota = spec["quota"]
        typer.echo(f"    runner {spec['runner_image']}  ttl {spec['default_ttl_s']}s  quota cpu {quota['cpu']} "
                   f"memory {quota['memory']} pods {quota['pods']}  backend {spec.get('backend') or 'default'}")
        for s in spec["services"]:
            typer.echo(f"    - {s['name']}: {s['kind']} {s['image']}:{s['version']} port {s['port']} "
                       f"cpu {s['resources']['cpu']} memory {s['resources']['memory']}")


@app.command()
def publish(
    file: Annotated[Path, typer.Argument(help="The template as TOML or JSON (the fields of a TemplateSpec; "
                                               "`cars schema template.publish` shows them)")],
) -> None:
    """Publish a template version. Versions are immutable: the same body again changes nothing; another
    body under a published version is refused. Checked here first, with field paths for every problem."""
    import contracts
    from bus.cli import _send, _settings
    from contracts import Envelope
    from contracts.registry import PublishTemplate
    from projections.templates import template_versions

    spec = load_spec_file(file)
    settings = _settings()
    views_exist = settings.store != "sqlite" or (settings.home / "views.sqlite").exists()
    existing = read_view(lambda db: template_versions(db, spec.name)) if views_exist else None
    for v in (existing or {}).get("versions", []):
        if v["version"] != spec.version:
            continue
        if v["spec"] == json.loads(json.dumps(contracts.unstructure(spec))):
            typer.echo(f"{spec.name} {spec.version} is already published with this body: nothing to do")
            return
        _fail(f"{spec.name} {spec.version} is already published with a different body; versions are immutable: "
              "publish the change as a new version", 1)
    [(stream, entry_id)] = _send(settings, [Envelope(data=PublishTemplate(spec=spec))])
    typer.echo(f"template {spec.name} {spec.version} sent to {stream} as {entry_id}")


__all__ = ["app", "load_spec_file", "read_view"]
