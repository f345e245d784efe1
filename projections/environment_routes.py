"""HTTP routes over the templates and environments views: `GET /templates`, `/templates/{name}`,
`/environments`. `projections.api` adds `ROUTES` to its route list; the views are read through `ApiDeps`.
"""

from __future__ import annotations

from typing import Annotated, Any

import anyio.to_thread
from fastapi import Path, Query

from projections import api as _api  # the module, not its names: api.py imports this module


async def templates(deps: _api.Deps) -> dict[str, Any]:
    """Every environment template: its latest usable version, every version, which are deprecated."""
    if deps.list_templates is None:
        raise _api.NotFound("not found", ["this process serves no templates view @ $.path"])
    return {"templates": await anyio.to_thread.run_sync(deps.list_templates)}


async def template(
    deps: _api.Deps,
    name: Annotated[str, Path(max_length=63, description="The template's name, e.g. python-postgres.")],
) -> dict[str, Any]:
    """One template with every published version (lowest first), each with its full spec and deprecation."""
    if deps.template_versions is None:
        raise _api.NotFound("not found", ["this process serves no templates view @ $.path"])
    found = await anyio.to_thread.run_sync(deps.template_versions, name)
    if found is None:
        raise _api.NotFound("not found", [f"no template named {name!r} @ $.path.name"])
    return found


async def environments(
    deps: _api.Deps,
    status: Annotated[str | None, Query(description="Only environments in this status (requested, provisioned, "
                                        "failed, released, expired).")] = None,
    live: Annotated[bool, Query(description="Only environments that are requested or provisioned.")] = False,
) -> dict[str, Any]:
    """Environments, newest request first: template and version, backend, status, workspace, expiry, services."""
    if deps.list_environments is None:
        raise _api.NotFound("not found", ["this process serves no environments view @ $.path"])
    listing = deps.list_environments
    return {"environments": await anyio.to_thread.run_sync(lambda: listing(status, live))}


def routes() -> list[dict[str, Any]]:
    not_found = {404: {"model": _api.ErrorBody, "description": "No such template."}}
    return [
        {"path": "/templates", "endpoint": templates, "methods": ["GET"], "tags": ["queries"],
         "summary": "List environment templates"},
        {"path": "/templates/{name}", "endpoint": template, "methods": ["GET"], "tags": ["queries"],
         "summary": "One template and all its versions", "responses": not_found},
        {"path": "/environments", "endpoint": environments, "methods": ["GET"], "tags": ["queries"],
         "summary": "List environments"},
    ]


__all__ = ["environments", "routes", "template", "templates"]
