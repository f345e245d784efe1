"""`cars audit` and `cars export`: reading the event history out of the store (never changing it).

Registered on the main app by bus/cli.py. Both read the store directly, like `cars events`.
"""

from __future__ import annotations

import csv
import datetime as dt
import enum
import json
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer

PAGE = 1000
PROGRESS_EVERY_S = 2.0
CSV_COLUMNS = ("position", "occurred_at", "type", "version", "id", "stream_id", "stream_version", "correlation_id",
               "causation_id", "data")


class AuditFormat(enum.StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


class ExportFormat(enum.StrEnum):
    jsonl = "jsonl"
    csv = "csv"


def parse_moment(option: str, text: str) -> dt.datetime:
    """A date (YYYY-MM-DD, midnight UTC) or an ISO 8601 time (UTC when it names no offset)."""
    try:
        if len(text) == 10:
            return dt.datetime.combine(dt.date.fromisoformat(text), dt.time(), tzinfo=dt.UTC)
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{option} {text!r} is not a date or time: use YYYY-MM-DD or an ISO 8601 time such as "
                         "2026-11-23T10:00:00Z") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _row(position: int | None, wire: dict[str, Any]) -> dict[str, Any]:
    values = {**wire, "position": position, "data": json.dumps(wire["data"], separators=(",", ":"), sort_keys=True)}
    return {c: values.get(c) for c in CSV_COLUMNS}


def audit(
    aggregate_id: Annotated[str, typer.Argument(help="The aggregate (stream) id, e.g. a repair id")],
    format_: Annotated[AuditFormat, typer.Option("--format", help="table (readable), json (one document) or csv "
                                                 "(one row per event)")] = AuditFormat.table,
    at_version: Annotated[int | None, typer.Option(
        min=1, help="Show the aggregate as it was after its first N events (default: now)")] = None,
) -> None:
    """Print one aggregate's history and its state (folded as its actor folds it), now or at a version."""
    import contracts
    from bus.audit import aggregate_state
    from bus.cli import _fail, _open_store, _settings

    try:
        stream = uuid.UUID(aggregate_id)
    except ValueError:
        _fail(f"{aggregate_id!r} is not an aggregate id (a UUID)")
    store = _open_store(_settings())
    try:
        history = store.load(stream)
    finally:
        store.close()
    if not history:
        _fail(f"no events for aggregate {stream}", code=1)
    if at_version is not None and at_version > len(history):
        _fail(f"aggregate {stream} has {len(history)} event(s), no version {at_version}", code=1)
    shown = history[:at_version] if at_version is not None else history
    state = aggregate_state(shown)
    wires = [contracts.encode(e) for e in shown]
    if format_ is AuditFormat.json:
        typer.echo(json.dumps({"aggregate_id": str(stream), "version": len(shown), "latest_version": len(history),
                               "events": wires, "state": state}, indent=2))
    elif format_ is AuditFormat.csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=[c for c in CSV_COLUMNS if c != "position"],
                                extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(_row(None, w) for w in wires)
    else:
        typer.echo(f"aggregate {stream}: {state['kind']}, version {len(shown)} of {len(history)}")
        for env, wire in zip(shown, wires, strict=True):
            data = json.dumps(wire["data"], separators=(",", ":"))
            when = f"{env.occurred_at:%Y-%m-%d %H:%M:%S}"
            typer.echo(f"{env.stream_version or '':>4}  {when}  {env.type:<28} {data[:120]}")
        typer.echo(f"state: {json.dumps(state['state'], separators=(',', ':'))}")


def _pages(store: Any, types: list[str]) -> Iterator[list[Any]]:
    after = 0
    while True:
        batch = store.read(after=after, limit=PAGE, types=types)
        if not batch:
            return
        yield batch
        after = batch[-1].position


def write_export(store: Any, out: TextIO, *, since: dt.datetime | None, until: dt.datetime | None,
                 types: list[str], fmt: ExportFormat, progress: Any, every_s: float = PROGRESS_EVERY_S) -> int:
    """Write every event with since <= occurred_at < until (and of `types`) to `out`, page by page;
    returns how many. `progress(written, position, head)` is called after a page every `every_s` seconds."""
    import contracts

    head = store.max_position()
    writer = None
    if fmt is ExportFormat.csv:
        writer = csv.DictWriter(out, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
        writer.writeheader()
    written, last_report = 0, time.monotonic()
    for batch in _pages(store, types):
        for rec in batch:
            moment = rec.envelope.occurred_at
            if (since is not None and moment < since) or (until is not None and moment >= until):
                continue
            wire = contracts.encode(rec.envelope)
            if writer is not None:
                writer.writerow(_row(rec.position, wire))
            else:
                out.write(json.dumps({"position": rec.position, **wire}, separators=(",", ":")) + "\n")
            written += 1
        if time.monotonic() - last_report >= every_s:
            progress(written, batch[-1].position, head)
            last_report = time.monotonic()
    return written


def export(
    since: Annotated[str | None, typer.Option(help="Events that occurred at or after this date or time "
                                              "(YYYY-MM-DD or ISO 8601; UTC unless it says; default: the start)")]
    = None,
    until: Annotated[str | None, typer.Option(help="Events that occurred before this date or time "
                                              "(default: now)")] = None,
    type_: Annotated[list[str] | None, typer.Option("--type", help="Only this message type (repeatable)")] = None,
    format_: Annotated[ExportFormat, typer.Option("--format", help="jsonl (one envelope per line, with its "
                                                  "position) or csv")] = ExportFormat.jsonl,
    out: Annotated[Path | None, typer.Option(help="Write to this file (default: stdout)")] = None,
) -> None:
    """Export a range of the whole event history, oldest first, streaming the log page by page.

    Progress goes to stderr during long exports. Nothing in the store is changed.
    """
    import contracts
    from bus.cli import _fail, _open_store, _settings

    try:
        start = parse_moment("--since", since) if since else None
        end = parse_moment("--until", until) if until else None
    except ValueError as exc:
        _fail(str(exc))
    if start is not None and end is not None and start >= end:
        _fail(f"--since {since} is not before --until {until}")
    types = list(dict.fromkeys(type_ or []))
    unknown = [t for t in types if contracts.by_tag(t) is None]
    if unknown:
        _fail(f"unknown type(s) {', '.join(unknown)}; see `cars schema --list`")

    def progress(written: int, position: int, head: int) -> None:
        typer.echo(f"export: {written} events written, at position {position} of {head}", err=True)

    store = _open_store(_settings())
    target = out.open("w", encoding="utf-8", newline="") if out is not None else sys.stdout
    try:
        written = write_export(store, target, since=start, until=end, types=types, fmt=format_, progress=progress)
    finally:
        if out is not None:
            target.close()
        store.close()
    typer.echo(f"exported {written} events" + (f" to {out}" if out else ""), err=True)


__all__ = ["AuditFormat", "ExportFormat", "audit", "export", "parse_moment", "write_export"]
