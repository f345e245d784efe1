"""The templates view: every published version of every environment template, and which are deprecated.

One row per (name, version), folded from the registry's events:

- `template.published`: the row is written from the spec (a version is immutable, so it is written once;
  the registry never records a second publication of one version);
- `template.deprecated`: the row is marked deprecated, with the reason.

`list_templates` and `template_versions` give what `GET /templates` and `cars template` show; the
latest usable version is chosen as the provisioner chooses it (`contracts.values.version_key`).
"""

from __future__ import annotations

import json
from typing import Any

import contracts
from contracts.registry import TemplateDeprecated, TemplatePublished
from contracts.values import version_key
from projections.db import Tx, ViewDB
from projections.views import LIVE_PREFIX, RecordedEvent, iso

COLUMNS = (
    "name", "version", "description", "runner_image", "backend", "services", "default_ttl_s", "spec",
    "deprecated", "deprecation_reason", "published_at", "updated_position",
)


class TemplatesView:
    """The `templates` view (see the module docstring). Table: `<prefix>templates`."""

    name: str = "templates"
    types: frozenset[str] = frozenset({"template.published", "template.deprecated"})
    key: tuple[str, ...] = ("name", "version")

    def table_names(self, prefix: str) -> list[str]:
        return [f"{prefix}templates"]

    def tables(self, prefix: str) -> list[str]:
        return [
            f"CREATE TABLE IF NOT EXISTS {prefix}templates ("
            "name TEXT NOT NULL, version TEXT NOT NULL, description TEXT NOT NULL, runner_image TEXT NOT NULL, "
            "backend TEXT, services TEXT NOT NULL, default_ttl_s BIGINT NOT NULL, spec TEXT NOT NULL, "
            "deprecated BIGINT NOT NULL, deprecation_reason TEXT NOT NULL, published_at TEXT NOT NULL, "
            "updated_position BIGINT NOT NULL, PRIMARY KEY (name, version))"
        ]

    def apply(self, tx: Tx, recorded: RecordedEvent, prefix: str) -> None:
        data = recorded.envelope.data
        if isinstance(data, TemplatePublished):
            spec = data.spec
            row = {
                "name": spec.name, "version": spec.version, "description": spec.description,
                "runner_image": spec.runner_image, "backend": spec.backend,
                "services": json.dumps([s.name for s in spec.services]), "default_ttl_s": spec.default_ttl_s,
                "spec": json.dumps(contracts.unstructure(spec), sort_keys=True), "deprecated": 0,
                "deprecation_reason": "", "published_at": iso(recorded.envelope.occurred_at),
                "updated_position": recorded.position,
            }
            tx.execute(
                f"INSERT INTO {prefix}templates ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)}) "
                "ON CONFLICT (name, version) DO NOTHING",
                tuple(row[c] for c in COLUMNS),
            )
        elif isinstance(data, TemplateDeprecated):
            tx.execute(
                f"UPDATE {prefix}templates SET deprecated = 1, deprecation_reason = ?, updated_position = ? "
                "WHERE name = ? AND version = ?",
                (data.reason, recorded.position, data.name, data.version),
            )

    def dump(self, tx: Tx, prefix: str) -> list[dict[str, Any]]:
        tx.execute(f"SELECT {', '.join(COLUMNS)} FROM {prefix}templates")
        # Sorted here: PostgreSQL orders text by locale, SQLite by bytes.
        return sorted(tx.fetchall(), key=lambda row: (row["name"], row["version"]))


def _version(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": row["version"], "deprecated": bool(row["deprecated"]),
        "deprecation_reason": row["deprecation_reason"], "published_at": row["published_at"],
        "spec": json.loads(row["spec"]),
    }


def _summary(name: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    rows = sorted(rows, key=lambda r: (version_key(r["version"]), r["updated_position"]))
    usable = [r for r in rows if not r["deprecated"]]
    latest = usable[-1] if usable else None
    shown = latest or rows[-1]
    return {
        "name": name, "latest": latest["version"] if latest else None,
        "versions": [r["version"] for r in rows],
        "deprecated_versions": [r["version"] for r in rows if r["deprecated"]],
        "description": shown["description"], "services": json.loads(shown["services"]),
        "backend": shown["backend"],
    }


def _by_name(db: ViewDB, prefix: str, name: str | None) -> dict[str, list[dict[str, Any]]]:
    with db.transaction(readonly=True) as tx:
        rows = TemplatesView().dump(tx, prefix)
    grouped: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if name is None or row["name"] == name:
            grouped.setdefault(row["name"], []).append(row)
    return grouped


def list_templates(db: ViewDB, prefix: str = LIVE_PREFIX) -> list[dict[str, Any]]:
    """One summary per template, by name: its latest usable version, every version, which are deprecated."""
    return [_summary(name, rows) for name, rows in sorted(_by_name(db, prefix, None).items())]


def template_versions(db: ViewDB, name: str, prefix: str = LIVE_PREFIX) -> dict[str, Any] | None:
    """One template's summary and every version with its full spec (lowest version first); None if unknown."""
    rows = _by_name(db, prefix, name).get(name)
    if not rows:
        return None
    ordered = sorted(rows, key=lambda r: (version_key(r["version"]), r["updated_position"]))
    return {**_summary(name, rows), "versions": [_version(r) for r in ordered]}


__all__ = ["TemplatesView", "list_templates", "template_versions"]
