"""Stream and group names: the only place that knows them (STYLE rule 12)."""

from __future__ import annotations

from contracts import Area, Entry, Kind

INGEST = "cars.ingest"
COMMANDS = "cars.commands"
RESULTS = "cars.results"
DLQ = "cars.dlq"
EVENTS_PREFIX = "cars.events."

# The one field of a stream entry that holds the JSON envelope; see README "Wire format".
MESSAGE_FIELD = "message"
# Trace context travels in these W3C fields beside it.
TRACE_FIELDS = ("traceparent", "tracestate")
# Set by the relay on every event it publishes: the event's position in the notification log.
POSITION_FIELD = "position"

RELAY_POSITION_KEY = "cars:relay:position"
# A running platform's presence: PRESENCE_PREFIX + consumer name -> {"actors": [...]}, with a TTL.
PRESENCE_PREFIX = "cars:presence:"


def events_stream(area: Area) -> str:
    return EVENTS_PREFIX + area.value


ALL_EVENT_STREAMS = tuple(events_stream(a) for a in Area)


def inbound_stream(entry: Entry) -> str:
    """Where a producer puts a message of this type."""
    if entry.kind is Kind.EVENT:
        raise ValueError(f"{entry.tag} is an event; only CARS records events (send a command instead)")
    return INGEST if entry.tag == "run.reported" else COMMANDS


def errors_key(stream: str, group: str) -> str:
    """A hash of entry id -> last handler error, read when a message is dead-lettered."""
    return f"cars:errors:{stream}:{group}"

# The notifier's durable retry queue: webhook deliveries that failed, kept until delivered (never trimmed).
NOTIFY_RETRY = "cars.notifications.retry"
