"""The event store: eventsourcing's recorders, with the contract envelopes as the stored events.

Each stored event is one envelope, written as its wire JSON under its wire tag (the eventsourcing
"topic"), so history never depends on a Python class name. `ContractMapper` is the custom Mapper
that does this through the one converter in `contracts.codec`; reading runs the same upcasters as
the bus does.

The store is blocking (sqlite3/psycopg): async callers go through `anyio.to_thread`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from attrs import evolve, frozen
from eventsourcing.persistence import (
    ApplicationRecorder,
    InfrastructureFactory,
    IntegrityError,
    Mapper,
    Notification,
    StoredEvent,
)
from eventsourcing.sqlite import SQLiteApplicationRecorder
from eventsourcing.utils import Environment

import contracts
from bus.telemetry import current_trace_context
from contracts import Envelope
from contracts.codec import loads_stored
from projections.db import postgres_conninfo


class StoreError(Exception):
    """Root of the event store's errors."""


class ConcurrencyConflict(StoreError):
    """Someone appended to the stream first (or this very append ran before: a redelivery)."""


@frozen(kw_only=True)
class Pending:
    """Carries one envelope to eventsourcing in the shape its DomainEventProtocol asks for."""

    originator_id: uuid.UUID
    originator_version: int
    timestamp: dt.datetime
    envelope: Envelope[Any]


@frozen(kw_only=True)
class Recorded:
    """An envelope read back from the store with its position in the notification log."""

    position: int
    envelope: Envelope[Any]


class ContractMapper(Mapper[uuid.UUID]):
    """Maps contract envelopes to stored events and back, through the one cattrs converter."""

    def to_stored_event(self, domain_event: Any) -> StoredEvent:
        env: Envelope[Any] = domain_event.envelope
        state = contracts.dumps(env).encode()
        if self.compressor:
            state = self.compressor.compress(state)
        if self.cipher:
            state = self.cipher.encrypt(state)
        return StoredEvent(
            originator_id=domain_event.originator_id,
            originator_version=domain_event.originator_version,
            topic=env.type,
            state=state,
        )

    def to_domain_event(self, stored_event: StoredEvent) -> Any:
        return self.to_envelope(stored_event)

    def to_envelope(self, stored: StoredEvent) -> Envelope[Any]:
        return self.envelope_of(stored.state, stored.originator_id, stored.originator_version)

    def envelope_of(self, state: bytes, stream_id: uuid.UUID | str, stream_version: int) -> Envelope[Any]:
        """The envelope stored as `state` (as the recorder holds it) at `stream_version` of `stream_id`."""
        if self.cipher:
            state = self.cipher.decrypt(state)
        if self.compressor:
            state = self.compressor.decompress(state)
        # The store is the authority on where an event sits in its stream.
        return loads_stored(state, stream_id=stream_id, stream_version=stream_version)


def with_trace_context(events: Sequence[Envelope[Any]]) -> Sequence[Envelope[Any]]:
    """`events`, each carrying the current W3C trace context in its metadata unless it has one."""
    context = current_trace_context()
    if not context:
        return events
    return [e if "traceparent" in e.metadata else evolve(e, metadata={**e.metadata, **context}) for e in events]


def ensure_postgres_schema(env: dict[str, str]) -> None:
    """eventsourcing creates tables but not the schema they live in."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(postgres_conninfo(env), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(env["POSTGRES_SCHEMA"])))


@contextlib.contextmanager
def _one_at_a_time(env: dict[str, str]) -> Iterator[None]:
    """Hold a PostgreSQL advisory lock while the store's schema and tables are created.

    Processes started together on a fresh database (a deployment's pods, `cars worker`s) would race
    through eventsourcing's CREATE TABLE IF NOT EXISTS, and PostgreSQL fails all but one of them with
    "tuple concurrently updated". SQLite needs nothing: its writers already run one at a time.
    """
    if env.get("PERSISTENCE_MODULE") != "eventsourcing.postgres":
        yield
        return
    import psycopg

    key = "cars-event-store:" + env.get("POSTGRES_SCHEMA", "")
    with psycopg.connect(postgres_conninfo(env), autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (key,))
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (key,))


# Streams per query of `EventStore.load_many` (two parameters each, far below SQLite's limit).
LOAD_MANY_CHUNK = 200


class RecentAppends:
    """The envelopes this process appended last, by log position, as reading them back would give them.

    The relay and the projections of `cars up` read every event right after this process appended it;
    decoding each again (the one converter, ~0.1-0.2 ms an event) was a large share of their work. An
    event read back equals the envelope appended, with its stream and version set (freshly written
    events need no upcasting). Bounded: the oldest go first past `limit`; what is not here, and every
    event of other processes, is decoded from the store as before.
    """

    def __init__(self, limit: int = 20_000) -> None:
        self._limit = limit
        self._by_position: OrderedDict[int, Envelope[Any]] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, positions: Sequence[int], pending: Sequence[Pending]) -> None:
        if len(positions) != len(pending):
            return  # a recorder that does not say where it put them: nothing to remember
        envelopes = [evolve(p.envelope, stream_id=p.originator_id, stream_version=p.originator_version)
                     for p in pending]
        with self._lock:
            self._by_position.update(zip(positions, envelopes, strict=True))
            while len(self._by_position) > self._limit:
                self._by_position.popitem(last=False)

    def get(self, position: int, stream_id: Any, version: int) -> Envelope[Any] | None:
        """The envelope at `position`, if this process appended it there (checked by stream and version)."""
        if not self._by_position:  # nothing appended by this process (a rebuild, `cars replay`)
            return None
        with self._lock:
            envelope = self._by_position.get(position)
        if envelope is None or envelope.stream_version != version or str(envelope.stream_id) != str(stream_id):
            return None
        return envelope


class EventStore:
    """Append-only streams of envelopes, plus the notification log that orders all of them."""

    def __init__(self, env: dict[str, str], name: str = "cars") -> None:
        with _one_at_a_time(env):
            if env.get("PERSISTENCE_MODULE") == "eventsourcing.postgres" and env.get("POSTGRES_SCHEMA"):
                ensure_postgres_schema(env)
            self.factory = InfrastructureFactory.construct(env=Environment(name, env))
            self.recorder: ApplicationRecorder = self.factory.application_recorder()
        self.mapper = ContractMapper(
            transcoder=self.factory.transcoder(),
            compressor=self.factory.compressor(),
            cipher=self.factory.cipher(),
        )
        self._listeners: list[Callable[[], None]] = []
        self._recent = RecentAppends()

    def close(self) -> None:
        self.factory.close()

    def load(self, stream_id: uuid.UUID, after_version: int = 0) -> list[Envelope[Any]]:
        """The events of one stream, oldest first: all of them, or those after the first `after_version`."""
        gt = after_version if after_version > 0 else None
        return [self.mapper.to_envelope(s) for s in self.recorder.select_events(stream_id, gt=gt)]

    def load_many(self, after: Mapping[uuid.UUID, int]) -> dict[uuid.UUID, list[Envelope[Any]]]:
        """`load(stream_id, after_version)` of each stream in `after`, in as few queries as it takes.

        On SQLite one query reads them all (a batch of runs touches a stream per project: one query
        each was a fifth of a core at saturation, figure 1 of bench/README.md), and the events this
        process appended come from `RecentAppends` instead of being decoded again.
        """
        recorder = self.recorder
        if not isinstance(recorder, SQLiteApplicationRecorder) or not after:
            return {sid: self.load(sid, version) for sid, version in after.items()}
        as_uuid = recorder.datastore.originator_id_type == "uuid"
        by_key = {(sid.hex if as_uuid else str(sid)): sid for sid in after}
        out: dict[uuid.UUID, list[Envelope[Any]]] = {sid: [] for sid in after}
        recent, envelope_of = self._recent, self.mapper.envelope_of
        keys = list(by_key)
        for start in range(0, len(keys), LOAD_MANY_CHUNK):
            chunk = keys[start:start + LOAD_MANY_CHUNK]
            terms = " OR ".join(["(originator_id=? AND originator_version>?)"] * len(chunk))
            params: list[Any] = []
            for key in chunk:
                params += [key, after[by_key[key]]]
            query = f"SELECT rowid, originator_id, originator_version, state FROM {recorder.events_table_name} " \
                    f"WHERE {terms} ORDER BY originator_id, originator_version"
            with recorder.datastore.transaction(commit=False) as c:
                c.execute(query, params)
                rows: list[Any] = c.fetchall()
            for position, key, version, state in rows:
                sid = by_key[key]
                out[sid].append(recent.get(position, sid, version) or envelope_of(state, sid, version))
        return out

    def append(self, stream_id: uuid.UUID, expected_version: int, events: Sequence[Envelope[Any]]) -> list[int]:
        """Append `events` after `expected_version` (the number of events already in the stream).

        Returns their positions in the notification log. Raises ConcurrencyConflict when the stream
        has moved on: the caller lost a race, or is processing a redelivered message.

        Events without a trace context get the caller's current one in their metadata (anyio carries
        it into worker threads), so that the relay can publish them in the trace that recorded them.
        """
        return self.append_many([(stream_id, expected_version, events)])

    def append_many(self, appends: Sequence[tuple[uuid.UUID, int, Sequence[Envelope[Any]]]]) -> list[int]:
        """Append to several streams in ONE transaction: each (stream, expected version, events) as
        `append` would, all or nothing. ConcurrencyConflict when any of the streams has moved on, and
        then nothing is stored. Returns the positions of all the events, in the order given."""
        stored, pending = [], []
        for stream_id, expected_version, events in appends:
            for i, e in enumerate(with_trace_context(events)):
                p = Pending(originator_id=stream_id, originator_version=expected_version + i + 1,
                            timestamp=e.occurred_at, envelope=e)
                pending.append(p)
                stored.append(self.mapper.to_stored_event(p))
        if not stored:
            return []
        try:
            ids = self.recorder.insert_events(stored)
        except IntegrityError as exc:
            streams = ", ".join(str(a[0]) for a in appends)
            raise ConcurrencyConflict(f"one of the streams {streams} moved past its expected version") from exc
        positions = list(ids or [])
        self._recent.remember(positions, pending)
        for listener in self._listeners:
            listener()
        return positions

    def on_append(self, listener: Callable[[], None]) -> None:
        """Call `listener` after every append of this object commits (in the appending thread): the
        relay of this process wakes at once instead of at its next poll. Appends of other processes
        are not seen here; the poll finds those."""
        self._listeners.append(listener)

    def read(self, after: int = 0, limit: int = 500, types: Sequence[str] = ()) -> list[Recorded]:
        """Events of the notification log after position `after` (positions may have gaps)."""
        recent = self._recent
        envelope_of = self.mapper.envelope_of
        return [
            Recorded(position=position, envelope=recent.get(position, stream_id, version)
                     or envelope_of(state, stream_id, version))
            for position, stream_id, version, state in self._notifications(after, limit, types)
        ]

    def _notifications(self, after: int, limit: int, types: Sequence[str]) -> Sequence[Sequence[Any]]:
        """(position, stream id, version, stored state) of the events `read` returns.

        On SQLite the rows come straight from the recorder's table: eventsourcing's
        `select_notifications` would build a Notification and parse a UUID for each, which the
        envelope's decoding does again. The query is the one `select_notifications` runs.
        """
        recorder = self.recorder
        if isinstance(recorder, SQLiteApplicationRecorder):
            stream = "originator_id"
            if recorder.datastore.originator_id_type == "uuid":
                # Stored as 32 hex digits: given in the canonical form, as `str(uuid)` and the JSON write it.
                stream = "substr(originator_id, 1, 8) || '-' || substr(originator_id, 9, 4) || '-' || " \
                         "substr(originator_id, 13, 4) || '-' || substr(originator_id, 17, 4) || '-' || " \
                         "substr(originator_id, 21)"
            query = f"SELECT rowid, {stream}, originator_version, state FROM {recorder.events_table_name} " \
                    "WHERE rowid>? "
            if types:
                query += f"AND topic IN ({','.join('?' * len(types))}) "
            query += "ORDER BY rowid LIMIT ?"
            with recorder.datastore.transaction(commit=False) as c:
                c.execute(query, [after, *types, limit])
                rows: list[Any] = c.fetchall()  # sqlite3.Row: a sequence of the four columns
                return rows
        notifications: Sequence[Notification] = recorder.select_notifications(
            start=after, limit=limit, topics=types, inclusive_of_start=False
        )
        return [(n.id, n.originator_id, n.originator_version, n.state) for n in notifications]

    def max_position(self) -> int:
        return self.recorder.max_notification_id() or 0
