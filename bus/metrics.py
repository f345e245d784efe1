"""Prometheus metrics of the bus: this process's counters, and the streams' state read at scrape time.

Counted by this process (each process has its own; see README "Observability"):

- `cars_messages_consumed_total{stream, group, outcome}`: deliveries `bus.consumer` finished, by
  outcome: `handled`, `ignored` (a type this group does not handle), `failed` (left pending for a
  retry), `dead_lettered`;
- `cars_messages_published_total{stream}`: entries this process added (the relay's events and
  summaries, commands, dead letters);
- `cars_handler_duration_seconds{stream, group}`: how long the actor's handler ran, whether it
  succeeded or failed.

Read from Redis at scrape time (the same for every process, so only the API serves them):

- `cars_stream_length{stream}` (XLEN), `cars_dlq_entries` (XLEN cars.dlq);
- `cars_group_pending{stream, group}` (delivered, not acknowledged), `cars_group_lag{stream, group}`
  (entries not yet delivered to the group; Redis 7 `lag` of XINFO GROUPS, left out when Redis cannot
  tell, after a trim or XDEL), `cars_group_consumers{stream, group}`, for every group on every CARS
  stream, including groups of external subscribers;
- `cars_relay_position`, `cars_store_position`: how far the relay has published the notification log,
  and where the log ends.

Why prometheus_client and not the OTel metrics SDK: the scrape-time gauges need a pull endpoint that
reads Redis when scraped, which prometheus_client's custom collectors give directly; the OTel route
would add opentelemetry-exporter-prometheus (which wraps prometheus_client anyway) and asynchronous
instrument callbacks that cannot await Redis.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from redis.asyncio import Redis

from bus import wire
from bus.streams import ALL_EVENT_STREAMS, COMMANDS, DLQ, INGEST, RELAY_POSITION_KEY, RESULTS

# Handlers take milliseconds (a registry command) to minutes (a validation rerunning a test suite).
HANDLER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)

STREAMS = (INGEST, COMMANDS, *ALL_EVENT_STREAMS, RESULTS, DLQ)

OUTCOMES = ("handled", "ignored", "failed", "dead_lettered")


class BusMetrics:
    """The counters of one process, in a registry of its own (made by the composition root)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.consumed = Counter(
            "cars_messages_consumed", "Deliveries finished by this process, by stream, consumer group and outcome.",
            ["stream", "group", "outcome"], registry=self.registry,
        )
        self.published = Counter(
            "cars_messages_published", "Stream entries added by this process, by stream.", ["stream"],
            registry=self.registry,
        )
        self.handler_seconds = Histogram(
            "cars_handler_duration_seconds", "Time an actor's handler took per delivery, by stream and group.",
            ["stream", "group"], buckets=HANDLER_BUCKETS, registry=self.registry,
        )

    def consumed_one(self, stream: str, group: str, outcome: str) -> None:
        self.consumed.labels(stream=stream, group=group, outcome=outcome).inc()

    def published_one(self, stream: str, count: int = 1) -> None:
        self.published.labels(stream=stream).inc(count)

    def timed(self, stream: str, group: str) -> _Timer:
        return _Timer(self.handler_seconds.labels(stream=stream, group=group))


class _Timer:
    def __init__(self, histogram: Any) -> None:
        self.histogram = histogram
        self.started = 0.0

    def __enter__(self) -> None:
        self.started = time.perf_counter()

    def __exit__(self, *_: object) -> None:
        self.histogram.observe(time.perf_counter() - self.started)


async def stream_families(redis: Redis, streams: Sequence[str] = STREAMS) -> list[Metric]:
    """Length, groups, pending and lag of every stream, read now (one round trip)."""
    async with redis.pipeline(transaction=False) as pipe:
        for stream in streams:
            pipe.xlen(stream)
            pipe.xinfo_groups(stream)
        pipe.get(RELAY_POSITION_KEY)
        replies = await pipe.execute(raise_on_error=False)
    length = GaugeMetricFamily("cars_stream_length", "Entries in the stream now (XLEN).", labels=["stream"])
    dlq = GaugeMetricFamily("cars_dlq_entries", "Dead letters in cars.dlq now.")
    pending = GaugeMetricFamily("cars_group_pending", "Entries delivered to the group and not acknowledged.",
                                labels=["stream", "group"])
    lag = GaugeMetricFamily("cars_group_lag", "Entries in the stream not yet delivered to the group "
                            "(XINFO GROUPS lag; absent when Redis cannot tell).", labels=["stream", "group"])
    consumers = GaugeMetricFamily("cars_group_consumers", "Consumers in the group.", labels=["stream", "group"])
    for i, stream in enumerate(streams):
        size, groups = replies[2 * i], replies[2 * i + 1]
        size = 0 if isinstance(size, Exception) else int(size)
        length.add_metric([stream], size)
        if stream == DLQ:
            dlq.add_metric([], size)
        if isinstance(groups, Exception):  # no such key: the stream was never written
            continue
        for info in groups:
            labels = [stream, wire.text(info["name"])]
            pending.add_metric(labels, int(info["pending"]))
            consumers.add_metric(labels, int(info["consumers"]))
            if info.get("lag") is not None:
                lag.add_metric(labels, int(info["lag"]))
    relayed = replies[-1]
    position = GaugeMetricFamily("cars_relay_position", "Last notification-log position the relay published.")
    position.add_metric([], 0 if isinstance(relayed, Exception) or relayed is None else int(relayed))
    return [length, dlq, pending, lag, consumers, position]


def store_position_family(position: int) -> Metric:
    family = GaugeMetricFamily("cars_store_position", "Position of the newest event in the notification log.")
    family.add_metric([], position)
    return family


def source_up_family(up: dict[str, bool]) -> Metric:
    family = GaugeMetricFamily("cars_metrics_source_up", "1 when this scrape could read the source (redis, "
                               "store, views), else 0 and its metrics are missing.", labels=["source"])
    for source, ok in up.items():
        family.add_metric([source], 1 if ok else 0)
    return family


class _Fixed(Collector):
    def __init__(self, sources: Iterable[CollectorRegistry], families: Sequence[Metric]) -> None:
        self.sources = list(sources)
        self.families = families

    def collect(self) -> Iterator[Metric]:
        for source in self.sources:
            yield from source.collect()
        yield from self.families


def render(process: CollectorRegistry, families: Sequence[Metric] = ()) -> bytes:
    """The Prometheus text exposition of this process's registry plus `families` read at scrape time."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed([process], families))
    return generate_latest(registry)


__all__ = ["HANDLER_BUCKETS", "OUTCOMES", "STREAMS", "BusMetrics", "render", "source_up_family",
           "store_position_family", "stream_families"]
